"""fd_sgd's float32 update with subnormal (or tiny) operands: every element must come out bit for bit
as IEEE float32 arithmetic gives it (the NumPy reference), for every SGD option, with subnormal,
tiny-normal, zero, signed-zero, huge, infinite and NaN operands mixed into the same blocks, on one
thread and on several. (A guard for any future fast path around the microcode assists that
subnormal operands cost: benchmarks/RESULTS.md, "The momentum-SGD epoch".)"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastdescent as fd

from conftest import require_backend

TINY = np.float32(2.0 ** -100)


def mixed(rng, n, kinds):
    """float32 values drawn from the kinds listed (a mix in every 32-element block)."""
    pools = {
        "normal": lambda k: rng.normal(size=k) * 0.1,
        "subnormal": lambda k: rng.choice([-1, 1], k) * rng.integers(1, 2 ** 23, k) * 2.0 ** -149,
        "small_sub": lambda k: rng.choice([-1, 1], k) * rng.integers(1, 6, k) * 2.0 ** -149,
        "tiny": lambda k: rng.normal(size=k) * 2.0 ** rng.integers(-126, -99, k),
        "edge": lambda k: rng.choice([2.0 ** -126, -2.0 ** -126, 2.0 ** -126 * 1.1, 2.0 ** -100,
                                      2.0 ** -100 * 0.99, 0.0, -0.0], k),
        "zero": lambda k: rng.choice([0.0, -0.0], k),
        "huge": lambda k: rng.choice([-1, 1], k) * 3.0e38,
        "nonfinite": lambda k: rng.choice([np.inf, -np.inf, np.nan], k),
    }
    which = rng.integers(0, len(kinds), n)
    out = np.empty(n, np.float64)
    for i, kname in enumerate(kinds):
        sel = which == i
        out[sel] = pools[kname](int(sel.sum()))
    with np.errstate(over="ignore"):
        return out.astype(np.float32)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    na, nb = np.isnan(a), np.isnan(b)
    np.testing.assert_array_equal(na, nb)
    np.testing.assert_array_equal(a.view(np.uint32)[~na], b.view(np.uint32)[~nb])


OPTIONS = [dict(momentum=m, dampening=d, weight_decay=wd, nesterov=ne, maximize=mx)
           for m, d, wd, ne, mx in itertools.product((0.0, 0.9), (0.0, 0.25), (0.0, 1e-2),
                                                     (False, True), (False, True))
           if not (ne and (m == 0 or d != 0))]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
@pytest.mark.parametrize("nonfinite", [False, True])
def test_sgd_subnormal_operands_bit_exact(opts, threads, nonfinite):
    require_backend("c")
    rng = np.random.default_rng(7)
    kinds = ["normal", "subnormal", "small_sub", "tiny", "edge", "zero", "huge"]
    if nonfinite:
        kinds.append("nonfinite")
    n = 4099  # not a multiple of the block
    p0 = mixed(rng, n, kinds)
    grads = [mixed(rng, n, kinds) for _ in range(6)]
    grads.append(np.zeros(n, np.float32))  # the buffer decays alone (the fixed points)
    old = fd.get_num_threads()
    try:
        fd.set_num_threads(threads)
        res = {}
        for be in ("c", "numpy"):
            p = p0.copy()
            o = fd.SGD([p], lr=0.1, backend=be, **opts)
            with np.errstate(all="ignore"):
                for g in grads:
                    o.step([g])
            res[be] = (p, o.state[0].get("momentum_buffer"))
    finally:
        fd.set_num_threads(old)
    same_bits(res["c"][0], res["numpy"][0])
    if opts["momentum"]:
        same_bits(res["c"][1], res["numpy"][1])


def test_sgd_buffer_fixed_points_bit_exact():
    """The MNIST-shaped case: a buffer of k * 2^-149 (k <= 4) under a zero gradient stays there
    (0.9 * k rounds back to k), the parameters do not move; both as IEEE float32 says."""
    require_backend("c")
    n = 1000
    buf0 = (np.arange(n) % 9 * 2.0 ** -149).astype(np.float32)
    out = {}
    for be in ("c", "numpy"):
        p = np.linspace(-1, 1, n, dtype=np.float32)
        o = fd.SGD([p], lr=0.01, momentum=0.9, backend=be)
        o.step([buf0.copy()])  # first step: b <- g
        for _ in range(30):
            o.step([np.zeros(n, np.float32)])
        out[be] = (p, o.state[0]["momentum_buffer"].copy())
    same_bits(out["c"][0], out["numpy"][0])
    same_bits(out["c"][1], out["numpy"][1])
    b = out["c"][1].view(np.uint32)
    assert np.all(b[(np.arange(n) % 9) <= 4] == (np.arange(n) % 9)[(np.arange(n) % 9) <= 4])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("opts", [o for o in OPTIONS if o["momentum"]],
                         ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
@pytest.mark.parametrize("lr", [0.01, 1e-30])
def test_sgd_stopped_units_bit_exact(opts, threads, lr):
    """The vectors the c kernel's quick route takes (csrc/fd_sgd.c): some momentum-buffer lanes
    subnormal or tiny, gradients normal or zero; parameters of every kind, including those for which
    the 'update below a quarter of p's spacing' bound fails (the general route then)."""
    require_backend("c")
    rng = np.random.default_rng(17)
    n = 8 * 700 + 3
    b0 = mixed(rng, n, ["normal", "subnormal", "small_sub", "tiny", "edge", "zero"])
    p0 = mixed(rng, n, ["normal", "tiny", "subnormal", "zero", "huge", "edge"])
    logu = rng.random(n) < 0.4
    p0[logu] = (rng.choice([-1.0, 1.0], int(logu.sum()))
                * 2.0 ** rng.uniform(-130, 0, int(logu.sum()))).astype(np.float32)
    grads = [mixed(rng, n, ["normal", "zero", "zero", "zero"]) for _ in range(5)]
    old = fd.get_num_threads()
    try:
        fd.set_num_threads(threads)
        res = {}
        for be in ("c", "numpy"):
            p = p0.copy()
            o = fd.SGD([p], lr=lr, backend=be, **opts)
            with np.errstate(all="ignore"):
                o.step([np.zeros(n, np.float32)])  # the first step makes the buffer
                p[:] = p0
                o.state[0]["momentum_buffer"][:] = b0
                for g in grads:
                    o.step([g])
            res[be] = (p, o.state[0]["momentum_buffer"])
    finally:
        fd.set_num_threads(old)
    for a, b in zip(res["c"], res["numpy"]):
        same_bits(a, b)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_quick_route_bound_threshold(nesterov):
    """Buffers just under the tiny threshold, a zero gradient, parameters around the size at which
    lr * buffer reaches their rounding spacing: they move exactly when IEEE arithmetic moves them."""
    require_backend("c")
    rng = np.random.default_rng(19)
    n = 8 * 2000
    b0 = (rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-121.5, -120.05, n)).astype(np.float32)
    b0[::64] = np.float32(2.0 ** -140)  # a subnormal in every stretch: the next steps run checked
    # one magnitude per 8-element vector (the quick route takes a vector whole or not at all)
    p0 = (rng.choice([-1.0, 1.0], n) * np.repeat(2.0 ** rng.uniform(-100, -85, n // 8), 8)
          * rng.uniform(1.0, 1.01, n)).astype(np.float32)
    res = {}
    for be in ("c", "numpy"):
        p = p0.copy()
        o = fd.SGD([p], lr=1.0, momentum=0.9, nesterov=nesterov, backend=be)
        o.step([np.zeros(n, np.float32)])
        o.state[0]["momentum_buffer"][:] = b0
        for _ in range(3):
            o.step([np.zeros(n, np.float32)])
        res[be] = (p, o.state[0]["momentum_buffer"])
    for a, b in zip(res["c"], res["numpy"]):
        same_bits(a, b)
    assert np.count_nonzero(res["numpy"][0] != p0) > 100
    assert np.count_nonzero(res["numpy"][0] == p0) > 100
