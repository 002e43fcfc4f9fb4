"""fastdescent.torch under hostile use: aliasing gradients, duplicate or memory-sharing parameters and
state, tensors whose memory, shape or strides change between steps, odd tensor kinds (negative bit,
zero tensors, inference tensors), edited step counts, GradScaler with inf gradients, threads and
fork. Each case is compared with torch.optim's for-loop implementation (where torch defines the
result), or must be refused with the parameters and the state untouched.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdescent.torch as fdt  # noqa: E402
from _torch_pairs import close, pair, snapshot, unchanged  # noqa: E402


def ones_grads(ps, scale=1.0):
    for p in ps:
        p.grad = torch.full_like(p, scale)


# ----------------------------------------------------------------------------- aliasing gradients
@pytest.mark.parametrize("cls_name, hp", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.1)),
                                          ("Rprop", dict()), ("Adadelta", dict(weight_decay=0.1))])
def test_gradient_that_is_its_parameter_matches_torch(cls_name, hp):
    """p.grad = p.data: torch reads the gradient before it writes the parameter; the step copies a
    gradient that shares memory with what it writes, so it reads the same values."""
    ps, qs, opt, topt = pair(cls_name, **hp)
    for _ in range(4):
        for p in ps + qs:
            p.grad = p.data
        opt.step()
        topt.step()
        close(ps, qs)


def test_gradient_that_is_another_parameter_or_the_state_matches_torch():
    ps, qs, opt, topt = pair("SGD", n=2, lr=0.5, momentum=0.9)
    for _ in range(3):  # params[0] comes first: torch reads params[1] before updating it
        ps[0].grad, qs[0].grad = ps[1].data, qs[1].data
        ps[1].grad, qs[1].grad = ps[1].data, qs[1].data
        opt.step()
        topt.step()
        close(ps, qs)
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    for k in range(3):
        ones_grads(ps + qs, k + 1.0)
        opt.step()
        topt.step()
        ps[0].grad, qs[0].grad = opt.state[ps[0]]["exp_avg"], topt.state[qs[0]]["exp_avg"]
        opt.step()
        topt.step()
        close(ps, qs)


# ----------------------------------------------------------------------------- shared memory
def test_duplicate_parameters_are_refused():
    p = torch.nn.Parameter(torch.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch's own warning about duplicates)
        with pytest.raises(ValueError, match=r"param_groups\[0\] holds the same tensor more than "
                                             r"once \(at positions \[0, 2\]\)"):
            fdt.Adam([p, torch.nn.Parameter(torch.ones(2)), p])
    with pytest.raises(ValueError, match="more than one parameter group"):  # (torch's check)
        fdt.Adam([{"params": [p]}, {"params": [p]}])
    opt = fdt.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    snap = snapshot(opt, [p])
    opt.param_groups[0]["params"].append(p)  # edited in, behind add_param_group's back
    with pytest.raises(ValueError, match="more than once"):
        opt.step()
    unchanged(opt, [p], snap)
    opt.param_groups[0]["params"].pop()
    q = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [q]})
    opt.param_groups[1]["params"].append(p)
    q.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[2\] are the same tensor"):
        opt.step()
    unchanged(opt, [p], snap)


def test_parameters_or_state_sharing_memory_are_refused():
    base = torch.zeros(8)
    p1, p2 = torch.nn.Parameter(base[:5]), torch.nn.Parameter(base[3:])
    opt = fdt.Adam([p1, p2], lr=1.0)
    p1.grad, p2.grad = torch.ones(5), torch.ones(5)
    with pytest.raises(ValueError, match=r"params\[0\] and params\[1\] share memory"):
        opt.step()
    assert torch.equal(base, torch.zeros(8)) and not opt.state
    p2.grad = None  # one of them alone is fine
    opt.step()
    assert float(opt.state[p1]["step"]) == 1
    ps, _, opt, _ = pair("Adam", n=2, lr=0.1)
    ones_grads(ps)
    opt.step()
    snap = snapshot(opt, ps)
    opt.state[ps[1]]["exp_avg"] = opt.state[ps[0]]["exp_avg"]
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] and state\[1\]\['exp_avg'\] "
                                         "share memory"):
        opt.step()
    opt.state[ps[1]]["exp_avg"] = ps[0].data
    with pytest.raises(ValueError, match=r"params\[0\] and state\[1\]\['exp_avg'\] share memory"):
        opt.step()
    opt.state[ps[1]]["exp_avg"] = snap[1][1]["exp_avg"].clone()
    unchanged(opt, ps, snap)


# ----------------------------------------------------------------------------- memory that moves
def test_parameter_shrunk_reshaped_or_transposed_in_place():
    """A parameter whose memory stays where it was but whose shape or strides change: the step
    follows it (SGD without state, as torch) or refuses it (state of the old shape, where torch's
    step fails on the shapes), and never reads or writes past the new extent."""
    ps, qs, opt, topt = pair("SGD", shape=(1000,), lr=1.0)
    ones_grads(ps + qs)
    opt.step()
    topt.step()
    full = ps[0].data
    tail = full[2:].clone()
    for p in ps + qs:
        p.data = p.data[:2]
        p.grad = torch.full((2,), 5.0)
    opt.step()
    topt.step()
    close(ps, qs)
    assert torch.equal(full[2:], tail)  # nothing read or written past the new extent
    for change in (lambda d: d[:2], lambda d: d.view(2, 8), lambda d: d.t()):
        ps, _, opt, _ = pair("Adam", shape=(4, 4))
        ones_grads(ps)
        opt.step()
        snap = snapshot(opt, ps)
        old = ps[0].data
        ps[0].data = change(ps[0].data)
        assert ps[0].data_ptr() == old.data_ptr()
        ps[0].grad = torch.ones_like(ps[0])
        with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] does not match params\[0\]"):
            opt.step()
        ps[0].data = old
        unchanged(opt, ps, snap)


def test_state_tensor_whose_memory_moved():
    """A state tensor given other memory in place (.data = ..., resize_): the step uses the new
    memory, as torch does, or refuses it; it never writes the old (freed) memory."""
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    ones_grads(ps + qs)
    opt.step()
    topt.step()
    for o, p in ((opt, ps[0]), (topt, qs[0])):
        o.state[p]["exp_avg"].data = torch.full((4, 5), 0.5)
    opt.step()
    topt.step()
    close(ps, qs)
    torch.testing.assert_close(opt.state[ps[0]]["exp_avg"], topt.state[qs[0]]["exp_avg"])
    snap = snapshot(opt, ps)
    buf = opt.state[ps[0]]["exp_avg_sq"]
    addr = buf.data_ptr()
    buf.resize_(10 ** 5)
    assert buf.data_ptr() != addr
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg_sq'\] does not match"):
        opt.step()
    opt.state[ps[0]]["exp_avg_sq"] = snap[0][1]["exp_avg_sq"].clone()
    unchanged(opt, ps, snap)


def test_gradient_of_another_shape_through_data_is_refused():
    ps, _, opt, _ = pair("Adam")
    ones_grads(ps)
    opt.step()
    snap = snapshot(opt, ps)
    ps[0].grad.data = torch.ones(20)  # same number of elements; torch's step fails on the shape
    with pytest.raises(ValueError, match=r"params\[0\]\.grad has shape \(20,\), the parameter "
                                         r"\(4, 5\)"):
        opt.step()
    unchanged(opt, ps, snap)


def test_edited_step_count_must_stay_a_count():
    ps, _, opt, _ = pair("Adam")
    ones_grads(ps)
    opt.step()
    snap = snapshot(opt, ps)
    for bad in (2.5, -3.0):
        opt.state[ps[0]]["step"].fill_(bad)
        with pytest.raises(ValueError, match=r"state\[0\]\['step'\] must be a non-negative integer"):
            opt.step()
        opt.state[ps[0]]["step"].fill_(1.0)
        unchanged(opt, ps, snap)


# ----------------------------------------------------------------------------- odd tensor kinds
def test_negative_bit_and_zero_tensor_gradients_match_torch():
    """A lazily negated gradient (its memory holds the values' negation) and a zero tensor (no
    memory at all) are read as torch reads them."""
    ps, qs, opt, topt = pair("SGD", n=2, lr=0.5, momentum=0.5)
    for k in range(3):
        g = torch.arange(20.0).reshape(4, 5) + k
        ps[0].grad = torch._neg_view(g)
        qs[0].grad = torch._neg_view(g.clone())
        assert ps[0].grad.is_neg() and ps[0].grad.is_contiguous()
        ps[1].grad, qs[1].grad = torch._efficientzerotensor((4, 5)), torch._efficientzerotensor((4, 5))
        opt.step()
        topt.step()
        close(ps, qs)
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="lazily negated"):
        fdt.SGD([torch._neg_view(w.detach()).requires_grad_()])
    opt = fdt.Adam([w])
    w.grad = torch.ones(3)
    opt.step()
    snap = snapshot(opt, [w])
    opt.state[w]["exp_avg"] = torch._neg_view(torch.ones(3))
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] is a lazily negated view"):
        opt.step()
    opt.state[w]["exp_avg"] = snap[0][1]["exp_avg"].clone()
    unchanged(opt, [w], snap)


def test_inference_tensors_as_torch():
    """Parameters made under inference_mode: torch updates them inside inference mode only."""
    with torch.inference_mode():
        a, b = torch.ones(4), torch.ones(4)
        opt, topt = fdt.SGD([a], lr=0.1, momentum=0.9), torch.optim.SGD([b], lr=0.1, momentum=0.9)
        for _ in range(2):
            a.grad, b.grad = torch.arange(4.0), torch.arange(4.0)
            opt.step()
            topt.step()
        torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor"):
        topt.step()
    before = a.clone()
    with pytest.raises(RuntimeError, match="inference tensor"):
        opt.step()
    assert torch.equal(a, before)


def test_grad_scaler_skips_steps_with_inf_gradients():
    """GradScaler steps the optimizer only when no gradient is inf/NaN (fused=True is accepted and
    ignored: the step does not take GradScaler's scale itself)."""
    ps, qs, opt, topt = pair("Adam", lr=0.01, fused=True)
    assert not getattr(opt, "_step_supports_amp_scaling", False)
    topt = torch.optim.Adam(qs, lr=0.01, foreach=False)
    for k in range(3):
        for o, p in ((opt, ps[0]), (topt, qs[0])):
            scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
            o.zero_grad()
            scaler.scale((p * (k + 1.0)).sum()).backward()
            if k == 1:
                p.grad[0, 0] = float("inf")
            scaler.step(o)
            scaler.update()
        close(ps, qs)
    assert float(opt.state[ps[0]]["step"]) == 2


# ----------------------------------------------------------------------------- threads, fork
def test_two_threads_step_two_optimizers():
    errs = {}

    def work(k):
        ps, qs, opt, topt = pair("Adam", shape=(3000,), n=8, seed=k, lr=0.01)
        g = torch.Generator().manual_seed(k)
        for _ in range(10):
            for p, q in zip(ps, qs):
                p.grad = torch.randn(p.shape, generator=g)
                q.grad = p.grad.clone()
            opt.step()
            topt.step()
        errs[k] = max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(ps, qs))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errs.keys() == {0, 1} and max(errs.values()) < 1e-5, errs


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_steps_after_the_parent(tmp_path):
    """The C backend's thread pool does not survive fork(): a child that steps after its parent
    did must not hang (torch.optim's own step would, in the child: it is compared in the parent)."""
    ps, qs, opt, topt = pair("Adam", shape=(100000,), lr=0.01)
    for _ in range(2):
        ones_grads(ps + qs)
        opt.step()
        topt.step()
    out = tmp_path / "child.npy"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            opt.step()
            np.save(out, ps[0].detach().numpy())
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's step hung")
        time.sleep(0.01)
    topt.step()
    torch.testing.assert_close(torch.from_numpy(np.load(out)), qs[0].detach())
    assert float(opt.state[ps[0]]["step"]) == 2  # (the parent's state is its own)
