"""Lion (CUDA). Mirrors backends/numpy_ref/lion.py (expression order) and csrc/fd_lion.c.

Scalars arrive as float64 (``1 - beta`` and the decay factor already derived by the rule) and are
rounded once to the element type on the host (``_contract.kernel_scalars``); per-element arithmetic is in
the element type. sign(+-0) = +0, sign(NaN) = NaN.
"""

from numba import cuda

from ..._contract import kernel_scalars
from ._device import INLINE, _chunk, _ptr, launch


@cuda.jit(device=True, **INLINE)
def _lion_elem(p, m, g, j, lr, beta1, omb1, beta2, omb2, decay, maximize, use_decay, one, zero):
    gj = g[j]
    mj = m[j]
    if maximize:
        gj = -gj
    cj = mj * beta1 + omb1 * gj
    if cj > zero:
        s = one
    elif cj < zero:
        s = -one
    elif cj == cj:
        s = zero
    else:
        s = cj
    pj = p[j]
    if use_decay:
        pj = pj * decay
    p[j] = pj - lr * s
    m[j] = mj * beta2 + omb2 * gj


@cuda.jit(cache=True)
def _lion_kernel(ap, am, ag, plan, lr, beta1, omb1, beta2, omb2, decay, maximize, use_decay, one,
                 zero):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, lr)
        m = _ptr(am[t], end, lr)
        g = _ptr(ag[t], end, lr)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _lion_elem(p, m, g, j, lr, beta1, omb1, beta2, omb2, decay, maximize, use_decay, one,
                       zero)


_COLUMNS = ("param", "exp_avg", "grad")


def lion(tab, *, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, maximize):
    tab.require("lion")  # ValueError naming a missing column
    sc = dict(lr=lr, beta1=beta1, one_minus_beta1=one_minus_beta1, beta2=beta2,
              one_minus_beta2=one_minus_beta2, decay=decay, maximize=maximize)
    T = tab.dtype.type
    scalars = kernel_scalars("lion", sc, tab.dtype) + (int(decay != 1), T(1), T(0))
    launch(tab, _lion_kernel, _COLUMNS, scalars)
