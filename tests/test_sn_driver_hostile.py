"""Hostile checks of the subnormal routes' MXCSR handling (csrc/fd_subnormal.h's fd_sn_drive, the
per-call flag handling of fd_internal.h's fd_flush_begin/end, the quick routes' bounds), for the
float32 Adam, momentum-SGD, NAdam and RAdam kernels.

Not repeated here: what tests/test_adam_subnormal_hostile.py already checks (results under every
mode, caller's flags kept, IE/OE next to a subnormal, aliasing, threads, fork). New here:

* a caller whose MXCSR has DE (or UE) set on entry -- the usual state, not a corner: NumPy clears
  UE, OE, ZE, IE before its ufuncs (feclearexcept(FE_ALL_EXCEPT)) but never DE, and a step that met a
  subnormal leaves DE set, as the plain loop does. The results and flags of that case, on tables of
  small tensors, for Adam and SGD modes 2, 3, 6, 7, one thread and two. (Its cost -- it once took two
  MXCSR writes per segment, 10,000 8-element tensors 1.85 ms a step against 0.19 ms -- is measured by
  benchmarks/sn_caller_flags.py, not here);
* the quick routes' bound (step * 2^-90 < |p| * d) must raise no flag the plain loop does not.

Not part of the contract, so not tested: DE and UE themselves. The routes exist to compute what
would raise them (subnormal operands and results) without the instructions that do; the plain
stretches still raise them, the checked ones may not.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd

from test_adam_subnormal_hostile import (DE, FINITE, IE, OE, UE, ZE, Mxcsr, _FLAGS, _ptrs, adam,
                                         clone, same_tables, tensor)
from test_sgd_subnormal import mixed, same_bits
from conftest import require_backend


@pytest.fixture
def C():
    C = require_backend("c")
    if C.get_simd_path() != "avx2-fma":
        pytest.skip("the subnormal route is on the AVX2 path only")
    yield C
    C.set_simd_path("auto")


@pytest.fixture
def csr():
    m = Mxcsr()
    saved = m.get()
    yield m
    m.set(saved)


@pytest.fixture
def one_thread():
    old = fd.get_num_threads()
    fd.set_num_threads(1)
    yield
    fd.set_num_threads(old)


def sgd(C, ts, *, path="auto", lr=0.1, momentum=0.9, dampening=0.0, wd=0.0, nesterov=False,
        maximize=False, first=False):
    """One fd_sgd_f32 call on tensors ts (dicts of float32 arrays p, b, g) on `path`."""
    ffi, lib = C.ffi, C.lib
    sizes = ffi.new("int64_t[]", [t["p"].size for t in ts])
    p, b, g = (_ptrs(ffi, [t[k] for t in ts]) for k in "pbg")
    C.set_simd_path(path)
    try:
        with np.errstate(all="ignore"):
            rc = lib.fd_sgd_f32(len(ts), sizes, p, b, ffi.cast("const float *const *", g), lr,
                                momentum, dampening, wd, int(nesterov), int(maximize), int(first))
    finally:
        C.set_simd_path("auto")
    assert rc == 0, rc


SGD_MODES = {2: {}, 3: dict(wd=0.01), 6: dict(nesterov=True), 7: dict(nesterov=True, wd=0.01)}


# ------------------------------------------------------------------ caller's DE/UE set on entry


def _small_table(rng, sizes, kinds=FINITE):
    return [tensor(rng, s, kinds) for s in sizes]


@pytest.mark.parametrize("preset", [DE, UE, DE | UE | IE | OE | ZE], ids=["DE", "UE", "all"])
@pytest.mark.parametrize("threads", [1, 2])
def test_adam_caller_flags_set_small_tensors_results_and_flags(C, csr, preset, threads):
    """Tables of small and mid-sized tensors (1..600 elements, some stretch-crossing ones) with
    subnormal, tiny and huge values, stepped with the caller's DE/UE already set: the plain loop's
    bits; the mode and the caller's flags come back; on one thread IE/ZE/OE as the plain loop."""
    rng = np.random.default_rng(41)
    sizes = [1, 8, 9, 17, 64, 255, 256, 257, 600, 4100, 3, 40]
    ts = _small_table(rng, sizes)
    grads = [[mixed(rng, s, FINITE) for s in sizes] for _ in range(4)]
    old, grain = fd.get_num_threads(), C.get_parallel_grain()
    fd.set_num_threads(threads)
    C.set_parallel_grain(256)
    base = csr.get() & ~_FLAGS
    try:
        got, want = clone(ts), clone(ts)
        for s in range(4):
            res = {}
            for X, path in ((got, "auto"), (want, "generic")):
                for t, g in zip(X, grads[s]):
                    t["g"][:] = g
                csr.set(base | preset)
                adam(C, X, path=path, ams=bool(s % 2), wd=0.01 * (s % 3 == 2))
                res[path] = csr.get()
                csr.set(base)
            same_tables(got, want)
            a = res["auto"]
            assert a & ~_FLAGS == base, f"{a:#x}"
            assert a & preset == preset, f"caller's flags {preset:#x} -> {a:#x}"
            if threads == 1:
                m = IE | ZE | OE
                assert a & m == res["generic"] & m, f"{a:#x} vs plain {res['generic']:#x}"
    finally:
        fd.set_num_threads(old)
        C.set_parallel_grain(grain)


@pytest.mark.parametrize("mode", sorted(SGD_MODES))
@pytest.mark.parametrize("preset", [0, DE, UE | DE], ids=["clean", "DE", "DE-UE"])
def test_sgd_momentum_modes_caller_flags_small_tensors(C, csr, one_thread, mode, preset):
    """SGD modes 2, 3, 6, 7 on a table of small tensors whose momentum buffers hold subnormal and
    tiny values (stopped units: zero gradients in some steps), entered with and without DE/UE set:
    the plain loop's bits, the caller's mode and flags kept, IE/ZE/OE as the plain loop."""
    rng = np.random.default_rng(100 + mode)
    sizes = [8, 1, 33, 250, 7, 500, 4097]
    kinds = ["normal", "subnormal", "small_sub", "tiny", "edge", "zero"]
    ts = [dict(p=mixed(rng, s, FINITE), b=mixed(rng, s, kinds), g=np.zeros(s, np.float32))
          for s in sizes]
    grads = [[(mixed(rng, s, ["normal", "zero", "zero"]) if k % 2 else np.zeros(s, np.float32))
              for s in sizes] for k in range(5)]
    base = csr.get() & ~_FLAGS
    got, want = clone(ts), clone(ts)
    for s in range(5):
        res = {}
        for X, path in ((got, "auto"), (want, "generic")):
            for t, g in zip(X, grads[s]):
                t["g"][:] = g
            csr.set(base | preset)
            sgd(C, X, path=path, **SGD_MODES[mode])
            res[path] = csr.get()
            csr.set(base)
        for a, b in zip(got, want):
            same_bits(a["p"], b["p"])
            same_bits(a["b"], b["b"])
        a = res["auto"]
        assert a & ~_FLAGS == base and a & preset == preset, f"{a:#x}"
        m = IE | ZE | OE
        assert a & m == res["generic"] & m, f"{a:#x} vs plain {res['generic']:#x}"


# ---------------------------------------------------------------------- the quick routes' bounds


@pytest.mark.parametrize("lane0", [dict(p=0.0, g=-3e38), dict(p=3e38, v=3e38, g=0.0),
                                   dict(p=1e-35, v=0.0, g=0.0)],
                         ids=["p0-d-inf:IE", "p-huge-d-huge:OE", "p-small-d-eps:UE"])
def test_adam_quick_route_bound_raises_no_flag_of_its_own(C, csr, one_thread, lane0):
    """adam_sn_quick (a stopped unit's vector: some exp_avg lanes subnormal, g = 0 there) tested
    its bound as step_size * 2^-90 < |p| * d with a float32 multiply on every lane of the vector,
    an operation the plain loop does not perform: with p = 0 and d = inf (a huge gradient in a
    neighbouring lane) it raised IE, with |p| * d past FLT_MAX OE, below FLT_MIN UE -- flags the
    plain loop does not raise. (Found by the random tables of the DE/UE tests above.) beta1 = 0
    and the subnormal exp_avg put back every step: its decay is exact, so UE is the bound's alone."""
    n = 4096
    base = csr.get() & ~_FLAGS
    res = {}
    for path in ("auto", "generic"):
        t = dict(p=np.ones(n, np.float32), m=np.full(n, 1e-3, np.float32),
                 v=np.full(n, 1e-6, np.float32), w=np.zeros(n, np.float32),
                 g=np.full(n, 1e-3, np.float32))
        for k, x in lane0.items():
            t[k][0] = np.float32(x)
        flags = []
        for _ in range(3):  # the first call sets the stretch's hint, the later ones run it checked
            t["m"][1], t["g"][1] = np.float32(1e-40), 0.0  # the stopped lane: the quick route
            csr.set(base)
            adam(C, [t], path=path, beta1=0.0)
            flags.append(csr.get() & (IE | ZE | OE | UE))
        res[path] = (flags, t)
    got, want = res["auto"][0][1:], res["generic"][0][1:]
    assert got == want, f"route {[hex(f) for f in got]}, plain loop {[hex(f) for f in want]}"
    same_tables([res["auto"][1]], [res["generic"][1]])


def _nadam_radam(C, kernel, t, path):
    """One fd_nadam_f32 / fd_radam_f32 call (beta1 = 0: a subnormal exp_avg decays exactly to 0)."""
    ffi, lib = C.ffi, C.lib
    sizes = ffi.new("int64_t[]", [t["p"].size])
    p, m, v, g = (_ptrs(ffi, [t[k]]) for k in "pmvg")
    g = ffi.cast("const float *const *", g)
    C.set_simd_path(path)
    try:
        with np.errstate(all="ignore"):
            if kernel == "nadam":
                rc = lib.fd_nadam_f32(1, sizes, p, m, v, g, 0.0, 1.0, 0.999, 0.001, 0.0, 1.0, 1e-3,
                                      2e-3, 1e-8, 0)
            else:
                rc = lib.fd_radam_f32(1, sizes, p, m, v, g, 0.0, 1.0, 0.999, 0.001, 1e-8, 0.0, 1.0,
                                      2e-3, int(kernel == "radam-rectified"), 0)
    finally:
        C.set_simd_path("auto")
    assert rc == 0, rc


@pytest.mark.parametrize("kernel", ["nadam", "radam-rectified", "radam-unrectified"])
@pytest.mark.parametrize("lane0", [dict(p=0.0, g=-3e38), dict(p=3e38, v=3e38, g=0.0),
                                   dict(p=1e-35, v=0.0, g=0.0)],
                         ids=["p0-d-inf:IE", "p-huge-d-huge:OE", "p-small-d-eps:UE"])
def test_nadam_radam_quick_route_bound_raises_no_flag_of_its_own(C, csr, one_thread, lane0,
                                                                 kernel):
    """As above for NAdam's and RAdam's quick routes (a vector with a stopped lane next to lane 0)."""
    n = 4096
    base = csr.get() & ~_FLAGS
    res = {}
    for path in ("auto", "generic"):
        t = dict(p=np.ones(n, np.float32), m=np.full(n, 1e-3, np.float32),
                 v=np.full(n, 1e-6, np.float32), g=np.full(n, 1e-3, np.float32))
        for k, x in lane0.items():
            t[k][0] = np.float32(x)
        flags = []
        for _ in range(3):  # the first call sets the stretch's hint, the later ones run it checked
            t["m"][1], t["g"][1] = np.float32(1e-40), 0.0  # the stopped lane: the quick route
            csr.set(base)
            _nadam_radam(C, kernel, t, path)
            flags.append(csr.get() & (IE | ZE | OE | UE))
        res[path] = (flags, t)
    got, want = res["auto"][0][1:], res["generic"][0][1:]
    assert got == want, f"route {[hex(f) for f in got]}, plain loop {[hex(f) for f in want]}"
    for k in "pmv":
        same_bits(res["auto"][1][k], res["generic"][1][k])
