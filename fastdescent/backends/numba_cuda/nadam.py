"""NAdam / NAdamW (CUDA). Mirrors backends/numpy_ref/nadam.py (expression order) and csrc/fd_nadam.c.

Scalars arrive as float64 (derived in fastdescent/rules/nadam.py) and are rounded once to the element
type on the host (:func:`fastdescent._contract.kernel_scalars`); per-element arithmetic is in the element
type.
"""

from numba import cuda

from ..._contract import kernel_scalars
from ._device import INLINE, _chunk, _ptr, _sqrt, launch
from .adam import _moments


@cuda.jit(device=True, **INLINE)
def _nadam_elem(p, g, m, v, j, beta1, omb1, beta2, omb2, weight_decay, decay, sg, sm, eps,
                maximize, use_decay, use_wd):
    pj, mj, vj, gj = _moments(p[j], g[j], m[j], v[j], beta1, omb1, beta2, omb2, weight_decay,
                                 decay, maximize, use_decay, use_wd)
    m[j] = mj
    v[j] = vj
    p[j] = pj - (sg * gj + sm * mj) / (_sqrt(vj) + eps)


@cuda.jit(cache=True)
def _nadam_kernel(ap, ag, am, av, plan, beta1, omb1, beta2, omb2, weight_decay, decay, sg, sm, eps,
                  maximize, use_decay, use_wd):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, beta1)
        g = _ptr(ag[t], end, beta1)
        m = _ptr(am[t], end, beta1)
        v = _ptr(av[t], end, beta1)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _nadam_elem(p, g, m, v, j, beta1, omb1, beta2, omb2, weight_decay, decay, sg, sm, eps,
                        maximize, use_decay, use_wd)


_COLUMNS = ("param", "grad", "exp_avg", "exp_avg_sq")


def nadam(tab, *, beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay,
          step_size_grad, step_size_exp_avg, eps_scaled, maximize):
    tab.require("nadam")  # ValueError naming a missing column
    sc = kernel_scalars("nadam", dict(
        beta1=beta1, one_minus_beta1=one_minus_beta1, beta2=beta2, one_minus_beta2=one_minus_beta2,
        weight_decay=weight_decay, decay=decay, step_size_grad=step_size_grad,
        step_size_exp_avg=step_size_exp_avg, eps_scaled=eps_scaled, maximize=maximize), tab.dtype)
    launch(tab, _nadam_kernel, _COLUMNS,
           sc + (int(decay != 1), int(weight_decay != 0)))
