"""RAdam beyond the generic suites: the rectification switch (rho_t > 5) and its per-step scalars
against torch's formulas, both branches against torch over long runs and extreme betas, torch
state_dicts both ways mid-run, and hostile input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastdescent as fd
from conftest import HOST_BACKENDS, require_backend
from fastdescent import functional as F
from fastdescent.rules.radam import RADAM
from reference import assert_close

torch = pytest.importorskip("torch")

SHAPES = [(4, 3), (), (5,), (2, 1, 2)]


def data(seed, dtype, steps, shapes=SHAPES, scale=1.0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[np.asarray(scale * rng.standard_normal(s), dtype=dtype) for s in shapes]
             for _ in range(steps)]
    return init, grads


def tparams_of(arrays):
    return [torch.nn.Parameter(torch.tensor(a)) for a in arrays]


def tstep(topt, tparams, gs):
    for p, g in zip(tparams, gs):
        p.grad = None if g is None else torch.tensor(g)
    topt.step()


def check(params, tparams, what):
    for j, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), what=f"{what}: params[{j}]")


@pytest.mark.parametrize("beta2", [0.999, 0.9, 0.5, 0.0, 0.99999])
def test_rectification_scalars_follow_torch(beta2):
    """rho_t, r_t and the switch, step by step, against torch's expressions (radam.py)."""
    for t in range(1, 40):
        bc2 = 1 - beta2 ** t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2 ** t) / bc2
        got_rho, got_rect = RADAM.rectification(beta2, t)
        assert got_rho == rho_t
        sc = RADAM.scalars(dict(lr=0.1, betas=(0.9, beta2), eps=1e-8, weight_decay=0.0,
                                maximize=False), t, t == 1)
        assert sc["rectify"] == int(rho_t > 5.0)
        bc1 = 1 - 0.9 ** t
        if rho_t > 5.0:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            assert got_rect == rect
            assert sc["step_size"] == pytest.approx(0.1 * rect * math.sqrt(bc2) / bc1, rel=1e-15)
        else:
            assert got_rect is None
            assert sc["step_size"] == 0.1 / bc1
    # the default beta2 rectifies from step 6 on; beta2 <= 0.5 never (rho_inf <= 3)
    assert [RADAM.rectification(0.999, t)[1] is not None for t in (5, 6)] == [False, True]
    assert RADAM.rectification(0.5, 10 ** 6)[1] is None


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.0, 0.5), (0.5, 0.99999), (0.99, 0.9)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_long_run_matches_torch(backend, dtype, betas):
    """30 steps: both branches (or, for beta2 = 0.5, never rectified) against torch's for-loop."""
    require_backend(backend)
    init, grads = data(5, np.dtype(dtype), 30)
    params = [a.copy() for a in init]
    hp = dict(lr=0.005, betas=betas, eps=1e-8, weight_decay=0.01)
    opt = fd.RAdam(params, backend=backend, **hp)
    tparams = tparams_of(init)
    topt = torch.optim.RAdam(tparams, foreach=False, **hp)
    with torch.no_grad():
        for k, gs in enumerate(grads):
            opt.step(gs)
            tstep(topt, tparams, gs)
            check(params, tparams, f"step {k + 1}")
    for i, p in enumerate(tparams):
        assert_close(opt.state[i]["exp_avg_sq"], topt.state[p]["exp_avg_sq"].numpy())


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_state_dict_to_torch_and_back_mid_run(backend):
    """Saved at step 4 (unrectified), loaded into torch.optim.RAdam, continued across the switch at
    step 6; then torch's state_dict back into a fresh fastdescent RAdam."""
    require_backend(backend)
    init, grads = data(6, np.float64, 10)
    params = [a.copy() for a in init]
    hp = dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, decoupled_weight_decay=True,
              maximize=True)
    opt = fd.RAdam(params, backend=backend, **hp)
    for gs in grads[:4]:
        opt.step(gs)
    sd = opt.state_dict()
    tsd = {"state": {i: {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v)
                         for k, v in st.items()} for i, st in sd["state"].items()},
           "param_groups": sd["param_groups"]}
    tparams = tparams_of(params)
    topt = torch.optim.RAdam(tparams, foreach=False, **hp)
    topt.load_state_dict(tsd)
    with torch.no_grad():
        for k, gs in enumerate(grads[4:7]):
            opt.step(gs)
            tstep(topt, tparams, gs)
            check(params, tparams, f"step {k + 5}")
        params2 = [p.detach().numpy().copy() for p in tparams]
        opt2 = fd.RAdam(params2, backend=backend, **hp)
        opt2.load_state_dict(topt.state_dict())
        for k, gs in enumerate(grads[7:]):
            opt2.step(gs)
            tstep(topt, tparams, gs)
            check(params2, tparams, f"step {k + 8}")
    assert opt2.state[0]["step"] == 10


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_zero_gradient_with_eps_zero_is_nan_like_torch(backend):
    """A rectified step with m = v = 0 and eps = 0 is 0/0 in torch (NaN): the same here."""
    require_backend(backend)
    hp = dict(lr=0.01, eps=0.0)
    w = [np.ones(3)]
    opt = fd.RAdam(w, backend=backend, **hp)
    tw = tparams_of([np.ones(3)])
    topt = torch.optim.RAdam(tw, foreach=False, **hp)
    with torch.no_grad():
        for _ in range(6):
            opt.step([np.zeros(3)])
            tstep(topt, tw, [np.zeros(3)])
    assert np.isnan(tw[0].detach().numpy()).all()
    assert np.isnan(w[0]).all()


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_nan_gradient_and_skip_nonfinite(backend):
    require_backend(backend)
    w = [np.ones(4)]
    opt = fd.RAdam(w, backend=backend)
    opt.step([np.array([1.0, np.nan, -1.0, 0.5])])
    assert np.isnan(w[0][1]) and np.isfinite(w[0][[0, 2, 3]]).all()
    w = [np.ones(4)]
    opt = fd.RAdam(w, backend=backend, skip_nonfinite=True)
    opt.step([np.ones(4)])
    before = opt.state_dict()
    assert opt.step([np.array([1.0, np.inf, -1.0, 0.5])]) is False
    np.testing.assert_array_equal(w[0], 1.0 - 1e-3)  # step 1 only: p -= lr * m/bc1 = lr
    after = opt.state_dict()
    assert after["state"][0]["step"] == 1
    for n in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(after["state"][0][n], before["state"][0][n])


def test_grad_aliasing_state_or_other_param_is_refused():
    w = [np.ones(3), np.ones(3)]
    opt = fd.RAdam(w, backend="numpy")
    opt.step([np.ones(3), np.ones(3)])
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory"):
        opt.step([np.ones(3), opt.state[1]["exp_avg_sq"]])
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory"):
        opt.step([w[1], np.ones(3)])
    np.testing.assert_array_equal(w[0], w[1])
    after = opt.state_dict()
    for i in (0, 1):
        assert after["state"][i]["step"] == 1
        np.testing.assert_array_equal(after["state"][i]["exp_avg_sq"],
                                      before["state"][i]["exp_avg_sq"])


def test_functional_matches_the_class_across_the_switch():
    p, m, v = [np.ones(3, np.float32)], [np.zeros(3, np.float32)], [np.zeros(3, np.float32)]
    w = [np.ones(3, np.float32)]
    opt = fd.RAdam(w, backend="numpy", lr=0.01)
    rng = np.random.default_rng(0)
    for t in range(1, 9):
        g = rng.standard_normal(3).astype(np.float32)
        F.radam(p, [g], m, v, step=t, lr=0.01, backend="numpy")
        opt.step([g.copy()])
        np.testing.assert_array_equal(p[0], w[0])
    with pytest.raises(ValueError, match="step"):
        F.radam(p, [g], m, v, step=0, backend="numpy")
