"""Gradient noise (Numba). Mirrors csrc/fd_noise.c and backends/numpy_ref/noise.py.

Shapes: ``param`` holds ``n`` tensors with the table's sizes; ``param_index`` one int64 per tensor.
Per element ``e`` of tensor ``i``: ``p = p + sigma * z`` with ``z`` (float64, rounded to the dtype) a
pure function of (seed, param_index[i], step, e): Philox4x32-10 keyed per tensor, counter
(e // 2, step), Box-Muller (see csrc/fd_noise.c). Pairs of elements share one Philox block; a piece
of a tensor that starts or ends in the middle of a pair computes that pair alone, so the values never
depend on the chunking or the threads. All integer arithmetic is uint64 (32-bit words).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._philox import MASK as _MASK, ONE as _ONE, S11 as _S11, S32 as _S32, TWO_M53 as _TWO_M53, \
    TWO_PI as _TWO_PI, ZERO as _ZERO, philox
from ._config import jit, jit_variants
from ._ptr import like, segment

_philox = jit(philox)  # the one Philox of both Numba backends (backends/_philox.py)


@jit
def _tensor_key(s_lo, s_hi, index):
    """The Philox key (K0, K1) of the tensor at ``index`` (int64) under the seed words (uint64):
    the first two words of Philox((index_lo, index_hi, 0, 0), (s_lo, s_hi)). Gradient noise and the
    stochastic rounding of the mixed-precision step both key their streams with it."""
    idx = np.uint64(index)
    k0, k1, _, _ = _philox(idx & _MASK, idx >> _S32, _ZERO, _ZERO, s_lo, s_hi)
    return k0, k1


@jit
def _pair(k0, k1, t_lo, t_hi, j):
    """The two normals (even element, odd element) of pair ``j``."""
    x0, x1, x2, x3 = _philox(j & _MASK, j >> _S32, t_lo, t_hi, k0, k1)
    u1 = np.float64((((x1 << _S32) | x0) >> _S11) + _ONE) * _TWO_M53
    u2 = np.float64(((x3 << _S32) | x2) >> _S11) * _TWO_M53
    r = math.sqrt(-2.0 * math.log(u1))
    a = u2 * _TWO_PI
    return r * math.cos(a), r * math.sin(a)


@jit
def _noise_seg(x, lo, k0, k1, t_lo, t_hi, s, proto):
    """Elements ``lo .. lo + len(x) - 1`` of a tensor (``x[i]`` is element ``lo + i``). A plain
    call, not inlined into the prange body: inlined, Numba's parfor pass dropped the last odd
    element of some pieces (the call costs nothing next to two Philox blocks per pair)."""
    n = x.shape[0]
    i = 0
    if lo & 1:
        z0, z1 = _pair(k0, k1, t_lo, t_hi, np.uint64(lo >> 1))
        x[0] = x[0] + s * like(z1, proto)
        i = 1
    while i + 1 < n:
        z0, z1 = _pair(k0, k1, t_lo, t_hi, np.uint64((lo + i) >> 1))
        x[i] = x[i] + s * like(z0, proto)
        x[i + 1] = x[i + 1] + s * like(z1, proto)
        i += 2
    if i < n:
        z0, z1 = _pair(k0, k1, t_lo, t_hi, np.uint64((lo + i) >> 1))
        x[i] = x[i] + s * like(z0, proto)


def _noise_body(pieces, starts, p_a, index, proto, sigma, seed, step):
    s = like(sigma, proto)
    sd = np.uint64(seed)
    st = np.uint64(step)
    s_lo, s_hi = sd & _MASK, sd >> _S32
    t_lo, t_hi = st & _MASK, st >> _S32
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            k0, k1 = _tensor_key(s_lo, s_hi, index[t])
            _noise_seg(segment(p_a[t], lo, k, proto), lo, k0, k1, t_lo, t_hi, s, proto)


_noise_serial, _noise_parallel = jit_variants(_noise_body)


def noise(tab, *, param_index, sigma, seed, step):
    k = tab.require("noise")
    index = np.ascontiguousarray(param_index, dtype=np.int64)
    if index.shape != (tab.n,):
        raise ValueError(f"noise: param_index must hold {tab.n} values (one per tensor), got shape "
                         f"{index.shape}")
    (_noise_parallel if tab.parallel else _noise_serial)(
        tab.pieces, tab.piece_starts, k["param"], index, tab.proto, float(sigma), int(seed),
        int(step))
