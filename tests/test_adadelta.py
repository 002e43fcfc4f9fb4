"""Adadelta beyond the generic suite (which runs every configuration against the oracle and torch):
a torch state_dict round trip both ways mid-run, NaN/Inf gradients and the eps = 0 and lr = 0 edge
cases against torch, rho = 1 as plain SGD, and one kernel call per dtype bucket."""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd
from _torch_round_trip import round_trip
from fastdescent import functional as F
from reference import assert_close


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_state_dict_round_trip_both_ways(host_backend, dtype):
    round_trip("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.1),
               dict(lr=1.0, rho=0.95, eps=1e-4, maximize=True), host_backend, dtype)


def _against_torch(backend, dtype, hp, grads_fn, steps=5, seed=4):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in [(6,), (2, 3)]]
    params = [a.copy() for a in init]
    tparams = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    opt = fd.Adadelta(params, **hp, backend=backend)
    topt = torch.optim.Adadelta(tparams, **hp, foreach=False)
    with torch.no_grad():
        for k in range(steps):
            gs = grads_fn(k, rng, params)
            opt.step(gs)
            for tp, g in zip(tparams, gs):
                tp.grad = torch.tensor(g)
            topt.step()
            for j, (p, tp) in enumerate(zip(params, tparams)):
                assert_close(p, tp.detach().numpy(), what=f"step {k + 1}: params[{j}]")
                for name in ("square_avg", "acc_delta"):
                    assert_close(opt.state[j][name], topt.state[tp][name].numpy(),
                                 what=f"step {k + 1}: state[{j}][{name!r}]")
    return init, params, opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_gradients_match_torch(host_backend, dtype):
    def grads(k, rng, params):
        gs = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        if k == 1:
            gs[0][1], gs[1][0, 2] = np.nan, np.inf
        if k == 2:
            gs[0][4] = -np.inf
        return gs

    _, params, opt = _against_torch(host_backend, dtype, dict(lr=0.5, weight_decay=0.01), grads)
    assert np.isnan(params[0][1]) and np.isnan(opt.state[0]["acc_delta"][1])
    assert np.isfinite(params[0][[0, 2, 3, 5]]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eps_zero_and_zero_gradients_match_torch(host_backend, dtype):
    """eps = 0 from zero state: delta = sqrt(0)/sqrt(v)*g = 0, so nothing moves, except where the
    gradient is 0 (v = 0): 0/0 = NaN, as in torch."""
    def grads(k, rng, params):
        gs = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        gs[1][1, 1] = 0.0
        return gs

    init, params, _ = _against_torch(host_backend, dtype, dict(lr=1.0, eps=0.0), grads, steps=3)
    assert np.isnan(params[1][1, 1])
    np.testing.assert_array_equal(params[0], init[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lr_zero_moves_nothing_but_the_state(host_backend, dtype):
    init, params, opt = _against_torch(
        host_backend, dtype, dict(lr=0.0, rho=0.5),
        lambda k, rng, ps: [rng.standard_normal(p.shape).astype(dtype) for p in ps], steps=3)
    for p, p0 in zip(params, init):
        np.testing.assert_array_equal(p, p0)
    assert (opt.state[0]["square_avg"] > 0).all() and (opt.state[0]["acc_delta"] > 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rho_one_is_plain_sgd(host_backend, dtype):
    """rho = 1: both averages stay 0, delta = sqrt(eps)/sqrt(eps)*g = g, and p <- p - lr*g: the
    same bits as SGD (host backends: no contraction into fused multiply-adds)."""
    rng = np.random.default_rng(9)
    shapes = [(5,), (), (3, 4)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    a, b = [x.copy() for x in init], [x.copy() for x in init]
    ada = fd.Adadelta(a, lr=0.1, rho=1.0, eps=1e-3, weight_decay=0.05, maximize=True,
                      backend=host_backend)
    sgd = fd.SGD(b, lr=0.1, weight_decay=0.05, maximize=True, backend=host_backend)
    for _ in range(4):
        gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
        ada.step(gs)
        sgd.step(gs)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for j in range(len(shapes)):
        assert not ada.state[j]["square_avg"].any() and not ada.state[j]["acc_delta"].any()


def test_functional_matches_hand_computation():
    p, v, a = [np.ones(2)], [np.zeros(2)], [np.zeros(2)]
    F.adadelta(p, [np.array([0.5, -2.0])], v, a, lr=0.5, rho=0.9, eps=1e-6, backend="numpy")
    g = np.array([0.5, -2.0])
    vv = 0.1 * g * g
    d = np.sqrt(1e-6) / np.sqrt(vv + 1e-6) * g
    np.testing.assert_allclose(v[0], vv, rtol=1e-15)
    np.testing.assert_allclose(a[0], 0.1 * d * d, rtol=1e-15)
    np.testing.assert_allclose(p[0], 1.0 - 0.5 * d, rtol=1e-15)


def test_one_kernel_call_per_dtype_bucket(host_backend, monkeypatch):
    """1000 float32 and 10 float64 tensors: two kernel calls per step, whatever the count."""
    mod = fd.get_backend(host_backend)
    calls = []
    real = mod.KERNELS["adadelta"]

    def counting(tab, **scalars):
        calls.append(str(tab.dtype))
        return real(tab, **scalars)

    monkeypatch.setitem(mod.KERNELS, "adadelta", counting)
    params = [np.zeros(7, np.float32) for _ in range(1000)] + [np.zeros(3) for _ in range(10)]
    opt = fd.Adadelta(params, backend=host_backend)
    grads = [np.ones_like(p) for p in params]
    opt.step(grads)
    opt.step(grads)
    assert sorted(calls) == ["float32", "float32", "float64", "float64"]
