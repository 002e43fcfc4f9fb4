"""Gradient noise (NumPy). Mirrors csrc/fd_noise.c and backends/*/noise.py.

z is a pure function of (seed, param_index[i], step, element index): Philox4x32-10 (Random123's
rounds) keyed per tensor by K = philox((idx_lo, idx_hi, 0, 0), (seed_lo, seed_hi))[0:2], counter
(e // 2, step) per pair of elements, then Box-Muller in float64; z rounded to the element type, and
``p = p + sigma * z``. The helpers below (:func:`philox4x32_10`, :func:`tensor_key`,
:func:`normals`) work on uint64 arrays holding 32-bit words; the benchmarks' textbook version uses
them too.
"""

import numpy as np

__all__ = ["noise", "philox4x32_10", "tensor_key", "normals"]

_MASK = np.uint64(0xFFFFFFFF)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_S32, _S11 = np.uint64(32), np.uint64(11)
_TWO_M53 = 2.0 ** -53
_TWO_PI = 6.283185307179586
#: elements per block of the vectorised loop (bounds the temporaries)
_BLOCK = 1 << 16


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of the counters (c0, c1, c2, c3) (uint64 arrays of 32-bit words, broadcast
    together) under the key (k0, k1) (Python ints < 2**32). Returns the four output words."""
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = ((p1 >> _S32) ^ c1 ^ np.uint64(k0), p1 & _MASK,
                          (p0 >> _S32) ^ c3 ^ np.uint64(k1), p0 & _MASK)
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def tensor_key(seed, index):
    """The per-tensor key (K0, K1) of ``(seed, index)`` as Python ints."""
    seed, index = int(seed), int(index)
    w = np.array([index & 0xFFFFFFFF, index >> 32, 0, 0], dtype=np.uint64).reshape(4, 1)
    x = philox4x32_10(w[0], w[1], w[2], w[3], seed & 0xFFFFFFFF, seed >> 32)
    return int(x[0][0]), int(x[1][0])


def normals(key, step, start, n):
    """float64 z of elements ``start .. start + n - 1`` of the tensor with key ``key`` at ``step``."""
    j0 = start >> 1
    j1 = (start + n - 1) >> 1
    js = np.arange(j0, j1 + 1, dtype=np.uint64)
    step = int(step)
    x0, x1, x2, x3 = philox4x32_10(js & _MASK, js >> _S32, np.uint64(step & 0xFFFFFFFF),
                                   np.uint64(step >> 32), key[0], key[1])
    u1 = ((((x1 << _S32) | x0) >> _S11) + np.uint64(1)).astype(np.float64) * _TWO_M53
    u2 = (((x3 << _S32) | x2) >> _S11).astype(np.float64) * _TWO_M53
    r = np.sqrt(-2.0 * np.log(u1))
    a = u2 * _TWO_PI
    z = np.empty(2 * js.shape[0], dtype=np.float64)
    z[0::2] = r * np.cos(a)
    z[1::2] = r * np.sin(a)
    off = start - 2 * j0
    return z[off:off + n]


def noise(tab, *, param_index, sigma, seed, step):
    tab.require("noise")  # ValueError naming a missing column
    index = np.asarray(param_index, dtype=np.int64)
    T = tab.dtype.type
    s = T(sigma)
    for i, p in enumerate(tab.columns["param"]):
        flat = p.reshape(-1)  # (C-contiguous: a view)
        if flat.size == 0:
            continue
        key = tensor_key(seed, index[i])
        for lo in range(0, flat.size, _BLOCK):
            n = min(_BLOCK, flat.size - lo)
            z = normals(key, step, lo, n).astype(T)
            seg = flat[lo:lo + n]
            seg += s * z
