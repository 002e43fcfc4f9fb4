"""Numba backend through the public API: optimizer classes and functional calls against ``numpy``.

Many small parameters (one bucket, one kernel call per step) and a ParamArena (coalesced to one flat
tensor) both go through ``backend="numba"``; parameters and state must match the NumPy backend after
every step.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

import fastdescent as fd  # noqa: E402
from fastdescent import functional as F  # noqa: E402
from fastdescent.backends.numba_cpu import _config  # noqa: E402

EXACT = not _config.JIT_OPTIONS.get("fastmath")
STEPS = 7

OPTIMIZERS = [
    (fd.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (fd.SGD, dict(lr=0.05, momentum=0.9, dampening=0.2, maximize=True)),
    (fd.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    (fd.AdamW, dict(lr=0.01, maximize=True)),
    (fd.RMSprop, dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.01)),
    (fd.RMSprop, dict(lr=0.01)),
    (fd.Adagrad, dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1)),
    (fd.Rprop, dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-3, 0.1), maximize=True)),
    (fd.NAdam, dict(lr=0.01, weight_decay=0.01, momentum_decay=0.1, maximize=True)),
    (fd.RAdam, dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True)),
]


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(40, 30), (30,), (7, 3, 2), (1,)] + [(int(k),) for k in rng.integers(1, 9, 60)]
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _close(a, b, dtype):
    if EXACT:
        np.testing.assert_array_equal(a, b)
    else:
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12)
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cls,kw", OPTIMIZERS, ids=lambda x: getattr(x, "__name__", None) or
                         "-".join(f"{k}={v}" for k, v in x.items()))
def test_optimizer_matches_numpy_backend(cls, kw, dtype):
    p_nb, p_np = _params(dtype), _params(dtype)
    o_nb = cls(p_nb, backend="numba", **kw)
    o_np = cls(p_np, backend="numpy", **kw)
    assert o_nb.backend == "numba"
    rng = np.random.default_rng(7)
    grads = [np.empty_like(p) for p in p_nb]  # persistent gradient buffers, refilled each step
    for _ in range(STEPS):
        for g in grads:
            g[...] = rng.standard_normal(g.shape)
        o_nb.step(grads)
        o_np.step([g.copy() for g in grads])
        for a, b in zip(p_nb, p_np):
            _close(a, b, dtype)
    s_nb, s_np = o_nb.state_dict()["state"], o_np.state_dict()["state"]
    assert s_nb.keys() == s_np.keys()
    for i in s_nb:
        assert s_nb[i]["step"] == s_np[i]["step"] == STEPS
        for name in s_np[i]:
            if name != "step":
                _close(s_nb[i][name], s_np[i][name], dtype)


def test_arena_flat_bucket_matches_numpy():
    shapes = [(300, 200), (200,), (5,)]
    a_nb, a_np = fd.ParamArena(shapes), fd.ParamArena(shapes)
    rng = np.random.default_rng(1)
    a_nb.flat_params[...] = rng.standard_normal(a_nb.flat_params.size)
    a_np.flat_params[...] = a_nb.flat_params
    o_nb = fd.Adam(a_nb, lr=0.01, backend="numba")
    o_np = fd.Adam(a_np, lr=0.01, backend="numpy")
    for _ in range(STEPS):
        a_nb.flat_grads[...] = rng.standard_normal(a_nb.flat_grads.size)
        a_np.flat_grads[...] = a_nb.flat_grads
        o_nb.step()
        o_np.step()
    assert o_nb._buckets[0].tab.n == 1  # coalesced: one flat tensor, above the parallel threshold
    _close(a_nb.flat_params, a_np.flat_params, np.float32)


def test_skip_nonfinite_uses_all_finite():
    p = _params(np.float32)
    before = [a.copy() for a in p]
    opt = fd.Adam(p, backend="numba", skip_nonfinite=True)
    grads = [np.ones_like(a) for a in p]
    grads[-1][0] = np.nan
    assert opt.step(grads) is False and opt.last_step_skipped
    for a, b in zip(p, before):
        np.testing.assert_array_equal(a, b)
    grads[-1][0] = 1.0
    assert opt.step(grads) is True


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
def test_functional_clip(norm_type):
    g = _params(np.float32, seed=4)  # includes 2-D and 3-D gradients
    orig = [a.copy() for a in g]
    flat = np.concatenate([a.ravel() for a in orig]).astype(np.float64)
    want = np.abs(flat).max() if np.isinf(norm_type) else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    total = F.clip_grad_norm_(g, 1.0, norm_type, backend="numba")
    assert total == pytest.approx(want, rel=1e-12)
    coef = np.float32(1.0 / (total + 1e-6))
    for a, b in zip(g, orig):
        np.testing.assert_array_equal(a, b * coef)
    assert F.all_finite(g, backend="numba") is True
