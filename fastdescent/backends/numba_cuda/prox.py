"""Proximal L1 step (CUDA). Mirrors backends/numpy_ref/prox.py (expression order) and csrc/fd_prox.c."""

import math

from numba import cuda

from ._device import _ptr, launch


@cuda.jit(device=True, inline=True)
def _prox_elem(p, j, thr, zero):
    pj = p[j]
    a = abs(pj) - thr
    p[j] = zero if a <= zero else math.copysign(a, pj)


@cuda.jit(cache=True)
def _prox_flat(ap, n, thr, zero):
    p = _ptr(ap, n, thr)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        _prox_elem(p, j, thr, zero)


@cuda.jit(cache=True)
def _prox_multi(ap, sizes, ctens, coffs, nchunks, chunk, thr, zero):
    for c in range(cuda.blockIdx.x, nchunks, cuda.gridDim.x):
        t = ctens[c]
        n = sizes[t]
        end = coffs[c] + chunk
        if end > n:
            end = n
        p = _ptr(ap[t], n, thr)
        for j in range(coffs[c] + cuda.threadIdx.x, end, cuda.blockDim.x):
            _prox_elem(p, j, thr, zero)


def prox(tab, *, threshold):
    tab.require("prox")  # ValueError naming a missing column
    T = tab.dtype.type
    launch(tab, _prox_flat, _prox_multi, ("param",), (T(threshold), T(0)))
