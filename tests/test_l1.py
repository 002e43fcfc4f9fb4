"""The proximal L1 option (group option ``l1`` of every optimizer; SEMANTICS.md "L1"), its ``prox``
kernel on every backend, and what the generic tests do not cover: exact zeros, the Lasso, the lr in
force (Adagrad's clr), l1 == 0 costing nothing, validation, state dicts, the fused step declining.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, Case
from conftest import HOST_BACKENDS, Device, require_backend
from fastdescent import functional as F
from reference import RefOptimizer, assert_close
from test_parity import CUDA_SHAPES, SHAPES, run_and_compare

L1 = 0.05


def _l1_case(kind, l1=L1):
    base = BY_KIND[kind][-1]  # the richest case of each optimizer
    return Case(kind, {**base.hp, "l1": l1})


# ------------------------------------------------------------------------------ parity with the oracle
HOST_GRID = [("single", "float32"), ("many", "float64"), ("arena", "float32"), ("many", "mixed")]


@pytest.mark.parametrize("shape_set,dtype", HOST_GRID, ids=[f"{s}-{d}" for s, d in HOST_GRID])
@pytest.mark.parametrize("kind", list(BY_KIND))
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_l1_parity_host(backend, kind, shape_set, dtype):
    """Every optimizer with l1 > 0 follows the oracle (update, then thresholding with the lr in
    force, halved mid-run) on every host backend, a coalesced ParamArena included."""
    require_backend(backend)
    opt = run_and_compare(backend, _l1_case(kind), shape_set, dtype)
    assert opt.param_groups[0]["l1"] == L1


@pytest.mark.parametrize("kind", list(BY_KIND))
def test_l1_parity_cuda(kind):
    require_backend("cuda")
    run_and_compare("cuda", _l1_case(kind), "many", "mixed", shapes=CUDA_SHAPES["many"])


def test_l1_groups_differ(backend):
    """l1 is a group option: a group without it is not thresholded."""
    case = BY_KIND["sgd"][0]
    groups = [dict(params=[4, 0, 2], l1=0.3), dict(params=[1, 3, 5, 6], l1=0.0, lr=0.1)]
    shapes = SHAPES["many"] if backend != "cuda" else [(3,), (), (2, 2), (1,), (2,), (0,), (3,)]
    run_and_compare(backend, case, "many", "float64", shapes=shapes, groups=groups)


# ------------------------------------------------------------------------------ the thresholding itself
def test_exact_zeros_and_signs(backend):
    """|p| <= lr*l1 gives exactly +0.0 (never -0.0, also from -0.0 or a shrunk negative value);
    larger values move towards 0 by lr*l1; NaN and +-inf pass through."""
    dev = Device(backend)
    for dt in (np.float32, np.float64):
        p0 = np.array([1.0, -1.0, 0.25, -0.25, -0.0, 0.0, 0.5, -0.5, np.nan, np.inf, -np.inf], dt)
        p = dev.put(p0)
        opt = fd.SGD([p], lr=0.5, l1=1.0, backend=backend)  # threshold 0.5
        opt.step([dev.put(np.zeros_like(p0))])
        got = dev.get(p)
        want = np.array([0.5, -0.5, 0, 0, 0, 0, 0, 0, np.nan, np.inf, -np.inf], dt)
        np.testing.assert_array_equal(got, want)
        assert not np.signbit(got[2:8]).any(), got


def test_functional_prox_l1(backend):
    dev = Device(backend)
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(s).astype(dt) for s, dt in
            [((5, 3), np.float32), ((7,), np.float64), ((), np.float32), ((0,), np.float64)]]
    arrs = [dev.put(a) for a in host]
    F.prox_l1(arrs, lr=0.1, l1=4.0, backend=backend)
    for a, h in zip(arrs, host):
        thr = h.dtype.type(0.4)
        want = np.where(np.abs(h) <= thr, 0, np.where(h > 0, h - thr, h + thr)).astype(h.dtype)
        np.testing.assert_array_equal(dev.get(a), want)
    with pytest.raises(ValueError, match="l1"):
        F.prox_l1(arrs, lr=0.1, l1=-1.0, backend=backend)
    with pytest.raises(ValueError, match="lr"):
        F.prox_l1(arrs, lr=math.nan, l1=1.0, backend=backend)


def test_adagrad_uses_the_decayed_rate(host_backend):
    """Adagrad thresholds with clr = lr / (1 + (t-1)*lr_decay), the rate its update used."""
    lr, lr_decay, l1 = 0.5, 1.0, 0.2
    p = np.array([3.0, -3.0, 0.05])
    g = np.array([1.0, -1.0, 0.0])
    opt = fd.Adagrad([p], lr=lr, lr_decay=lr_decay, l1=l1, backend=host_backend)
    ref = RefOptimizer("adagrad", [dict(params=[p.copy()], lr=lr, lr_decay=lr_decay, l1=l1)])
    for t in range(1, 4):
        before = p.copy()
        ref.step([g])
        opt.step([g])
        assert_close(p, ref.param(0), f"step {t}")
        # the first two elements move by exactly the Adagrad step plus clr*l1
        clr = lr / (1 + (t - 1) * lr_decay)
        s = t * 1.0
        assert p[0] == pytest.approx(before[0] - clr / (math.sqrt(s) + 1e-10) - clr * l1, rel=1e-14)
    assert p[2] == 0.0


def test_l1_zero_calls_no_kernel(backend, monkeypatch):
    """l1 == 0 (the default) costs nothing: the prox kernel is never called."""
    dev = Device(backend)
    mod = fd.get_backend(backend)

    def boom(*a, **k):
        raise AssertionError("prox called with l1 == 0")

    monkeypatch.setitem(mod.KERNELS, "prox", boom)
    for case in (BY_KIND[k][-1] for k in BY_KIND):
        p = dev.put(np.ones(4))
        opt = getattr(fd, case.cls_name)([p], **case.hp, backend=backend)
        assert opt.param_groups[0]["l1"] == 0.0
        opt.step([dev.put(np.full(4, 0.5))])
        F.prox_l1([p], lr=0.1, l1=0.0, backend=backend)
    p = dev.put(np.ones(4))
    opt = fd.SGD([p], lr=0.1, l1=0.1, backend=backend)
    with pytest.raises(AssertionError, match="prox called"):
        opt.step([dev.put(np.ones(4))])


def test_every_optimizer_takes_l1_keyword_only():
    import inspect

    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
        par = inspect.signature(getattr(fd, name)).parameters["l1"]
        assert par.kind == par.KEYWORD_ONLY and par.default == 0.0, name


# ------------------------------------------------------------------------------ the Lasso
def _lasso_data(n=120, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w_true = np.zeros(d)
    w_true[[0, 3, 7]] = [2.0, -1.5, 0.8]
    y = X @ w_true + 0.5 + 0.1 * rng.standard_normal(n)
    return X, y


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_full_batch_sgd_with_l1_is_the_lasso(host_backend, dtype):
    """ISTA: full-batch SGD (no momentum) on L(w, b) = ||y - Xw - b||^2 / (2n) with l1 = alpha on
    the weights (the bias in a group with l1 = 0) converges to scikit-learn's
    ``Lasso(alpha).fit(X, y)`` (whose objective is exactly that), exact zeros included."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    dt = np.dtype(dtype)
    X, y = _lasso_data()
    alpha = 0.1
    lasso = sklearn.Lasso(alpha=alpha, tol=1e-14, max_iter=100_000).fit(X, y)
    n = X.shape[0]
    A = np.column_stack([X, np.ones(n)])
    lr = 1.0 / np.linalg.eigvalsh(A.T @ A / n).max()  # 1/L: the step ISTA converges with
    Xd, yd = X.astype(dt), y.astype(dt)
    w, b = np.zeros(X.shape[1], dt), np.zeros(1, dt)
    gw, gb = np.empty_like(w), np.empty_like(b)
    opt = fd.SGD([{"params": [w], "l1": alpha}, {"params": [b], "l1": 0.0}], lr=lr,
                 backend=host_backend)
    for _ in range(1500):
        r = Xd @ w + b[0] - yd
        gw[...] = Xd.T @ r / n
        gb[0] = r.mean()
        opt.step([gw, gb])
    tol = 1e-9 if dt == np.float64 else 2e-5
    np.testing.assert_allclose(w, lasso.coef_, atol=tol)
    assert abs(b[0] - lasso.intercept_) < tol
    # the same support, with exact zeros on both sides
    np.testing.assert_array_equal(w == 0, lasso.coef_ == 0)
    assert (w == 0).sum() >= 6 and not np.signbit(w[w == 0]).any()


# ------------------------------------------------------------------------------ validation
BAD_L1 = [(-0.1, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("0.1", TypeError),
          (True, TypeError), (None, TypeError)]


@pytest.mark.parametrize("value,exc", BAD_L1, ids=[repr(v) for v, _ in BAD_L1])
@pytest.mark.parametrize("kind", list(BY_KIND))
def test_bad_l1_is_refused_everywhere(kind, value, exc):
    cls = getattr(fd, BY_KIND[kind][0].cls_name)
    with pytest.raises(exc, match="l1"):
        cls([np.ones(3)], l1=value, backend="numpy")
    with pytest.raises(exc, match="l1"):
        cls([{"params": [np.ones(3)], "l1": value}], backend="numpy")
    # edited between steps: the step raises, parameters and state are untouched
    p = np.ones(3)
    opt = cls([p], l1=0.01, backend="numpy")
    opt.step([np.full(3, 0.5)])
    before_p, before_s = p.copy(), opt.state_dict()
    opt.param_groups[0]["l1"] = value
    with pytest.raises(exc, match="l1"):
        opt.step([np.full(3, 0.5)])
    np.testing.assert_array_equal(p, before_p)
    after = opt.state_dict()
    assert after["state"].keys() == before_s["state"].keys()
    for i, st in after["state"].items():
        for name, v in st.items():
            np.testing.assert_array_equal(v, before_s["state"][i][name])
    # and in a state_dict: refused, the optimizer unchanged
    sd = before_s
    sd["param_groups"][0]["l1"] = value
    opt.param_groups[0]["l1"] = 0.01
    with pytest.raises(exc, match="l1"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["l1"] == 0.01


def test_threshold_overflow_is_refused_before_any_update():
    """lr * l1 beyond float32: refused (naming the scalar) before any bucket is written."""
    a, b = np.ones(3, np.float64), np.ones(3, np.float32)
    opt = fd.SGD([a, b], lr=1e20, l1=1e20, backend="numpy")
    with pytest.raises(ValueError, match="threshold"):
        opt.step([np.zeros(3), np.zeros(3, np.float32)])
    np.testing.assert_array_equal(a, 1.0)
    np.testing.assert_array_equal(b, 1.0)


# ------------------------------------------------------------------------------ state dicts
def test_state_dict_round_trip_keeps_l1(host_backend):
    p = np.linspace(-1, 1, 6)
    opt = fd.Adam([p], lr=0.1, l1=0.2, backend=host_backend)
    opt.step([np.ones(6)])
    sd = opt.state_dict()
    assert sd["param_groups"][0]["l1"] == 0.2
    q = p.copy()
    opt2 = fd.Adam([q], lr=0.1, backend=host_backend)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["l1"] == 0.2
    for o in (opt, opt2):
        o.step([np.ones(6)])
    np.testing.assert_array_equal(p, q)


def test_torch_state_dicts_without_l1_load_and_keep_ours():
    torch = pytest.importorskip("torch")
    t = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    topt = torch.optim.Adam([t], lr=0.1)
    t.grad = torch.ones(3, dtype=torch.float64)
    topt.step()
    opt = fd.Adam([np.ones(3)], lr=0.1, l1=0.3, backend="numpy")
    opt.load_state_dict(topt.state_dict())
    assert opt.param_groups[0]["l1"] == 0.3
    # and the other way (state as tensors): torch keeps the extra key, as it keeps any group key
    sd = opt.state_dict()
    sd["state"] = {i: {k: torch.tensor(v) for k, v in st.items()} for i, st in sd["state"].items()}
    topt.load_state_dict(sd)
    assert topt.param_groups[0]["l1"] == 0.3


# ------------------------------------------------------------------------------ the fused training step
@pytest.mark.parametrize("backend", ["c", "numba"])
def test_fused_step_declines_l1(backend, monkeypatch):
    """The fused MLP step has no prox pass: it declines a group with l1 != 0 (no plan at creation;
    ``FlatBucket.current()`` False for each call while l1 is set), and the kernel-by-kernel path it
    falls back to applies l1 exactly as an unfused twin does; with l1 back at 0 the fused path runs
    again."""
    require_backend(backend)
    from fastdescent.nn import model as _model
    from fastdescent.nn.fused import FusedPlan

    sizes, rows = [5, 9, 3], 8

    def build(**kw):
        m = fd.nn.MLP(sizes, activation="relu", seed=0, backend=backend)
        return m, fd.Adam(m.parameters(), lr=1e-2, backend=backend, **kw)

    m, o = build(l1=1e-3)
    assert FusedPlan.create(m, o, "mse", rows) is None
    assert not getattr(m.make_train_step(o, "mse", rows=rows), "fused", False)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 1, rows, sizes[0])).astype(np.float32)
    Y = rng.normal(size=(6, rows, sizes[-1])).astype(np.float32)
    mf, of = build()
    mu, ou = build()
    sf = mf.make_train_step(of, "mse", rows=rows)
    assert getattr(sf, "fused", False)
    with monkeypatch.context() as mp:
        mp.setattr(_model, "_fused_train_step", lambda be: None)
        su = mu.make_train_step(ou, "mse", rows=rows)
    sf(X[0], Y[0])
    su(X[0], Y[0])
    for o in (of, ou):
        o.param_groups[0]["l1"] = 5.0  # threshold 0.05 a step
    before = sf.fused_calls
    for i in (1, 2, 3):
        sf(X[i], Y[i])
        su(X[i], Y[i])
    assert sf.fused_calls == before  # not fused while l1 is set
    np.testing.assert_allclose(mf.arena.flat_params, mu.arena.flat_params, rtol=1e-6, atol=1e-7)
    assert (mf.arena.flat_params == 0).sum() > 0  # the thresholding ran
    for o in (of, ou):
        o.param_groups[0]["l1"] = 0.0
    for i in (4, 5):
        sf(X[i], Y[i])
        su(X[i], Y[i])
    assert sf.fused_calls > before  # fused again
    np.testing.assert_allclose(mf.arena.flat_params, mu.arena.flat_params, rtol=1e-5, atol=1e-6)


def test_numba_prox_chunk_plans():
    """The numba kernel with chunks that start and end inside tensors, serial and threaded, gives
    the NumPy backend's bits."""
    mod = require_backend("numba")
    ref = fd.get_backend("numpy")
    rng = np.random.default_rng(3)
    sizes = [1, 7, 1001, 0, 3, 517]
    for dtype in (np.float32, np.float64):
        host = [rng.standard_normal(n).astype(dtype) for n in sizes]
        want = [a.copy() for a in host]
        ref.KERNELS["prox"](ref.Table(np.dtype(dtype), sizes).set("param", want), threshold=0.3)
        for chunk, parallel in ((3, False), (3, True), (64, True), (1000, True)):
            arrs = [a.copy() for a in host]
            tab = mod.Table(np.dtype(dtype), sizes).set("param", arrs)
            tab.plan(chunk=chunk, parallel=parallel)
            mod.KERNELS["prox"](tab, threshold=0.3)
            for a, w in zip(arrs, want):
                np.testing.assert_array_equal(a, w)
                assert np.array_equal(np.signbit(a), np.signbit(w))
