"""fastdescent.nn.fit, History and the learning-rate schedulers (against torch's where installed)."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest

import fastdescent as fd
import fastdescent.nn as nn
from fastdescent.nn._backend import DENSE_KERNELS


def _dense_available():
    try:
        from fastdescent.nn._backend import resolve_dense
        resolve_dense(None, DENSE_KERNELS + ("mse_fwd_bwd", "xent_fwd_bwd"))
        return True
    except Exception:
        return False


needs_dense = pytest.mark.skipif(not _dense_available(),
                                 reason="no backend implements the dense-layer kernels here")


def _blobs(n=120, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    X = centers[y] + rng.normal(size=(n, d))
    return X, y


def _line(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=n)
    return x, 2 * x + 3 + 0.1 * rng.normal(size=n)


# ------------------------------------------------------------------------------- loop semantics
@needs_dense
def test_minibatch_fit_equals_the_manual_loop():
    """fit = per epoch one permutation from default_rng(seed), minibatches in order, one step each."""
    X, y = _blobs()
    a = nn.MLP([5, 16, 3], seed=0, dtype=np.float64)
    b = nn.MLP([5, 16, 3], seed=0, dtype=np.float64)
    opt_a = fd.Adam(a.parameters(), lr=1e-2)
    opt_b = fd.Adam(b.parameters(), lr=1e-2)
    hist = nn.fit(a, X, y, optimizer=opt_a, epochs=3, batch_size=25, seed=4, progress=False)
    rng = np.random.default_rng(4)
    want_loss = []
    for _ in range(3):
        perm = rng.permutation(len(X))
        total = 0.0
        for s in range(0, len(X), 25):
            idx = perm[s:s + 25]
            loss, grads = b.loss_and_grad(X[idx], y[idx])
            opt_b.step(grads)
            total += loss * len(idx)
        want_loss.append(total / len(X))
    np.testing.assert_allclose(a.arena.flat_params, b.arena.flat_params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(hist.loss, want_loss, rtol=1e-12)
    assert hist.epoch == [1, 2, 3]


@needs_dense
def test_full_batch_gradient_descent():
    x, t = _line()
    a = nn.Sequential(nn.Linear(1, 1), seed=0, dtype=np.float64)
    b = nn.Sequential(nn.Linear(1, 1), seed=0, dtype=np.float64)
    hist = nn.fit(a, x, t, loss="mse", optimizer=fd.SGD(a.parameters(), lr=0.3), epochs=5,
                  batch_size=None, progress=False)
    opt = fd.SGD(b.parameters(), lr=0.3)
    losses = []
    for _ in range(5):
        loss, grads = b.loss_and_grad(x[:, None], t, loss="mse")
        opt.step(grads)
        losses.append(loss)
    np.testing.assert_allclose(hist.loss, losses, rtol=1e-13)
    np.testing.assert_allclose(a.arena.flat_params, b.arena.flat_params, rtol=1e-13)
    # a batch larger than the data is full-batch too
    c = nn.Sequential(nn.Linear(1, 1), seed=0, dtype=np.float64)
    h2 = nn.fit(c, x, t, loss="mse", optimizer=fd.SGD(c.parameters(), lr=0.3), epochs=5,
                batch_size=10_000, progress=False)
    np.testing.assert_allclose(h2.loss, losses, rtol=1e-13)


@needs_dense
def test_seeded_shuffling_is_reproducible():
    X, y = _blobs()
    runs = []
    for seed in (0, 0, 1):
        m = nn.MLP([5, 8, 3], seed=0)
        nn.fit(m, X, y, optimizer=fd.SGD(m.parameters(), lr=0.1), epochs=2, batch_size=16, seed=seed,
               progress=False)
        runs.append(m.arena.flat_params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    m = nn.MLP([5, 8, 3], seed=0)  # shuffle=False: data order, independent of the seed
    m2 = nn.MLP([5, 8, 3], seed=0)
    nn.fit(m, X, y, optimizer=fd.SGD(m.parameters(), lr=0.1), epochs=2, batch_size=16, seed=0,
           shuffle=False, progress=False)
    nn.fit(m2, X, y, optimizer=fd.SGD(m2.parameters(), lr=0.1), epochs=2, batch_size=16, seed=9,
           shuffle=False, progress=False)
    np.testing.assert_array_equal(m.arena.flat_params, m2.arena.flat_params)


@needs_dense
def test_validation_split_and_data():
    X, y = _blobs(n=100)
    m = nn.MLP([5, 16, 3], seed=0, dtype=np.float64)
    hist = nn.fit(m, X, y, optimizer=fd.Adam(m.parameters(), lr=1e-2), epochs=4, batch_size=16,
                  validation_split=0.2, seed=3, progress=False)
    assert hist.params["n_val"] == 20 and hist.params["n_train"] == 80
    assert set(hist.history) >= {"loss", "val_loss", "val_accuracy", "lr", "time", "train_time"}
    assert hist.monitor == "val_loss"
    vidx = np.sort(np.random.default_rng(3).permutation(100)[:20])
    ev = m.evaluate(X[vidx], y[vidx])
    assert hist.val_loss[-1] == pytest.approx(ev["loss"], rel=1e-12)
    assert hist.val_accuracy[-1] == ev["accuracy"]
    m2 = nn.MLP([5, 16, 3], seed=0, dtype=np.float64)
    h2 = nn.fit(m2, X[:80], y[:80], optimizer=fd.Adam(m2.parameters(), lr=1e-2), epochs=4,
                batch_size=16, validation_data=(X[80:], y[80:]), progress=False)
    assert h2.val_accuracy[-1] == m2.score(X[80:], y[80:])
    hm = nn.fit(nn.Sequential(nn.Linear(1, 1), seed=0), *_line(), loss="mse", epochs=2, batch_size=8,
                validation_split=0.25, progress=False)
    assert "val_loss" in hm.history and "val_accuracy" not in hm.history


@needs_dense
def test_default_optimizer_is_adam_on_the_model():
    X, y = _blobs()
    m = nn.MLP([5, 8, 3], seed=0)
    before = m.arena.flat_params.copy()
    hist = nn.fit(m, X, y, epochs=2, progress=False)
    assert hist.params["optimizer"] == "Adam" and hist.lr == [1e-3, 1e-3]
    assert not np.array_equal(before, m.arena.flat_params)


# ------------------------------------------------------------------------------- convergence
@needs_dense
def test_convergence_stop():
    x, t = _line()
    m = nn.Sequential(nn.Linear(1, 1), seed=0, dtype=np.float64)
    hist = nn.fit(m, x, t, loss="mse", optimizer=fd.SGD(m.parameters(), lr=0.5), epochs=10_000,
                  batch_size=None, tol=1e-12, n_iter_no_change=3, progress=False)
    assert hist.converged and hist.stop_reason == "converged" and 10 < len(hist) < 500
    A = np.column_stack([x, np.ones_like(x)])
    sol = np.linalg.lstsq(A, t, rcond=None)[0]
    np.testing.assert_allclose([m.params[0][0, 0], m.params[1][0]], sol, atol=1e-5)
    # the exact rule: a flat loss (lr = 0) stops after n_iter_no_change epochs without improvement
    m = nn.Sequential(nn.Linear(1, 1), seed=0, dtype=np.float64)
    h = nn.fit(m, x, t, loss="mse", optimizer=fd.SGD(m.parameters(), lr=0.0), epochs=50,
               batch_size=None, tol=0.0, n_iter_no_change=4, progress=False)
    assert len(h) == 5 and h.converged
    # without tol: all epochs
    m = nn.Sequential(nn.Linear(1, 1), seed=0, dtype=np.float64)
    h = nn.fit(m, x, t, loss="mse", optimizer=fd.SGD(m.parameters(), lr=0.0), epochs=7,
               batch_size=None, progress=False)
    assert len(h) == 7 and h.stop_reason == "max_epochs" and not h.converged


@needs_dense
def test_restore_best_and_callback():
    X, y = _blobs(n=90)
    m = nn.MLP([5, 32, 3], seed=0, dtype=np.float64)
    snaps = {}

    def cb(epoch, logs, model):
        snaps[epoch] = model.arena.flat_params.copy()
        return epoch == 6

    hist = nn.fit(m, X, y, optimizer=fd.SGD(m.parameters(), lr=2.0, momentum=0.9), epochs=20,
                  batch_size=8, validation_split=0.3, restore_best=True, callback=cb, progress=False)
    assert hist.stop_reason == "callback" and len(hist) == 6 and hist.restored_best
    best = hist.best_epoch
    assert hist.best == min(hist.val_loss) and hist.val_loss[best - 1] == hist.best
    np.testing.assert_array_equal(m.arena.flat_params, snaps[best])


@needs_dense
def test_nonfinite_loss_stops_with_a_warning():
    x, t = _line()
    m = nn.Sequential(nn.Linear(1, 1), seed=0)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        hist = nn.fit(m, x * 1e3, t, loss="mse", optimizer=fd.SGD(m.parameters(), lr=1e3), epochs=100,
                      batch_size=None, progress=False)
    assert hist.stop_reason == "nonfinite_loss" and len(hist) < 100


# ------------------------------------------------------------------------------- History
@needs_dense
def test_history_api_plot_and_progress(tmp_path, capsys):
    X, y = _blobs()
    m = nn.MLP([5, 8, 3], seed=0)
    hist = nn.fit(m, X, y, epochs=3, batch_size=32, validation_split=0.25, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "epoch" in err          # the tqdm bar
    assert len(hist) == hist.n_epochs == 3
    d = hist.as_dict()
    assert d["epoch"] == [1, 2, 3] and len(d["val_accuracy"]) == 3
    assert hist.total_time >= sum(hist.train_time) > 0 and hist.epoch_time > 0
    assert hist.final("loss") == hist.loss[-1] and "best_epoch" in repr(hist)
    with pytest.raises(AttributeError, match="recorded"):
        hist.accuracy_top5  # noqa: B018 (the attribute access is what raises)
    pytest.importorskip("matplotlib")
    out = hist.plot(tmp_path / "curve.png")
    data = (tmp_path / "curve.png").read_bytes()
    assert out == str(tmp_path / "curve.png") and data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="was not recorded"):
        hist.plot(tmp_path / "x.png", metrics=["train_f1"])


def test_history_plot_without_matplotlib(monkeypatch, tmp_path):
    h = nn.History()
    h._append(1, {"loss": 1.0})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match="History.plot needs matplotlib.*pip install matplotlib"):
        h.plot(tmp_path / "a.png")


# ------------------------------------------------------------------------------- bad input
def _bad_cases():
    X, y = _blobs(n=40)
    Xn = X.copy()
    Xn[7, 2] = np.inf
    yf = y.astype(float)
    yf[3] = np.nan
    other = fd.SGD([np.zeros(3)], lr=0.1)
    return [
        # (description, fit kwargs overrides, exception, message regex)
        ("X features", dict(X=X[:, :4]), ValueError, r"X has 4 features \(shape \(40, 4\)\), but the "
                                                     r"model's input size \(layers\[0\].in_features\) is 5"),
        ("X 3-D", dict(X=X.reshape(4, 10, 5)), ValueError, r"X must have shape \(n_samples, 5\)"),
        ("X inf", dict(X=Xn), ValueError, r"X contains NaN or infinity \(first in row 7\)"),
        ("X strings", dict(X=X.astype(str)), TypeError, "X must hold real numbers"),
        ("y NaN", dict(y=yf), ValueError, r"y contains NaN or infinity \(first at index 3\)"),
        ("y too big", dict(y=np.where(np.arange(40) == 5, 3, y)), ValueError,
         r"y: class labels must lie in \[0, 3\) for a model with 3 outputs; y\[5\] = 3"),
        ("y negative", dict(y=np.where(np.arange(40) == 2, -1, y)), ValueError, r"y\[2\] = -1"),
        ("y fractional", dict(y=y + 0.25), ValueError, r"y\[0\] = .* is not a whole number"),
        ("y bool", dict(y=y > 0), TypeError, "y must hold integer class labels"),
        ("y rows", dict(y=y[:-1]), ValueError, "y has 39 rows but X has 40"),
        ("mse y shape", dict(loss="mse", y=np.zeros((40, 2))), ValueError,
         r"y has shape \(40, 2\); loss='mse' on a model with 3 outputs expects \(n, 3\)"),
        ("loss", dict(loss="hinge"), ValueError, "loss must be one of"),
        ("batch 0", dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
        ("batch -3", dict(batch_size=-3), ValueError, "batch_size must be >= 1, got -3"),
        ("batch float", dict(batch_size=2.5), TypeError, "batch_size must be an int"),
        ("batch bool", dict(batch_size=True), TypeError, "batch_size must be an int"),
        ("epochs 0", dict(epochs=0), ValueError, "epochs must be >= 1"),
        ("val split", dict(validation_split=1.5), ValueError, r"validation_split must be in \(0, 1\)"),
        ("val split tiny", dict(validation_split=0.001), ValueError, "leaves an empty"),
        ("val both", dict(validation_split=0.2, validation_data=(X, y)), ValueError, "not both"),
        ("val data X", dict(validation_data=(X[:, :2], y)), ValueError,
         r"validation_data\[0\] has 2 features"),
        ("val data y", dict(validation_data=(X, y + 7)), ValueError, r"validation_data\[1\]: class labels"),
        ("val data pair", dict(validation_data=X), TypeError, "validation_data must be a pair"),
        ("optimizer", dict(optimizer=other), ValueError, r"optimizer: param_groups\[0\]\['params'\]\[0\] "
                                                         r"is not a parameter of this model"),
        ("scheduler", dict(scheduler=nn.StepLR(other, 2)), ValueError,
         "scheduler\\[0\\] was built on a different optimizer"),
        ("scheduler type", dict(scheduler="cosine"), TypeError, "scheduler\\[0\\] must be a learning-rate"),
        ("tol", dict(tol=-1.0), ValueError, "tol must be a finite number >= 0"),
        ("n_iter_no_change", dict(n_iter_no_change=0), ValueError, "n_iter_no_change must be >= 1"),
        ("monitor", dict(monitor="val_loss"), ValueError, r"monitor must be one of \('loss',\) here"),
        ("seed", dict(seed="zero"), TypeError, "seed must be an int"),
        ("progress", dict(progress="yes"), TypeError, "progress must be a bool"),
        ("callback", dict(callback=3), TypeError, "callback must be callable"),
        ("model", dict(model=object()), TypeError, "model must be a fastdescent.nn model"),
    ]


@needs_dense
@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_raises_naming_the_argument(case):
    _, over, exc, msg = case
    X, y = _blobs(n=40)
    model = nn.MLP([5, 8, 3], seed=0)
    before = model.arena.flat_params.copy()
    kwargs = dict(model=model, X=X, y=y, epochs=2, batch_size=8, progress=False)
    kwargs.update(over)
    with pytest.raises(exc, match=msg):
        nn.fit(kwargs.pop("model"), kwargs.pop("X"), kwargs.pop("y"), **kwargs)
    np.testing.assert_array_equal(model.arena.flat_params, before)   # nothing was trained


# ------------------------------------------------------------------------------- schedulers
def _pair(lrs=(0.1,)):
    torch = pytest.importorskip("torch")
    tparams = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tparams, lrs)], lr=lrs[0])
    opt = fd.SGD([{"params": [np.zeros(1)], "lr": lr} for lr in lrs], lr=lrs[0])
    return torch, topt, opt


SCHEDULERS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("ExponentialLR", dict(gamma=0.93)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
    ("LinearLR", dict()),
    ("LinearLR", dict(start_factor=0.1, end_factor=0.5, total_iters=8)),
]


@pytest.mark.parametrize("name,kw", SCHEDULERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SCHEDULERS)])
def test_schedulers_match_torch(name, kw):
    torch, topt, opt = _pair(lrs=(0.1, 0.03))
    ts = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    fs = getattr(nn, name)(opt, **kw)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.03]
    got, want = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(30):   # past T_max / total_iters: the periodic and flat parts too
            got.append([g["lr"] for g in opt.param_groups])
            want.append([g["lr"] for g in topt.param_groups])
            topt.step()
            ts.step()
            fs.step()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fs.get_last_lr(), ts.get_last_lr(), rtol=1e-12)
    assert fs.last_epoch == ts.last_epoch == 30


def test_chained_warmup_and_cosine_match_torch():
    torch, topt, opt = _pair()
    t1 = torch.optim.lr_scheduler.LinearLR(topt, start_factor=0.25, total_iters=4)
    t2 = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=12, eta_min=1e-3)
    f1 = nn.LinearLR(opt, start_factor=0.25, total_iters=4)
    f2 = nn.CosineAnnealingLR(opt, T_max=12, eta_min=1e-3)
    got, want = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(20):
            got.append(opt.param_groups[0]["lr"])
            want.append(topt.param_groups[0]["lr"])
            topt.step()
            for s in (t1, t2, f1, f2):
                s.step()
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("kw", [
    dict(patience=2),
    dict(patience=1, factor=0.5, cooldown=2, min_lr=0.004),
    dict(mode="max", patience=1, threshold=0.05, threshold_mode="abs"),
    dict(patience=0, threshold=0.1, threshold_mode="rel", eps=1e-3),
])
def test_reduce_lr_on_plateau_matches_torch(kw):
    torch, topt, opt = _pair(lrs=(0.1, 0.05))
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    fs = nn.ReduceLROnPlateau(opt, **kw)
    metrics = [1.0, 0.9, 0.95, 0.95, 0.91, 0.89, 0.95, 0.88, 0.88, 0.885, 0.5, 0.6, 0.7, 0.7, 0.7,
               0.49, 0.52, 0.51, 0.5, 0.5]
    for v in metrics:
        topt.step()
        ts.step(v)
        fs.step(v)
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups],
                                   [g["lr"] for g in topt.param_groups], rtol=1e-12)
    assert fs.num_bad_epochs == ts.num_bad_epochs and fs.best == ts.best


def test_scheduler_errors():
    opt = fd.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="step_size must be >= 1"):
        nn.StepLR(opt, step_size=0)
    with pytest.raises(TypeError, match="gamma must be a real number"):
        nn.ExponentialLR(opt, gamma="0.9")
    with pytest.raises(ValueError, match="start_factor must be > 0"):
        nn.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="T_max must be >= 1"):
        nn.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match=r"factor must be < 1.0"):
        nn.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        nn.ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(TypeError, match="optimizer must be an optimizer with param_groups"):
        nn.StepLR(object(), step_size=1)


@needs_dense
def test_fit_steps_schedulers_per_epoch():
    X, y = _blobs()
    m = nn.MLP([5, 8, 3], seed=0)
    opt = fd.SGD(m.parameters(), lr=0.1)
    hist = nn.fit(m, X, y, optimizer=opt, scheduler=nn.StepLR(opt, step_size=2, gamma=0.5), epochs=5,
                  batch_size=32, progress=False)
    np.testing.assert_allclose(hist.lr, [0.1, 0.1, 0.05, 0.05, 0.025])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)   # epoch 6 would still use 0.025
    # ReduceLROnPlateau gets the monitored metric: a nearly frozen model (tiny lr) plateaus at once
    m = nn.MLP([5, 8, 3], seed=0)
    opt = fd.SGD(m.parameters(), lr=1e-6)
    plateau = nn.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    hist = nn.fit(m, X, y, optimizer=opt, scheduler=[plateau], epochs=6, batch_size=32,
                  validation_split=0.25, progress=False)
    assert hist.monitor == "val_loss"
    assert hist.lr == pytest.approx([1e-6, 1e-6, 1e-6, 5e-7, 5e-7, 2.5e-7])
    assert math.isclose(plateau.best, hist.val_loss[0])


@needs_dense
def test_fit_uses_a_backend_fused_train_step(monkeypatch):
    """The plug-in point for a backend's fused forward+backward+update: fit calls it per minibatch."""
    X, y = _blobs(n=50)
    m = nn.MLP([5, 8, 3], seed=0)
    opt = fd.Adam(m.parameters(), lr=0.1)
    calls = []

    def fused_train_step(plan):
        assert plan.bind() and plan.bucket.rule is opt.rule and plan.loss_kind == 0
        assert plan.flat_params is m.arena.flat_params and plan.desc.shape == (3, 4)
        if plan.rows != 16:
            return None                      # not handled: fit falls back to the kernel-by-kernel step

        def step(x, yb):                     # a real backend runs its fused kernel here
            calls.append((x.shape, yb.dtype))
            return 1.0
        return step

    monkeypatch.setattr(m._be, "fused_train_step", fused_train_step, raising=False)
    hist = nn.fit(m, X, y, optimizer=opt, epochs=2, batch_size=16, progress=False)
    assert calls == [((1, 16, 5), np.dtype(np.int64))] * 6       # 3 full batches per epoch
    assert len(hist) == 2 and all(np.isfinite(hist.loss))          # the 2-row batch ran the normal way
