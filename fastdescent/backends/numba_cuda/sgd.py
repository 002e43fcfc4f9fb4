"""SGD family (CUDA). Mirrors backends/numpy_ref/sgd.py (expression order) and csrc/fd_sgd.c."""

from numba import cuda

from ._device import INLINE, _chunk, _ptr, launch


@cuda.jit(device=True, **INLINE)
def _sgd_elem(p, g, b, j, lr, momentum, omd, weight_decay, nesterov, maximize, first_step, use_wd,
              use_mom):
    pj = p[j]
    gj = g[j]
    if maximize:
        gj = -gj
    if use_wd:
        gj = gj + weight_decay * pj
    if use_mom:
        if first_step:
            bj = gj
        else:
            bj = b[j] * momentum + omd * gj
        b[j] = bj
        if nesterov:
            gj = gj + momentum * bj
        else:
            gj = bj
    p[j] = pj - lr * gj


@cuda.jit(cache=True)
def _sgd_kernel(ap, ab, ag, plan, lr, momentum, omd, weight_decay, nesterov, maximize, first_step,
                use_wd, use_mom):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, lr)
        b = _ptr(ab[t], end, lr)
        g = _ptr(ag[t], end, lr)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _sgd_elem(p, g, b, j, lr, momentum, omd, weight_decay, nesterov, maximize, first_step,
                      use_wd, use_mom)


_COLUMNS = ("param", "momentum_buffer", "grad")


def sgd(tab, *, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    tab.require("sgd", momentum != 0 and "momentum_buffer")  # ValueError naming a missing column
    T = tab.dtype.type
    scalars = (T(lr), T(momentum), T(1 - dampening), T(weight_decay), int(bool(nesterov)),
               int(bool(maximize)), int(bool(first_step)), int(weight_decay != 0), int(momentum != 0))
    launch(tab, _sgd_kernel, _COLUMNS, scalars)
