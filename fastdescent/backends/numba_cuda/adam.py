"""Adam / AdamW (CUDA). Mirrors backends/numpy_ref/adam.py (expression order) and csrc/fd_adam.c.

Scalars arrive as float64 and are rounded once to the element type on the host (derived constants
such as ``1 - beta1`` first computed in float64); per-element arithmetic is in the element type.
"""

from numba import cuda

from ._device import INLINE, _chunk, _nanmax, _ptr, _sqrt, launch


@cuda.jit(device=True, **INLINE)
def _moments(pj, gj, mj, vj, beta1, omb1, beta2, omb2, weight_decay, decay, maximize, use_decay,
             use_wd):
    """Adam's moments of one element (shared by Adam, NAdam and RAdam): the decayed parameter, the
    new m and v, and the gradient after maximize and coupled weight decay."""
    if maximize:
        gj = -gj
    if use_decay:
        pj = pj * decay
    if use_wd:
        gj = gj + weight_decay * pj
    mj = mj * beta1 + omb1 * gj
    vj = vj * beta2 + omb2 * gj * gj
    return pj, mj, vj, gj


@cuda.jit(device=True, **INLINE)
def _adam_elem(p, g, m, v, vmax, j, beta1, omb1, beta2, omb2, eps, weight_decay, decay, step_size,
               bc2_sqrt, amsgrad, maximize, use_decay, use_wd):
    pj, mj, vj, _ = _moments(p[j], g[j], m[j], v[j], beta1, omb1, beta2, omb2, weight_decay, decay,
                             maximize, use_decay, use_wd)
    m[j] = mj
    v[j] = vj
    if amsgrad:
        vj = _nanmax(vmax[j], vj)
        vmax[j] = vj
    denom = _sqrt(vj) / bc2_sqrt + eps
    p[j] = pj - step_size * (mj / denom)


@cuda.jit(cache=True)
def _adam_kernel(ap, ag, am, av, avmax, plan, beta1, omb1, beta2, omb2, eps, weight_decay, decay,
                 step_size, bc2_sqrt, amsgrad, maximize, use_decay, use_wd):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, beta1)
        g = _ptr(ag[t], end, beta1)
        m = _ptr(am[t], end, beta1)
        v = _ptr(av[t], end, beta1)
        vmax = _ptr(avmax[t], end, beta1)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _adam_elem(p, g, m, v, vmax, j, beta1, omb1, beta2, omb2, eps, weight_decay, decay,
                       step_size, bc2_sqrt, amsgrad, maximize, use_decay, use_wd)


_COLUMNS = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def adam(tab, *, beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad,
         maximize):
    tab.require("adam", amsgrad and "max_exp_avg_sq")  # ValueError naming a missing column
    T = tab.dtype.type
    scalars = (T(beta1), T(1 - beta1), T(beta2), T(1 - beta2), T(eps), T(weight_decay), T(decay),
               T(step_size), T(bias_correction2_sqrt), int(bool(amsgrad)), int(bool(maximize)),
               int(decay != 1), int(weight_decay != 0))
    launch(tab, _adam_kernel, _COLUMNS, scalars)
