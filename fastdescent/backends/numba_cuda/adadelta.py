"""Adadelta (CUDA). Mirrors backends/numpy_ref/adadelta.py (expression order) and
csrc/fd_adadelta.c.

Scalars arrive as float64 and are rounded once to the element type on the host
(:func:`fastdescent._contract.kernel_scalars`); per-element arithmetic is in the element type.
"""

from numba import cuda

from ..._contract import kernel_scalars
from ._device import INLINE, _chunk, _ptr, _sqrt, launch


@cuda.jit(device=True, **INLINE)
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
def _adadelta_kernel(ap, ag, av, aa, plan, lr, rho, omr, eps, weight_decay, maximize, use_wd):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, lr)
        g = _ptr(ag[t], end, lr)
        v = _ptr(av[t], end, lr)
        a = _ptr(aa[t], end, lr)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _adadelta_elem(p, g, v, a, j, lr, rho, omr, eps, weight_decay, maximize, use_wd)


_COLUMNS = ("param", "grad", "square_avg", "acc_delta")


def adadelta(tab, *, lr, rho, one_minus_rho, eps, weight_decay, maximize):
    tab.require("adadelta")  # ValueError naming a missing column
    scalars = kernel_scalars(
        "adadelta", dict(lr=lr, rho=rho, one_minus_rho=one_minus_rho, eps=eps,
                         weight_decay=weight_decay, maximize=maximize), tab.dtype)
    launch(tab, _adadelta_kernel, _COLUMNS, scalars + (int(weight_decay != 0),))
