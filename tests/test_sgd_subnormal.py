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
