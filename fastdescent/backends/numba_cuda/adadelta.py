"""Adadelta (CUDA). Mirrors backends/numpy_ref/adadelta.py (expression order) and
csrc/fd_adadelta.c.

Scalars arrive as float64 and are rounded once to the element type on the host
(:func:`fastdescent._contract.kernel_scalars`); per-element arithmetic is in the element type.
"""

from numba import cuda

from ..._contract import kernel_scalars
from ._device import _ptr, _sqrt, launch


@cuda.jit(device=True, inline=True)
def _adadelta_elem(p, g, v, a, j, lr, rho, omr, eps, weight_decay, maximize, use_wd):
    pj = p[j]
    gj = g[j]
    if maximize:
        gj = -gj
    if use_wd:
        gj = gj + weight_decay * pj
    vj = v[j] * rho + (omr * gj) * gj
    aj = a[j]
    dj = _sqrt(aj + eps) / _sqrt(vj + eps) * gj
    v[j] = vj
    a[j] = aj * rho + (omr * dj) * dj
    p[j] = pj - lr * dj


@cuda.jit(cache=True)
def _adadelta_flat(ap, ag, av, aa, n, lr, rho, omr, eps, weight_decay, maximize, use_wd):
    p = _ptr(ap, n, lr)
    g = _ptr(ag, n, lr)
    v = _ptr(av, n, lr)
    a = _ptr(aa, n, lr)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        _adadelta_elem(p, g, v, a, j, lr, rho, omr, eps, weight_decay, maximize, use_wd)


@cuda.jit(cache=True)
def _adadelta_multi(ap, ag, av, aa, sizes, ctens, coffs, nchunks, chunk, lr, rho, omr, eps,
                    weight_decay, maximize, use_wd):
    for c in range(cuda.blockIdx.x, nchunks, cuda.gridDim.x):
        t = ctens[c]
        n = sizes[t]
        end = coffs[c] + chunk
        if end > n:
            end = n
        p = _ptr(ap[t], n, lr)
        g = _ptr(ag[t], n, lr)
        v = _ptr(av[t], n, lr)
        a = _ptr(aa[t], n, lr)
        for j in range(coffs[c] + cuda.threadIdx.x, end, cuda.blockDim.x):
            _adadelta_elem(p, g, v, a, j, lr, rho, omr, eps, weight_decay, maximize, use_wd)


_COLUMNS = ("param", "grad", "square_avg", "acc_delta")


def adadelta(tab, *, lr, rho, one_minus_rho, eps, weight_decay, maximize):
    tab.require("adadelta")  # ValueError naming a missing column
    scalars = kernel_scalars(
        "adadelta", dict(lr=lr, rho=rho, one_minus_rho=one_minus_rho, eps=eps,
                         weight_decay=weight_decay, maximize=maximize), tab.dtype)
    launch(tab, _adadelta_flat, _adadelta_multi, _COLUMNS, scalars + (int(weight_decay != 0),))
