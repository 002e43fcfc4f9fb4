"""The c backend against the numpy backend: every option of every optimizer, float32 and float64,
7 steps, parameters AND state, on a table that mixes one large tensor with hundreds of tiny ones, on
both C code paths and on 1 and 2 threads. With a small parallel grain, 2 threads take pieces of
~1.4k elements, so the pieces cut through the large tensor and span runs of tiny ones. The
C-specific safety net; tests/test_parity.py is the general suite.
"""

from __future__ import annotations

import math
import platform

import numpy as np
import pytest

import fastdescent as fd
from fastdescent import functional as F

N_STEPS = 7
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
# Without FMA (x86-64 baseline) the generic path does exactly the reference's operations.
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


#: elements per thread for the chunked runs (the default grain keeps tables this small on one thread)
SMALL_GRAIN = 512




def mixed_shapes(seed=7):
    """One 20001-element tensor in the middle of 150 tiny ones (0..40 elements) and a few 2-D ones:
    ~23k elements; with SMALL_GRAIN on 2 threads, 32 work pieces of ~720 elements."""
    rng = np.random.default_rng(seed)
    tiny = [(int(k),) for k in rng.integers(0, 41, 150)]
    return tiny[:70] + [(20001,), (17, 5), (3, 1, 4)] + tiny[70:]


SHAPES = mixed_shapes()

CASES = [
    (fd.SGD, dict(lr=0.1)),
    (fd.SGD, dict(lr=0.1, weight_decay=0.05)),
    (fd.SGD, dict(lr=0.1, momentum=0.9)),
    (fd.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (fd.SGD, dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.05)),
    (fd.SGD, dict(lr=0.1, momentum=0.9, maximize=True)),
    (fd.Adam, dict(lr=1e-2)),
    (fd.Adam, dict(lr=1e-2, weight_decay=0.1)),
    (fd.Adam, dict(lr=1e-2, amsgrad=True)),
    (fd.Adam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, amsgrad=True, weight_decay=0.1,
                   maximize=True)),
    (fd.AdamW, dict(lr=1e-2)),
    (fd.AdamW, dict(lr=1e-2, weight_decay=0.5, amsgrad=True, maximize=True)),
    (fd.RMSprop, dict(lr=1e-2)),
    (fd.RMSprop, dict(lr=1e-2, centered=True)),
    (fd.RMSprop, dict(lr=1e-2, momentum=0.9)),
    (fd.RMSprop, dict(lr=1e-2, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1)),
    (fd.RMSprop, dict(lr=1e-2, maximize=True, weight_decay=0.01)),
    (fd.Adagrad, dict(lr=1e-2)),
    (fd.Adagrad, dict(lr=1e-2, lr_decay=0.05)),
    (fd.Adagrad, dict(lr=1e-2, weight_decay=0.1, initial_accumulator_value=0.5)),
    (fd.Adagrad, dict(lr=1e-2, maximize=True, eps=1e-6)),
    (fd.Rprop, dict(lr=1e-2)),
    (fd.Rprop, dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-3, 0.1), maximize=True)),
    (fd.Adamax, dict(lr=2e-3)),
    (fd.Adamax, dict(lr=1e-2, betas=(0.3, 0.9), weight_decay=0.1, maximize=True)),
    (fd.Adamax, dict(lr=1e-2, betas=(0.0, 0.99), eps=1e-3)),
    (fd.Adadelta, dict(lr=1.0)),
    (fd.Adadelta, dict(lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.1, maximize=True)),
    (fd.Adadelta, dict(lr=0.1, rho=1.0)),
    (fd.NAdam, dict(lr=1e-2)),
    (fd.NAdam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, momentum_decay=0.1,
                    maximize=True)),
    (fd.NAdam, dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    (fd.RAdam, dict(lr=1e-2)),  # (7 steps: the last two are rectified)
    (fd.RAdam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, maximize=True)),
    (fd.RAdam, dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
]


def _ids(case):
    cls, kw = case
    return cls.__name__ + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


def run_steps(cls, kw, backend, dtype, shapes=SHAPES, n_steps=N_STEPS, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    opt = cls(params, backend=backend, **kw)
    for _ in range(n_steps):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        opt.step(grads)
    state = {i: {k: np.array(v) for k, v in st.items() if k != "step"} for i, st in opt.state.items()}
    return params, state


_REF = {}


def reference(cls, kw, dtype):
    key = (_ids((cls, kw)), np.dtype(dtype).str)
    if key not in _REF:
        _REF[key] = run_steps(cls, kw, "numpy", dtype)
    return _REF[key]


def compare(got, want, dtype, exact=False):
    (gp, gs), (wp, ws) = got, want
    assert gs.keys() == ws.keys()
    pairs = list(zip(gp, wp)) + [(gs[i][k], ws[i][k]) for i in ws for k in ws[i]]
    for k, (a, b) in enumerate(pairs):
        assert a.dtype == b.dtype and a.shape == b.shape
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=f"array {k}")
        else:
            np.testing.assert_allclose(a, b, err_msg=f"array {k}", **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_optimizer_parity(case, dtype, c_settings):
    C = c_settings
    cls, kw = case
    want = reference(cls, kw, dtype)
    # no multiply-add contraction on any path (FD_EXACT_FP): the same IEEE operations as the
    # reference, so on x86 (SSE2 baseline / AVX2) the results are bit-identical
    C.set_simd_path("auto")
    C.set_num_threads(2)
    C.set_parallel_grain(SMALL_GRAIN)  # chunked across threads
    compare(run_steps(cls, kw, "c", dtype), want, dtype, exact=X86)
    C.set_simd_path("generic")
    C.set_num_threads(0)
    C.set_parallel_grain(0)  # the defaults: this table runs on the calling thread
    compare(run_steps(cls, kw, "c", dtype), want, dtype, exact=X86)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", [CASES[4], CASES[9], CASES[15], CASES[19]],
                         ids=[_ids(c) for c in (CASES[4], CASES[9], CASES[15], CASES[19])])
def test_updates_identical_on_1_and_2_threads(case, dtype, c_settings):
    C = c_settings
    cls, kw = case
    C.set_parallel_grain(SMALL_GRAIN)
    C.set_num_threads(1)
    one = run_steps(cls, kw, "c", dtype, n_steps=3)
    C.set_num_threads(2)
    two = run_steps(cls, kw, "c", dtype, n_steps=3)
    compare(one, two, dtype, exact=True)


# ------------------------------------------------------------------------------ clipping kernels
def _grads(dtype, shapes=SHAPES, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, 0.5, math.inf])
def test_norm_pow_sum_parity_and_thread_independence(norm_type, dtype, c_settings):
    C = c_settings
    shapes = SHAPES + [(40000,)] * 3  # > 140k elements: 9 reduction chunks
    g = _grads(dtype, shapes)
    flat = np.abs(np.concatenate([a.reshape(-1) for a in g]).astype(np.float64))
    if math.isinf(norm_type):
        want = float(flat.max())
    else:
        want = math.fsum((flat ** norm_type).tolist())
    tab = C.Table.from_columns(dtype, {"grad": g})
    results = {}
    for path in ("auto", "generic"):
        C.set_simd_path(path)
        C.set_parallel_grain(0)
        results[(path, 0)] = C.KERNELS["norm_pow_sum"](tab, norm_type=norm_type)
        C.set_parallel_grain(SMALL_GRAIN)  # the fixed reduction chunks spread over the threads
        for threads in (1, 2):
            C.set_num_threads(threads)
            results[(path, threads)] = C.KERNELS["norm_pow_sum"](tab, norm_type=norm_type)
    for path in ("auto", "generic"):
        # bit-identical whatever the thread count and grain
        assert results[(path, 1)] == results[(path, 2)] == results[(path, 0)]
        assert results[(path, 1)] == pytest.approx(want, rel=1e-12)
    if math.isinf(norm_type):
        assert results[("auto", 1)] == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_norm_inf_and_all_finite_see_every_position(dtype, c_settings):
    C = c_settings
    C.set_parallel_grain(SMALL_GRAIN)
    g = _grads(dtype, SHAPES)
    tab = C.Table.from_columns(dtype, {"grad": g})
    nonempty = [i for i, a in enumerate(g) if a.size]
    big = max(range(len(g)), key=lambda i: g[i].size)
    positions = [(nonempty[0], 0), (nonempty[-1], g[nonempty[-1]].size - 1), (big, 15000),
                 (nonempty[len(nonempty) // 3], 0)]
    assert C.KERNELS["all_finite"](tab) is True
    for i, j in positions:
        for bad in (np.inf, -np.inf, np.nan):
            flat = g[i].reshape(-1)
            old = flat[j]
            flat[j] = bad
            assert C.KERNELS["all_finite"](tab) is False
            r = C.KERNELS["norm_pow_sum"](tab, norm_type=math.inf)
            assert (math.isnan(r) if np.isnan(bad) else r == math.inf)
            flat[j] = old
    assert C.KERNELS["all_finite"](tab) is True


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_scale_and_clip_grad_norm_parity(dtype, C):
    ga = _grads(dtype)
    gb = [a.copy() for a in ga]
    C.KERNELS["scale"](C.Table.from_columns(dtype, {"grad": ga}), factor=0.37)
    for a, b in zip(ga, gb):
        np.testing.assert_array_equal(a, b * dtype(0.37))  # one multiply, correctly rounded
    # (1-D views: the numpy backend's norm kernel takes flat gradients)
    ga = [a.reshape(-1) for a in ga]
    gb = [a.copy() for a in ga]
    ta = F.clip_grad_norm_(ga, 1.0, backend="c")
    tb = F.clip_grad_norm_(gb, 1.0, backend="numpy")
    assert ta == pytest.approx(tb, rel=1e-10)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(a, b, **TOL[dtype])


def test_functional_adam_matches_optimizer_on_c(C):
    rng = np.random.default_rng(5)
    shapes = [(33,), (0,), (1000,)]
    p1 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    p2 = [a.copy() for a in p1]
    m = [np.zeros(s, np.float32) for s in shapes]
    v = [np.zeros(s, np.float32) for s in shapes]
    opt = fd.Adam(p2, lr=1e-2, backend="c")
    for t in range(1, 8):
        g = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        F.adam(p1, g, m, v, step=t, lr=1e-2, backend="c")
        opt.step(g)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)
