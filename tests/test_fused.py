"""The fused training step (backends/<backend>/fused.py; csrc/fd_fused.c for c): one backend call per
minibatch must give what the model's kernel-by-kernel step gives, leave the optimizer's state and step
counts as ``Optimizer.step`` would, fall back (None) for what it does not handle, and be what
``fd.fit`` runs."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import fastdescent as fd
from fastdescent.nn import model as _model

from conftest import count_fused, require_backend
from fastdescent.nn.fused import FusedPlan

FUSED = ["c", "numba"]
FUSED_SGD = ["c"]  # backends that also fuse momentum SGD (fd_mlp_step_sgd)
RTOL, ATOL = 1e-5, 1e-6
ROWS = 12
STEPS = 7


def fused_module(backend):
    require_backend(backend)
    mod = importlib.import_module(fd.get_backend(backend).__name__ + ".fused")
    return mod


def unfused_step(model, opt, loss, rows, monkeypatch):
    """The kernel-by-kernel step (the fused hook switched off while it is made)."""
    with monkeypatch.context() as mp:
        mp.setattr(_model, "_fused_train_step", lambda be: None)
        st = model.make_train_step(opt, loss, rows=rows)
    assert not getattr(st, "fused", False)
    return st


def fused_step(model, opt, loss, rows):
    st = model.make_train_step(opt, loss, rows=rows)
    assert getattr(st, "fused", False), "make_train_step did not take the fused path"
    return st


def data(sizes, loss, steps=STEPS, rows=ROWS, dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(steps, 1, rows, sizes[0])).astype(dtype)
    if loss == "cross_entropy":
        Y = rng.integers(0, sizes[-1], size=(steps, rows)).astype(np.int64)
    else:
        Y = rng.normal(size=(steps, rows, sizes[-1])).astype(dtype)
    return X, Y


def build(backend, sizes, act, opt_cls, dtype=np.float32, **opt_kw):
    m = fd.nn.MLP(sizes, activation=act, seed=0, dtype=dtype, backend=backend)
    o = opt_cls(m.parameters(), backend=backend, **opt_kw)
    return m, o


def assert_same(ma, oa, mb, ob, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(ma.arena.flat_params, mb.arena.flat_params, rtol=rtol, atol=atol)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        assert sa["state"][k].keys() == sb["state"][k].keys()
        assert sa["state"][k]["step"] == sb["state"][k]["step"]
        for name, v in sa["state"][k].items():
            if name != "step":
                np.testing.assert_allclose(v, sb["state"][k][name], rtol=rtol, atol=atol, err_msg=name)


CASES = [
    # sizes, activation, loss, optimizer, options
    ([5, 9, 3], "relu", "cross_entropy", fd.Adam, dict(lr=1e-2)),
    ([5, 40, 6, 3], "tanh", "cross_entropy", fd.AdamW, dict(lr=1e-2)),
    ([5, 9, 7, 2], "gelu", "mse", fd.Adam, dict(lr=1e-2, weight_decay=1e-2)),
    ([6, 33, 4], "sigmoid", "mse", fd.AdamW, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6)),
    ([5, 9, 7, 3], "relu", "cross_entropy", fd.Adam, dict(lr=1e-2, amsgrad=True, maximize=True)),
    ([4, 8, 8, 3], "tanh", "mse", fd.AdamW, dict(lr=1e-2, amsgrad=True, weight_decay=0.1)),
]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[0]) - 1}L-{c[1]}-{c[2]}-{c[3].__name__}")
def test_fused_matches_unfused(backend, dtype, case, monkeypatch):
    fused_module(backend)
    sizes, act, loss, opt_cls, kw = case
    X, Y = data(sizes, loss, dtype=dtype)
    mf, of = build(backend, sizes, act, opt_cls, dtype, **kw)
    mu, ou = build(backend, sizes, act, opt_cls, dtype, **kw)
    sf = fused_step(mf, of, loss, ROWS)
    su = unfused_step(mu, ou, loss, ROWS, monkeypatch)
    for i in range(STEPS):
        lf, lu = sf(X[i], Y[i]), su(X[i], Y[i])
        assert isinstance(lf, float)
        np.testing.assert_allclose(lf, lu, rtol=RTOL, atol=ATOL)
        assert_same(mf, of, mu, ou)
    assert of.state[0]["step"] == STEPS


@pytest.mark.parametrize("backend", FUSED)
def test_state_consistent_after_fused_steps(backend, monkeypatch):
    """Fused steps, then unfused ones (closure, and opt.step on grads), an lr change (a scheduler's)
    and a state_dict round trip: the same as a twin that never ran fused."""
    fused_module(backend)
    sizes, loss = [5, 9, 7, 3], "cross_entropy"
    X, Y = data(sizes, loss, steps=10)
    mf, of = build(backend, sizes, "tanh", fd.AdamW, lr=1e-2)
    mu, ou = build(backend, sizes, "tanh", fd.AdamW, lr=1e-2)
    sf = fused_step(mf, of, loss, ROWS)
    su_f = unfused_step(mf, of, loss, ROWS, monkeypatch)
    su = unfused_step(mu, ou, loss, ROWS, monkeypatch)
    for i in range(3):
        sf(X[i], Y[i])
        su(X[i], Y[i])
    assert_same(mf, of, mu, ou)
    assert of.state[0]["step"] == 3 and of.state[5]["step"] == 3
    for opt in (of, ou):  # a scheduler changes lr between steps
        opt.param_groups[0]["lr"] = 3e-3
    for i in range(3, 5):  # unfused on the fused model's optimizer
        su_f(X[i], Y[i])
        su(X[i], Y[i])
    assert_same(mf, of, mu, ou)
    for i in range(5, 7):  # fused again: must pick up the step count and the state
        sf(X[i], Y[i])
        su(X[i], Y[i])
    assert_same(mf, of, mu, ou)
    # a direct opt.step on fresh gradients
    for m, o in ((mf, of), (mu, ou)):
        m.loss_and_grad(X[7][0], Y[7], loss=loss)
        o.step()
    assert_same(mf, of, mu, ou)
    # load_state_dict (rebuilds the optimizer's buckets): the fused step rebinds
    sd = ou.state_dict()
    of.load_state_dict(sd)
    for i in range(8, 10):
        sf(X[i], Y[i])
        su(X[i], Y[i])
    assert_same(mf, of, mu, ou)
    assert of.state[0]["step"] == 10


@pytest.mark.parametrize("backend", FUSED)
def test_options_switched_after_creation(backend, monkeypatch):
    """amsgrad or skip_nonfinite turned on after the step was made: those calls take the
    kernel-by-kernel path, results stay equal to the unfused twin."""
    fused_module(backend)
    sizes, loss = [5, 9, 3], "mse"
    X, Y = data(sizes, loss)
    mf, of = build(backend, sizes, "relu", fd.Adam, lr=1e-2)
    mu, ou = build(backend, sizes, "relu", fd.Adam, lr=1e-2)
    sf = fused_step(mf, of, loss, ROWS)
    su = unfused_step(mu, ou, loss, ROWS, monkeypatch)
    sf(X[0], Y[0])
    su(X[0], Y[0])
    for o in (of, ou):
        o.skip_nonfinite = True
    before = sf.fused_calls
    sf(X[1], Y[1])
    su(X[1], Y[1])
    assert sf.fused_calls == before  # not fused while skip_nonfinite is set
    for o in (of, ou):
        o.skip_nonfinite = False
        o.param_groups[0]["amsgrad"] = True
    for i in range(2, 5):
        sf(X[i], Y[i])
        su(X[i], Y[i])
    assert_same(mf, of, mu, ou)
    assert sf.fused_calls > before  # fused again once the buckets were rebuilt with max_exp_avg_sq


@pytest.mark.parametrize("backend", FUSED)
def test_fallback_none(backend):
    mod = fused_module(backend)

    def f(model, opt, loss, rows):
        plan = FusedPlan.create(model, opt, loss, rows)
        return None if plan is None else mod.fused_train_step(plan)

    def mlp():
        return fd.nn.MLP([4, 6, 2], seed=0, backend=backend)

    m = mlp()
    sgd = f(m, fd.SGD(m.parameters(), lr=0.1, backend=backend), "cross_entropy", 8)
    assert (sgd is None) == (backend not in FUSED_SGD)  # momentum SGD: fused on c only
    m = mlp()
    assert f(m, fd.RMSprop(m.parameters(), backend=backend), "cross_entropy", 8) is None
    m = mlp()
    assert f(m, fd.Adam(m.parameters(), backend=backend, skip_nonfinite=True), "mse", 8) is None
    m = mlp()
    ps = m.params
    two_groups = fd.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 1e-2}], backend=backend)
    assert f(m, two_groups, "cross_entropy", 8) is None
    m = mlp()
    assert f(m, fd.Adam(m.params[:2], backend=backend), "cross_entropy", 8) is None  # not all params
    m = mlp()
    assert f(m, fd.Adam(m.parameters(), backend=backend), "hinge", 8) is None
    # and make_train_step then gives the kernel-by-kernel step, which still trains
    m = mlp()
    st = m.make_train_step(fd.RMSprop(m.parameters(), lr=0.1, backend=backend), "cross_entropy", rows=8)
    assert not getattr(st, "fused", False)
    X, Y = data([4, 6, 2], "cross_entropy", rows=8)
    assert np.isfinite(st(X[0], Y[0]))
    # supported: the same model with Adam
    m = mlp()
    assert f(m, fd.Adam(m.parameters(), backend=backend), "cross_entropy", 8) is not None


def test_c_bad_labels_write_nothing():
    fused_module("c")
    m, o = build("c", [4, 6, 3], "relu", fd.Adam, lr=1e-2)
    st = fused_step(m, o, "cross_entropy", 8)
    X, Y = data([4, 6, 3], "cross_entropy", rows=8)
    st(X[0], Y[0])
    before = m.arena.flat_params.copy()
    m_before = o.state[0]["exp_avg"].copy()
    bad = Y[1].copy()
    bad[3] = 3
    with pytest.raises(fd.KernelError):
        st(X[1], bad)
    np.testing.assert_array_equal(m.arena.flat_params, before)
    np.testing.assert_array_equal(o.state[0]["exp_avg"], m_before)
    assert o.state[0]["step"] == 1


def _fit_fused_and_not(backend, monkeypatch, make_opt):
    """fit's run with the fused step and without it (same seed and data): (model, optimizer,
    history, fused calls) of each."""
    fused_module(backend)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(70, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.5)

    def train(fused):
        m = fd.nn.MLP([6, 16, 3], seed=0, backend=backend)
        o = make_opt(m.parameters())
        with monkeypatch.context() as mp:
            if not fused:
                mp.setattr(_model, "_fused_train_step", lambda be: None)
            counter = count_fused(backend, mp)
            hist = fd.fit(m, X, y, loss="cross_entropy", optimizer=o, epochs=3, batch_size=16,
                          progress=False)
            used = counter.calls
        return m, o, hist, used

    return train(True), train(False)


@pytest.mark.parametrize("backend", FUSED)
def test_fit_uses_fused_path(backend, monkeypatch):
    (mf, of, hf, used), (mu, ou, hu, used_u) = _fit_fused_and_not(
        backend, monkeypatch, lambda ps: fd.Adam(ps, lr=1e-2, backend=backend))
    assert used == 3 * 5  # 70 rows, batches of 16: 5 per epoch (the last one of 6 rows), all fused
    assert used_u == 0
    assert_same(mf, of, mu, ou)
    assert of.state[0]["step"] == 15


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("opt_backend", ["numpy", "c", "numba"])
def test_optimizer_on_another_host_backend(backend, opt_backend, monkeypatch):
    """The optimizer may run on another host backend than the model (fd.Adam(model.parameters())
    takes the default one): the fused step still matches the unfused one, whose update runs there."""
    fused_module(backend)
    require_backend(opt_backend)
    sizes, loss = [5, 40, 6, 3], "cross_entropy"
    X, Y = data(sizes, loss)
    mf = fd.nn.MLP(sizes, activation="gelu", seed=0, backend=backend)
    mu = fd.nn.MLP(sizes, activation="gelu", seed=0, backend=backend)
    of = fd.AdamW(mf.parameters(), lr=1e-2, backend=opt_backend)
    ou = fd.AdamW(mu.parameters(), lr=1e-2, backend=opt_backend)
    sf = fused_step(mf, of, loss, ROWS)
    su = unfused_step(mu, ou, loss, ROWS, monkeypatch)
    for i in range(STEPS):
        np.testing.assert_allclose(sf(X[i], Y[i]), su(X[i], Y[i]), rtol=RTOL, atol=ATOL)
    assert_same(mf, of, mu, ou)


@pytest.mark.parametrize("backend", FUSED)
def test_no_bias_and_odd_batch(backend, monkeypatch):
    fused_module(backend)
    sizes, loss, rows = [7, 40, 5, 1], "mse", 5
    X, Y = data(sizes, loss, rows=rows)
    models = [fd.nn.MLP(sizes, activation="relu", seed=0, backend=backend, bias=False) for _ in range(2)]
    opts = [fd.Adam(m.parameters(), lr=1e-2, weight_decay=0.01, backend=backend) for m in models]
    sf = fused_step(models[0], opts[0], loss, rows)
    su = unfused_step(models[1], opts[1], loss, rows, monkeypatch)
    for i in range(STEPS):
        np.testing.assert_allclose(sf(X[i][0], Y[i]), su(X[i], Y[i]), rtol=RTOL, atol=ATOL)  # x 2-D
    assert_same(models[0], opts[0], models[1], opts[1])


SGD_CASES = [
    # sizes, activation, loss, options
    ([5, 9, 3], "relu", "cross_entropy", dict(lr=0.1, momentum=0.9)),
    ([5, 40, 6, 3], "tanh", "cross_entropy", dict(lr=0.05)),  # no momentum buffer
    ([5, 9, 7, 2], "gelu", "mse", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ([6, 33, 4], "sigmoid", "mse", dict(lr=0.1, momentum=0.5, dampening=0.3, maximize=True)),
]


@pytest.mark.parametrize("backend", FUSED_SGD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", SGD_CASES, ids=lambda c: f"{len(c[0]) - 1}L-{c[1]}-{c[2]}")
def test_fused_sgd_bit_identical_to_unfused(backend, dtype, case, monkeypatch):
    """fd_mlp_step_sgd runs the kernel-by-kernel step's kernels in its order: the same bits (loss,
    parameters, momentum buffer, step counts), every option of SGD."""
    fused_module(backend)
    sizes, act, loss, kw = case
    X, Y = data(sizes, loss, dtype=dtype)
    mf, of = build(backend, sizes, act, fd.SGD, dtype, **kw)
    mu, ou = build(backend, sizes, act, fd.SGD, dtype, **kw)
    sf = fused_step(mf, of, loss, ROWS)
    su = unfused_step(mu, ou, loss, ROWS, monkeypatch)
    for i in range(STEPS):
        assert sf(X[i], Y[i]) == su(X[i], Y[i])
        np.testing.assert_array_equal(mf.arena.flat_params, mu.arena.flat_params)
        np.testing.assert_array_equal(mf.arena.flat_grads, mu.arena.flat_grads)
    assert_same(mf, of, mu, ou, rtol=0, atol=0)
    assert sf.fused_calls == STEPS
    assert of.state[0]["step"] == STEPS


@pytest.mark.parametrize("backend", FUSED_SGD)
def test_fused_sgd_options_switched(backend, monkeypatch):
    """lr edited in place (a scheduler), momentum switched off and on again (the buffer goes and
    comes back: those calls rebuild the buckets on the kernel-by-kernel path), gradient noise on (a
    post pass: not fused), a load_state_dict: bit for bit the unfused twin throughout."""
    fused_module(backend)
    sizes, loss = [5, 9, 7, 3], "cross_entropy"
    X, Y = data(sizes, loss, steps=12)
    mf, of = build(backend, sizes, "relu", fd.SGD, lr=0.1, momentum=0.9)
    mu, ou = build(backend, sizes, "relu", fd.SGD, lr=0.1, momentum=0.9)
    sf = fused_step(mf, of, loss, ROWS)
    su = unfused_step(mu, ou, loss, ROWS, monkeypatch)

    def both(i):
        assert sf(X[i], Y[i]) == su(X[i], Y[i])
        assert_same(mf, of, mu, ou, rtol=0, atol=0)

    both(0)
    both(1)
    for o in (of, ou):
        o.param_groups[0]["lr"] = 0.03
    both(2)
    calls = sf.fused_calls
    for o in (of, ou):
        o.param_groups[0]["momentum"] = 0.0
    both(3)
    both(4)
    for o in (of, ou):
        o.param_groups[0]["momentum"] = 0.8
    both(5)
    both(6)
    assert sf.fused_calls > calls
    for o in (of, ou):
        o.param_groups[0]["noise_std"] = 0.1
    calls = sf.fused_calls
    both(7)
    assert sf.fused_calls == calls  # the noise pass runs on the kernel-by-kernel path
    for o in (of, ou):
        o.param_groups[0]["noise_std"] = 0.0
    of.load_state_dict(ou.state_dict())
    both(8)
    both(9)
    assert of.state[0]["step"] == 10


def test_c_fused_sgd_refuses_bad_scalars_and_writes_nothing():
    """A bad hyperparameter edited in place raises before anything is written (as opt.step)."""
    fused_module("c")
    m, o = build("c", [4, 6, 3], "relu", fd.SGD, lr=0.1, momentum=0.9)
    st = fused_step(m, o, "cross_entropy", 8)
    X, Y = data([4, 6, 3], "cross_entropy", rows=8)
    st(X[0], Y[0])
    before = m.arena.flat_params.copy()
    buf = o.state[0]["momentum_buffer"].copy()
    o.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError):
        st(X[1], Y[1])
    np.testing.assert_array_equal(m.arena.flat_params, before)
    np.testing.assert_array_equal(o.state[0]["momentum_buffer"], buf)
    assert o.state[0]["step"] == 1
    o.param_groups[0]["lr"] = 0.1
    bad = Y[1].copy()
    bad[0] = 3
    with pytest.raises(fd.KernelError):
        st(X[1], bad)
    np.testing.assert_array_equal(m.arena.flat_params, before)
    assert o.state[0]["step"] == 1


@pytest.mark.parametrize("backend", FUSED_SGD)
def test_fit_uses_fused_sgd(backend, monkeypatch):
    (mf, of, hf, used), (mu, ou, hu, used_u) = _fit_fused_and_not(
        backend, monkeypatch, lambda ps: fd.SGD(ps, lr=0.05, momentum=0.9, backend=backend))
    assert used == 3 * 5
    assert used_u == 0
    assert hf.history["loss"] == hu.history["loss"]
    assert_same(mf, of, mu, ou, rtol=0, atol=0)
