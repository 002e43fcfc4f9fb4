"""fastdescent.torch's step fast path (``Optimizer._fd_fast``) and the placement of large state buffers.

Fast path: once a step has checked the parameters,
gradients and state one by one, the next steps compare them with what was checked in a few C-level
passes (a metadata guard over the parameters and gradients, their addresses, the state's identity).
Every change between steps must still be seen exactly as the full path sees it: each case warms the
fast path up (and checks that it is taken), changes one thing, and compares the step with torch.optim's
for-loop implementation or with the refusal the full path gives (parameters and state untouched).

State placement (``_state_like``): a large state buffer starts at another offset within a page than
its parameter; it is still an ordinary tensor of the parameter's shape and strides.
"""

from __future__ import annotations

import gc
import weakref

import pytest

torch = pytest.importorskip("torch")

import fastdescent.torch as fdt  # noqa: E402
import _torch_pairs as _pairs  # noqa: E402
from _torch_pairs import close, snapshot, unchanged  # noqa: E402
from fastdescent.torch import _guard  # noqa: E402
from fastdescent.torch._optimizer import (  # noqa: E402
    _GUARD_TRIES,
    _HUGE_MIN,
    _PAGE,
    _STAGGER_MIN,
    Optimizer,
    _stagger_step,
    _state_like,
)

WARM = 3  # steps before a change: the first checks one by one, the next ones take the fast path


@pytest.fixture
def fast_hits(monkeypatch):
    """A list that gets True for each step the fast path served, False for each it passed on."""
    hits = []
    real = Optimizer._fd_fast

    def spy(self, *args):
        out = real(self, *args)
        hits.append(out is not None)
        return out
    monkeypatch.setattr(Optimizer, "_fd_fast", spy)
    return hits


def pair(cls_name, shape=(4, 5), n=2, seed=0, **hp):
    return _pairs.pair(cls_name, shape, n, seed, **hp)


def warm(opt, topt, ps, qs, hits, steps=WARM, seed=1):
    """``steps`` steps with fresh gradients (the same values for both), the last ones on the fast
    path."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p, q in zip(ps, qs):
            v = torch.randn(p.shape, generator=g)
            p.grad, q.grad = v.clone(), v.clone()
        opt.step()
        if topt is not None:
            topt.step()
    if topt is not None:
        close(ps, qs)
    assert hits[-(steps - 1):] == [True] * (steps - 1), hits
    hits.clear()


def both_step(opt, topt, ps, qs):
    opt.step()
    topt.step()
    close(ps, qs)


def test_the_guard_is_usable_with_this_torch():
    """Without it every step takes the full path (correct, several times slower): a torch upgrade
    that breaks it must be noticed."""
    assert _guard.available()


def test_fast_path_serves_fresh_gradients_and_keeps_no_reference(fast_hits):
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    warm(opt, topt, ps, qs, fast_hits)
    sets = [[torch.randn(4, 5) for _ in ps] for _ in range(3)]
    for k in range(9):  # three gradient sets by turns, then new tensors: the address cache
        gs = sets[k % 3] if k < 6 else [torch.randn(4, 5) for _ in ps]
        for p, q, g in zip(ps, qs, gs):
            p.grad, q.grad = g, g.clone()
        both_step(opt, topt, ps, qs)
    assert fast_hits == [True] * 9
    g = torch.randn(4, 5)
    ref = weakref.ref(g)
    ps[0].grad = g
    opt.step()
    del g
    ps[0].grad = None
    gc.collect()
    assert ref() is None  # (neither the guard nor the address cache keeps a gradient alive)


def test_gradient_replaced_through_data_by_another_shape_is_refused(fast_hits):
    ps, qs, opt, topt = pair("Adam")
    warm(opt, topt, ps, qs, fast_hits)
    snap = snapshot(opt, ps)
    ps[0].grad.data = torch.ones(20)  # the same gradient object, the same number of elements
    with pytest.raises(ValueError, match=r"params\[0\]\.grad has shape \(20,\), the parameter "
                                         r"\(4, 5\)"):
        opt.step()
    unchanged(opt, ps, snap)
    assert fast_hits == [False]


@pytest.mark.parametrize("change", ["transposed", "negated", "zero", "float64", "sparse",
                                    "requires_grad", "parameter"])
def test_gradient_of_another_kind_at_the_same_place(change, fast_hits):
    """A gradient whose layout or kind changes between steps is read as torch reads it (copied), or
    refused as before."""
    ps, qs, opt, topt = pair("SGD", lr=0.1, momentum=0.9)
    warm(opt, topt, ps, qs, fast_hits)
    v = torch.arange(20.0).reshape(4, 5)
    if change == "transposed":
        new = [v.t().contiguous().t(), v.t().contiguous().t()]
    elif change == "negated":
        new = [torch._neg_view(v.clone()), torch._neg_view(v.clone())]
    elif change == "zero":
        new = [torch._efficientzerotensor((4, 5)), torch._efficientzerotensor((4, 5))]
    elif change == "requires_grad":
        new = [v.clone().requires_grad_(), v.clone().requires_grad_()]
    elif change == "parameter":
        new = [torch.nn.Parameter(v.clone()), torch.nn.Parameter(v.clone())]
    elif change == "float64":
        ps[1].grad.data = v.double()  # (the same gradient object: torch checks the dtype of a new one)
        snap = snapshot(opt, ps)
        with pytest.raises(TypeError, match=r"params\[1\]\.grad has dtype torch\.float64"):
            opt.step()
        unchanged(opt, ps, snap)
        return
    else:
        ps[1].grad = v.to_sparse()
        snap = snapshot(opt, ps)
        with pytest.raises(RuntimeError, match="does not support sparse gradients"):
            opt.step()
        unchanged(opt, ps, snap)
        return
    ps[1].grad, qs[1].grad = new
    both_step(opt, topt, ps, qs)
    assert fast_hits == [False]
    for p, q in zip(ps, qs):  # and back to plain gradients
        p.grad, q.grad = torch.ones(4, 5), torch.ones(4, 5)
    both_step(opt, topt, ps, qs)
    both_step(opt, topt, ps, qs)


def test_gradient_at_an_address_the_step_writes(fast_hits):
    """Gradients that are a parameter or a state tensor (their addresses were never checked
    against what the step writes): copied before the step, as on the full path."""
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    warm(opt, topt, ps, qs, fast_hits)
    ps[0].grad, qs[0].grad = ps[1].data, qs[1].data
    both_step(opt, topt, ps, qs)
    ps[0].grad, qs[0].grad = opt.state[ps[0]]["exp_avg"], topt.state[qs[0]]["exp_avg"]
    ps[1].grad, qs[1].grad = ps[1].data, qs[1].data
    both_step(opt, topt, ps, qs)
    assert fast_hits == [False, False]


def test_address_reused_by_a_new_gradient_is_read_anew(fast_hits):
    """A gradient freed and a new one allocated (often at the same address, which the fast path has
    checked before): the step reads the new values."""
    ps, qs, opt, topt = pair("Adam", shape=(1000,), lr=0.1)
    warm(opt, topt, ps, qs, fast_hits)
    g = torch.Generator().manual_seed(5)
    for _ in range(6):
        for p, q in zip(ps, qs):
            p.grad = None
            v = torch.randn(1000, generator=g)
            p.grad, q.grad = v, v.clone()
        both_step(opt, topt, ps, qs)
    assert fast_hits == [True] * 6


@pytest.mark.parametrize("how", ["data_slice", "set_", "view", "transpose"])
def test_parameter_resized_in_place_after_fast_steps(how, fast_hits):
    """A parameter whose shape or strides change in place (memory unmoved): Adam's state no longer
    fits and the step refuses it, nothing written; SGD without state follows it as torch does."""
    ps, qs, opt, topt = pair("Adam", shape=(4, 4))
    warm(opt, topt, ps, qs, fast_hits)
    snap = snapshot(opt, ps)
    old = ps[0].data
    if how == "data_slice":
        ps[0].data = old.reshape(-1)[:2]
    elif how == "set_":
        with torch.no_grad():
            ps[0].set_(old.untyped_storage(), 0, (2, 8), (8, 1))
    elif how == "view":
        ps[0].data = old.view(2, 8)
    else:
        ps[0].data = old.t()
    assert ps[0].data_ptr() == old.data_ptr()
    ps[0].grad = torch.ones_like(ps[0])
    ps[1].grad = torch.ones(4, 4)
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] does not match params\[0\]"):
        opt.step()
    with torch.no_grad():
        ps[0].set_(old.untyped_storage(), 0, (4, 4), (4, 1))
    unchanged(opt, ps, snap)
    assert fast_hits == [False]
    ps, qs, opt, topt = pair("SGD", shape=(1000,), lr=1.0)
    warm(opt, topt, ps, qs, fast_hits)
    full = ps[0].data
    tail = full[2:].clone()
    for p in ps[:1] + qs[:1]:
        p.data = p.data[:2]
        p.grad = torch.full((2,), 5.0)
    both_step(opt, topt, ps, qs)
    assert torch.equal(full[2:], tail)  # nothing read or written past the new extent
    assert fast_hits == [False]


def test_parameter_moved_to_new_memory_is_followed(fast_hits):
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    warm(opt, topt, ps, qs, fast_hits)
    for p, q in ((ps[1], qs[1]), ):
        p.data = p.data.clone()  # same shape and strides, other memory
        q.data = q.data.clone()
    for p, q in zip(ps, qs):
        p.grad, q.grad = torch.ones(4, 5), torch.ones(4, 5)
    both_step(opt, topt, ps, qs)
    both_step(opt, topt, ps, qs)
    assert fast_hits == [False, True]


def test_state_tensor_moved_replaced_or_resized_after_fast_steps(fast_hits):
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    warm(opt, topt, ps, qs, fast_hits)
    # .data = ... (same shape, other memory): followed, as torch
    for o, p in ((opt, ps[0]), (topt, qs[0])):
        o.state[p]["exp_avg"].data = torch.full((4, 5), 0.5)
    both_step(opt, topt, ps, qs)
    # the entry replaced by another tensor (equal values): the new one is updated
    for o, p in ((opt, ps[1]), (topt, qs[1])):
        o.state[p]["exp_avg_sq"] = o.state[p]["exp_avg_sq"].clone()
    both_step(opt, topt, ps, qs)
    torch.testing.assert_close(opt.state[ps[1]]["exp_avg_sq"], topt.state[qs[1]]["exp_avg_sq"])
    # the storage grown in place (its memory moves, shape unchanged): followed
    both_step(opt, topt, ps, qs)
    for o, p in ((opt, ps[1]), (topt, qs[1])):
        st = o.state[p]["exp_avg"].untyped_storage()
        st.resize_(st.nbytes() * 4)
    both_step(opt, topt, ps, qs)
    # step tensor replaced by another with the same value: the new one counts on
    both_step(opt, topt, ps, qs)
    for o, p in ((opt, ps[0]), (topt, qs[0])):
        o.state[p]["step"] = o.state[p]["step"].clone()
    both_step(opt, topt, ps, qs)
    both_step(opt, topt, ps, qs)
    assert float(opt.state[ps[0]]["step"]) == float(topt.state[qs[0]]["step"]) == WARM + 7
    assert fast_hits == [False, False, True, False, True, False, True], fast_hits
    # resized: refused, as on the full path
    snap = snapshot(opt, ps)
    buf = opt.state[ps[0]]["exp_avg_sq"]
    buf.resize_(10 ** 5)
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg_sq'\] does not match"):
        opt.step()
    opt.state[ps[0]]["exp_avg_sq"] = snap[0][1]["exp_avg_sq"].clone()
    unchanged(opt, ps, snap)


def test_state_shared_or_step_edited_after_fast_steps(fast_hits):
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    warm(opt, topt, ps, qs, fast_hits)
    snap = snapshot(opt, ps)
    opt.state[ps[1]]["exp_avg"] = opt.state[ps[0]]["exp_avg"]
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] and state\[1\]\['exp_avg'\] "
                                         "share memory"):
        opt.step()
    opt.state[ps[1]]["exp_avg"] = snap[1][1]["exp_avg"].clone()
    unchanged(opt, ps, snap)
    for bad in (2.5, -3.0):
        opt.state[ps[0]]["step"].fill_(bad)
        with pytest.raises(ValueError, match=r"state\[0\]\['step'\] must be a non-negative "
                                             "integer"):
            opt.step()
        opt.state[ps[0]]["step"].fill_(float(WARM))
        unchanged(opt, ps, snap)
    both_step(opt, topt, ps, qs)
    for o, p in ((opt, ps[0]), (topt, qs[0])):  # a valid count: the step goes on from it
        o.state[p]["step"].fill_(1.0)
    both_step(opt, topt, ps, qs)
    both_step(opt, topt, ps, qs)
    assert float(opt.state[ps[0]]["step"]) == 3
    assert fast_hits == [False, False, False, False, False, True], fast_hits


def test_none_gradients_and_new_parameters_after_fast_steps(fast_hits):
    ps, qs, opt, topt = pair("RMSprop", n=3, lr=0.01, momentum=0.5)
    warm(opt, topt, ps, qs, fast_hits)
    ps[1].grad = qs[1].grad = None  # skipped: its state and step count unchanged
    both_step(opt, topt, ps, qs)
    both_step(opt, topt, ps, qs)
    assert float(opt.state[ps[1]]["step"]) == WARM
    ps[1].grad, qs[1].grad = torch.ones(4, 5), torch.ones(4, 5)
    both_step(opt, topt, ps, qs)
    extra, textra = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt.add_param_group({"params": [extra], "lr": 0.1})
    topt.add_param_group({"params": [textra], "lr": 0.1})
    extra.grad, textra.grad = torch.ones(3), torch.ones(3)
    both_step(opt, topt, ps + [extra], qs + [textra])
    both_step(opt, topt, ps + [extra], qs + [textra])
    assert fast_hits == [False, True, False, True], fast_hits  # (add_param_group: a new plan)
    opt.param_groups[0]["params"].append(ps[0])  # edited in, behind add_param_group's back
    snap = snapshot(opt, ps)
    with pytest.raises(ValueError, match="more than once"):
        opt.step()
    unchanged(opt, ps, snap)


def test_options_and_lr_changed_between_fast_steps(fast_hits):
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    warm(opt, topt, ps, qs, fast_hits)
    for o in (opt, topt):
        o.param_groups[0]["lr"] = 0.01
    both_step(opt, topt, ps, qs)
    for o in (opt, topt):
        o.param_groups[0]["amsgrad"] = True  # fastdescent gives it a fresh buffer (torch: KeyError)
    opt.step()
    assert "max_exp_avg_sq" in opt.state[ps[0]]
    assert fast_hits == [True, False]


def test_gradients_whose_kind_alternates_every_step(fast_hits):
    """Gradients that fail the recorded guard every other step (requires_grad on, then off): each
    failure re-records it, a few times, then the plan stops recording; every step is right."""
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    warm(opt, topt, ps, qs, fast_hits)
    g = torch.Generator().manual_seed(2)
    for k in range(2 * _GUARD_TRIES + 4):
        for p, q in zip(ps, qs):
            v = torch.randn(4, 5, generator=g)
            p.grad, q.grad = v.clone().requires_grad_(k % 2 == 0), v
        both_step(opt, topt, ps, qs)
    assert opt._fd_plan.guard_tries == _GUARD_TRIES
    assert fast_hits.count(False) >= _GUARD_TRIES


def test_without_the_guard_every_step_takes_the_full_path(monkeypatch, fast_hits):
    monkeypatch.setattr("fastdescent.torch._optimizer.tensor_guard", lambda ts: None)
    ps, qs, opt, topt = pair("Adam", lr=0.1)
    for _ in range(4):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(4, 5)
            q.grad = p.grad.clone()
        both_step(opt, topt, ps, qs)
    assert fast_hits == []  # (no guard recorded: _fd_fast is never asked)


def test_step_hooks_profiler_and_subclass_step():
    """The step keeps torch's wrapper semantics: hooks (the optimizer's and global ones) run once
    per step, the profiler sees the step's range, a subclass's own step is wrapped too."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    p = torch.nn.Parameter(torch.ones(3))
    opt = fdt.SGD([p], lr=0.1)
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, a, kw: calls.append("pre"))
    h2 = register_optimizer_step_post_hook(lambda o, a, kw: calls.append("global post"))
    try:
        p.grad = torch.ones(3)
        opt.step()
        assert calls == ["pre", "global post"]
    finally:
        h1.remove()
        h2.remove()
    opt.step()
    assert calls == ["pre", "global post"]
    with torch.profiler.profile() as prof:
        opt.step()
    assert "Optimizer.step#SGD.step" in {e.name for e in prof.events()}

    seen = {}
    for base in (fdt.SGD, torch.optim.SGD):  # (torch.optim.SGD instantiated before, like fdt.SGD)
        torch.optim.SGD([torch.nn.Parameter(torch.ones(1))])

        class Mine(base):
            def step(self, closure=None):
                calls.append("mine")
                return super().step(closure)

        q = torch.nn.Parameter(torch.ones(3))
        mine = Mine([q], lr=0.5)
        mine.register_step_post_hook(lambda o, a, kw: calls.append("post"))
        q.grad = torch.ones(3)
        calls.clear()
        mine.step()
        seen[base.__name__ if base is fdt.SGD else "torch"] = list(calls)
        assert torch.allclose(q.detach(), torch.full((3,), 0.5))
    assert seen["SGD"] == seen["torch"] and seen["SGD"][0] == "mine", seen


@pytest.mark.parametrize("cls_name, hp, names", [
    ("Adam", dict(lr=0.01, amsgrad=True), ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True),
     ("square_avg", "grad_avg", "momentum_buffer")),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.25), ("sum",)),
])
def test_large_state_buffers_are_staggered_and_ordinary(cls_name, hp, names, tmp_path):
    """Large buffers (a channels-last conv weight, a vector) get p's shape and strides, their initial
    value, and start at another offset within a page than p and than each other; trajectories,
    torch.save and loading into torch.optim are as for any tensor."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, 3, 3, generator=g).to(memory_format=torch.channels_last)
    shapes = [w, torch.randn(_STAGGER_MIN, generator=g), torch.randn(7, generator=g)]
    ps = [torch.nn.Parameter(t.clone()) for t in shapes]
    qs = [torch.nn.Parameter(t.clone()) for t in shapes]
    assert not ps[0].is_contiguous() and ps[0].is_contiguous(memory_format=torch.channels_last)
    opt, topt = getattr(fdt, cls_name)(ps, **hp), getattr(torch.optim, cls_name)(qs, foreach=False,
                                                                               **hp)
    for _ in range(3):
        for p, q in zip(ps, qs):
            v = torch.randn(p.shape, generator=g).to(memory_format=torch.channels_last
                                                     if p.dim() == 4 else torch.contiguous_format)
            p.grad, q.grad = v, v.clone()
        both_step(opt, topt, ps, qs)
    for p, q in zip(ps, qs):
        for nm in names:
            a, b = opt.state[p][nm], topt.state[q][nm]
            assert a.shape == p.shape and a.stride() == p.stride() and a.dtype == p.dtype, nm
            torch.testing.assert_close(a, b)
    rule_names = opt.rule.all_state
    step = _stagger_step(len(rule_names) + 1)
    for p in ps[:2]:  # (the small one is allocated as torch allocates it)
        for nm in names:
            k = rule_names.index(nm) + 1
            assert (opt.state[p][nm].data_ptr() - p.data_ptr()) % _PAGE == k * step, nm
    fresh = getattr(fdt, cls_name)([torch.nn.Parameter(torch.zeros(_STAGGER_MIN))], **hp)
    if cls_name == "Adagrad":  # (its state exists from the constructor: filled with the init value)
        st = fresh.state[fresh.param_groups[0]["params"][0]]["sum"]
        assert torch.equal(st, torch.full((_STAGGER_MIN,), 0.25))
    path = tmp_path / "opt.pt"
    torch.save(opt.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    rs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    ropt = getattr(torch.optim, cls_name)(rs, foreach=False, **hp)
    ropt.load_state_dict(sd)
    for p, q, r in zip(ps, qs, rs):
        p.grad = torch.ones_like(p)
        q.grad, r.grad = p.grad.clone(), p.grad.clone()
    opt.step()
    ropt.step()
    close(ps, rs)


def test_large_state_resized_is_refused_as_before():
    p = torch.nn.Parameter(torch.ones(_STAGGER_MIN))
    opt = fdt.Adam([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    opt.step()
    snap = snapshot(opt, [p])
    buf = opt.state[p]["exp_avg_sq"]
    buf.resize_(3 * _STAGGER_MIN)  # (its storage grows: the memory moves)
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg_sq'\] does not match"):
        opt.step()
    opt.state[p]["exp_avg_sq"] = snap[0][1]["exp_avg_sq"].clone()
    unchanged(opt, [p], snap)


def _huge_kib(addr):
    """AnonHugePages (KiB) of the mapping holding ``addr`` (/proc/self/smaps), None if not found."""
    found = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                found = lo <= addr < hi
            elif found and head == "AnonHugePages:":
                return int(line.split()[1])
    return None


def _thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")] if "[" in text else None


@pytest.mark.skipif(_thp_mode() not in ("madvise", "always"),
                    reason="transparent huge pages are off (or not Linux) here")
def test_large_state_buffers_ask_for_huge_pages():
    """A state buffer of at least _HUGE_MIN bytes is advised onto transparent huge pages: madvise
    (MADV_HUGEPAGE) over the whole 2 MiB pages inside it, before its first touch. Whether the
    kernel grants them depends on the machine's memory fragmentation (a full-suite run here once got
    none), so the pages themselves are only reported, not asserted."""
    from fastdescent.torch import _optimizer as O

    O._advise_huge(0, 0)  # (looks libc's madvise up once)
    real = O._MADVISE[0]
    if real is None:
        pytest.skip("no madvise in this libc")
    calls = []

    def record(addr, length, advice):
        calls.append((addr, length, advice))
        return real(addr, length, advice)

    O._MADVISE[0] = record
    try:
        p = torch.nn.Parameter(torch.zeros(4 * _HUGE_MIN // 4))  # 16 MiB of float32
        opt = fdt.Adam([p], lr=0.1)
        p.grad = torch.ones_like(p)
        opt.step()
    finally:
        O._MADVISE[0] = real
    for name in ("exp_avg", "exp_avg_sq"):
        buf = opt.state[p][name]
        mid = buf.data_ptr() + buf.numel() * 2
        assert any(a <= mid < a + n and a % (2 << 20) == 0 and n % (2 << 20) == 0 and adv == 14
                   for a, n, adv in calls), (name, calls)
    kib = _huge_kib(opt.state[p]["exp_avg"].data_ptr() + p.numel() * 2)
    print(f"AnonHugePages of the exp_avg mapping: {kib} KiB")


def test_state_like_takes_any_layout():
    """A parameter that is not dense (made so after the checks, e.g. before a load_state_dict) gets
    a buffer as torch.zeros_like makes it; small and dense ones as described."""
    big = torch.ones(64, 2 * _STAGGER_MIN // 64)
    for t in (big[:, ::2], big.t(), big[:1], torch.ones(3)):
        out = _state_like(t, torch.float32, 1, 4)
        ref = torch.zeros_like(t)
        assert out.shape == t.shape and out.stride() == ref.stride() and not out.any()
