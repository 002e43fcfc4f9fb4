"""Hostile checks of fastdescent.torch on the cuda backend (Numba's CUDA simulator here, where CPU
tensors stand in for device memory)."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

import fastdescent.torch as fdt  # noqa: E402
from conftest import require_backend  # noqa: E402

require_backend("cuda")

from fastdescent.backends import get_backend  # noqa: E402

SIM = get_backend("cuda").SIM
pytestmark = pytest.mark.skipif(not SIM, reason="runs the cuda backend on CPU tensors (simulator)")


def test_a_failed_launch_leaves_each_bucket_consistent(monkeypatch):
    """A launch that fails (a CUDA error, numba failing to allocate an address column) after an
    earlier bucket of the same step was updated: that bucket's step count is advanced with it (its
    moments were updated once more), the failed bucket is untouched, and the optimizer steps on."""
    be = get_backend("cuda")
    a = torch.nn.Parameter(torch.ones(4))
    b = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # (a second bucket: float64)
    opt = fdt.Adam([a, b], lr=0.1, backend="cuda")
    for p in (a, b):
        p.grad = torch.ones_like(p)
    opt.step()
    a1, b1 = a.detach().clone(), b.detach().clone()
    orig, calls = be.KERNELS["adam"], []

    def flaky(tab, **kw):
        calls.append(tab.dtype)
        if len(calls) == 2:
            raise RuntimeError("launch failed")
        return orig(tab, **kw)

    monkeypatch.setitem(be.KERNELS, "adam", flaky)
    with pytest.raises(RuntimeError, match="launch failed"):
        opt.step()
    monkeypatch.setitem(be.KERNELS, "adam", orig)
    assert not torch.equal(a.detach(), a1) and torch.equal(b.detach(), b1)
    assert float(opt.state[a]["step"]) == 2 and float(opt.state[b]["step"]) == 1
    # the same history on the C backend: a stepped twice, b once, then both once more
    ra = torch.nn.Parameter(torch.ones(4))
    rb = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    ropt = fdt.Adam([ra, rb], lr=0.1, backend="c")
    for with_b in (True, False, True):
        ra.grad = torch.ones_like(ra)
        rb.grad = torch.ones_like(rb) if with_b else None
        ropt.step()
    for p in (a, b):
        p.grad = torch.ones_like(p)
    opt.step()
    torch.testing.assert_close(a.detach(), ra.detach())
    torch.testing.assert_close(b.detach(), rb.detach())
    for p, rp in ((a, ra), (b, rb)):
        for k, v in ropt.state[rp].items():
            torch.testing.assert_close(opt.state[p][k], v)


def _train(name, backend, steps=3):
    gen = torch.Generator().manual_seed(3)  # (not torch's global one: the threads share it)
    ps = [torch.nn.Parameter(torch.randn(9, generator=gen)),
          torch.nn.Parameter(torch.randn(4, generator=gen, dtype=torch.float64))]
    opt = getattr(fdt, name)(ps, lr=0.01, backend=backend)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()
    return [p.detach() for p in ps]


def test_two_threads_step_two_optimizers():
    """Each thread steps an optimizer of its own, at the same time (in the simulator, which runs one
    simulated kernel at a time, the launches must take turns); each ends where it would alone."""
    names = ("Adam", "LAMB")  # (LAMB: several launches per step, reductions between them)
    out, errors = {}, []

    def work(name):
        try:
            out[name] = _train(name, "cuda")
        except Exception as exc:  # (reported below: a thread's exception is not the test's)
            errors.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name in names:
        for got, want in zip(out[name], _train(name, "c")):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_load_state_dict_with_low_precision_options_converts_onto_the_device():
    """A state_dict of a group with state_dtype='int8' (8-bit codes and their scales, from the C
    backend) loaded into a float32-state optimizer on the cuda backend: the group becomes 8-bit, its
    codes and scales are taken as they are, and the next steps are bit for bit the C backend's.
    (Refused here before the cuda backend had the mixed-precision step in fastdescent.torch; on a
    GPU that load's conversion ran on NumPy views of CUDA tensors.)"""
    require_backend("c")
    src_w = torch.nn.Parameter(torch.ones(300))
    src = fdt.Adam([src_w], lr=0.1, state_dtype="int8", backend="c")
    src_w.grad = torch.full((300,), 0.5)
    src.step()
    w = torch.nn.Parameter(src_w.detach().clone())
    opt = fdt.Adam([w], lr=0.1, backend="cuda")
    w.grad = torch.ones(300)
    opt.step()
    w.data.copy_(src_w.detach())
    opt.load_state_dict(src.state_dict())
    assert opt.param_groups[0]["state_dtype"] == "int8"
    assert opt.state[w]["exp_avg"].dtype == torch.uint8
    g = torch.linspace(-1, 1, 300)
    for _ in range(2):
        w.grad, src_w.grad = g.clone(), g.clone()
        opt.step()
        src.step()
    assert torch.equal(w.detach(), src_w.detach())
    for k, v in src.state[src_w].items():
        assert torch.equal(opt.state[w][k], v), k


def test_cpu_tensor_refused_under_a_default_of_cuda_names_the_default(monkeypatch):
    """On a GPU (the simulator's SIM flag off), backend=None under use_backend('cuda') means the
    cuda backend, which refuses CPU tensors: the message says where 'cuda' came from instead of
    telling the user to pass backend=None, which they did."""
    import fastdescent as fd

    monkeypatch.setattr(get_backend("cuda"), "SIM", False)
    w = torch.nn.Parameter(torch.zeros(3))
    with fd.use_backend("cuda"):
        with pytest.raises(ValueError, match=r"params\[0\] is on the CPU, but this "
                                             r"fastdescent.torch.Adam was made with backend=None, "
                                             r"and the default backend in force is 'cuda'") as e:
            fdt.Adam([w])
    assert "use backend=None" not in str(e.value)
    with pytest.raises(ValueError, match=r"made with backend='cuda', which updates CUDA tensors; "
                                         r"use backend=None"):
        fdt.Adam([w], backend="cuda")
