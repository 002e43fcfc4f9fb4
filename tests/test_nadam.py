"""NAdam beyond the generic suites: the scalar state ``mu_product`` (it follows beta1's history, is
kept per bucket, exported, validated and restored), torch state_dicts both ways mid-run, torch's
float32 ``mu_product`` under its default dtype, and hostile input."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

import fastdescent as fd
from conftest import HOST_BACKENDS, require_backend
from fastdescent import functional as F
from fastdescent.optim import lr_scheduler as fd_sched
from reference import RefOptimizer, assert_close

SHAPES = [(4, 3), (), (5,), (2, 1, 2)]
HP = dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05, momentum_decay=0.3)


def data(seed, dtype, steps=8, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return init, grads


# ------------------------------------------------------------------------------ torch
torch = None


def _torch():
    global torch
    torch = pytest.importorskip("torch")
    return torch


@contextlib.contextmanager
def torch_default(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def tparams_of(arrays):
    return [torch.nn.Parameter(torch.tensor(a)) for a in arrays]


def tstep(topt, tparams, gs):
    for p, g in zip(tparams, gs):
        p.grad = None if g is None else torch.tensor(g)
    topt.step()


def check(params, tparams, what, rtol=None):
    for j, (p, tp) in enumerate(zip(params, tparams)):
        if rtol is None:
            assert_close(p, tp.detach().numpy(), what=f"{what}: params[{j}]")
        else:
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=rtol, atol=rtol,
                                       err_msg=f"{what}: params[{j}]")


def to_torch_state_dict(sd):
    """Our state_dict with arrays as tensors (what torch.save/torch.load of it would give)."""
    return {"state": {i: {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v)
                          for k, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_beta1_schedule_matches_torch(backend, dtype):
    """OneCycleLR cycles betas[0] every step: mu_product is a product over that history, so our
    stored mu_product (and the parameters) must follow torch's, not a closed form in t."""
    require_backend(backend)
    _torch()
    init, grads = data(1, np.dtype(dtype), steps=10)
    params = [a.copy() for a in init]
    opt = fd.NAdam(params, backend=backend, **HP)
    sched = fd_sched.OneCycleLR(opt, max_lr=0.05, total_steps=12, base_momentum=0.5,
                                max_momentum=0.9)
    with torch_default(torch.float64), torch.no_grad():
        tparams = tparams_of(init)
        topt = torch.optim.NAdam(tparams, foreach=False, **HP)
        tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.05, total_steps=12,
                                                     base_momentum=0.5, max_momentum=0.9)
        betas_seen = set()
        for k, gs in enumerate(grads):
            opt.step(gs)
            tstep(topt, tparams, gs)
            sched.step()
            tsched.step()
            betas_seen.add(opt.param_groups[0]["betas"][0])
            assert opt.param_groups[0]["betas"] == pytest.approx(topt.param_groups[0]["betas"])
            check(params, tparams, f"step {k + 1}")
            for i, p in enumerate(tparams):
                assert opt.state[i]["mu_product"] == pytest.approx(
                    float(topt.state[p]["mu_product"]), rel=1e-14), f"step {k + 1}: mu_product[{i}]"
    assert len(betas_seen) > 5  # beta1 did change along the run


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_state_dict_to_torch_mid_run(backend, dtype):
    """Our state_dict (mu_product a float, step an int) loads into torch.optim.NAdam mid-run and
    both go on identically; then torch's state_dict comes back into a fresh fastdescent NAdam."""
    require_backend(backend)
    _torch()
    init, grads = data(2, np.dtype(dtype), steps=9)
    params = [a.copy() for a in init]
    opt = fd.NAdam(params, backend=backend, decoupled_weight_decay=True, **HP)
    with torch_default(torch.float64), torch.no_grad():
        for gs in grads[:3]:
            opt.step(gs)
        tparams = tparams_of(params)
        topt = torch.optim.NAdam(tparams, foreach=False, **HP)
        topt.load_state_dict(to_torch_state_dict(opt.state_dict()))
        for i, p in enumerate(tparams):
            assert float(topt.state[p]["mu_product"]) == opt.state[i]["mu_product"]
            assert int(topt.state[p]["step"]) == 3
        assert topt.param_groups[0]["decoupled_weight_decay"] is True
        for k, gs in enumerate(grads[3:6]):
            opt.step(gs)
            tstep(topt, tparams, gs)
            check(params, tparams, f"step {k + 4}")
        # and back: torch's state_dict into a fresh optimizer over fresh arrays
        params2 = [p.detach().numpy().copy() for p in tparams]
        opt2 = fd.NAdam(params2, backend=backend, **HP)
        opt2.load_state_dict(topt.state_dict())
        assert opt2.param_groups[0]["decoupled_weight_decay"] is True
        for i in range(len(params2)):
            assert opt2.state[i]["mu_product"] == opt.state[i]["mu_product"]
        for k, gs in enumerate(grads[6:]):
            opt2.step(gs)
            tstep(topt, tparams, gs)
            check(params2, tparams, f"step {k + 7}")


def test_torch_default_float32_mu_product():
    """Under torch's default dtype (float32) torch keeps mu_product in float32 whatever the
    parameters' dtype; we keep it in float64. float32 runs agree within the contract's float32
    tolerance; float64 runs only to ~1e-8 relative (documented), not to float64 precision."""
    _torch()
    assert torch.get_default_dtype() == torch.float32
    for dtype, rtol in (("float32", None), ("float64", 1e-7)):
        init, grads = data(3, np.dtype(dtype), steps=10)
        params = [a.copy() for a in init]
        opt = fd.NAdam(params, backend="numpy", **HP)
        tparams = tparams_of(init)
        topt = torch.optim.NAdam(tparams, foreach=False, **HP)
        with torch.no_grad():
            for k, gs in enumerate(grads):
                opt.step(gs)
                tstep(topt, tparams, gs)
                check(params, tparams, f"{dtype} step {k + 1}", rtol=rtol)
        assert topt.state[tparams[0]]["mu_product"].dtype == torch.float32
    # the float64 difference is real (so the documented caveat is not vacuous)
    diffs = [np.max(np.abs(p - tp.detach().numpy())) for p, tp in zip(params, tparams)]
    assert max(diffs) > 1e-13


# ------------------------------------------------------------------------------ scalar state
def test_mu_product_is_a_float_per_parameter_and_follows_the_rule():
    w = [np.zeros(3), np.zeros(2, np.float32)]
    opt = fd.NAdam(w, backend="numpy", momentum_decay=0.01)
    expected = 1.0
    for t in range(1, 5):
        opt.step([np.ones(3), np.ones(2, np.float32)])
        expected *= 0.9 * (1.0 - 0.5 * 0.96 ** (t * 0.01))
        for i in range(2):
            assert type(opt.state[i]["mu_product"]) is float
            assert opt.state[i]["mu_product"] == expected  # float64, torch's expression
    sd = opt.state_dict()
    assert sd["state"][0]["mu_product"] == expected and sd["state"][1]["mu_product"] == expected


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_different_mu_products_never_share_a_bucket(backend):
    """Two parameters at the same step with different mu_product (loaded) go on with their own
    values: each agrees with an optimizer that holds that parameter alone."""
    require_backend(backend)
    init, grads = data(4, np.float64, steps=3, shapes=[(5,), (5,), (3,)])
    params = [a.copy() for a in init]
    opt = fd.NAdam(params, backend=backend, **HP)
    opt.step(grads[0])
    sd = opt.state_dict()
    sd["state"][1]["mu_product"] = 0.125  # as if params[1] had another beta1 history
    opt.load_state_dict(sd)
    for gs in grads[1:]:
        opt.step(gs)
    groups = {(b.step, tuple(sorted(b.sstate.items()))) for b in opt._buckets}
    assert len(opt._buckets) == 2 and len(groups) == 2
    for j in range(3):
        alone = [init[j].copy()]
        o = fd.NAdam(alone, backend=backend, **HP)
        o.step([grads[0][j]])
        s = o.state_dict()
        if j == 1:
            s["state"][0]["mu_product"] = 0.125
        o.load_state_dict(s)
        for gs in grads[1:]:
            o.step([gs[j]])
        np.testing.assert_array_equal(params[j], alone[0])
        assert opt.state[j]["mu_product"] == o.state[0]["mu_product"]
    assert opt.state[1]["mu_product"] != opt.state[0]["mu_product"]


def test_skipped_step_and_errors_leave_mu_product_alone():
    w = [np.ones(3, np.float32)]
    ones = [np.ones(3, np.float32)]
    opt = fd.NAdam(w, backend="numpy", skip_nonfinite=True)
    opt.step(ones)
    mp, before = opt.state[0]["mu_product"], w[0].copy()
    assert opt.step([np.array([1.0, np.nan, 1.0], np.float32)]) is False  # skipped
    assert opt.state[0]["mu_product"] == mp and opt.state[0]["step"] == 1
    opt.param_groups[0]["momentum_decay"] = -1.0  # refused by the step, before any change
    with pytest.raises(ValueError, match="momentum_decay"):
        opt.step(ones)
    opt.param_groups[0]["momentum_decay"] = 4e-3
    opt.param_groups[0]["lr"] = 1e42  # a kernel scalar overflows float32: refused, no change
    with pytest.raises(ValueError, match="step_size_.* overflows float32"):
        opt.step(ones)
    assert opt.state[0]["mu_product"] == mp and opt.state[0]["step"] == 1
    np.testing.assert_array_equal(w[0], before)
    opt.param_groups[0]["lr"] = 2e-3
    opt.step(ones)
    assert opt.state[0]["mu_product"] == mp * (0.9 * (1 - 0.5 * 0.96 ** (2 * 4e-3)))


def test_none_gradient_keeps_mu_product():
    w = [np.ones(2), np.ones(2)]
    opt = fd.NAdam(w, backend="numpy")
    opt.step([np.ones(2), np.ones(2)])
    mp = opt.state[1]["mu_product"]
    opt.step([np.ones(2), None])
    assert opt.state[1]["mu_product"] == mp and opt.state[1]["step"] == 1
    assert opt.state[0]["mu_product"] != mp and opt.state[0]["step"] == 2
    opt.step([np.ones(2), np.ones(2)])  # params[1] takes its second step with its own history
    ref = RefOptimizer("nadam", [dict(params=[np.ones(2)])])
    ref.step([np.ones(2)])
    ref.step([np.ones(2)])
    assert opt.state[1]["mu_product"] == ref.state[0]["mu_product"]
    assert_close(w[1], ref.param(0))


BAD_MU = [
    (math.nan, ValueError), (math.inf, ValueError), (-0.1, ValueError), (1.5, ValueError),
    ("0.5", ValueError), (None, ValueError), (np.array([0.1, 0.2]), ValueError),
]


@pytest.mark.parametrize("value,exc", BAD_MU, ids=lambda v: repr(v)[:20])
def test_load_state_dict_validates_mu_product(value, exc):
    w = [np.ones(3), np.ones(2)]
    opt = fd.NAdam(w, backend="numpy")
    opt.step([np.ones(3), np.ones(2)])
    good = opt.state_dict()
    sd = opt.state_dict()
    sd["state"][1]["mu_product"] = value
    with pytest.raises(exc) as ei:
        opt.load_state_dict(sd)
    assert "mu_product" in str(ei.value) and "state'][1]" in str(ei.value)
    now = opt.state_dict()
    assert now["state"][1]["mu_product"] == good["state"][1]["mu_product"]
    np.testing.assert_array_equal(now["state"][1]["exp_avg"], good["state"][1]["exp_avg"])


def test_load_state_dict_needs_mu_product_and_accepts_torch_forms():
    w = [np.ones(3)]
    opt = fd.NAdam(w, backend="numpy")
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    del sd["state"][0]["mu_product"]
    with pytest.raises(ValueError, match="mu_product"):
        opt.load_state_dict(sd)
    for form in (np.float32(0.25), np.array(0.25), 0.25, 1):  # NumPy scalars, 0-d arrays, ints
        sd = opt.state_dict()
        sd["state"][0]["mu_product"] = form
        opt.load_state_dict(sd)
        assert type(opt.state[0]["mu_product"]) is float
        assert opt.state[0]["mu_product"] == float(form)
    # another optimizer's state_dict entry named mu_product is refused by Adam
    adam = fd.Adam([np.ones(3)], backend="numpy")
    adam.step([np.ones(3)])
    sd = adam.state_dict()
    sd["state"][0]["mu_product"] = 0.5
    with pytest.raises(ValueError, match="mu_product"):
        adam.load_state_dict(sd)


def test_checkpoint_keeps_mu_product_exactly(tmp_path):
    w = [np.ones(3, np.float32), np.ones((2, 2))]
    opt = fd.NAdam(w, backend="numpy")
    for _ in range(3):
        opt.step([np.ones(3, np.float32), np.ones((2, 2))])
    path = tmp_path / "nadam.ckpt"
    fd.save_checkpoint(path, optimizer=opt)
    fresh = fd.NAdam([np.ones(3, np.float32), np.ones((2, 2))], backend="numpy")
    fd.load_checkpoint(path, optimizer=fresh)
    for i in range(2):
        assert fresh.state[i]["mu_product"] == opt.state[i]["mu_product"]
        assert type(fresh.state[i]["mu_product"]) is float
    # an Adam cannot take a checkpoint that carries mu_product
    with pytest.raises(fd.CheckpointError):
        fd.load_checkpoint(path, optimizer=fd.Adam([np.ones(3, np.float32), np.ones((2, 2))]))


# ------------------------------------------------------------------------------ hostile input
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_nan_gradient_propagates_like_torch(backend):
    """IEEE arithmetic (torch's behaviour): a NaN gradient element makes that parameter element
    NaN; the other elements and mu_product go on normally."""
    require_backend(backend)
    w = [np.ones(4)]
    opt = fd.NAdam(w, backend=backend)
    opt.step([np.array([1.0, np.nan, -1.0, 0.5])])
    assert np.isnan(w[0][1]) and np.isfinite(w[0][[0, 2, 3]]).all()
    assert opt.state[0]["mu_product"] == 0.9 * (1 - 0.5 * 0.96 ** 4e-3)


def test_grad_aliasing_state_is_refused():
    w = [np.ones(3)]
    opt = fd.NAdam(w, backend="numpy")
    opt.step([np.ones(3)])
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory"):
        opt.step([opt.state[0]["exp_avg"]])
    after = opt.state_dict()
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])
    assert after["state"][0]["mu_product"] == before["state"][0]["mu_product"]


# ------------------------------------------------------------------------------ functional API
def test_functional_returns_the_next_mu_product_and_validates_it():
    p, g = [np.ones(3)], [np.ones(3)]
    m, v = [np.zeros(3)], [np.zeros(3)]
    mp = 1.0
    for t in (1, 2, 3):
        mp = F.nadam(p, g, m, v, step=t, mu_product=mp, backend="numpy")
    w = [np.ones(3)]
    opt = fd.NAdam(w, backend="numpy")
    for _ in range(3):
        opt.step([np.ones(3)])
    assert mp == opt.state[0]["mu_product"]
    np.testing.assert_array_equal(p[0], w[0])
    before = p[0].copy()
    for bad in (math.nan, -1.0, 2.0, "x"):
        with pytest.raises((ValueError, TypeError), match="mu_product"):
            F.nadam(p, g, m, v, step=4, mu_product=bad, backend="numpy")
    np.testing.assert_array_equal(p[0], before)


def test_flat_bucket_protocol_advances_mu_product():
    """A kernel driven through Optimizer.coalesced() (the fused-step protocol: scalars(), the
    kernel on the flat blocks, advance()) gets the bucket's mu_product and advances it, so it
    agrees with plain steps."""
    shapes = [(4, 3), (5,), ()]
    arena = fd.ParamArena(shapes, np.float64)
    twin = [np.zeros(s) for s in shapes]
    rng = np.random.default_rng(9)
    for a, b in zip(arena.params, twin):
        a[...] = b[...] = rng.standard_normal(b.shape)
    opt = fd.NAdam(arena, backend="numpy", **HP)
    ref = fd.NAdam(twin, backend="numpy", **HP)
    mod = fd.get_backend("numpy")
    for k in range(4):
        gs = [rng.standard_normal(s) for s in shapes]
        for dst, src in zip(arena.grads, gs):
            dst[...] = src
        fb = opt.coalesced()
        assert fb is not None and fb.current()
        tab = mod.Table(fb.dtype, [fb.param.size])
        tab.set("param", [fb.param]).set("grad", [fb.grad])
        for name, block in fb.state.items():
            tab.set(name, [block])
        mod.KERNELS["nadam"](tab, **fb.scalars())
        fb.advance()
        ref.step(gs)
        for p, q in zip(arena.params, twin):
            np.testing.assert_array_equal(p, q)
        assert opt.state[0]["mu_product"] == ref.state[0]["mu_product"]
        assert opt.state[0]["step"] == k + 1
