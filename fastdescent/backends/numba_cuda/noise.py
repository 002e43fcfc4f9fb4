"""Gradient noise (CUDA). Mirrors backends/numpy_ref/noise.py and csrc/fd_noise.c.

Each thread computes the normal of its own element: Philox4x32-10 keyed per tensor by
(seed, param_index[i]), counter (e // 2, step), Box-Muller in float64 (cos for even e, sin for odd
e), rounded once to the element type (``_cast``); ``p = p + sigma * z``. All integer arithmetic is
uint64 holding 32-bit words (no overflow, also in the simulator). The parameter indices are an int64
device array, uploaded once per table and index list; a block derives the key of its chunk's tensor
once per chunk.
"""

import math

import numpy as np
from numba import cuda

from .._philox import MASK as _MASK, ONE as _ONE, S11 as _S11, S32 as _S32, TWO_M53 as _TWO_M53, \
    TWO_PI as _TWO_PI, ZERO as _ZERO, philox
from ._device import INLINE, _cast, _chunk, _ptr, launch

_philox = cuda.jit(device=True, **INLINE)(philox)  # the one Philox of both Numba backends


@cuda.jit(device=True, **INLINE)
def _key(index, s_lo, s_hi):
    idx = np.uint64(index)
    k0, k1, _x2, _x3 = _philox(idx & _MASK, idx >> _S32, _ZERO, _ZERO, s_lo, s_hi)
    return k0, k1


@cuda.jit(device=True, **INLINE)
def _normal(k0, k1, t_lo, t_hi, e):
    j = np.uint64(e >> 1)
    x0, x1, x2, x3 = _philox(j & _MASK, j >> _S32, t_lo, t_hi, k0, k1)
    u1 = np.float64((((x1 << _S32) | x0) >> _S11) + _ONE) * _TWO_M53
    u2 = np.float64(((x3 << _S32) | x2) >> _S11) * _TWO_M53
    r = math.sqrt(-2.0 * math.log(u1))
    a = u2 * _TWO_PI
    if e & 1:
        return r * math.sin(a)
    return r * math.cos(a)


@cuda.jit(cache=True)
def _noise_kernel(ap, plan, index, s_lo, s_hi, t_lo, t_hi, sigma):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, sigma)
        k0, k1 = _key(index[t], s_lo, s_hi)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            p[j] = p[j] + sigma * _cast(_normal(k0, k1, t_lo, t_hi, j), sigma)


def _device_index(tab, index):
    """``index`` on the device, uploaded once per table while the values stay the same."""
    cached = getattr(tab, "_noise_index", None)
    if cached is not None and np.array_equal(cached[0], index):
        return cached[1]
    dev = cuda.to_device(index)
    tab._noise_index = (index.copy(), dev)
    return dev


def noise(tab, *, param_index, sigma, seed, step):
    tab.require("noise")  # ValueError naming a missing column
    index = np.ascontiguousarray(param_index, dtype=np.int64)
    if index.shape != (tab.n,):
        raise ValueError(f"noise: param_index must hold {tab.n} values (one per tensor), got shape "
                         f"{index.shape}")
    if tab.total == 0:
        return
    seed, step = int(seed), int(step)
    keys = (np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32), np.uint64(step & 0xFFFFFFFF),
            np.uint64(step >> 32), tab.dtype.type(sigma))
    launch(tab, _noise_kernel, ("param",), (_device_index(tab, index),) + keys)
