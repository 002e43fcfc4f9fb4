"""Hostile-user hardening of fastdescent.nn: every path (numpy, and the fused one-call-per-minibatch c
/ numba steps) takes the optimizer's hyperparameters by value at every step and validates them with
the optimizer's own check; user data is checked finite AFTER its conversion to the model's dtype;
bad state dicts change nothing; odd array types (np.matrix, masked arrays, tensors, views of the
model's own memory) are taken for what they hold, or refused clearly."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import fastdescent as fd
from fastdescent.nn import model as _model

from conftest import count_fused, require_backend

HOST = ["numpy", "c", "numba"]
RTOL, ATOL = 1e-5, 1e-6


def _data(n=48, k=5, c=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


def _build(backend, sizes=(5, 9, 3), betas=None, seed=0, dtype=np.float32):
    require_backend(backend)
    m = fd.nn.MLP(list(sizes), seed=seed, backend=backend, dtype=dtype)
    o = fd.Adam(m.parameters(), lr=1e-2, backend=backend)
    if betas is not None:
        o.param_groups[0]["betas"] = list(betas)  # a list: editable in place
    return m, o


def _fit_3_epochs(backend, m, o, X, y, callback, fused, monkeypatch):
    """``fd.fit`` for 3 epochs of 3 minibatches (``X``: 48 rows), unshuffled, on the fused step
    (checked to run once per minibatch where the backend has one) or, with ``fused=False``, on the
    kernel-by-kernel one."""
    with monkeypatch.context() as mp:
        if not fused:
            mp.setattr(_model, "_fused_train_step", lambda be: None)
        counter = count_fused(backend, mp) if fused and backend != "numpy" else None
        fd.fit(m, X, y, optimizer=o, epochs=3, batch_size=16, shuffle=False, callback=callback,
               progress=False)
    if counter is not None:
        assert counter.calls == 9, "fit did not run the fused step"


def _snapshot(m, o):
    sd = o.state_dict()
    state = {k: {n: (v if n == "step" else np.array(v, copy=True)) for n, v in st.items()}
             for k, st in sd["state"].items()}
    return m.arena.flat_params.copy(), state


def _assert_unchanged(m, o, snap):
    params, state = snap
    np.testing.assert_array_equal(m.arena.flat_params, params)
    now = o.state_dict()["state"]
    assert now.keys() == state.keys()
    for k in state:
        assert now[k].keys() == state[k].keys()
        for n, v in state[k].items():
            if n == "step":
                assert now[k][n] == v, f"state[{k}]['step'] moved"
            else:
                np.testing.assert_array_equal(now[k][n], v, err_msg=f"state[{k}][{n!r}]")


# ------------------------------------------------------------------ A: hyperparameters by value
@pytest.mark.parametrize("backend", HOST)
def test_list_betas_edited_in_place_apply_on_every_path(backend, monkeypatch):
    """``betas[0] = 0.0`` on a list-valued betas, made in a fit callback, takes effect at the next
    step: the fused c/numba fit gives what the kernel-by-kernel step gives (which re-reads the group
    every step), and differs from a run without the edit."""
    X, y = _data()

    def run(edit, fused):
        m, o = _build(backend, betas=[0.9, 0.999])

        def cb(epoch, logs, model):
            if edit and epoch == 1:
                o.param_groups[0]["betas"][0] = 0.0
        _fit_3_epochs(backend, m, o, X, y, cb, fused, monkeypatch)
        return m.arena.flat_params.copy(), o

    got, o = run(edit=True, fused=True)
    assert o.param_groups[0]["betas"] == [0.0, 0.999]
    want, _ = run(edit=True, fused=False)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    unedited, _ = run(edit=False, fused=True)
    assert np.abs(unedited - want).max() > 100 * ATOL  # the edit matters: the test can see it


@pytest.mark.parametrize("backend", ["c", "numba"])
def test_fused_step_follows_per_group_decoupled_weight_decay(backend, monkeypatch):
    """The decay rule is the group's (``decoupled_weight_decay``, set at construction or flipped by a
    callback), not the optimizer class's: the fused fit matches the kernel-by-kernel one."""
    X, y = _data()
    opt = fd.optim.Adam
    if "decoupled_weight_decay" not in opt(_build("numpy")[0].parameters()).param_groups[0]:
        pytest.skip("this Adam has no decoupled_weight_decay option")

    def run(fused, flip):
        m = fd.nn.MLP([5, 9, 3], seed=0, backend=backend)
        o = opt(m.parameters(), lr=1e-2, weight_decay=0.5, decoupled_weight_decay=not flip,
                backend=backend)

        def cb(epoch, logs, model):
            if flip and epoch == 1:
                o.param_groups[0]["decoupled_weight_decay"] = True
        _fit_3_epochs(backend, m, o, X, y, cb, fused, monkeypatch)
        return m.arena.flat_params.copy()

    for flip in (False, True):
        np.testing.assert_allclose(run(True, flip), run(False, flip), rtol=RTOL, atol=ATOL)


BAD_EDITS = [
    # (edit applied to param_groups[0], message naming the hyperparameter)
    (lambda g: g["betas"].__setitem__(1, 5.0), r"betas\[1\]"),
    (lambda g: g["betas"].__setitem__(0, -0.5), r"betas\[0\]"),
    (lambda g: g["betas"].__setitem__(1, float("nan")), r"betas\[1\]"),
    (lambda g: g["betas"].append(0.5), r"betas"),
    (lambda g: g.__setitem__("lr", -1.0), r"lr"),
    (lambda g: g.__setitem__("eps", float("inf")), r"eps"),
]


@pytest.mark.parametrize("backend", HOST)
@pytest.mark.parametrize("edit", BAD_EDITS, ids=["betas1=5", "betas0<0", "betas1=nan", "betas len 3",
                                                 "lr<0", "eps=inf"])
def test_bad_hyperparameter_edit_raises_and_writes_nothing(backend, edit):
    """A bad value set between epochs (in place in a list, or replaced) raises a ValueError naming it
    at the next step, on every path, and that step changes neither the parameters nor the
    optimizer's state or step counts."""
    X, y = _data()
    m, o = _build(backend, betas=[0.9, 0.999])
    fn, match = edit
    seen = {}

    def cb(epoch, logs, model):
        fn(o.param_groups[0])
        seen["snap"] = _snapshot(m, o)
    with pytest.raises((ValueError, TypeError), match=match):
        fd.fit(m, X, y, optimizer=o, epochs=3, batch_size=16, callback=cb, progress=False)
    assert "snap" in seen
    _assert_unchanged(m, o, seen["snap"])
    assert o.state[0]["step"] == 3  # one epoch of 3 minibatches ran


@pytest.mark.parametrize("backend", ["c", "numba"])
def test_fused_step_revalidates_every_call(backend):
    """The closure of make_train_step(rows=...) (what fit calls) validates by value on each call."""
    m, o = _build(backend, betas=[0.9, 0.999])
    X, y = _data(n=16)
    step = m.make_train_step(o, "cross_entropy", rows=16)
    assert getattr(step, "fused", False)
    x3 = X.reshape(1, 16, 5)
    step(x3, y)
    o.param_groups[0]["betas"][1] = 1.0
    snap = _snapshot(m, o)
    with pytest.raises(ValueError, match=r"betas\[1\] must be < 1.0"):
        step(x3, y)
    _assert_unchanged(m, o, snap)
    o.param_groups[0]["betas"][1] = 0.999  # fixed: training goes on
    step(x3, y)
    assert o.state[0]["step"] == 2


# ------------------------------------------------------------------ B: finite in the model's dtype
@pytest.mark.parametrize("backend", HOST)
def test_mse_targets_overflowing_float32_rejected(backend):
    """1e39 is a finite float64 but inf as a float32 target: a clear ValueError up front naming the
    targets (not NaN parameters after fit), wherever targets come in."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 5))
    Y = rng.normal(size=(32, 3))
    Y[4, 1] = 1e39
    m, o = _build(backend)
    before = m.arena.flat_params.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^y holds a value not representable in float32 "
                                             r"\(first at index \(4, 1\)"):
            fd.fit(m, X, Y, loss="mse", optimizer=o, epochs=2, progress=False)
        with pytest.raises(ValueError, match=r"^validation_data\[1\] holds a value not representable"):
            fd.fit(m, X, np.zeros((32, 3)), loss="mse", optimizer=o, validation_data=(X, Y),
                   progress=False)
        with pytest.raises(ValueError, match=r"^y holds a value not representable"):
            m.evaluate(X, Y, loss="mse")
        with pytest.raises(ValueError, match=r"^y holds a value not representable"):
            m.train_step(X, Y, o, loss="mse")
        with pytest.raises(ValueError, match=r"^y holds a value not representable"):
            m.loss_and_grad(X, Y, loss="mse")
        with pytest.raises(ValueError, match=r"^target holds a value not representable in float32"):
            fd.nn.mse(np.zeros(3, np.float32), np.array([0.0, 1e39, 0.0]), backend=backend)
    np.testing.assert_array_equal(m.arena.flat_params, before)
    assert o.state == {}
    # float64 models take such targets (they are representable there)
    m64, _ = _build(backend, dtype=np.float64)
    assert np.isfinite(m64.evaluate(X, Y, loss="mse")["loss"])


@pytest.mark.parametrize("backend", HOST)
def test_inputs_overflowing_float32_rejected_clearly(backend):
    """1e39 in X, validation inputs or predict's inputs of a float32 model: a ValueError that says the
    value is not representable in float32 (not a bare overflow warning plus 'NaN or infinity')."""
    X, y = _data()
    Xb = X.astype(np.float64)
    Xb[6, 2] = -1e39
    m, o = _build(backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'overflow encountered in cast' leaks out
        msg = r"holds a value not representable in float32 \(first in row 6: -1e\+39 overflows"
        with pytest.raises(ValueError, match=r"^X " + msg):
            fd.fit(m, Xb, y, optimizer=o, epochs=1, progress=False)
        with pytest.raises(ValueError, match=r"^validation_data\[0\] " + msg):
            fd.fit(m, X, y, optimizer=o, validation_data=(Xb, y), progress=False)
        with pytest.raises(ValueError, match=r"^X " + msg):
            m.predict(Xb)
        # genuine NaN/inf keep their message
        Xb[6, 2] = np.nan
        with pytest.raises(ValueError, match=r"^X contains NaN or infinity \(first in row 6\)"):
            m.predict(Xb)
    assert o.state == {}


def _filled_state(m, value):
    return {k: np.full(v.shape, value, dtype=np.float64) for k, v in m.state_dict().items()}


@pytest.mark.parametrize("backend", HOST)
def test_load_state_dict_overflow_is_atomic(backend):
    """1e300 (finite in float64) in the LAST entry of a state dict for a float32 model: ValueError
    naming that entry, and no entry written (not even the good ones before it)."""
    m, _ = _build(backend)
    before = m.arena.flat_params.copy()
    sd = _filled_state(m, 0.25)
    last = list(sd)[-1]
    sd[last][0] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"^state_dict\['{last}'\] holds a value not representable "
                                             r"in float32"):
            m.load_state_dict(sd)
    np.testing.assert_array_equal(m.arena.flat_params, before)
    sd[last][0] = 1.0
    m.load_state_dict(sd)  # the same dict, fixed, loads
    assert np.count_nonzero(m.arena.flat_params == 1.0) == 1
    assert np.count_nonzero(m.arena.flat_params == 0.25) == m.n_params - 1


@pytest.mark.parametrize("dtype", ["datetime64[s]", "timedelta64[s]", "object", "U4", "complex128",
                                   "bool"])
def test_load_state_dict_rejects_non_real_dtypes(dtype):
    """datetime64, timedelta64, object, str, complex and bool entries are refused with an error naming
    the entry (complex would silently drop its imaginary part, datetime load as integers); nothing is
    written."""
    m, _ = _build("numpy")
    before = m.arena.flat_params.copy()
    sd = _filled_state(m, 0.5)
    last = list(sd)[-1]
    sd[last] = (np.ones(sd[last].shape, dtype=object) if dtype == "object"
                else np.zeros(sd[last].shape, dtype=dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match=rf"^state_dict\['{last}'\] must hold real numbers, got "
                                            + re.escape(f"dtype {np.dtype(dtype)}")):
            m.load_state_dict(sd)
    np.testing.assert_array_equal(m.arena.flat_params, before)


def test_load_state_dict_takes_bfloat16_tensors():
    """A torch state dict in bfloat16 (which numpy cannot hold) loads exactly, through float64."""
    torch = pytest.importorskip("torch")
    m, _ = _build("numpy", sizes=(4, 3))
    net = torch.nn.Sequential(torch.nn.Linear(4, 3)).to(torch.bfloat16)
    m.load_state_dict(net.state_dict(), layout="torch")
    np.testing.assert_array_equal(m.layers[0].weight, net[0].weight.detach().float().numpy().T)
    np.testing.assert_array_equal(m.layers[0].bias, net[0].bias.detach().float().numpy())


# ------------------------------------------------------------------ C: hostile inputs
@pytest.mark.parametrize("backend", HOST)
def test_masked_arrays_with_masked_entries_refused(backend):
    """np.asarray drops a mask, so masked entries used to train on whatever lies beneath them."""
    X, y = _data()
    m, o = _build(backend)
    Xm = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    Xm[3, 1] = np.ma.masked
    ym = np.ma.masked_array(y, mask=np.arange(len(y)) == 5)
    with pytest.raises(ValueError, match=r"^X is a masked array with 1 masked entries"):
        fd.fit(m, Xm, y, optimizer=o, progress=False)
    with pytest.raises(ValueError, match=r"^y is a masked array with 1 masked entries"):
        fd.fit(m, X, ym, optimizer=o, progress=False)
    with pytest.raises(ValueError, match=r"^X is a masked array"):
        m.predict(Xm)
    assert o.state == {}
    # without masked entries a masked array is its data
    full = np.ma.masked_array(X, mask=False)
    np.testing.assert_array_equal(m.predict(full), m.predict(X))


@pytest.mark.parametrize("backend", HOST)
def test_matrix_inputs_are_plain_arrays(backend):
    """np.matrix labels of shape (n, 1) are a label column (a matrix stays 2-D under reshape(-1), so
    they used to be refused as 'one-hot'); predict on a matrix returns a plain ndarray."""
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        Xmat, ymat = np.matrix(X), np.matrix(y).T
    ma, oa = _build(backend)
    mb, ob = _build(backend)
    fd.fit(ma, Xmat, ymat, optimizer=oa, epochs=2, progress=False)
    fd.fit(mb, X, y, optimizer=ob, epochs=2, progress=False)
    np.testing.assert_array_equal(ma.arena.flat_params, mb.arena.flat_params)
    out = ma.predict(Xmat)
    assert type(out) is np.ndarray and out.shape == (len(X), 3)
    assert ma.evaluate(Xmat, ymat)["accuracy"] == ma.evaluate(X, y)["accuracy"]


@pytest.mark.parametrize("backend", HOST)
def test_inputs_aliasing_the_model_are_copied(backend):
    """Inputs that are views of the model's own parameters (or gradients) must not change while the
    model trains on them: fit/loss_and_grad take a copy, so the result is that of a copy."""
    def run(alias):
        m = fd.nn.MLP([4, 4], seed=0, backend=backend)
        o = fd.Adam(m.parameters(), lr=0.1, backend=backend)
        W = m.layers[0].weight  # (4, 4) float32: 4 samples of 4 features, a view of the arena
        X = W if alias else W.copy()
        Y = W[:, ::-1] if alias else W[:, ::-1].copy()  # mse targets aliasing the weights too
        fd.fit(m, X, Y, loss="mse", optimizer=o, epochs=4, batch_size=None, shuffle=False,
               progress=False)
        return m.arena.flat_params.copy()

    require_backend(backend)
    np.testing.assert_array_equal(run(True), run(False))

    m = fd.nn.MLP([4, 4], seed=0, backend=backend)
    _, grads = m.loss_and_grad(np.ones((4, 4)), np.arange(4))
    g0 = grads[0].copy()
    ref = fd.nn.MLP([4, 4], seed=0, backend=backend)
    loss_alias, _ = m.loss_and_grad(grads[0], np.arange(4))  # x is the gradient block itself
    loss_copy, gref = ref.loss_and_grad(g0, np.arange(4))
    assert loss_alias == loss_copy
    np.testing.assert_array_equal(m.grads()[0], gref[0])


@pytest.mark.parametrize("backend", HOST)
def test_evaluate_after_workspace_eviction(backend):
    """predict on many batch sizes evicts workspaces while the forward closures stay cached: a later
    evaluate with the first size used to fail with KeyError."""
    X, y = _data(n=40)
    m, _ = _build(backend)
    first = m.evaluate(X[:5], y[:5])
    for r in range(6, 6 + 2 * _model._CACHE_SIZE):
        m.predict(X[:r])
    assert m.evaluate(X[:5], y[:5]) == first
    h = fd.fit(m, X, y, epochs=1, batch_size=8, validation_data=(X[:5], y[:5]), progress=False)
    assert np.isfinite(h.val_loss[0])


@pytest.mark.parametrize("backend", HOST)
def test_read_only_and_strided_inputs(backend):
    """Read-only, Fortran-ordered and strided inputs train exactly as a plain copy does (the fused
    steps only read x)."""
    X, y = _data()
    ro = X.copy()
    ro.setflags(write=False)
    strided = np.repeat(X, 2, axis=1)[:, ::2]
    results = []
    for Xi in (X.copy(), ro, np.asfortranarray(X), strided):
        m, o = _build(backend)
        fd.fit(m, Xi, y, optimizer=o, epochs=2, batch_size=None, shuffle=False, progress=False)
        results.append(m.arena.flat_params.copy())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("backend", HOST)
def test_callback_raising_mid_fit_leaves_consistent_state(backend, monkeypatch):
    """A callback that raises ends fit with its exception; parameters, optimizer state and step count
    are those of the epochs done, exactly as on the kernel-by-kernel path, and training resumes."""
    X, y = _data()

    class Boom(Exception):
        pass

    def run(fused):
        m, o = _build(backend)

        def cb(epoch, logs, model):
            if epoch == 2:
                raise Boom("stop here")
        with monkeypatch.context() as mp:
            if not fused:
                mp.setattr(_model, "_fused_train_step", lambda be: None)
            with pytest.raises(Boom):
                fd.fit(m, X, y, optimizer=o, epochs=5, batch_size=16, callback=cb, progress=False)
            assert o.state[0]["step"] == 6
            fd.fit(m, X, y, optimizer=o, epochs=1, batch_size=16, progress=False)
        assert o.state[0]["step"] == 9
        return m, o

    mf, of = run(True)
    mu, ou = run(False)
    np.testing.assert_allclose(mf.arena.flat_params, mu.arena.flat_params, rtol=RTOL, atol=ATOL)
    for k in of.state:
        for n in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(of.state[k][n], ou.state[k][n], rtol=RTOL, atol=ATOL)


def test_scheduler_bad_params():
    """numpy bools are not numbers for a scheduler; a non-numeric plateau metric is a TypeError
    naming it (it was a bare float() error)."""
    o = fd.Adam([np.zeros(3, np.float32)])
    with pytest.raises(TypeError, match="gamma must be a real number"):
        fd.nn.ExponentialLR(o, gamma=np.True_)
    with pytest.raises(TypeError, match="gamma must be a real number"):
        fd.nn.StepLR(o, step_size=1, gamma=np.array([0.5, 0.6]))
    with pytest.raises(TypeError, match="eta_min must be a real number"):
        fd.nn.CosineAnnealingLR(o, T_max=3, eta_min=np.False_)
    p = fd.nn.ReduceLROnPlateau(o)
    with pytest.raises(TypeError, match="metrics must be a real number"):
        p.step("0.5")
    with pytest.raises(TypeError, match="metrics must be a real number"):
        p.step(np.array([1.0, 2.0]))
    assert p.last_epoch == 0
    p.step(np.float32(1.0))
    assert p.last_epoch == 1


@pytest.mark.parametrize("backend", ["c", "numba"])
def test_fused_step_refuses_out_of_range_labels_before_writing(backend):
    from fastdescent.errors import KernelError

    require_backend(backend)
    m = fd.nn.MLP([3, 4, 2], seed=0, backend=backend)
    opt = fd.Adam(m.parameters(), backend=backend)
    step = m.make_train_step(opt, rows=4)
    before = [p.copy() for p in m.parameters().params]
    for bad in ([0, 1, 7, 1], [0, -1, 1, 1]):
        with pytest.raises(KernelError):
            step(np.zeros((1, 4, 3), np.float32), np.array(bad, np.int64))
    assert all((a == b).all() for a, b in zip(before, m.parameters().params))
    assert np.isfinite(step(np.zeros((1, 4, 3), np.float32), np.array([0, 1, 1, 0], np.int64)))


def test_input_check_accepts_finite_values_whose_sum_overflows():
    """The finiteness check of inputs sums first (a finite sum proves every value finite); values
    that are all finite but whose sum overflows take the exact check and pass; one NaN or inf among
    them is still found, with its row."""
    import warnings

    from fastdescent.nn.losses import _to_dtype

    big = np.full((4, 3), 3e38, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning escapes
        assert _to_dtype(big, np.float32, "x", rows=True) is not None
    for bad in (np.nan, np.inf, -np.inf):
        b = big.copy()
        b[2, 1] = bad
        with pytest.raises(ValueError, match="first in row 2"):
            _to_dtype(b, np.float32, "x", rows=True)
