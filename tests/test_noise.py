"""Gradient noise on SGD (``noise_std``, ``noise_decay``, ``seed``; SEMANTICS.md "Gradient noise")
and its ``noise`` kernel: agreement with the oracle (a pure-Python Philox4x32-10 + Box-Muller) on
every backend, bit-identical results for any thread count, chunking or coalescing on one backend,
the statistics of the draws, reproducibility, the schedule, state dicts, validation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, Case
from conftest import HOST_BACKENDS, Device, require_backend
from fastdescent import functional as F
from fastdescent.backends.numpy_ref.noise import normals, tensor_key
from reference import normal, philox4x32_10
from test_parity import CUDA_SHAPES, run_and_compare

NOISE = dict(noise_std=0.3, noise_decay=0.55, seed=1234)


# ------------------------------------------------------------------------------ the generator
def test_philox_known_answers():
    """Random123's published known-answer vectors for Philox4x32-10, for the oracle and for the
    NumPy backend's vectorised version."""
    kat = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
           ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    from fastdescent.backends.numpy_ref.noise import philox4x32_10 as vec

    for ctr, key, want in kat:
        assert philox4x32_10(ctr, key) == want
        out = vec(*[np.array([c], np.uint64) for c in ctr], *key)
        assert tuple(int(o[0]) for o in out) == want


def test_numpy_generator_matches_the_oracle():
    for seed, index, t, start, n in [(0, 0, 1, 0, 9), (2 ** 63 - 1, 2 ** 40 + 3, 2 ** 61, 5, 6),
                                     (77, 3, 12, 1, 1), (5, 1, 2, 1000, 7)]:
        got = normals(tensor_key(seed, index), t, start, n)
        want = [normal(seed, index, t, e) for e in range(start, start + n)]
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


# ------------------------------------------------------------------------------ parity with the oracle
def _noise_cases():
    sgd = BY_KIND["sgd"]
    return [Case("sgd", {**sgd[0].hp, **NOISE}),  # plain SGD + noise
            Case("sgd", {**sgd[-1].hp, "noise_std": 0.1, "seed": 7}),  # momentum, decay 0
            Case("sgd", {**sgd[0].hp, **NOISE, "l1": 0.5})]  # noise, then the L1 prox


HOST_GRID = [("single", "float32"), ("many", "float64"), ("arena", "float32"), ("arena", "float64"),
             ("many", "mixed")]


@pytest.mark.parametrize("shape_set,dtype", HOST_GRID, ids=[f"{s}-{d}" for s, d in HOST_GRID])
@pytest.mark.parametrize("case", _noise_cases(), ids=lambda c: c.id)
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_noise_parity_host(backend, case, shape_set, dtype):
    """Each parameter's noise depends on its index, step and element only: the oracle's values,
    also for a coalesced ParamArena bucket (whose noise pass runs over the separate tensors)."""
    require_backend(backend)
    run_and_compare(backend, case, shape_set, dtype)


@pytest.mark.parametrize("case", _noise_cases()[::2], ids=lambda c: c.id)
def test_noise_parity_cuda(case):
    require_backend("cuda")
    for shape_set, dtype in (("single", "float32"), ("many", "mixed")):
        run_and_compare("cuda", case, shape_set, dtype, shapes=CUDA_SHAPES[shape_set])


# ------------------------------------------------------------------------------ exact invariances
SIZES = [1, 7, 40001, 0, 3, 20011]
INDEX = np.array([4, 0, 2, 8, 9, 1], np.int64)


def _table(mod, dtype, arrays):
    tab = mod.Table(np.dtype(dtype), [a.size for a in arrays])
    tab.set("param", arrays)
    return tab


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_c_is_identical_for_any_thread_count(c_settings, dtype):
    """Any thread count, grain (pieces cut inside pairs of elements) and code path: the same bits."""
    C = c_settings
    runs = []
    for threads, grain, path in ((1, 0, "auto"), (2, 101, "auto"), (3, 1000, "generic"),
                                 (4, 17, "auto")):
        C.set_num_threads(threads)
        C.set_parallel_grain(grain)
        C.set_simd_path(path)
        arrays = [np.zeros(n, dtype) for n in SIZES]
        C.KERNELS["noise"](_table(C, dtype, arrays), param_index=INDEX, sigma=0.7, seed=99, step=3)
        runs.append(np.concatenate(arrays))
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_is_identical_for_any_chunking(dtype):
    mod = require_backend("numba")
    runs = []
    for chunk, parallel in ((None, None), (64, False), (64, True), (1001, True), (3, True)):
        arrays = [np.zeros(n, dtype) for n in SIZES]
        tab = _table(mod, dtype, arrays)
        if chunk is not None:
            tab.plan(chunk=chunk, parallel=parallel)
        mod.KERNELS["noise"](tab, param_index=INDEX, sigma=0.7, seed=99, step=3)
        runs.append(np.concatenate(arrays))
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backends_agree_up_to_the_float_transform(dtype):
    """Every host backend draws the same numbers: equal in float32 (z is rounded to float32 after a
    float64 transform), within a few ulps of float64 in float64 (log/sin/cos differ in the last
    bits between libm and NumPy's SIMD versions)."""
    runs = {}
    for name in HOST_BACKENDS:
        mod = require_backend(name)
        arrays = [np.zeros(n, dtype) for n in SIZES]
        mod.KERNELS["noise"](_table(mod, dtype, arrays), param_index=INDEX, sigma=1.0, seed=5,
                             step=11)
        runs[name] = np.concatenate(arrays)
    ref = runs["numpy"]
    for name, r in runs.items():
        if dtype == "float32":
            np.testing.assert_allclose(r, ref, rtol=2 ** -23, atol=2 ** -30, err_msg=name)
            assert np.mean(r != ref) < 1e-3, name  # all but a rare rounding-boundary case
        else:
            np.testing.assert_allclose(r, ref, rtol=1e-14, atol=1e-15, err_msg=name)


def test_coalesced_arena_gets_the_noise_of_separate_arrays(host_backend):
    """A ParamArena bucket (SGD runs on one flat tensor) gets the same noise as the same parameters
    as separate arrays: the noise pass takes the bucket's per-tensor table with each parameter's
    index, so coalescing stays on."""
    shapes = [(40, 3), (7,), (), (2, 5, 5)]
    rng = np.random.default_rng(2)
    init = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    arena = fd.ParamArena(shapes, np.float64)
    for dst, src in zip(arena.params, init):
        dst[...] = src
    sep = [a.copy() for a in init]
    oa = fd.SGD(arena, lr=0.1, momentum=0.9, **NOISE, backend=host_backend)
    os_ = fd.SGD(sep, lr=0.1, momentum=0.9, **NOISE, backend=host_backend)
    for gs in grads:
        for dst, src in zip(arena.grads, gs):
            dst[...] = src
        oa.step()
        os_.step(gs)
    assert oa._buckets[0].tab is oa._buckets[0].tab_flat  # the update was coalesced
    for a, b in zip(arena.params, sep):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ statistics
def _draws(backend, n, steps, *, seed=0, nparams=2, sigma=1.0, decay=0.0, dtype=np.float64):
    """The noise increments of ``nparams`` parameters of n elements over ``steps`` steps (lr=0)."""
    dev = Device(backend)
    ps = [dev.put(np.zeros(n, dtype)) for _ in range(nparams)]
    zero = [dev.put(np.zeros(n, dtype)) for _ in range(nparams)]
    opt = fd.SGD(ps, lr=0.0, noise_std=sigma, noise_decay=decay, seed=seed, backend=backend)
    out = np.empty((steps, nparams, n))
    prev = np.zeros((nparams, n))
    for t in range(steps):
        opt.step(zero)
        cur = np.stack([dev.get(p).astype(np.float64) for p in ps])
        out[t] = cur - prev
        prev = cur
    return out


def test_mean_variance_and_independence(backend):
    """Over many elements: mean ~ 0 and variance ~ sigma^2; draws are uncorrelated across steps,
    across parameters, between the two halves of a Box-Muller pair and between seeds (each bound
    is 6 standard errors)."""
    n = 200_000 if backend != "cuda" else 2_000  # the simulator runs every GPU thread in Python
    sigma = 0.5
    d = _draws(backend, n, 2, sigma=sigma) / sigma
    z = d.reshape(-1)
    m = z.size
    assert abs(z.mean()) < 6 / math.sqrt(m)
    assert abs(z.var() - 1) < 6 * math.sqrt(2 / m)
    assert abs(np.mean(z ** 4) - 3) < 6 * math.sqrt(96 / m)  # Gaussian kurtosis
    se = 6 / math.sqrt(n)
    assert abs(np.corrcoef(d[0, 0], d[1, 0])[0, 1]) < se  # step 1 vs step 2
    assert abs(np.corrcoef(d[0, 0], d[0, 1])[0, 1]) < se  # parameter 0 vs parameter 1
    assert abs(np.corrcoef(d[0, 0, 0::2], d[0, 0, 1::2])[0, 1]) < 6 / math.sqrt(n / 2)  # cos/sin
    assert abs(np.corrcoef(d[0, 0, :-1], d[0, 0, 1:])[0, 1]) < se  # neighbours
    other = _draws(backend, n, 1, seed=1, sigma=sigma) / sigma
    assert abs(np.corrcoef(d[0, 0], other[0, 0])[0, 1]) < se  # seed 0 vs seed 1
    # a two-sample tail check: P(|z| > 3) ~ 0.0027
    frac = np.mean(np.abs(z) > 3)
    assert abs(frac - 0.0026998) < 6 * math.sqrt(0.0027 / m)


def test_reproducible_from_the_seed(backend):
    n = 1000 if backend != "cuda" else 64
    a = _draws(backend, n, 3, seed=42)
    b = _draws(backend, n, 3, seed=42)
    c = _draws(backend, n, 3, seed=43)
    np.testing.assert_array_equal(a, b)
    assert np.all(a != c)


def test_noise_decay_schedule(host_backend):
    """With lr = 0 the increment of step t is exactly sigma_t * z_t (NumPy backend: float64
    arithmetic on the same z), sigma_t = noise_std * t**-noise_decay computed in float64."""
    n, std, decay = 501, 0.8, 0.55
    d = _draws("numpy", n, 6, seed=3, nparams=1, sigma=std, decay=decay)
    for t in range(1, 7):
        z = normals(tensor_key(3, 0), t, 0, n)
        sigma_t = std * float(t) ** -decay
        np.testing.assert_allclose(d[t - 1, 0], sigma_t * z, rtol=1e-12, atol=1e-15)
    # and every backend follows it
    other = _draws(host_backend, n, 6, seed=3, nparams=1, sigma=std, decay=decay)
    np.testing.assert_allclose(other, d, rtol=1e-10, atol=1e-13)


def test_noise_depends_on_the_parameter_index_not_the_group(host_backend):
    """Param i's noise is keyed by its position in the optimizer's parameter list, whatever its
    group or bucket: two groups (different lr) give the values a one-group optimizer gives."""
    shapes = [(5,), (6,), (7,)]
    a = [np.zeros(s) for s in shapes]
    b = [np.zeros(s) for s in shapes]
    zeros = [np.zeros(s) for s in shapes]
    oa = fd.SGD(a, lr=0.1, **NOISE, backend=host_backend)
    ob = fd.SGD([{"params": [b[0], b[1]]}, {"params": [b[2]], "lr": 0.5}], lr=0.1, **NOISE,
                backend=host_backend)
    oa.step(zeros)
    ob.step(zeros)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------ state dicts
def test_state_dict_round_trip_continues_the_noise(backend):
    """The step count survives a state_dict round trip, so the noise continues identically (also
    without momentum, where SGD keeps no buffer)."""
    dev = Device(backend)
    n = 50 if backend != "cuda" else 9
    rng = np.random.default_rng(0)
    grads = [[dev.put(rng.standard_normal(n)), dev.put(rng.standard_normal(3))] for _ in range(6)]
    for momentum in (0.0, 0.9):
        kw = dict(lr=0.05, momentum=momentum, **NOISE, backend=backend)
        ref = [dev.put(np.ones(n)), dev.put(np.ones(3))]
        opt = fd.SGD(ref, **kw)
        for gs in grads:
            opt.step(gs)
        ps = [dev.put(np.ones(n)), dev.put(np.ones(3))]
        o1 = fd.SGD(ps, **kw)
        for gs in grads[:3]:
            o1.step(gs)
        sd = o1.state_dict()
        assert sd["state"][0]["step"] == 3 and sd["param_groups"][0]["seed"] == NOISE["seed"]
        o2 = fd.SGD(ps, lr=0.05, momentum=momentum, backend=backend)  # options come from sd
        o2.load_state_dict(sd)
        for gs in grads[3:]:
            o2.step(gs)
        for a, b in zip(ps, ref):
            np.testing.assert_array_equal(dev.get(a), dev.get(b))


# ------------------------------------------------------------------------------ off = plain SGD
def test_noise_std_zero_is_plain_sgd_without_a_call(backend, monkeypatch):
    dev = Device(backend)
    mod = fd.get_backend(backend)

    def boom(*a, **k):
        raise AssertionError("noise called with noise_std == 0")

    monkeypatch.setitem(mod.KERNELS, "noise", boom)
    rng = np.random.default_rng(1)
    g = rng.standard_normal(8)
    a, b = dev.put(np.ones(8)), dev.put(np.ones(8))
    fd.SGD([a], lr=0.1, momentum=0.9, noise_std=0.0, noise_decay=0.7, seed=5,
           backend=backend).step([dev.put(g)])
    fd.SGD([b], lr=0.1, momentum=0.9, backend=backend).step([dev.put(g)])
    np.testing.assert_array_equal(dev.get(a), dev.get(b))
    F.sgd_noise([a], step=1, noise_std=0.0, backend=backend)
    with pytest.raises(AssertionError, match="noise called"):
        fd.SGD([a], lr=0.1, noise_std=0.1, backend=backend).step([dev.put(g)])


def test_functional_sgd_noise_matches_the_optimizer(backend):
    dev = Device(backend)
    shapes = [(4, 3), (5,), ()]
    dts = [np.float32, np.float64, np.float32]
    a = [dev.put(np.zeros(s, dt)) for s, dt in zip(shapes, dts)]
    b = [dev.put(np.zeros(s, dt)) for s, dt in zip(shapes, dts)]
    zeros = [dev.put(np.zeros(s, dt)) for s, dt in zip(shapes, dts)]
    opt = fd.SGD(a, lr=0.3, **NOISE, backend=backend)
    for t in (1, 2):
        opt.step(zeros)
        F.sgd_noise(b, step=t, backend=backend, **NOISE)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(dev.get(x), dev.get(y))
    # explicit indices: the noise of parameter 2 alone
    c = [dev.put(np.zeros((), np.float32))]
    F.sgd_noise(c, step=1, param_indices=[2], backend=backend, **NOISE)
    d = [dev.put(np.zeros(s, dt)) for s, dt in zip(shapes, dts)]
    F.sgd_noise(d, step=1, backend=backend, **NOISE)
    np.testing.assert_array_equal(dev.get(c[0]), dev.get(d[2]))
    with pytest.raises(ValueError, match="param_indices"):
        F.sgd_noise(c, step=1, param_indices=[1, 2], backend=backend, **NOISE)
    with pytest.raises(ValueError, match=r"param_indices\[0\]"):
        F.sgd_noise(c, step=1, param_indices=[-1], backend=backend, **NOISE)
    with pytest.raises(ValueError, match="step"):
        F.sgd_noise(c, step=0, backend=backend, **NOISE)


# ------------------------------------------------------------------------------ validation
BAD = [
    ("noise_std", -0.1, ValueError), ("noise_std", math.nan, ValueError),
    ("noise_std", math.inf, ValueError), ("noise_std", "1", TypeError),
    ("noise_decay", -0.5, ValueError), ("noise_decay", math.inf, ValueError),
    ("noise_decay", None, TypeError),
    ("seed", -1, ValueError), ("seed", 2 ** 63, ValueError), ("seed", 1.0, TypeError),
    ("seed", True, TypeError), ("seed", "7", TypeError),
]


@pytest.mark.parametrize("name,value,exc", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_bad_noise_options_are_refused(name, value, exc):
    with pytest.raises(exc, match=name):
        fd.SGD([np.ones(3)], lr=0.1, **{name: value}, backend="numpy")
    with pytest.raises(exc, match=name):
        F.sgd_noise([np.ones(3)], step=1, **{**NOISE, name: value}, backend="numpy")
    p = np.ones(3)
    opt = fd.SGD([p], lr=0.1, momentum=0.9, **NOISE, backend="numpy")
    opt.step([np.ones(3)])
    before, buf = p.copy(), opt.state[0]["momentum_buffer"].copy()
    opt.param_groups[0][name] = value
    with pytest.raises(exc, match=name):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, before)
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], buf)
    assert opt.state[0]["step"] == 1


def test_good_edge_options():
    fd.SGD([np.ones(3)], lr=0.1, noise_std=0.1, seed=2 ** 63 - 1, backend="numpy").step([np.ones(3)])
    fd.SGD([np.ones(3)], lr=0.1, noise_std=0.1, seed=np.int64(5), backend="numpy").step([np.ones(3)])
    sigma_overflow = fd.SGD([np.ones(3, np.float32)], lr=0.1, noise_std=1e300, backend="numpy")
    with pytest.raises(ValueError, match="sigma"):
        sigma_overflow.step([np.ones(3, np.float32)])
