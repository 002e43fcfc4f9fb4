"""Adagrad (CUDA). Mirrors backends/numpy_ref/adagrad.py (expression order) and csrc/fd_adagrad.c."""

from numba import cuda

from ._device import _ptr, _sqrt, launch


@cuda.jit(device=True, inline=True)
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
def _adagrad_flat(ap, asum, ag, n, clr, eps, weight_decay, maximize, use_wd):
    p = _ptr(ap, n, clr)
    s = _ptr(asum, n, clr)
    g = _ptr(ag, n, clr)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        _adagrad_elem(p, s, g, j, clr, eps, weight_decay, maximize, use_wd)


@cuda.jit(cache=True)
def _adagrad_multi(ap, asum, ag, sizes, ctens, coffs, nchunks, chunk, clr, eps, weight_decay,
                   maximize, use_wd):
    for c in range(cuda.blockIdx.x, nchunks, cuda.gridDim.x):
        t = ctens[c]
        n = sizes[t]
        end = coffs[c] + chunk
        if end > n:
            end = n
        p = _ptr(ap[t], n, clr)
        s = _ptr(asum[t], n, clr)
        g = _ptr(ag[t], n, clr)
        for j in range(coffs[c] + cuda.threadIdx.x, end, cuda.blockDim.x):
            _adagrad_elem(p, s, g, j, clr, eps, weight_decay, maximize, use_wd)


_COLUMNS = ("param", "sum", "grad")


def adagrad(tab, *, clr, eps, weight_decay, maximize):
    tab.require("adagrad")  # ValueError naming a missing column
    T = tab.dtype.type
    scalars = (T(clr), T(eps), T(weight_decay), int(bool(maximize)), int(weight_decay != 0))
    launch(tab, _adagrad_flat, _adagrad_multi, _COLUMNS, scalars)
