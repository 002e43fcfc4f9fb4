"""Hostile checks of the float32 Adam kernel's subnormal route (csrc/fd_subnormal.h, fd_adam.c).

The oracle here is the kernel's own plain loop, the code the route must agree with bit for bit: the
``generic`` SIMD path (set_simd_path) runs adam_loop alone, with no hints, no checked route and no
MXCSR handling, under the same MXCSR. Besides the results (every subnormal mantissa, every
hyperparameter corner, several tensors with odd sizes and unaligned views, hint-table aliasing,
Python threads, a forked child, a caller's FTZ/DAZ or rounding mode), the caller's MXCSR must come
back as the plain loop leaves it: the same mode, the caller's flags kept, and the flags the step
raised reported (read and written here through glibc's fenv_t, whose last word is MXCSR on x86-64).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading

import numpy as np
import pytest

import fastdescent as fd

from conftest import require_backend
from test_sgd_subnormal import mixed, same_bits

KINDS = ["normal", "subnormal", "small_sub", "tiny", "edge", "zero", "huge", "nonfinite"]
FINITE = KINDS[:-1]


@pytest.fixture
def C():
    C = require_backend("c")
    if C.get_simd_path() != "avx2-fma":
        pytest.skip("the subnormal route is on the AVX2 path only")
    yield C
    C.set_simd_path("auto")


def _ptrs(ffi, arrs):
    return ffi.new("float *[]", [ffi.cast("float *", a.ctypes.data) for a in arrs])


def adam(C, ts, *, path="auto", beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0, decay=1.0, step=1e-3,
         bc2=1.0, ams=False, mx=False):
    """One fd_adam_f32 call on the tensors ts (dicts of float32 arrays p, m, v, w, g), on `path`."""
    ffi, lib = C.ffi, C.lib
    sizes = ffi.new("int64_t[]", [t["p"].size for t in ts])
    cols = [_ptrs(ffi, [t[k] for t in ts]) for k in "pmvg"]
    w = _ptrs(ffi, [t["w"] for t in ts]) if ams else ffi.NULL
    C.set_simd_path(path)
    try:
        with np.errstate(all="ignore"):
            rc = lib.fd_adam_f32(len(ts), sizes, cols[0], cols[1], cols[2], w,
                                 ffi.cast("const float *const *", cols[3]), beta1, beta2, eps, wd,
                                 decay, step, bc2, int(ams), int(mx))
    finally:
        C.set_simd_path("auto")
    assert rc == 0, rc


def tensor(rng, n, kinds=KINDS):
    return dict(p=mixed(rng, n, kinds), m=mixed(rng, n, kinds), v=np.abs(mixed(rng, n, kinds)),
                w=np.abs(mixed(rng, n, kinds)), g=mixed(rng, n, kinds))


def clone(ts):
    return [{k: a.copy() for k, a in t.items()} for t in ts]


def same_tables(got, want):
    for a, b in zip(got, want):
        for k in "pmvw":
            same_bits(a[k], b[k])


def both(C, ts, steps=3, grads=None, **hy):
    """Steps the avx2 route and the plain loop from the same state (the avx2 one on the same memory
    every step, so that the hints of the first step steer the later ones) and compares every step."""
    got, want = clone(ts), clone(ts)
    for s in range(steps):
        for X, path in ((got, "auto"), (want, "generic")):
            if grads is not None:
                for t, g in zip(X, grads[s]):
                    t["g"][:] = g
            adam(C, X, path=path, **hy)
        same_tables(got, want)
    return got


# ------------------------------------------------------------------------------------------ MXCSR

_FLAGS = 0x3F  # IE DE ZE OE UE PE
IE, DE, ZE, OE, UE, PE = 1, 2, 4, 8, 16, 32


class Mxcsr:
    """MXCSR of the calling thread through glibc's fegetenv/fesetenv (fenv_t's last word)."""

    def __init__(self):
        if platform.machine() not in ("x86_64", "AMD64") or platform.libc_ver()[0] != "glibc":
            pytest.skip("MXCSR probe: glibc on x86-64 only")
        self.libm = ctypes.CDLL(ctypes.util.find_library("m"))
        self.env = (ctypes.c_ubyte * 32)()

    def get(self):
        assert self.libm.fegetenv(self.env) == 0
        return int.from_bytes(bytes(self.env[28:32]), "little")

    def set(self, x):
        assert self.libm.fegetenv(self.env) == 0
        self.env[28:32] = list(int(x).to_bytes(4, "little"))
        assert self.libm.fesetenv(self.env) == 0
        assert self.get() == x


@pytest.fixture
def csr():
    m = Mxcsr()
    saved = m.get()
    yield m
    m.set(saved)


def _clean_then(C, t, **hy):
    """A few clean steps on t's memory: whatever the hint table said about it, it now says clean."""
    for _ in range(3):
        adam(C, [t], **hy)


def test_flags_raised_next_to_a_subnormal_are_reported(C, csr):
    """A stretch that meets a subnormal and also raises invalid/overflow: the plain loop leaves IE
    and OE set in the caller's MXCSR; the route reset MXCSR after that stretch and dropped them
    (only DE/UE were carried over)."""
    old = fd.get_num_threads()
    fd.set_num_threads(1)  # the caller's own MXCSR does all the work
    try:
        n = 2 * 4096
        res = {}
        for path in ("auto", "generic"):
            t = dict(p=np.ones(n, np.float32), m=np.full(n, 1e-3, np.float32),
                     v=np.full(n, 1e-6, np.float32), w=np.zeros(n, np.float32),
                     g=np.full(n, 1e-3, np.float32))
            _clean_then(C, t)
            t["m"][5] = 1e-40                     # stretch 0: a subnormal (DE)
            t["p"][9] = np.inf                    # inf - inf: invalid (IE)
            t["g"][9] = np.inf
            t["g"][17] = 3e38                     # g * g overflows (OE)
            mode = csr.get() & ~_FLAGS
            csr.set(mode)
            adam(C, [t], path=path)
            res[path] = csr.get()
            assert res[path] & ~_FLAGS == mode
        assert res["generic"] & (IE | OE) == IE | OE
        assert res["auto"] & (IE | OE | ZE) == res["generic"] & (IE | OE | ZE), \
            f"MXCSR flags {res['auto'] & _FLAGS:#x}, plain loop {res['generic'] & _FLAGS:#x}"
    finally:
        fd.set_num_threads(old)


@pytest.mark.parametrize("mode", [0x0000, 0x8000, 0x0040, 0x8040, 0x2000, 0x4000, 0x6000],
                         ids=["ieee", "ftz", "daz", "ftz-daz", "down", "up", "zero"])
@pytest.mark.parametrize("threads", [1, 2])
def test_caller_mxcsr_mode_results_and_flags(C, csr, mode, threads):
    """Under the caller's FTZ, DAZ or a directed rounding mode the results are the plain loop's under
    that MXCSR (on one thread); the mode comes back unchanged and the flags the caller had set stay
    set."""
    rng = np.random.default_rng(17)
    ts = [tensor(rng, 9000, FINITE), tensor(rng, 4100, FINITE)]
    grads = [[mixed(rng, t["p"].size, FINITE) for t in ts] for _ in range(3)]
    old, grain = fd.get_num_threads(), C.get_parallel_grain()
    fd.set_num_threads(threads)
    C.set_parallel_grain(1024)
    base = csr.get() & ~(_FLAGS | 0xE040)
    try:
        for preset in (0, _FLAGS):
            got, want = clone(ts), clone(ts)
            for s in range(3):
                for X, path in ((got, "auto"), (want, "generic")):
                    for t, g in zip(X, grads[s]):
                        t["g"][:] = g
                    csr.set(base | mode | preset)
                    adam(C, X, path=path, ams=True, wd=0.01)
                    after = csr.get()
                    csr.set(base)
                    assert after & ~_FLAGS == base | mode, f"{after:#x}"
                    assert after & preset == preset, f"caller's flags {preset:#x} -> {after:#x}"
                # (a caller's own mode reaches only the segments its thread picks from the dynamic
                # schedule, so with threads the results of a non-IEEE mode vary run to run)
                if threads == 1 or mode == 0:
                    same_tables(got, want)
    finally:
        fd.set_num_threads(old)
        C.set_parallel_grain(grain)


def test_torch_flush_denormal_caller(C):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    ts = [tensor(rng, 20000, FINITE)]
    old = fd.get_num_threads()
    fd.set_num_threads(1)
    prev = torch.set_flush_denormal(True)
    try:
        assert prev
        got = both(C, ts, steps=3)
    finally:
        torch.set_flush_denormal(False)
        fd.set_num_threads(old)
    for k in "pmv":  # (w: no amsgrad, untouched)
        a = got[0][k]
        assert not np.any((a != 0) & (np.abs(a) < 2.0 ** -126))


# -------------------------------------------------------------------------------------- results

@pytest.mark.parametrize("beta1", [0.9, 0.5, 0.75, 1 / 3, 0.999, 0.99999994, 0.99999999, 2.0 ** -60,
                                   2.0 ** -61, 0.0, 1e-40])
def test_every_subnormal_mantissa_times_beta1(C, beta1):
    """exp_avg = every 7th subnormal bit pattern (both signs), a stopped unit (g = 0): the quick
    route's integer m * beta1, including beta1 rounding to 1.0f and a subnormal beta1 (no quick
    route), and the parameter kept or moved."""
    ks = np.arange(1, 1 << 23, 7, dtype=np.uint32)
    m = ks.view(np.float32).copy()
    m[1::2] *= -1
    n = m.size
    p = (np.random.default_rng(1).choice([-1.0, 1.0], n)
         * 2.0 ** np.random.default_rng(2).uniform(-140, 10, n)).astype(np.float32)
    ts = [dict(p=p, m=m, v=np.full(n, 1e-6, np.float32), w=np.zeros(n, np.float32),
               g=np.zeros(n, np.float32))]
    both(C, ts, steps=2, beta1=beta1, step=1.0)


HYPER = [dict(step=1.0, beta1=0.5, beta2=0.9999999, eps=0.0),
         dict(step=1e-30, beta1=0.0, beta2=0.0, eps=1e-40),
         dict(step=1e30, beta1=0.999, beta2=0.5),
         dict(step=2.0 ** -36), dict(step=2.0 ** -36 * 0.99),        # step * 2^-90 at 2^-126
         dict(step=2.0 ** 190), dict(step=2.0 ** 190 * 1.01), dict(step=3e38),  # ... at 2^100
         dict(bc2=1e-40), dict(bc2=1e-30), dict(eps=1e-45), dict(eps=1e30),
         dict(beta2=1e-40), dict(beta1=1e-40, beta2=0.99999999),
         dict(wd=1e30), dict(wd=1e-40), dict(decay=-1.0), dict(decay=1e-40), dict(decay=0.0)]


@pytest.mark.parametrize("ams", [False, True])
@pytest.mark.parametrize("hy", HYPER, ids=lambda h: ",".join(f"{k}={v:g}" for k, v in h.items()))
def test_hyperparameter_corners(C, hy, ams):
    rng = np.random.default_rng(9)
    ts = [tensor(rng, 8 * 1500 + 3)]
    grads = [[mixed(rng, ts[0]["p"].size, KINDS)] for _ in range(3)]
    both(C, ts, grads=grads, ams=ams, mx=True, **hy)


@pytest.mark.parametrize("ams", [False, True])
@pytest.mark.parametrize("case", [(0.0, 1e-40, 1e-3), (np.inf, 1e-8, 1e-3), (0.0, 0.0, 1e-3),
                                  (1e-30, 1e-8, 1.0), (1e-12, 1e-8, 1e30), (1e-12, 1e-8, 2.0 ** -36),
                                  (1e-12, 1e30, 1e-3)],
                         ids=["d-subnormal", "d-inf", "d-zero", "v-tiny", "step-huge", "step-bound",
                              "eps-huge"])
def test_stopped_units_every_parameter_size(C, case, ams):
    """exp_avg tiny or subnormal, g = 0 (the quick route), parameters log-uniform over the whole
    float32 range with infinities and signed zeros, and a denominator d that is subnormal, infinite,
    zero or huge."""
    vval, eps, step = case
    rng = np.random.default_rng(30)
    n = 8 * 4000 + 3
    m = (rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-149, -119, n)).astype(np.float32)
    p = (rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-149, 127, n)).astype(np.float32)
    p[rng.random(n) < 0.05] = np.inf
    p[rng.random(n) < 0.05] = -0.0
    v = np.full(n, vval, np.float32)
    v[rng.random(n) < 0.3] = 0.0
    ts = [dict(p=p, m=m, v=v, w=v.copy(), g=np.zeros(n, np.float32))]
    both(C, ts, steps=3, eps=eps, step=step, ams=ams)


@pytest.mark.parametrize("threads", [1, 2])
def test_many_tensors_odd_sizes_unaligned_views(C, threads):
    """Tensors of 1..70000 elements, views starting 4 bytes past an alignment, segments that start
    and end mid-stretch (two threads, a small grain)."""
    rng = np.random.default_rng(77)
    sizes = [1, 7, 8, 9, 15, 4095, 4096, 4097, 8193, 12289, 3, 70000]
    big = {k: mixed(rng, sum(sizes) + 64, KINDS) for k in "pmvwg"}
    for k in "vw":
        big[k] = np.abs(big[k])
    ts, o = [], 1
    for s in sizes:
        ts.append({k: big[k][o:o + s] for k in "pmvwg"})
        o += s + 3
    grads = [[mixed(rng, s, KINDS) for s in sizes] for _ in range(4)]
    old, grain = fd.get_num_threads(), C.get_parallel_grain()
    fd.set_num_threads(threads)
    C.set_parallel_grain(3000)
    try:
        both(C, ts, steps=4, grads=grads, ams=True, wd=0.01)
        both(C, ts, steps=2, grads=grads, decay=0.99)
    finally:
        fd.set_num_threads(old)
        C.set_parallel_grain(grain)


def test_hint_aliasing_dirty_and_clean_tensors(C):
    """Two tensors whose exp_avg share a hint entry (one 16 KiB block), one full of subnormals, one
    clean, then swapped, call after call: a wrong hint must cost time only."""
    buf = np.zeros(3 * 4096, np.float32)
    i0 = (-buf.ctypes.data) % 16384 // 4  # first element of a 16 KiB-aligned block
    mm = buf[i0:i0 + 4096]
    assert mm.ctypes.data % 16384 == 0
    rng = np.random.default_rng(3)
    dirty = mixed(rng, 2000, ["subnormal", "small_sub", "tiny", "normal"])
    clean = mixed(rng, 2000, ["normal"])
    a = dict(p=mixed(rng, 2000, FINITE), m=mm[:2000], v=np.abs(mixed(rng, 2000, FINITE)),
             w=np.zeros(2000, np.float32), g=np.zeros(2000, np.float32))
    b = dict(p=mixed(rng, 2000, FINITE), m=mm[2048:4048], v=np.abs(mixed(rng, 2000, FINITE)),
             w=np.zeros(2000, np.float32), g=np.zeros(2000, np.float32))
    for s in range(6):
        a["m"][:], b["m"][:] = (dirty, clean) if s % 2 else (clean, dirty)
        for ts in ([a], [b], [a, b], [b, a]):
            want = clone(ts)
            adam(C, want, path="generic")
            adam(C, ts)
            same_tables(ts, want)


def test_two_python_threads_concurrently(C):
    """Two optimizers stepped at once from two Python threads (the hint table is shared)."""
    rng = np.random.default_rng(12)
    n = 30000
    states = [[tensor(rng, n, FINITE)] for _ in range(2)]
    grads = [[mixed(rng, n, FINITE) for _ in range(8)] for _ in range(2)]
    want = clone(states[0]), clone(states[1])
    for i in range(2):
        for g in grads[i]:
            want[i][0]["g"][:] = g
            adam(C, want[i], path="generic", ams=True)
    errors = []

    def work(i):
        try:
            for g in grads[i]:
                states[i][0]["g"][:] = g
                adam(C, states[i], ams=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # generic path picks are process-wide: the threads only use "auto"
    th = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in th:
        t.start()
    for t in th:
        t.join(60)
    assert not errors
    for i in range(2):
        same_tables(states[i], want[i])


_FORK_SCRIPT = """
import os, sys
import numpy as np
import fastdescent as fd
from fastdescent.backends import c_cffi as C
from _subproc import run_child
sys.path.insert(0, {tests!r})
from test_adam_subnormal_hostile import adam, tensor, clone, same_tables

rng = np.random.default_rng(5)
ts = [tensor(rng, 50000)]
fd.set_num_threads(2)
C.set_parallel_grain(4096)
adam(C, ts)   # the parent's hints say dirty

def child():
    want = clone(ts)
    adam(C, want, path="generic")
    adam(C, ts)
    same_tables(ts, want)

assert run_child("os.fork", child, timeout=60) == 0
print("FORK-OK")
"""


def test_forked_child_steps(C, tmp_path):
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    from _subproc import run_script

    root = os.path.dirname(os.path.dirname(fd.__file__))
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, tests, os.environ.get("PYTHONPATH")]))}
    out = run_script(tmp_path, _FORK_SCRIPT.format(tests=tests), env=env, timeout=90)
    assert "FORK-OK" in out and "CHILD EXIT 0" in out
