"""Proximal L1 step (CUDA). Mirrors backends/numpy_ref/prox.py (expression order) and csrc/fd_prox.c."""

import math

from numba import cuda

from ._device import INLINE, _chunk, _ptr, launch


@cuda.jit(device=True, **INLINE)
def _prox_elem(p, j, thr, zero):
    pj = p[j]
    a = abs(pj) - thr
    p[j] = zero if a <= zero else math.copysign(a, pj)


@cuda.jit(cache=True)
def _prox_kernel(ap, plan, thr, zero):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, thr)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _prox_elem(p, j, thr, zero)


def prox(tab, *, threshold):
    tab.require("prox")  # ValueError naming a missing column
    T = tab.dtype.type
    launch(tab, _prox_kernel, ("param",), (T(threshold), T(0)))
