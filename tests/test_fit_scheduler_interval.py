"""fd.fit(..., scheduler_interval="epoch" | "step"): per-minibatch scheduling (OneCycleLR as
torch users drive it) must equal a hand-written ``step; sched.step()`` loop, on every host backend and
through the fused c / numba training step; "epoch" keeps the old once-per-epoch behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastdescent as fd
import fastdescent.nn as nn
from fastdescent.optim.lr_scheduler import OneCycleLR

from conftest import count_fused, require_backend

N, D, K = 90, 5, 3
BS = 20                      # 5 minibatches per epoch, the last one 10 rows
EPOCHS = 3
PER_EPOCH = math.ceil(N / BS)
TOTAL = EPOCHS * PER_EPOCH


def _blobs(n=N, d=D, k=K, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(k, d))
    y = rng.integers(0, k, size=n)
    return centers[y] + rng.normal(size=(n, d)), y


def _build(backend, dtype=np.float64):
    m = nn.MLP([D, 16, K], seed=0, dtype=dtype, backend=backend)
    opt = fd.Adam(m.parameters(), lr=1e-3, backend=backend)
    return m, opt


def _one_cycle(opt, total=TOTAL):
    return OneCycleLR(opt, max_lr=0.05, total_steps=total)


def _manual(m, opt, sched, X, y, *, seed=3, per_step=True, how="train_step"):
    """The loop fit runs: one permutation from default_rng(seed) per epoch, contiguous minibatches,
    ``opt step; sched.step()`` after each (or once per epoch). Returns the lr of every minibatch."""
    Xc = np.ascontiguousarray(X, dtype=m.dtype)
    yc = np.ascontiguousarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    steps, lrs = {}, []
    for _ in range(EPOCHS):
        perm = rng.permutation(N)
        for s in range(0, N, BS):
            idx = perm[s:s + BS]
            xb, yb = np.ascontiguousarray(Xc[idx]), np.ascontiguousarray(yc[idx])
            lrs.append(opt.param_groups[0]["lr"])
            if how == "train_step":          # the very closure fit builds (bit-identical)
                r = len(idx)
                if r not in steps:
                    steps[r] = m.make_train_step(opt, "cross_entropy", rows=r)
                steps[r](xb.reshape(1, r, D), yb)
            else:                            # the plain kernel-by-kernel path
                _, grads = m.loss_and_grad(xb, yb)
                opt.step(grads)
            if per_step and sched is not None:
                sched.step()
        if not per_step and sched is not None:
            sched.step()
    return lrs


def _fit(m, opt, sched, X, y, **kw):
    return nn.fit(m, X, y, optimizer=opt, scheduler=sched, epochs=EPOCHS, batch_size=BS, seed=3,
                  progress=False, **kw)


# ----------------------------------------------------------------------------------- "step"
def test_step_interval_equals_the_manual_loop_exactly_on_numpy():
    X, y = _blobs()
    a, oa = _build("numpy")
    b, ob = _build("numpy")
    sa, sb = _one_cycle(oa), _one_cycle(ob)
    hist = _fit(a, oa, sa, X, y, scheduler_interval="step")
    lrs = _manual(b, ob, sb, X, y)
    np.testing.assert_array_equal(a.arena.flat_params, b.arena.flat_params)
    assert sa.last_epoch == sb.last_epoch == TOTAL
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    assert oa.param_groups[0]["betas"] == ob.param_groups[0]["betas"]      # cycled momentum too
    assert hist.lr == lrs[::PER_EPOCH]       # History.lr: the lr of each epoch's first minibatch
    assert len(set(lrs)) == TOTAL            # the lr really moved every minibatch
    # the plain loss_and_grad + opt.step loop agrees to rounding
    c, oc = _build("numpy")
    _manual(c, oc, _one_cycle(oc), X, y, how="loss_and_grad")
    np.testing.assert_allclose(a.arena.flat_params, c.arena.flat_params, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", ["c", "numba"])
def test_step_interval_through_the_fused_step(backend, monkeypatch):
    require_backend(backend)
    X, y = _blobs()
    a, oa = _build(backend)
    probe = a.make_train_step(oa, "cross_entropy", rows=BS)
    if not getattr(probe, "fused", False):
        pytest.skip(f"{backend}: no fused train step for this model here")
    del probe
    with monkeypatch.context() as mp:
        counter = count_fused(backend, mp)
        hist = _fit(a, oa, _one_cycle(oa), X, y, scheduler_interval="step")
    assert counter.calls == TOTAL     # every minibatch went through the fused kernel
    # same backend, same closures, hand-written loop: identical
    b, ob = _build(backend)
    lrs = _manual(b, ob, _one_cycle(ob), X, y)
    np.testing.assert_array_equal(a.arena.flat_params, b.arena.flat_params)
    assert hist.lr == lrs[::PER_EPOCH]
    # the kernel-by-kernel loop on the same backend, and the numpy reference: to rounding
    c, oc = _build(backend)
    _manual(c, oc, _one_cycle(oc), X, y, how="loss_and_grad")
    np.testing.assert_allclose(a.arena.flat_params, c.arena.flat_params, rtol=1e-9, atol=1e-11)
    r, orf = _build("numpy")
    _fit(r, orf, _one_cycle(orf), X, y, scheduler_interval="step")
    np.testing.assert_allclose(a.arena.flat_params, r.arena.flat_params, rtol=1e-9, atol=1e-11)
    # and a per-step schedule is not what the per-epoch one gives (the lr really reached the kernel)
    e, oe = _build(backend)
    _fit(e, oe, _one_cycle(oe), X, y, scheduler_interval="epoch")
    assert not np.allclose(a.arena.flat_params, e.arena.flat_params, rtol=1e-6, atol=1e-8)


def test_step_interval_keeps_reduce_lr_on_plateau_per_epoch():
    X, y = _blobs()
    hists = {}
    for interval in ("epoch", "step"):
        m = nn.MLP([D, 8, K], seed=0, backend="numpy")
        opt = fd.SGD(m.parameters(), lr=1e-6)
        plateau = nn.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        hists[interval] = nn.fit(m, X, y, optimizer=opt, scheduler=[plateau], epochs=4, batch_size=BS,
                                 validation_split=0.25, scheduler_interval=interval, progress=False)
    assert hists["step"].lr == hists["epoch"].lr
    assert hists["step"].val_loss == hists["epoch"].val_loss


def test_step_interval_exhausted_total_steps_raises_like_one_cycle():
    X, y = _blobs()
    m, opt = _build("numpy")
    sched = _one_cycle(opt, total=TOTAL - 1)     # one minibatch short
    with pytest.raises(ValueError, match="total steps"):
        _fit(m, opt, sched, X, y, scheduler_interval="step")
    # exactly TOTAL steps is fine (the last step lands on total_steps, as in torch)
    m, opt = _build("numpy")
    _fit(m, opt, _one_cycle(opt), X, y, scheduler_interval="step")


# ---------------------------------------------------------------------------------- "epoch"
def test_epoch_interval_is_the_default_and_unchanged():
    X, y = _blobs()
    res = []
    for kw in ({}, {"scheduler_interval": "epoch"}):
        m = nn.MLP([D, 8, K], seed=0, dtype=np.float64, backend="numpy")
        opt = fd.SGD(m.parameters(), lr=0.1)
        hist = _fit(m, opt, nn.StepLR(opt, step_size=2, gamma=0.5), X, y, **kw)
        np.testing.assert_allclose(hist.lr, [0.1, 0.1, 0.05])
        res.append(m.arena.flat_params.copy())
    np.testing.assert_array_equal(res[0], res[1])
    m = nn.MLP([D, 8, K], seed=0, dtype=np.float64, backend="numpy")
    opt = fd.SGD(m.parameters(), lr=0.1)
    _manual(m, opt, nn.StepLR(opt, step_size=2, gamma=0.5), X, y, per_step=False)
    np.testing.assert_array_equal(res[0], m.arena.flat_params)


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad", ["batch", "Step", "", None, 1, b"step", ["step"]])
def test_bad_scheduler_interval_raises_naming_it(bad):
    X, y = _blobs()
    m, opt = _build("numpy")
    with pytest.raises(ValueError, match="scheduler_interval"):
        _fit(m, opt, None, X, y, scheduler_interval=bad)
