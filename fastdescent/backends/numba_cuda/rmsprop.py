"""RMSprop (CUDA). Mirrors backends/numpy_ref/rmsprop.py (expression order) and csrc/fd_rmsprop.c."""

from numba import cuda

from ._device import INLINE, _chunk, _ptr, _sqrt, launch


@cuda.jit(device=True, **INLINE)
def _rmsprop_elem(p, v, a, b, g, j, lr, alpha, oma, eps, weight_decay, momentum, centered, maximize,
                  use_wd, use_mom):
    pj = p[j]
    gj = g[j]
    if maximize:
        gj = -gj
    if use_wd:
        gj = gj + weight_decay * pj
    vj = v[j] * alpha + oma * gj * gj
    v[j] = vj
    if centered:
        aj = a[j] * alpha + oma * gj
        a[j] = aj
        avg = _sqrt(vj - aj * aj)
    else:
        avg = _sqrt(vj)
    avg = avg + eps
    if use_mom:
        bj = b[j] * momentum + gj / avg
        b[j] = bj
        p[j] = pj - lr * bj
    else:
        p[j] = pj - lr * (gj / avg)


@cuda.jit(cache=True)
def _rmsprop_kernel(ap, av, aa, ab, ag, plan, lr, alpha, oma, eps, weight_decay, momentum, centered,
                    maximize, use_wd, use_mom):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, lr)
        v = _ptr(av[t], end, lr)
        a = _ptr(aa[t], end, lr)
        b = _ptr(ab[t], end, lr)
        g = _ptr(ag[t], end, lr)
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _rmsprop_elem(p, v, a, b, g, j, lr, alpha, oma, eps, weight_decay, momentum, centered,
                          maximize, use_wd, use_mom)


_COLUMNS = ("param", "square_avg", "grad_avg", "momentum_buffer", "grad")


def rmsprop(tab, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    tab.require("rmsprop", centered and "grad_avg", momentum > 0 and "momentum_buffer")
    T = tab.dtype.type
    scalars = (T(lr), T(alpha), T(1 - alpha), T(eps), T(weight_decay), T(momentum),
               int(bool(centered)), int(bool(maximize)), int(weight_decay != 0), int(momentum > 0))
    launch(tab, _rmsprop_kernel, _COLUMNS, scalars)
