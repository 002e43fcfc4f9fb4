"""Gradient-norm reduction, scaling, the finiteness check and clipping by value (CUDA). Mirrors
csrc/fd_clip.c and backends/numpy_ref/clip.py.

Reductions are deterministic two-stage reductions in float64, with no atomics: stage 1 has a fixed
number of blocks (``reduce_blocks`` of the launch config) walking the table's chunk plan (one tensor:
chunks of ``REDUCE_THREADS`` elements, a grid-stride order; several: chunks of ``chunk``); each thread
accumulates a fixed, strided subset of the elements in order and each block reduces its threads'
partials by a fixed shared-memory tree into ``partials[block]``; stage 2, one block, reduces the
partials the same way. The host then reads the single result (one synchronisation per call). For a
given table and launch config the result is bitwise reproducible.

Modes: 0 sum |g|**p, 1 sum |g|, 2 sum g*g, 3 max |g| (NaN-propagating). ``all_finite`` is mode 3:
the max of |g| is finite iff every element is.
"""

import math

import numpy as np
from numba import cuda, float64

from ._device import INLINE, REDUCE_THREADS, _chunk, _nanmax, _ptr, config, launch

_SUM_POW, _SUM_ABS, _SUM_SQ, _MAX_ABS = 0, 1, 2, 3


@cuda.jit(device=True, **INLINE)
def _accumulate(acc, x, mode, power):
    a = abs(np.float64(x))  # (np.float64, not float: IEEE inf on overflow in the simulator too)
    if mode == 2:
        return acc + a * a
    if mode == 1:
        return acc + a
    if mode == 3:
        return _nanmax(acc, a)
    return acc + a ** power


@cuda.jit(device=True, **INLINE)
def _block_reduce(sm, acc, mode):
    """Reduce ``acc`` over the block by a fixed tree; the result is in sm[0] (valid after the call)."""
    tid = cuda.threadIdx.x
    sm[tid] = acc
    cuda.syncthreads()
    s = REDUCE_THREADS // 2
    while s > 0:
        if tid < s:
            if mode == 3:
                sm[tid] = _nanmax(sm[tid], sm[tid + s])
            else:
                sm[tid] = sm[tid] + sm[tid + s]
        cuda.syncthreads()
        s //= 2


@cuda.jit(cache=True)
def _reduce_kernel(ag, plan, mode, power, like, partials):
    sm = cuda.shared.array(REDUCE_THREADS, float64)
    acc = 0.0
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        g = _ptr(ag[t], end, like)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            acc = _accumulate(acc, g[j], mode, power)
    _block_reduce(sm, acc, mode)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = sm[0]


@cuda.jit(cache=True)
def _reduce_final(partials, nparts, mode, out):
    sm = cuda.shared.array(REDUCE_THREADS, float64)
    acc = 0.0
    for k in range(cuda.threadIdx.x, nparts, cuda.blockDim.x):
        if mode == 3:
            acc = _nanmax(acc, partials[k])
        else:
            acc = acc + partials[k]
    _block_reduce(sm, acc, mode)
    if cuda.threadIdx.x == 0:
        out[0] = sm[0]


def _reduce(tab, mode, power):
    if tab.total == 0:
        return 0.0
    cfg = config()
    # One tensor: chunks of one block's width, so that each thread sums the elements a grid-stride
    # loop over the tensor would give it (the order of the one-tensor reduction since its first
    # version); several tensors: chunks of ``chunk`` elements.
    plan, nchunks = tab.plan(REDUCE_THREADS if tab.n == 1 else cfg.chunk)
    grid = max(1, min(cfg.reduce_blocks, nchunks))
    partials, out = tab.scratch(grid)
    _reduce_kernel[grid, REDUCE_THREADS](tab.column("grad"), plan, mode, float(power),
                                         tab.dtype.type(0), partials)
    _reduce_final[1, REDUCE_THREADS](partials, grid, mode, out)
    return float(out.copy_to_host()[0])


def norm_pow_sum(tab, *, norm_type):
    tab.require("norm_pow_sum")
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        return _reduce(tab, _MAX_ABS, 1.0)
    if norm_type == 2:
        return _reduce(tab, _SUM_SQ, 2.0)
    if norm_type == 1:
        return _reduce(tab, _SUM_ABS, 1.0)
    return _reduce(tab, _SUM_POW, norm_type)


@cuda.jit(cache=True)
def _scale_kernel(ag, plan, factor):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        g = _ptr(ag[t], end, factor)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            g[j] = g[j] * factor


def scale(tab, *, factor):
    tab.require("scale")
    launch(tab, _scale_kernel, ("grad",), (tab.dtype.type(factor),))


@cuda.jit(device=True, **INLINE)
def _clamp_elem(g, j, lo, hi):
    v = g[j]
    v = lo if v < lo else v
    g[j] = hi if v > hi else v


@cuda.jit(cache=True)
def _clamp_kernel(ag, plan, lo, hi):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        g = _ptr(ag[t], end, hi)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _clamp_elem(g, j, lo, hi)


def clip_value(tab, *, clip_value):
    tab.require("clip_value")
    hi = tab.dtype.type(clip_value)
    launch(tab, _clamp_kernel, ("grad",), (-hi, hi))


def all_finite(tab):
    tab.require("all_finite")
    return bool(math.isfinite(_reduce(tab, _MAX_ABS, 1.0)))

