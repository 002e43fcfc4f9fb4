"""fd_adam's float32 update with subnormal (or tiny) operands: the c kernel's AVX2 path sends vectors
with a tiny moment or gradient through float64 arithmetic (csrc/fd_subnormal.h) to avoid the CPU's
microcode assists; every element must still come out bit for bit as IEEE float32 arithmetic gives it
(the NumPy reference), for every Adam option, with subnormal, tiny-normal, zero, signed-zero, huge,
infinite and NaN values mixed into the parameters, gradients and every moment, on one thread and on
several, and under a flush (fd.set_flush_denormal) as the flushed float32 loop gives it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastdescent as fd

from conftest import require_backend
from test_sgd_subnormal import mixed, same_bits

KINDS = ["normal", "subnormal", "small_sub", "tiny", "edge", "zero", "huge"]

OPTIONS = [dict(cls=cls, weight_decay=wd, amsgrad=ams, maximize=mx)
           for cls, wd, ams, mx in itertools.product(("Adam", "AdamW"), (0.0, 0.05), (False, True),
                                                     (False, True))]


def _run(backend, p0, m0, v0, w0, grads, opts, hyper):
    p = p0.copy()
    kw = dict(opts)
    cls = getattr(fd, kw.pop("cls"))
    o = cls([p], backend=backend, **kw, **hyper)
    with np.errstate(all="ignore"):
        o.step([np.zeros_like(p0)])  # makes the state
        st = o.state[0]
        p[:] = p0
        st["exp_avg"][:] = m0
        st["exp_avg_sq"][:] = v0
        if opts["amsgrad"]:
            st["max_exp_avg_sq"][:] = w0
        for g in grads:
            o.step([g])
    st = o.state[0]
    return [p, st["exp_avg"], st["exp_avg_sq"]] + ([st["max_exp_avg_sq"]] if opts["amsgrad"] else [])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
@pytest.mark.parametrize("nonfinite", [False, True])
def test_adam_subnormal_operands_bit_exact(opts, threads, nonfinite):
    require_backend("c")
    rng = np.random.default_rng(11)
    kinds = KINDS + (["nonfinite"] if nonfinite else [])
    n = 4103  # not a multiple of 8: the tail takes the plain loop
    p0 = mixed(rng, n, kinds)
    m0 = mixed(rng, n, kinds)
    # second moments are >= 0 in a real run; negative ones are data too (and take the NaN route)
    v0 = np.abs(mixed(rng, n, kinds))
    w0 = np.abs(mixed(rng, n, kinds))
    grads = [mixed(rng, n, kinds) for _ in range(4)] + [np.zeros(n, np.float32)] * 3
    hyper = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    old = fd.get_num_threads()
    try:
        fd.set_num_threads(threads)
        got = _run("c", p0, m0, v0, w0, grads, opts, hyper)
        ref = _run("numpy", p0, m0, v0, w0, grads, opts, hyper)
    finally:
        fd.set_num_threads(old)
    for a, b in zip(got, ref):
        same_bits(a, b)


@pytest.mark.parametrize("hyper", [
    dict(lr=1.0, betas=(0.5, 0.9999999), eps=0.0),      # results of either sign of the threshold
    dict(lr=1e-30, betas=(0.0, 0.0), eps=1e-40),        # subnormal eps, updates that underflow
    dict(lr=1e30, betas=(0.999, 0.5), eps=1e-8),        # overflowing updates
], ids=["steep", "underflow", "overflow"])
def test_adam_subnormal_extreme_hyperparameters(hyper):
    require_backend("c")
    rng = np.random.default_rng(5)
    kinds = KINDS + ["nonfinite"]
    n = 2051
    p0, m0 = mixed(rng, n, kinds), mixed(rng, n, kinds)
    v0, w0 = np.abs(mixed(rng, n, kinds)), np.abs(mixed(rng, n, kinds))
    grads = [mixed(rng, n, kinds) for _ in range(3)] + [np.zeros(n, np.float32)] * 2
    opts = dict(cls="AdamW", weight_decay=0.5, amsgrad=True, maximize=False)
    for a, b in zip(_run("c", p0, m0, v0, w0, grads, opts, hyper),
                    _run("numpy", p0, m0, v0, w0, grads, opts, hyper)):
        same_bits(a, b)


def test_adam_decaying_moments_bit_exact():
    """The training case: units whose gradient stopped, moments decaying through the subnormal
    range to zero over many steps (every vector goes tiny, then to 0), next to live ones."""
    require_backend("c")
    rng = np.random.default_rng(3)
    n = 1024
    dead = (np.arange(n) // 8) % 3 == 0  # whole vectors
    dead |= rng.random(n) < 0.05  # and lanes scattered among live ones
    out = {}
    for be in ("c", "numpy"):
        p = rng.normal(size=n).astype(np.float32) if be == "c" else out["p0"].copy()
        out.setdefault("p0", p.copy())
        o = fd.Adam([p], lr=1e-3, backend=be)
        r = np.random.default_rng(4)
        for t in range(1200):
            g = (r.normal(size=n) * 1e-3).astype(np.float32)
            if t >= 20:
                g[dead] = 0.0
            o.step([g])
        out[be] = (p, o.state[0]["exp_avg"].copy(), o.state[0]["exp_avg_sq"].copy())
    for a, b in zip(out["c"], out["numpy"]):
        same_bits(a, b)
    m = out["c"][1]
    # the run went through the subnormal range (0.9^t from 1e-4 reaches it after ~800 steps)
    assert np.count_nonzero((m != 0) & (np.abs(m) < 2.0 ** -126)) + np.count_nonzero(m[dead] == 0) > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_adam_subnormal_under_flush_matches_flushed_loop(threads):
    """With fd.set_flush_denormal(True) the kernel's results are the flushed float32 loop's: the
    subnormal route must not run then (it would keep the subnormals in what it writes)."""
    require_backend("c")
    rng = np.random.default_rng(9)
    n = 2000
    kinds = ["normal", "subnormal", "small_sub", "zero"]
    p0, m0 = mixed(rng, n, kinds), mixed(rng, n, kinds)
    v0, w0 = np.abs(mixed(rng, n, kinds)), np.abs(mixed(rng, n, kinds))
    grads = [mixed(rng, n, kinds) for _ in range(3)]
    opts = dict(cls="Adam", weight_decay=0.0, amsgrad=False, maximize=False)
    hyper = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    old = fd.get_num_threads()
    fd.set_num_threads(threads)
    try:
        fd.set_flush_denormal(True)
        try:
            flushed = _run("c", p0, m0, v0, w0, grads, opts, hyper)
        finally:
            fd.set_flush_denormal(False)
        ieee = _run("c", p0, m0, v0, w0, grads, opts, hyper)
    finally:
        fd.set_num_threads(old)
    # flushed results have no subnormals; the IEEE run keeps some
    for a in flushed:
        assert not np.any((a != 0) & (np.abs(a) < 2.0 ** -126))
    assert any(np.any((a != 0) & (np.abs(a) < 2.0 ** -126)) for a in ieee)



@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("opts", OPTIONS[::3], ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
@pytest.mark.parametrize("lr", [1e-3, 0.5, 1e-25])
def test_adam_stopped_units_bit_exact(opts, threads, lr):
    """The vectors the quick route takes: some exp_avg lanes subnormal or tiny, the gradient and
    exp_avg_sq normal or zero; parameters of every kind, including tiny, zero and huge ones for which
    the 'update below a quarter of p's spacing' bound fails and the general route must take over."""
    require_backend("c")
    rng = np.random.default_rng(21)
    n = 8 * 600 + 5
    m0 = mixed(rng, n, ["normal", "subnormal", "small_sub", "tiny", "edge", "zero"])
    p0 = mixed(rng, n, ["normal", "normal", "normal", "tiny", "subnormal", "zero", "huge", "edge"])
    # and parameters log-uniform over 2^-110 .. 2^0, across the bound's threshold for every d
    logu = rng.random(n) < 0.4
    p0[logu] = (rng.choice([-1.0, 1.0], int(logu.sum()))
                * 2.0 ** rng.uniform(-110, 0, int(logu.sum()))).astype(np.float32)
    v0 = np.abs(mixed(rng, n, ["normal", "zero"])) * np.float32(1e-3)
    w0 = np.abs(mixed(rng, n, ["normal", "zero"])) * np.float32(1e-3)
    grads = []
    for _ in range(6):
        g = mixed(rng, n, ["normal", "zero", "zero", "zero"])
        grads.append(g)
    hyper = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8)
    old = fd.get_num_threads()
    try:
        fd.set_num_threads(threads)
        got = _run("c", p0, m0, v0, w0, grads, opts, hyper)
        ref = _run("numpy", p0, m0, v0, w0, grads, opts, hyper)
    finally:
        fd.set_num_threads(old)
    for a, b in zip(got, ref):
        same_bits(a, b)


def test_adam_subnormal_times_beta1_rounding():
    """m * beta1 for every subnormal mantissa pattern near ties: the exact rounding of k * beta1 to an
    integer (fd_sn_submul), for betas whose products with small k land on half-integers."""
    require_backend("c")
    ks = np.concatenate([np.arange(1, 4097), (1 << 23) - np.arange(1, 2049),
                         np.random.default_rng(2).integers(1, 1 << 23, 8192)])
    m0 = (ks.astype(np.uint32)).view(np.float32).copy()
    m0[1::2] = -m0[1::2]
    n = m0.size
    for beta1 in (0.5, 0.75, 0.9, 0.999, 0.3333333, 0.0, 2.0 ** -59):
        got = {}
        for be in ("c", "numpy"):
            p = np.ones(n, np.float32)
            o = fd.Adam([p], lr=1e-3, betas=(beta1, 0.999), backend=be)
            o.step([np.zeros(n, np.float32)])
            o.state[0]["exp_avg"][:] = m0
            o.state[0]["exp_avg_sq"][:] = np.float32(1e-6)
            o.step([np.zeros(n, np.float32)])
            got[be] = (p, o.state[0]["exp_avg"].copy())
        for a, b in zip(got["c"], got["numpy"]):
            same_bits(a, b)


@pytest.mark.parametrize("lr", [1e-3, 1.0])
def test_adam_quick_route_bound_threshold(lr):
    """Where the quick route's bound is decided: exp_avg just under the tiny threshold, a zero
    gradient, and parameters around the size at which the update reaches their rounding spacing
    (|p| * d ~ step_size * 2^-98): the parameters must move exactly when IEEE arithmetic moves them."""
    require_backend("c")
    rng = np.random.default_rng(8)
    n = 8 * 2000
    m0 = (rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-121.5, -120.05, n)).astype(np.float32)
    m0[::64] = np.float32(2.0 ** -140)  # a subnormal in every stretch: the next steps run checked
    v0 = rng.choice([0.0, 1e-20, 1e-12], n).astype(np.float32)
    # one magnitude per 8-element vector (the quick route takes a vector whole or not at all)
    p0 = (rng.choice([-1.0, 1.0], n) * np.repeat(2.0 ** rng.uniform(-100, -55, n // 8), 8)
          * rng.uniform(1.0, 1.01, n)).astype(np.float32)
    grads = [np.zeros(n, np.float32)] * 3
    opts = dict(cls="Adam", weight_decay=0.0, amsgrad=False, maximize=False)
    hyper = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8)
    got = _run("c", p0, m0, v0, v0, grads, opts, hyper)
    ref = _run("numpy", p0, m0, v0, v0, grads, opts, hyper)
    for a, b in zip(got, ref):
        same_bits(a, b)
    assert np.count_nonzero(ref[0] != p0) > 100 and np.count_nonzero(ref[0] == p0) > 100
