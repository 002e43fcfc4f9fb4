"""Adagrad (CUDA). Mirrors backends/numpy_ref/adagrad.py (expression order) and csrc/fd_adagrad.c."""

from numba import cuda

from ._device import INLINE, _chunk, _ptr, _sqrt, launch


@cuda.jit(device=True, **INLINE)
def _adagrad_elem(p, s, g, j, clr, eps, weight_decay, maximize, use_wd):
    pj = p[j]
    gj = g[j]
    if maximize:
        gj = -gj
    if use_wd:
        gj = gj + weight_decay * pj
    sj = s[j] + gj * gj
    s[j] = sj
    std = _sqrt(sj) + eps
    p[j] = pj - clr * (gj / std)


@cuda.jit(cache=True)
def _adagrad_kernel(ap, asum, ag, plan, clr, eps, weight_decay, maximize, use_wd):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, clr)
        s = _ptr(asum[t], end, clr)
        g = _ptr(ag[t], end, clr)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _adagrad_elem(p, s, g, j, clr, eps, weight_decay, maximize, use_wd)


_COLUMNS = ("param", "sum", "grad")


def adagrad(tab, *, clr, eps, weight_decay, maximize):
    tab.require("adagrad")  # ValueError naming a missing column
    T = tab.dtype.type
    scalars = (T(clr), T(eps), T(weight_decay), int(bool(maximize)), int(weight_decay != 0))
    launch(tab, _adagrad_kernel, _COLUMNS, scalars)
