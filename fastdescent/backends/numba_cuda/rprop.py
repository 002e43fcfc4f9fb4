"""Rprop (CUDA). Mirrors backends/numpy_ref/rprop.py (expression order) and csrc/fd_rprop.c."""

from numba import cuda

from ..._contract import kernel_scalars
from ._device import INLINE, _chunk, _ptr, launch


@cuda.jit(device=True, **INLINE)
def _rprop_elem(p, prev, ss, g, j, etam, etap, smin, smax, zero, one, maximize):
    gj = g[j]
    if maximize:
        gj = -gj
    s = gj * prev[j]
    f = etap if s > zero else (etam if s < zero else zero)
    if f == zero:
        f = one
    sj = ss[j] * f
    sj = smin if sj < smin else (smax if sj > smax else sj)
    ss[j] = sj
    if f == etam:
        gj = zero
    sg = (one if gj > zero else zero) - (one if gj < zero else zero)
    p[j] = p[j] - sg * sj
    prev[j] = gj


@cuda.jit(cache=True)
def _rprop_kernel(ap, aprev, ass, ag, plan, etam, etap, smin, smax, zero, one, maximize):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, etam)
        prev = _ptr(aprev[t], end, etam)
        ss = _ptr(ass[t], end, etam)
        g = _ptr(ag[t], end, etam)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _rprop_elem(p, prev, ss, g, j, etam, etap, smin, smax, zero, one, maximize)


_COLUMNS = ("param", "prev", "step_size", "grad")


def rprop(tab, *, etaminus, etaplus, step_size_min, step_size_max, maximize):
    tab.require("rprop")  # ValueError naming a missing column
    T = tab.dtype.type
    etam, etap, smin, smax, neg = kernel_scalars(
        "rprop", dict(etaminus=etaminus, etaplus=etaplus, step_size_min=step_size_min,
                      step_size_max=step_size_max, maximize=maximize), tab.dtype)
    launch(tab, _rprop_kernel, _COLUMNS, (etam, etap, smin, smax, T(0), T(1), neg))
