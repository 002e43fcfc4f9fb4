"""fastdescent.nn: the model API, gradients (finite differences), backend parity and torch parity.

Backends lacking the dense-layer kernels skip with a reason; torch-dependent tests skip without torch.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastdescent as fd
import fastdescent.nn as nn
from fastdescent import backends as registry
from fastdescent.nn._backend import DENSE_KERNELS

from conftest import HOST_BACKENDS

LOSS_ROWS = ("mse_fwd_bwd", "xent_fwd_bwd")
ACTS = ["relu", "tanh", "sigmoid", "gelu"]


def _dense_reason(name):
    reason = registry.backend_status()[name]
    if reason is not None:
        return f"backend {name!r} is not available here: {reason}"
    missing = [r for r in (*DENSE_KERNELS, *LOSS_ROWS) if r not in fd.get_backend(name).KERNELS]
    if missing:
        return f"backend {name!r} does not implement {missing} yet"
    return None


DENSE = [n for n in HOST_BACKENDS if _dense_reason(n) is None]


@pytest.fixture(params=HOST_BACKENDS)
def dense_backend(request):
    """A host backend implementing every dense-layer kernel (others skip with the reason)."""
    reason = _dense_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param


def _needs_any_dense():
    if not DENSE:
        pytest.skip("no backend implements the dense-layer kernels here")


def _digits():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


# ------------------------------------------------------------------------------------ the usage
def test_documented_usage():
    """The exact usage of the issue (fd.fit, fd.nn) on the digits."""
    _needs_any_dense()
    X_train, X_test, y_train, y_test = _digits()
    assert hasattr(fd, "nn") and hasattr(fd, "fit"), \
        "fastdescent/__init__.py must export nn and fit (`from . import nn` / `from .nn import fit`)"
    model = fd.nn.MLP([64, 256, 10], activation="relu", seed=0)   # dtype=np.float32 by default
    opt = fd.Adam(model.parameters(), lr=1e-3)
    hist = fd.fit(model, X_train, y_train, loss="cross_entropy", optimizer=opt,
                  epochs=20, batch_size=64, seed=0)
    logits = model.predict(X_test)
    x, y = X_test[:32], y_test[:32]
    loss, grads = model.loss_and_grad(x, y, loss="cross_entropy")   # grads aligned with parameters()

    assert model.dtype == np.float32 and logits.dtype == np.float32
    assert logits.shape == (len(X_test), 10)
    assert len(hist) == 20 and hist.stop_reason == "max_epochs"
    assert hist.loss[-1] < hist.loss[0] / 5
    assert np.mean(logits.argmax(1) == y_test) > 0.93
    assert isinstance(loss, float) and np.isfinite(loss)
    assert [g.shape for g in grads] == [p.shape for p in model.parameters().params]
    assert [g.shape for g in model.grads()] == [(64, 256), (256,), (256, 10), (10,)]
    np.testing.assert_allclose(model.predict_proba(X_test).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.predict_classes(X_test), logits.argmax(1))


def test_top_level_exports_are_cheap():
    """`import fastdescent` (and fastdescent.nn) loads no numba / sklearn / matplotlib / torch / tqdm."""
    code = ("import sys, fastdescent, fastdescent.nn; "
            "print([m for m in ('numba', 'sklearn', 'matplotlib', 'torch', 'tqdm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parameters_live_in_one_arena_and_coalesce():
    _needs_any_dense()
    model = nn.MLP([8, 16, 16, 3], seed=1)
    arena = model.parameters()
    assert isinstance(arena, fd.ParamArena) and arena is model.arena
    assert len(arena) == 6 and arena.size == model.n_params == 8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3
    for p, g in zip(model.params, model.grads()):
        assert np.shares_memory(p, arena.flat_params) and np.shares_memory(g, arena.flat_grads)
    assert model.layers[0].weight is model.params[0] and model.layers[4].bias_grad is model.grads()[5]
    # an optimizer on the arena (or on the list of views) makes one flat update per step
    for params in (model.parameters(), model.params):
        opt = fd.Adam(params, lr=1e-3)
        model.arena.flat_grads.fill(1.0)
        before = model.arena.flat_params.copy()
        opt.step(model.grads())
        np.testing.assert_allclose(before - model.arena.flat_params, 1e-3, rtol=1e-3)
        buckets = getattr(opt, "_buckets", None)   # optimizer internals: checked while they exist
        if buckets and hasattr(buckets[0], "tab_flat"):
            assert len(buckets) == 1 and buckets[0].tab is buckets[0].tab_flat


def test_init_matches_torch_default_scheme():
    model = _model_or_skip(lambda: nn.MLP([400, 300, 5], seed=0, dtype=np.float64))
    w, b = model.layers[0].weight, model.layers[0].bias
    bound = 1 / np.sqrt(400)
    assert w.shape == (400, 300) and np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound       # uniform(-bound, bound)
    # seeded: same seed, same weights; float32 holds the float64 draw rounded
    again = nn.MLP([400, 300, 5], seed=0, dtype=np.float64)
    f32 = nn.MLP([400, 300, 5], seed=0, dtype=np.float32)
    other = nn.MLP([400, 300, 5], seed=1, dtype=np.float64)
    np.testing.assert_array_equal(model.arena.flat_params, again.arena.flat_params)
    np.testing.assert_array_equal(f32.arena.flat_params, model.arena.flat_params.astype(np.float32))
    assert not np.array_equal(model.arena.flat_params, other.arena.flat_params)
    he = nn.Linear(200, 100, init="he_normal")
    xav = nn.Linear(100, 100, init="xavier_uniform")
    m2 = nn.Sequential(he, nn.ReLU(), xav, seed=0, dtype=np.float64)
    assert abs(he.weight.std() - np.sqrt(2 / 200)) < 0.05 * np.sqrt(2 / 200)
    assert np.abs(xav.weight).max() <= np.sqrt(6 / 200) and not xav.bias.any()
    assert m2.n_params == 200 * 100 + 100 + 100 * 100 + 100


def _model_or_skip(make):
    _needs_any_dense()
    return make()


def test_predict_shapes_and_leading_dims():
    model = _model_or_skip(lambda: nn.MLP([6, 5, 4], seed=0))
    X = np.random.default_rng(0).normal(size=(3, 7, 6))
    out = model.predict(X)
    assert out.shape == (3, 7, 4)
    np.testing.assert_allclose(out.reshape(21, 4), model.predict(X.reshape(21, 6)), rtol=1e-6)
    np.testing.assert_array_equal(model(X.reshape(21, 6)), model.predict(X.reshape(21, 6)))
    big = np.random.default_rng(1).normal(size=(5000, 6))   # more rows than one forward chunk
    np.testing.assert_allclose(model.predict(big)[4100:4110], model.predict(big[4100:4110]), rtol=1e-6)
    assert model.predict(np.zeros((0, 6))).shape == (0, 4)
    one = nn.Sequential(nn.Linear(1, 1), seed=0)
    assert one.predict(np.arange(5.0)).shape == (5, 1)     # (n,) accepted for one input


def test_state_dict_roundtrip_and_torch_layout():
    model = _model_or_skip(lambda: nn.MLP([4, 6, 2], seed=0, dtype=np.float64))
    sd = model.state_dict()
    assert sorted(sd) == ["0.bias", "0.weight", "2.bias", "2.weight"] and sd["0.weight"].shape == (4, 6)
    sdt = model.state_dict(layout="torch")
    assert sdt["0.weight"].shape == (6, 4)
    other = nn.MLP([4, 6, 2], seed=5, dtype=np.float64)
    opt = fd.SGD(other.parameters(), lr=0.1)
    other.load_state_dict(sdt, layout="torch")
    np.testing.assert_array_equal(other.arena.flat_params, model.arena.flat_params)
    assert opt.param_groups[0]["params"][0] is other.params[0]   # loaded in place
    with pytest.raises(ValueError, match=r"state_dict\['0.weight'\] has shape"):
        other.load_state_dict(sdt)                               # torch layout without layout="torch"
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"0.weight": sd["0.weight"]})


def test_train_step_and_make_train_step():
    model = _model_or_skip(lambda: nn.MLP([3, 8, 2], seed=0, dtype=np.float64))
    twin = nn.MLP([3, 8, 2], seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 3))
    y = (X[:, 0] > 0).astype(int)
    opt_a = fd.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_b = fd.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    fast = twin.make_train_step(opt_b, "cross_entropy", rows=16)
    anyrows = twin.make_train_step(opt_b, "cross_entropy")
    losses_a, losses_b = [], []
    for i in range(4):
        losses_a.append(model.train_step(X, y, opt_a))
        step = fast if i % 2 == 0 else anyrows
        losses_b.append(float(step(X.copy(), twin.prepare_targets(y))))
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-13)
    np.testing.assert_allclose(model.arena.flat_params, twin.arena.flat_params, rtol=1e-13)
    assert losses_a[-1] < losses_a[0]


def test_buffers_are_reused():
    """Steady state: no new workspace, the same buffers, and (on a compiled backend) no allocation."""
    model = _model_or_skip(lambda: nn.MLP([64, 256, 10], seed=0))
    opt = fd.Adam(model.parameters(), lr=1e-3)
    x = np.random.default_rng(0).normal(size=(1, 64, 64)).astype(np.float32)
    y = np.arange(64, dtype=np.int64) % 10
    step = model.make_train_step(opt, "cross_entropy", rows=64)
    step(x, y)
    ws = model._workspaces[64]
    acts = [a.__array_interface__["data"][0] for a in ws.acts + ws.dacts]
    if model.backend in ("c", "numba"):
        import tracemalloc
        for _ in range(30):  # warm Python's and cffi's small-object caches
            step(x, y)
        tracemalloc.start()
        try:
            step(x, y)
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            for _ in range(200):
                step(x, y)
            cur, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # the activation buffers alone are 64*(256+10)*4*2 = 136 KB: nothing of that size is made,
        # and nothing accumulates step after step
        assert peak - base < 32_768 and cur - base < 16_384, (cur - base, peak - base)
    else:
        for _ in range(5):
            step(x, y)
    assert list(model._workspaces) == [64]
    assert acts == [a.__array_interface__["data"][0] for a in ws.acts + ws.dacts]


# ------------------------------------------------------------------------------------ gradients
def _fd_grad(model, X, y, loss, eps=1e-6):
    flat = model.arena.flat_params
    g = np.empty_like(flat)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        lp, _ = model.loss_and_grad(X, y, loss=loss)
        flat[i] = old - eps
        lm, _ = model.loss_and_grad(X, y, loss=loss)
        flat[i] = old
        g[i] = (lp - lm) / (2 * eps)
    return g


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_loss_and_grad_matches_finite_differences(dense_backend, act, loss):
    rng = np.random.default_rng(3)
    model = nn.MLP([5, 7, 6, 3], activation=act, seed=2, dtype=np.float64, backend=dense_backend)
    X = rng.normal(size=(11, 5))
    y = rng.integers(0, 3, size=11) if loss == "cross_entropy" else rng.normal(size=(11, 3))
    value, grads = model.loss_and_grad(X, y, loss=loss)
    analytic = np.concatenate([g.ravel() for g in grads])
    np.testing.assert_array_equal(analytic, model.arena.flat_grads)
    numeric = _fd_grad(model, X, y, loss)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    # the loss value itself, from first principles
    z = model.predict(X)
    if loss == "mse":
        want = np.mean((z - y) ** 2)
    else:
        zmax = z.max(1, keepdims=True)
        lse = np.log(np.exp(z - zmax).sum(1)) + zmax[:, 0]
        want = np.mean(lse - z[np.arange(11), y])
    assert value == pytest.approx(want, rel=1e-12)


def test_functional_losses():
    _needs_any_dense()
    z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    lab = np.array([1, 2])
    val, g = nn.cross_entropy(z, lab, return_grad=True)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert val == pytest.approx(-np.mean(np.log(p[[0, 1], lab])), rel=1e-12)
    onehot = np.eye(3)[lab]
    np.testing.assert_allclose(g, (p - onehot) / 2, rtol=1e-12)
    val, g = nn.mse(z, z + 1.0, return_grad=True)
    assert val == pytest.approx(1.0) and np.allclose(g, -2.0 / 6)
    with pytest.raises(ValueError, match="labels"):
        nn.cross_entropy(z, [1, 3])


# ------------------------------------------------------------------------------------ parity
def _train(backend, dtype, act="relu"):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(96, 12))
    y = rng.integers(0, 4, size=96)
    model = nn.MLP([12, 32, 16, 4], activation=act, seed=0, dtype=dtype, backend=backend)
    opt = fd.Adam(model.parameters(), lr=1e-2)
    hist = nn.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=3, batch_size=16, seed=1,
                  progress=False)
    return model, hist


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_trajectory_parity_across_backends(dtype):
    if len(DENSE) < 2:
        pytest.skip(f"needs two backends with the dense-layer kernels; have {DENSE} "
                    f"({ {n: _dense_reason(n) for n in HOST_BACKENDS if n not in DENSE} })")
    ref_name = "numpy" if "numpy" in DENSE else DENSE[0]
    ref, ref_hist = _train(ref_name, dtype, act="gelu")
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    for name in DENSE:
        if name == ref_name:
            continue
        model, hist = _train(name, dtype, act="gelu")
        np.testing.assert_allclose(hist.loss, ref_hist.loss, **tol, err_msg=f"{name} vs {ref_name}")
        np.testing.assert_allclose(model.arena.flat_params, ref.arena.flat_params, **tol,
                                   err_msg=f"{name} vs {ref_name}")


@pytest.mark.parametrize("act", ACTS)
def test_matches_torch_sequential_with_adam(dense_backend, act):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    model = nn.MLP([10, 24, 16, 5], activation=act, seed=0, backend=dense_backend)
    Act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
           "gelu": torch.nn.GELU}[act]
    tm = torch.nn.Sequential(torch.nn.Linear(10, 24), Act(), torch.nn.Linear(24, 16), Act(),
                             torch.nn.Linear(16, 5))
    tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict(layout="torch").items()})
    opt = fd.Adam(model.parameters(), lr=1e-3)
    topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
    for step in range(8):
        X = rng.normal(size=(32, 10)).astype(np.float32)
        y = rng.integers(0, 5, size=32)
        loss, grads = model.loss_and_grad(X, y, loss="cross_entropy")
        topt.zero_grad()
        out = tm(torch.from_numpy(X))
        tloss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
        tloss.backward()
        np.testing.assert_allclose(model.predict(X), out.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert loss == pytest.approx(tloss.item(), rel=1e-5)
        tgrads = {k: v.grad.numpy() for k, v in tm.named_parameters()}
        for key, g in zip(["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"], grads):
            want = tgrads[key].T if key.endswith("weight") else tgrads[key]
            np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6, err_msg=f"step {step} {key}")
        opt.step(grads)
        topt.step()
        for key, v in model.state_dict(layout="torch").items():
            np.testing.assert_allclose(v, tm.state_dict()[key].numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"step {step} {key}")


# ------------------------------------------------------------------------------------ errors
def test_model_construction_errors():
    _needs_any_dense()
    with pytest.raises(ValueError, match=r"layers\[2\] \(Linear\(32, 4\)\) expects 32 input features, "
                                         r"but layers\[0\] \(Linear\(8, 16\)\) outputs 16"):
        nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(32, 4))
    with pytest.raises(TypeError, match=r"layers\[1\] must be a fastdescent.nn layer"):
        nn.Sequential(nn.Linear(8, 16), "relu")
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="appears twice"):
        nn.Sequential(lin, nn.ReLU(), lin)
    nn.Sequential(lin)
    with pytest.raises(ValueError, match="already belongs to another model"):
        nn.Sequential(lin)
    with pytest.raises(ValueError, match="at least one Linear"):
        nn.Sequential(nn.ReLU())
    with pytest.raises(ValueError, match="at least two entries"):
        nn.MLP([64])
    with pytest.raises(ValueError, match=r"sizes\[1\] must be a positive int"):
        nn.MLP([64, 0, 10])
    with pytest.raises(TypeError, match=r"sizes\[1\] must be a positive int"):
        nn.MLP([64, 2.5, 10])
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.MLP([4, 4, 2], activation="swish")
    with pytest.raises(TypeError, match="dtype must be float32, float64, bfloat16 or float16"):
        nn.MLP([4, 2], dtype=np.int32)
    with pytest.raises(ValueError, match="init must be one of"):
        nn.Linear(3, 3, init="orthogonal")
    with pytest.raises(ValueError, match="unknown backend"):
        nn.MLP([4, 2], backend="fortran")
    with pytest.raises((ValueError, fd.BackendUnavailableError), match="cuda"):
        nn.MLP([4, 2], backend="cuda")   # models hold host arrays


def test_input_errors():
    model = _model_or_skip(lambda: nn.MLP([4, 8, 3], seed=0))
    X = np.zeros((5, 4))
    with pytest.raises(ValueError, match=r"X has 3 features \(shape \(5, 3\)\), but the model's input "
                                         r"size \(layers\[0\].in_features\) is 4"):
        model.predict(np.zeros((5, 3)))
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first in row 2\)"):
        model.predict(bad)
    with pytest.raises(TypeError, match="X must hold real numbers"):
        model.predict(np.array([["a"] * 4]))
    with pytest.raises(ValueError, match=r"x has shape \(4,\); the model expects \(n_samples, 4\)"):
        model.loss_and_grad(np.zeros(4), [0])
    with pytest.raises(ValueError, match="y has 4 rows but X has 5"):
        model.evaluate(X, [0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"y: class labels must lie in \[0, 3\).*y\[1\] = 3"):
        model.loss_and_grad(X, [0, 3, 1, 1, 1])
    with pytest.raises(ValueError, match=r"y\[0\] = 0.5 is not a whole number"):
        model.loss_and_grad(X, [0.5, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="one-hot"):
        model.loss_and_grad(X, np.eye(3)[[0, 1, 2, 0, 1]])
    with pytest.raises(ValueError, match=r"y has shape \(5,\); loss='mse' on a model with 3 outputs"):
        model.loss_and_grad(X, np.zeros(5), loss="mse")
    with pytest.raises(ValueError, match="loss must be one of"):
        model.loss_and_grad(X, np.zeros(5, int), loss="hinge")
    with pytest.raises(ValueError, match=r"optimizer: param_groups\[0\]\['params'\]\[0\] is not a "
                                         r"parameter of this model"):
        model.make_train_step(fd.SGD([np.zeros(3)], lr=0.1))
    with pytest.raises(TypeError, match="optimizer must be a fastdescent optimizer"):
        model.make_train_step(object())
