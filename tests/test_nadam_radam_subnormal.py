"""fd_nadam's and fd_radam's float32 updates with subnormal (or tiny) operands: the c kernels' AVX2
path sends vectors with a tiny moment or gradient through float64 arithmetic (csrc/fd_subnormal.h) to
avoid the CPU's microcode assists; every element must still come out bit for bit as IEEE float32
arithmetic gives it (the NumPy reference), for every NAdam and RAdam option (RAdam: its first steps,
unrectified, and the later rectified ones), with subnormal, tiny-normal, zero, signed-zero, huge,
infinite and NaN values mixed into the parameters, gradients and moments, on one thread and on
several, and flushed as the flushed float32 loop gives it under fd.set_flush_denormal."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastdescent as fd

from conftest import require_backend
from test_sgd_subnormal import mixed, same_bits

KINDS = ["normal", "subnormal", "small_sub", "tiny", "edge", "zero", "huge"]

OPTIONS = [dict(weight_decay=wd, decoupled_weight_decay=dec, maximize=mx)
           for wd, dec, mx in itertools.product((0.0, 0.05), (False, True), (False, True))
           if not (dec and wd == 0.0)]

# (rule, zero-gradient steps before the state is set): RAdam rectifies from its 6th step on, so a run
# that starts after 1 step crosses from the unrectified update to the rectified one, and one that
# starts after 8 is rectified throughout
RULES = [("NAdam", 1), ("RAdam", 1), ("RAdam", 8)]
RULE_IDS = [f"{r}-warm{w}" for r, w in RULES]

SUB = 2.0 ** -126


def _run(backend, p0, m0, v0, grads, opts, hyper, rule=("NAdam", 1)):
    p = p0.copy()
    o = getattr(fd, rule[0])([p], backend=backend, **opts, **hyper)
    with np.errstate(all="ignore"):
        for _ in range(rule[1]):
            o.step([np.zeros_like(p0)])  # makes the state (and counts the steps)
        st = o.state[0]
        p[:] = p0
        st["exp_avg"][:] = m0
        st["exp_avg_sq"][:] = v0
        for g in grads:
            o.step([g])
    st = o.state[0]
    return [p, st["exp_avg"], st["exp_avg_sq"]]


def _threads(n):
    class _T:
        def __enter__(self):
            self.old = fd.get_num_threads()
            fd.set_num_threads(n)

        def __exit__(self, *exc):
            fd.set_num_threads(self.old)

    return _T()


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
@pytest.mark.parametrize("nonfinite", [False, True])
def test_subnormal_operands_bit_exact(opts, threads, nonfinite, rule):
    require_backend("c")
    rng = np.random.default_rng(31)
    kinds = KINDS + (["nonfinite"] if nonfinite else [])
    n = 4096 * 2 + 13  # two stretches and a tail that is not a multiple of 8
    p0, m0 = mixed(rng, n, kinds), mixed(rng, n, kinds)
    v0 = np.abs(mixed(rng, n, kinds))  # (negative ones would be data too: the NaN route)
    v0[::97] = -v0[::97]
    grads = [mixed(rng, n, kinds) for _ in range(4)] + [np.zeros(n, np.float32)] * 3
    hyper = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8)
    with _threads(threads):
        got = _run("c", p0, m0, v0, grads, opts, hyper, rule)
        ref = _run("numpy", p0, m0, v0, grads, opts, hyper, rule)
    for a, b in zip(got, ref):
        same_bits(a, b)


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("hyper", [
    dict(lr=1.0, betas=(0.5, 0.9999999), eps=0.0),      # results of either sign of the threshold
    dict(lr=1e-30, betas=(0.0, 0.0), eps=1e-40),        # subnormal eps, updates that underflow
    dict(lr=1e30, betas=(0.999, 0.5), eps=1e-8),        # overflowing updates
], ids=["steep", "underflow", "overflow"])
def test_subnormal_extreme_hyperparameters(hyper, rule):
    require_backend("c")
    rng = np.random.default_rng(6)
    kinds = KINDS + ["nonfinite"]
    n = 2051
    p0, m0 = mixed(rng, n, kinds), mixed(rng, n, kinds)
    v0 = np.abs(mixed(rng, n, kinds))
    grads = [mixed(rng, n, kinds) for _ in range(3)] + [np.zeros(n, np.float32)] * 2
    opts = dict(weight_decay=0.5, decoupled_weight_decay=False, maximize=True)
    for a, b in zip(_run("c", p0, m0, v0, grads, opts, hyper, rule),
                    _run("numpy", p0, m0, v0, grads, opts, hyper, rule)):
        same_bits(a, b)


@pytest.mark.parametrize("cls", ["NAdam", "RAdam"])
def test_decaying_moments_bit_exact(cls):
    """The training case: units whose gradient stopped, exp_avg decaying through the subnormal range
    to zero over many steps, next to live units; then the gradients come back."""
    require_backend("c")
    rng = np.random.default_rng(3)
    n = 1024
    dead = (np.arange(n) // 8) % 3 == 0  # whole vectors
    dead |= rng.random(n) < 0.05  # and lanes scattered among live ones
    p0 = rng.normal(size=n).astype(np.float32)
    out = {}
    for be in ("c", "numpy"):
        p = p0.copy()
        o = getattr(fd, cls)([p], lr=1e-3, backend=be)
        r = np.random.default_rng(4)
        for t in range(1300):
            g = (r.normal(size=n) * 1e-3).astype(np.float32)
            if 20 <= t < 1250:
                g[dead] = 0.0
            if t == 1240:
                sub = o.state[0]["exp_avg"]
                out.setdefault("subnormal", []).append(
                    np.count_nonzero((sub != 0) & (np.abs(sub) < SUB)))
            o.step([g])
        out[be] = (p, o.state[0]["exp_avg"].copy(), o.state[0]["exp_avg_sq"].copy())
    for a, b in zip(out["c"], out["numpy"]):
        same_bits(a, b)
    # the run went through the subnormal range (0.9^t from 1e-4 reaches it after ~800 steps)
    assert out["subnormal"][0] > 0


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_subnormal_under_flush(threads, rule):
    """With fd.set_flush_denormal(True) the kernel's results are the flushed float32 loop's (no
    subnormal written); without it the same data keeps subnormals."""
    require_backend("c")
    rng = np.random.default_rng(9)
    n = 2000
    kinds = ["normal", "subnormal", "small_sub", "zero"]
    p0, m0 = mixed(rng, n, kinds), mixed(rng, n, kinds)
    v0 = np.abs(mixed(rng, n, kinds))
    grads = [mixed(rng, n, kinds) for _ in range(3)]
    opts = dict(weight_decay=0.0, decoupled_weight_decay=False, maximize=False)
    hyper = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    with _threads(threads):
        fd.set_flush_denormal(True)
        try:
            flushed = _run("c", p0, m0, v0, grads, opts, hyper, rule)
        finally:
            fd.set_flush_denormal(False)
        ieee = _run("c", p0, m0, v0, grads, opts, hyper, rule)
    for a in flushed:
        assert not np.any((a != 0) & (np.abs(a) < SUB))
    assert any(np.any((a != 0) & (np.abs(a) < SUB)) for a in ieee)
    for a, b in zip(ieee, _run("numpy", p0, m0, v0, grads, opts, hyper, rule)):
        same_bits(a, b)


@pytest.mark.parametrize("kernel", ["nadam", "radam-unrectified", "radam-rectified"])
def test_route_matches_plain_loop_and_flags(kernel):
    """Against the kernel's own plain loop (the generic SIMD path) under the same MXCSR, several
    tensors with unaligned views and odd sizes: the same bits, and the same MXCSR flags raised."""
    C = require_backend("c")
    if C.get_simd_path() != "avx2-fma":
        pytest.skip("the subnormal route is on the AVX2 path only")
    from test_adam_subnormal_hostile import IE, OE, ZE, Mxcsr  # MXCSR through glibc's fenv

    csr = Mxcsr()
    saved = csr.get()
    ffi, lib = C.ffi, C.lib
    rng = np.random.default_rng(12)
    kinds = KINDS + ["nonfinite"]
    sizes = [1, 7, 8, 9, 4095, 4097, 9000]
    base = []
    for n in sizes:
        cols = {}
        for k in "pmvg":
            buf = mixed(rng, n + 1, kinds)
            cols[k] = buf[1:]  # unaligned views
        cols["v"][:] = np.abs(cols["v"])
        base.append(cols)

    def call(path):
        ts = [{k: a.copy() for k, a in cols.items()} for cols in base]
        ptr = [ffi.new("float *[]", [ffi.cast("float *", t[k].ctypes.data) for t in ts])
               for k in "pmvg"]
        sz = ffi.new("int64_t[]", sizes)
        C.set_simd_path(path)
        try:
            flags = []
            for _ in range(3):  # the first call sets the hints, the next ones run checked
                csr.set(0x1F80)
                gp = ffi.cast("const float *const *", ptr[3])
                if kernel == "nadam":
                    rc = lib.fd_nadam_f32(len(sizes), sz, ptr[0], ptr[1], ptr[2], gp, 0.9, 0.1,
                                          0.999, 0.001, 0.01, 1.0, 1e-3, 2e-3, 1e-8, 1)
                else:
                    rc = lib.fd_radam_f32(len(sizes), sz, ptr[0], ptr[1], ptr[2], gp, 0.9, 0.1,
                                          0.999, 0.001, 1e-8, 0.01, 1.0, 2e-3,
                                          int(kernel == "radam-rectified"), 1)
                now = csr.get()
                assert now & ~0x3F == 0x1F80  # the mode comes back as it was
                # the route meets no subnormal where the plain loop does (DE/UE may differ); invalid,
                # overflow and divide-by-zero are raised alike (the caller's own thread: 1 thread)
                flags.append(now & (IE | OE | ZE))
                assert rc == 0
        finally:
            C.set_simd_path("auto")
            csr.set(saved)
        return ts, flags

    with np.errstate(all="ignore"), _threads(1):
        got, fgot = call("auto")
        ref, fref = call("generic")
    for a, b in zip(got, ref):
        for k in "pmv":
            same_bits(a[k], b[k])
    assert fgot == fref and fref[0] & (IE | OE) == IE | OE


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("lr", [2e-3, 0.5, 1e-25])
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_stopped_units_bit_exact(threads, lr, wd, rule):
    """The vectors the quick route takes: some exp_avg lanes subnormal or tiny, the gradient 0 or
    normal, exp_avg_sq normal or zero; parameters of every kind, including tiny, zero and huge ones
    for which the 'update below a quarter of p's spacing' bound fails and the general route must
    take over."""
    require_backend("c")
    rng = np.random.default_rng(22)
    n = 8 * 600 + 5
    m0 = mixed(rng, n, ["normal", "subnormal", "small_sub", "tiny", "edge", "zero"])
    p0 = mixed(rng, n, ["normal", "normal", "normal", "tiny", "subnormal", "zero", "huge", "edge"])
    logu = rng.random(n) < 0.4  # parameters log-uniform over 2^-110 .. 2^0, across the threshold
    p0[logu] = (rng.choice([-1.0, 1.0], int(logu.sum()))
                * 2.0 ** rng.uniform(-110, 0, int(logu.sum()))).astype(np.float32)
    v0 = np.abs(mixed(rng, n, ["normal", "zero"])) * np.float32(1e-3)
    grads = [mixed(rng, n, ["normal", "zero", "zero", "zero"]) for _ in range(6)]
    opts = dict(weight_decay=wd, decoupled_weight_decay=wd != 0.0, maximize=False)
    hyper = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8)
    with _threads(threads):
        got = _run("c", p0, m0, v0, grads, opts, hyper, rule)
        ref = _run("numpy", p0, m0, v0, grads, opts, hyper, rule)
    for a, b in zip(got, ref):
        same_bits(a, b)


@pytest.mark.parametrize("rule", RULES, ids=RULE_IDS)
@pytest.mark.parametrize("lr", [2e-3, 1.0])
def test_quick_route_bound_threshold(lr, rule):
    """Where the quick route's bound is decided: exp_avg just under the tiny threshold, a zero
    gradient, and parameters around the size at which the update reaches their rounding spacing
    (|p| * den ~ step_size_exp_avg * 2^-98): the parameters must move exactly when IEEE arithmetic
    moves them."""
    require_backend("c")
    rng = np.random.default_rng(8)
    n = 8 * 2000
    m0 = (rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-121.5, -120.05, n)).astype(np.float32)
    m0[::64] = np.float32(2.0 ** -140)  # a subnormal in every stretch: the next steps run checked
    v0 = rng.choice([0.0, 1e-20, 1e-12], n).astype(np.float32)
    # one magnitude per 8-element vector (the quick route takes a vector whole or not at all);
    # RAdam's first steps are unrectified (no division by the small den): smaller parameters
    lo, hi = (-112, -80) if rule == ("RAdam", 1) else (-100, -55)
    p0 = (rng.choice([-1.0, 1.0], n) * np.repeat(2.0 ** rng.uniform(lo, hi, n // 8), 8)
          * rng.uniform(1.0, 1.01, n)).astype(np.float32)
    grads = [np.zeros(n, np.float32)] * 3
    opts = dict(weight_decay=0.0, decoupled_weight_decay=False, maximize=False)
    hyper = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8)
    got = _run("c", p0, m0, v0, grads, opts, hyper, rule)
    ref = _run("numpy", p0, m0, v0, grads, opts, hyper, rule)
    for a, b in zip(got, ref):
        same_bits(a, b)
    assert np.count_nonzero(ref[0] != p0) > 100 and np.count_nonzero(ref[0] == p0) > 100
