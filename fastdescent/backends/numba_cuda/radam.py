"""RAdam / RAdamW (CUDA). Mirrors backends/numpy_ref/radam.py (expression order) and csrc/fd_radam.c.

Scalars arrive as float64 (derived in fastdescent/rules/radam.py) and are rounded once to the element
type on the host (:func:`fastdescent._contract.kernel_scalars`); per-element arithmetic is in the element
type.
"""

from numba import cuda

from ..._contract import kernel_scalars
from ._device import INLINE, _chunk, _ptr, _sqrt, launch
from .adam import _moments


@cuda.jit(device=True, **INLINE)
def _radam_elem(p, g, m, v, j, beta1, omb1, beta2, omb2, eps, weight_decay, decay, step_size,
                rectify, maximize, use_decay, use_wd):
    pj, mj, vj, _ = _moments(p[j], g[j], m[j], v[j], beta1, omb1, beta2, omb2, weight_decay,
                                 decay, maximize, use_decay, use_wd)
    m[j] = mj
    v[j] = vj
    if rectify:
        p[j] = pj - step_size * (mj / (_sqrt(vj) + eps))
    else:
        p[j] = pj - step_size * mj


@cuda.jit(cache=True)
def _radam_kernel(ap, ag, am, av, plan, beta1, omb1, beta2, omb2, eps, weight_decay, decay,
                  step_size, rectify, maximize, use_decay, use_wd):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, beta1)
        g = _ptr(ag[t], end, beta1)
        m = _ptr(am[t], end, beta1)
        v = _ptr(av[t], end, beta1)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _radam_elem(p, g, m, v, j, beta1, omb1, beta2, omb2, eps, weight_decay, decay,
                        step_size, rectify, maximize, use_decay, use_wd)


_COLUMNS = ("param", "grad", "exp_avg", "exp_avg_sq")


def radam(tab, *, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay,
          step_size, rectify, maximize):
    tab.require("radam")  # ValueError naming a missing column
    sc = kernel_scalars("radam", dict(
        beta1=beta1, one_minus_beta1=one_minus_beta1, beta2=beta2, one_minus_beta2=one_minus_beta2,
        eps=eps, weight_decay=weight_decay, decay=decay, step_size=step_size, rectify=rectify,
        maximize=maximize), tab.dtype)
    launch(tab, _radam_kernel, _COLUMNS,
           sc + (int(decay != 1), int(weight_decay != 0)))
