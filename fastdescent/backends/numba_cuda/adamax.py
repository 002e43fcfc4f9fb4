"""Adamax (CUDA). Mirrors backends/numpy_ref/adamax.py (expression order) and csrc/fd_adamax.c.

Scalars arrive as float64 and are rounded once to the element type on the host
(:func:`fastdescent._contract.kernel_scalars`); per-element arithmetic is in the element type.
"""

from numba import cuda

from ..._contract import kernel_scalars
from ._device import INLINE, _chunk, _nanmax, _ptr, launch


@cuda.jit(device=True, **INLINE)
def _adamax_elem(p, g, m, u, j, lw, from_grad, beta2, eps, weight_decay, clr, maximize, use_wd):
    pj = p[j]
    gj = g[j]
    if maximize:
        gj = -gj
    if use_wd:
        gj = gj + weight_decay * pj
    mj = m[j]
    if from_grad:
        mj = gj + lw * (gj - mj)
    else:
        mj = mj + lw * (gj - mj)
    uj = _nanmax(u[j] * beta2, abs(gj) + eps)
    m[j] = mj
    u[j] = uj
    p[j] = pj - (clr * mj) / uj


@cuda.jit(cache=True)
def _adamax_kernel(ap, ag, am, au, plan, lw, from_grad, beta2, eps, weight_decay, clr, maximize,
                   use_wd):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, beta2)
        g = _ptr(ag[t], end, beta2)
        m = _ptr(am[t], end, beta2)
        u = _ptr(au[t], end, beta2)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _adamax_elem(p, g, m, u, j, lw, from_grad, beta2, eps, weight_decay, clr, maximize,
                         use_wd)


_COLUMNS = ("param", "grad", "exp_avg", "exp_inf")


def adamax(tab, *, lerp_weight, lerp_from_grad, beta2, eps, weight_decay, clr, maximize):
    tab.require("adamax")  # ValueError naming a missing column
    scalars = kernel_scalars(
        "adamax", dict(lerp_weight=lerp_weight, lerp_from_grad=lerp_from_grad, beta2=beta2, eps=eps,
                       weight_decay=weight_decay, clr=clr, maximize=maximize), tab.dtype)
    launch(tab, _adamax_kernel, _COLUMNS, scalars + (int(weight_decay != 0),))
