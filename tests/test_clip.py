"""Gradient clipping by global norm, non-finite gradients, and ``skip_nonfinite`` optimizers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, make
from conftest import Device
from fastdescent import functional as F
from reference import RefOptimizer, assert_close, clip_grad_norm

SHAPES = [(4, 3), (), (1,), (0,), (2, 1, 5), (7,)]
CUDA_SHAPES = [(3,), (), (0,), (2, 2)]
NORMS = [1.0, 2.0, 3.5, math.inf]


def grads_of(backend, dtype, seed=0, scale=1.0):
    shapes = CUDA_SHAPES if backend == "cuda" else SHAPES
    rng = np.random.default_rng(seed)
    dts = [np.float32 if i % 2 == 0 else np.float64 for i in range(len(shapes))] \
        if dtype == "mixed" else [np.dtype(dtype)] * len(shapes)
    return [np.asarray(rng.standard_normal(s) * scale, dtype=d) for s, d in zip(shapes, dts)]


@pytest.mark.parametrize("max_norm", [0.5, 1e6, 0.0], ids=["clips", "no-clip", "zero"])
@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed"])
def test_clip_matches_reference(backend, dtype, norm_type, max_norm):
    if backend == "cuda" and (dtype != "mixed" or max_norm != 0.5):
        pytest.skip("cuda (simulator, slow reductions): mixed dtypes, clipping, only")
    dev = Device(backend)
    host = grads_of(backend, dtype, scale=3.0)
    total_ref, clipped = clip_grad_norm(host, max_norm, norm_type)
    grads = [dev.put(g) for g in host]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total = fd.clip_grad_norm_(grads, max_norm, norm_type=norm_type, backend=backend)
    assert isinstance(total, float)
    assert total == pytest.approx(total_ref, rel=1e-12, abs=0)
    for j, (g, want, orig) in enumerate(zip(grads, clipped, host)):
        got = dev.get(g)
        if max_norm == 1e6:  # coef == 1: untouched, bit for bit
            np.testing.assert_array_equal(got, orig)
        else:
            assert_close(got, want, what=f"grads[{j}]")
    if max_norm == 0.0:
        assert all(not np.any(dev.get(g)) for g in grads)


def test_clip_reduces_the_norm_to_max_norm():
    """Not only 'like the reference': the clipped norm really is max_norm (up to the 1e-6)."""
    for norm_type in NORMS:
        grads = grads_of("numpy", "float64", seed=1, scale=5.0)
        fd.clip_grad_norm_(grads, 2.0, norm_type=norm_type, backend="numpy")
        flat = np.concatenate([g.reshape(-1) for g in grads])
        after = (np.max(np.abs(flat)) if math.isinf(norm_type)
                 else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type))
        assert after == pytest.approx(2.0, rel=1e-6)


def test_clip_all_zero_and_empty(backend):
    dev = Device(backend)
    grads = [dev.put(np.zeros(s, np.float32)) for s in [(3,), (0,), ()]]
    for norm_type in NORMS:
        assert fd.clip_grad_norm_(grads, 1.0, norm_type=norm_type, backend=backend) == 0.0
    assert all(not np.any(dev.get(g)) for g in grads)


def test_clip_float64_accumulation_of_float32(backend):
    """float32 values whose squares overflow float32 still give a finite float64 norm."""
    dev = Device(backend)
    grads = [dev.put(np.full(3, 1e30, np.float32)), dev.put(np.full(2, -1e30, np.float32))]
    total = fd.clip_grad_norm_(grads, 1.0, backend=backend)
    assert total == pytest.approx(math.sqrt(5) * 1e30, rel=1e-6)
    for g in grads:
        assert np.all(np.isfinite(dev.get(g)))
        assert np.all(np.abs(dev.get(g)) < 1.0)


# (where to put the bad value, value) -- the bad value may sit in any tensor of any dtype bucket,
# first or last, so a reduction that only looks at some of them is caught
NONFINITE = [(0, math.nan), (1, math.inf), (2, -math.inf), (4, math.nan), (5, math.nan), (5, math.inf)]


@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("where,value", NONFINITE, ids=[f"t{w}-{v}" for w, v in NONFINITE])
@pytest.mark.parametrize("dtype", ["float32", "mixed"])
def test_clip_nonfinite_total_warns_and_leaves_grads(backend, dtype, where, value, norm_type):
    if backend == "cuda":
        if dtype != "mixed" or norm_type not in (2.0, math.inf) or where not in (0, 5):
            pytest.skip("cuda (simulator, slow reductions): mixed dtypes, norms 2 and inf, "
                        "first and last tensor only")
        where = 0 if where == 0 else len(CUDA_SHAPES) - 1
    dev = Device(backend)
    host = grads_of(backend, dtype, seed=2)
    if host[where].size == 0:
        where = 0
    host[where].reshape(-1)[-1] = value
    grads = [dev.put(g) for g in host]
    with pytest.warns(RuntimeWarning, match="non-finite"):
        total = fd.clip_grad_norm_(grads, 0.1, norm_type=norm_type, backend=backend)
    assert not math.isfinite(total)
    for g, orig in zip(grads, host):
        np.testing.assert_array_equal(dev.get(g), orig)
    with pytest.raises(FloatingPointError, match="non-finite"):
        fd.clip_grad_norm_(grads, 0.1, norm_type=norm_type, backend=backend,
                           error_if_nonfinite=True)
    for g, orig in zip(grads, host):
        np.testing.assert_array_equal(dev.get(g), orig)


@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed"])
def test_all_finite(backend, dtype):
    if backend == "cuda" and dtype != "mixed":
        pytest.skip("cuda (simulator, slow reductions): mixed dtypes only")
    dev = Device(backend)
    host = grads_of(backend, dtype, seed=3)
    assert F.all_finite([dev.put(g) for g in host], backend=backend) is True
    for j in range(len(host)):
        if host[j].size == 0 or (backend == "cuda" and j not in (0, len(host) - 1)):
            continue
        for value in (math.nan, math.inf, -math.inf):
            bad = [g.copy() for g in host]
            bad[j].reshape(-1)[-1] = value
            assert F.all_finite([dev.put(g) for g in bad], backend=backend) is False, (j, value)


# ------------------------------------------------------------------------------ skip_nonfinite
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("kind", list(BY_KIND))
def test_skip_nonfinite_step(backend, kind, value):
    """A step whose gradients hold a NaN/Inf (in any tensor, any dtype bucket) changes nothing, is
    counted, and the run then goes on exactly like a twin that never saw it."""
    if backend == "cuda" and (kind != "adam" or not math.isnan(value)):
        pytest.skip("cuda (simulator, slow reductions): adam with NaN only")
    dev = Device(backend)
    case = BY_KIND[kind][-1]
    shapes = CUDA_SHAPES if backend == "cuda" else SHAPES
    rng = np.random.default_rng(4)
    dts = [np.float32 if i % 2 == 0 else np.float64 for i in range(len(shapes))]
    init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dts)]
    steps = [[rng.standard_normal(s).astype(d) for s, d in zip(shapes, dts)]
             for _ in range(2 if backend == "cuda" else 4)]
    params, twin_params = [dev.put(a) for a in init], [dev.put(a) for a in init]
    opt = make(fd, case, params, backend=backend, skip_nonfinite=True)
    twin = make(fd, case, twin_params, backend=backend, skip_nonfinite=True)
    for k, gs in enumerate(steps):
        assert opt.step([dev.put(g) for g in gs]) is True
        assert twin.step([dev.put(g) for g in gs]) is True
        assert opt.last_step_skipped is False
        before = [dev.get(p) for p in params], opt.state_dict()
        for j in (k % len(shapes), len(shapes) - 1 - (k % len(shapes))):  # a float32 and a float64 one
            if gs[j].size == 0:
                continue
            bad = [g.copy() for g in gs]
            bad[j].reshape(-1)[0] = value
            assert opt.step([dev.put(g) for g in bad]) is False
            assert opt.last_step_skipped is True
            for p, b in zip(params, before[0]):
                np.testing.assert_array_equal(dev.get(p), b)
            sd = opt.state_dict()
            assert sd["state"].keys() == before[1]["state"].keys()
            for i, st in sd["state"].items():
                for n, v in st.items():
                    np.testing.assert_array_equal(v, before[1]["state"][i][n])
    assert opt.skipped_steps > 0 and twin.skipped_steps == 0
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(dev.get(p), dev.get(q))


def test_skip_nonfinite_on_the_first_step_creates_no_state(backend):
    """SEMANTICS.md: a skipped step changes neither parameters nor STATE: a NaN first step must not
    leave state entries (zeros, step 0) behind."""
    dev = Device(backend)
    params = [dev.put(np.ones(3, np.float32)), dev.put(np.ones(2, np.float32))]
    opt = fd.Adam(params, lr=0.1, backend=backend, skip_nonfinite=True)
    assert opt.step([dev.put(np.array([1.0, np.nan, 1.0], np.float32)),
                     dev.put(np.ones(2, np.float32))]) is False
    assert opt.skipped_steps == 1
    assert opt.state_dict()["state"] == {}
    assert opt.state == {}


@pytest.mark.parametrize("kind", list(BY_KIND))
def test_nonfinite_grads_propagate_by_default(host_backend, kind):
    """Without skip_nonfinite the update follows IEEE arithmetic (as torch): a NaN gradient element
    gives a NaN parameter element; the other elements are updated normally."""
    case = BY_KIND[kind][-1]
    rng = np.random.default_rng(6)
    init = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    gs = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    gs[0][1, 2] = np.nan
    params = [a.copy() for a in init]
    opt = make(fd, case, params, backend=host_backend)
    assert opt.step(gs) is True
    ref = RefOptimizer(kind, [dict(case.hp, params=init)])
    ref.step(gs)
    if kind == "rprop":  # torch.sign(NaN) = 0: Rprop does not move that element
        assert params[0][1, 2] == init[0][1, 2]
    else:
        assert np.isnan(params[0][1, 2])
    mask = np.ones((3, 4), bool)
    mask[1, 2] = False
    assert_close(params[0][mask], ref.param(0)[mask])
    assert_close(params[1], ref.param(1))
    assert opt.skipped_steps == 0 and opt.last_step_skipped is False
