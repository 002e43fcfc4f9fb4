"""SGD family (CUDA). Mirrors backends/numpy_ref/sgd.py (expression order) and csrc/fd_sgd.c."""

from numba import cuda

from ._device import _ptr, launch


@cuda.jit(device=True, inline=True)
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
def _sgd_flat(ap, ab, ag, n, lr, momentum, omd, weight_decay, nesterov, maximize, first_step, use_wd,
              use_mom):
    p = _ptr(ap, n, lr)
    b = _ptr(ab, n, lr)
    g = _ptr(ag, n, lr)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        _sgd_elem(p, g, b, j, lr, momentum, omd, weight_decay, nesterov, maximize, first_step,
                  use_wd, use_mom)


@cuda.jit(cache=True)
def _sgd_multi(ap, ab, ag, sizes, ctens, coffs, nchunks, chunk, lr, momentum, omd, weight_decay,
               nesterov, maximize, first_step, use_wd, use_mom):
    for c in range(cuda.blockIdx.x, nchunks, cuda.gridDim.x):
        t = ctens[c]
        n = sizes[t]
        end = coffs[c] + chunk
        if end > n:
            end = n
        p = _ptr(ap[t], n, lr)
        b = _ptr(ab[t], n, lr)
        g = _ptr(ag[t], n, lr)
        for j in range(coffs[c] + cuda.threadIdx.x, end, cuda.blockDim.x):
            _sgd_elem(p, g, b, j, lr, momentum, omd, weight_decay, nesterov, maximize, first_step,
                      use_wd, use_mom)


_COLUMNS = ("param", "momentum_buffer", "grad")


def sgd(tab, *, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    tab.require("sgd", momentum != 0 and "momentum_buffer")  # ValueError naming a missing column
    T = tab.dtype.type
    scalars = (T(lr), T(momentum), T(1 - dampening), T(weight_decay), int(bool(nesterov)),
               int(bool(maximize)), int(bool(first_step)), int(weight_decay != 0), int(momentum != 0))
    launch(tab, _sgd_flat, _sgd_multi, _COLUMNS, scalars)
