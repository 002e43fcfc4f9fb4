"""Adamax beyond the generic suite (which runs every configuration against the oracle and torch):
a torch state_dict round trip both ways mid-run, NaN/Inf gradients against torch, the exact forms
of exp_avg (torch's lerp branches) and exp_inf (the NaN-propagating max), the per-step clr and its
overflow, and one kernel call per dtype bucket."""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd
from _torch_round_trip import round_trip
from conftest import Device
from fastdescent import functional as F
from reference import assert_close


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_state_dict_round_trip_both_ways(host_backend, dtype):
    round_trip("Adamax", dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1),
               dict(lr=0.01, betas=(0.3, 0.9), eps=1e-6, maximize=True), host_backend, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_gradients_match_torch(host_backend, dtype):
    """A NaN, +inf and -inf in the gradients: exp_inf = max(beta2*u, |g| + eps) propagates NaN from
    either side (torch.maximum) and inf/inf is NaN; the same elements end up NaN as in torch, the
    others are untouched by them."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s).astype(dtype) for s in [(6,), (2, 3)]]
    params = [a.copy() for a in init]
    tparams = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    opt = fd.Adamax(params, lr=0.05, weight_decay=0.01, backend=host_backend)
    topt = torch.optim.Adamax(tparams, lr=0.05, weight_decay=0.01, foreach=False)
    with torch.no_grad():
        for k in range(5):
            gs = [rng.standard_normal(p.shape).astype(dtype) for p in params]
            if k == 1:
                gs[0][1], gs[1][0, 2] = np.nan, np.inf
            if k == 2:
                gs[0][4] = -np.inf
            opt.step(gs)
            for tp, g in zip(tparams, gs):
                tp.grad = torch.tensor(g)
            topt.step()
            for j, (p, tp) in enumerate(zip(params, tparams)):
                assert_close(p, tp.detach().numpy(), what=f"step {k + 1}: params[{j}]")
            for j in range(2):
                for name in ("exp_avg", "exp_inf"):
                    assert_close(opt.state[j][name], topt.state[tparams[j]][name].numpy(),
                                 what=f"step {k + 1}: state[{j}][{name!r}]")
    assert np.isnan(params[0][1]) and np.isnan(opt.state[0]["exp_inf"][1])
    assert np.isfinite(params[0][[0, 2, 3, 5]]).all()


def test_skip_nonfinite_changes_nothing(host_backend):
    params = [np.ones(5, np.float32), np.ones(3)]
    opt = fd.Adamax(params, lr=0.1, backend=host_backend, skip_nonfinite=True)
    opt.step([np.full(5, 0.5, np.float32), np.full(3, 0.5)])
    before = opt.state_dict()
    p_before = [p.copy() for p in params]
    assert opt.step([np.full(5, 0.5, np.float32), np.array([0.5, np.nan, 0.5])]) is False
    assert opt.last_step_skipped and opt.skipped_steps == 1
    after = opt.state_dict()
    for p, b in zip(params, p_before):
        np.testing.assert_array_equal(p, b)
    for i, st in before["state"].items():
        assert after["state"][i]["step"] == st["step"] == 1
        for n in ("exp_avg", "exp_inf"):
            np.testing.assert_array_equal(after["state"][i][n], st[n])


@pytest.mark.parametrize("beta1", [0.0, 0.3, 0.5, 0.9])
def test_exp_avg_follows_torch_lerp_branches(host_backend, beta1):
    """exp_avg.lerp_(g, w), w = 1 - beta1: m + w*(g - m) when w < 0.5, else g - (g - m)*(1 - w),
    computed as g + (w - 1)*(g - m) (torch's two formulas; beta1 = 0 gives m = g exactly). Bit for
    bit in float32 against that expression, which rounds differently from the other branch's (the
    check would see a wrong branch)."""
    rng = np.random.default_rng(5)
    T = np.float32
    gs = [rng.standard_normal(1000).astype(T) for _ in range(3)]
    p = np.zeros(1000, T)
    opt = fd.Adamax([p], lr=0.01, betas=(beta1, 0.99), backend=host_backend)
    w = 1.0 - beta1
    small = w < 0.5
    m = other = np.zeros(1000, T)
    for g in gs:
        opt.step([g])
        if small:
            m, other = m + T(w) * (g - m), g + T(w - 1.0) * (g - other)
        else:
            m, other = g + T(w - 1.0) * (g - m), other + T(w) * (g - other)
        np.testing.assert_array_equal(opt.state[0]["exp_avg"], m)
    assert not np.array_equal(m, other)
    if beta1 == 0.0:
        np.testing.assert_array_equal(m, gs[-1])


def test_exp_inf_is_the_nan_propagating_max(backend):
    """u = max(beta2*u, |g| + eps) element by element, bit for bit (one product, one sum, one
    max: no contraction possible), and a NaN stays in u for good (torch.maximum)."""
    dev = Device(backend)
    T = np.float32
    b2, eps = T(0.5), T(1e-3)
    gs = [np.array([1.0, -4.0, 0.25, np.nan], T), np.array([0.1, 1.0, -3.0, 1.0], T),
          np.array([0.1, 0.1, 0.1, 0.1], T)]
    p = dev.put(np.zeros(4, T))
    opt = fd.Adamax([p], lr=0.01, betas=(0.9, 0.5), eps=1e-3, backend=backend)
    u = np.zeros(4, T)
    for g in gs:
        opt.step([dev.put(g)])
        u = np.maximum(u * b2, np.abs(g) + eps)
        np.testing.assert_array_equal(dev.get(opt.state[0]["exp_inf"]), u)
    assert np.isnan(u[3]) and np.isnan(dev.get(p)[3]) and np.isfinite(dev.get(p)[:3]).all()


def test_step_size_uses_the_bias_correction_of_each_step():
    """One element, g = 1 every step, beta1 = 0.5, eps = 0: m_t = 1 - 0.5**t = the bias correction,
    u = 1, so every step moves p by exactly lr (clr * m = lr)."""
    for backend in ("numpy", "c", "numba"):
        if backend not in fd.available_backends():
            continue
        p = np.zeros(1)
        opt = fd.Adamax([p], lr=0.25, betas=(0.5, 0.9), eps=0.0, backend=backend)
        for t in range(1, 6):
            opt.step([np.ones(1)])
            assert p[0] == pytest.approx(-0.25 * t, rel=1e-15)
    # the functional API takes the step count from its caller
    p, m, u = [np.zeros(1)], [np.full(1, 0.5)], [np.ones(1)]
    F.adamax(p, [np.ones(1)], m, u, step=2, lr=0.25, betas=(0.5, 0.9), eps=0.0, backend="numpy")
    assert m[0][0] == 0.75 and u[0][0] == 1.0
    assert p[0][0] == pytest.approx(-0.25 / (1 - 0.25) * 0.75, rel=1e-15)


def test_clr_overflow_is_refused_before_anything_changes(host_backend):
    """clr = lr / (1 - beta1**t) can leave float32 (or float64) for a valid lr: the step raises
    ValueError naming clr, and no bucket (float32 or float64) is touched."""
    params = [np.ones(3, np.float32), np.ones(2)]
    opt = fd.Adamax(params, lr=0.01, backend=host_backend)
    opt.step([np.ones(3, np.float32), np.ones(2)])
    snap = opt.state_dict()
    p_before = [p.copy() for p in params]
    for lr in (1e38, 1e308):
        opt.param_groups[0]["lr"] = lr
        with pytest.raises(ValueError, match="clr"):
            opt.step([np.ones(3, np.float32), np.ones(2)])
        for p, b in zip(params, p_before):
            np.testing.assert_array_equal(p, b)
        after = opt.state_dict()["state"]
        for i, st in snap["state"].items():
            assert after[i]["step"] == st["step"]
            for n in ("exp_avg", "exp_inf"):
                np.testing.assert_array_equal(after[i][n], st[n])


def test_one_kernel_call_per_dtype_bucket(host_backend, monkeypatch):
    """1000 float32 and 10 float64 tensors: two kernel calls per step, whatever the count."""
    mod = fd.get_backend(host_backend)
    calls = []
    real = mod.KERNELS["adamax"]

    def counting(tab, **scalars):
        calls.append((tab.dtype, tab.n))
        return real(tab, **scalars)

    monkeypatch.setitem(mod.KERNELS, "adamax", counting)
    params = [np.zeros(7, np.float32) for _ in range(1000)] + [np.zeros(3) for _ in range(10)]
    opt = fd.Adamax(params, backend=host_backend)
    grads = [np.ones_like(p) for p in params]
    opt.step(grads)
    opt.step(grads)
    assert sorted(str(d) for d, _ in calls) == ["float32", "float32", "float64", "float64"]
