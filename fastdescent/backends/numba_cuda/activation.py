"""Element-wise activations and their derivatives (CUDA). Mirrors csrc/fd_activation.c and
backends/numpy_ref/activation.py (formulas and expression order; constants rounded once to the
element type on the host).

``kind``: 0 relu, 1 tanh, 2 sigmoid, 3 gelu (exact, erf-based).

    act_fwd  y = f(x)            any shape, flattened (y may be x)
    act_bwd  dx += dy * f'(x)    relu: x > 0; tanh: 1 - y*y; sigmoid: y*(1 - y);
                                 gelu: 0.5*(1 + erf(x/sqrt2)) + x * exp(-x*x/2)/sqrt(2 pi)

One grid-stride launch over the flattened arrays (addresses from ``__cuda_array_interface__``, as the
optimizer kernels of this backend), so any device array works, whatever its shape. Arguments are
checked first by the checks every backend shares (``backends/_dense_checks``, through
``__cuda_array_interface__``): the c backend's exception types, nothing launched on a bad call.
"""

import math

from numba import cuda

from ..._contract import ACT_KINDS
from .._dense_checks import check
from ._device import _ptr, address_of, flat_grid

__all__ = ["act_fwd", "act_bwd"]

RELU, TANH, SIGMOID, GELU = (ACT_KINDS[k] for k in ("relu", "tanh", "sigmoid", "gelu"))
_INV_SQRT2 = 0.7071067811865476
_INV_SQRT2PI = 0.3989422804014327


@cuda.jit(cache=True)
def _act_fwd(ay, ax, n, kind, zero, one, half, c):
    y = _ptr(ay, n, zero)
    x = _ptr(ax, n, zero)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[j]
        if kind == RELU:
            y[j] = v if (v > zero or v != v) else zero
        elif kind == TANH:
            y[j] = math.tanh(v)
        elif kind == SIGMOID:
            y[j] = one / (math.exp(-v) + one)
        else:
            y[j] = (half * v) * (math.erf(v * c) + one)


@cuda.jit(cache=True)
def _act_bwd(adx, ady, ax, ay, n, kind, zero, one, half, c, c2):
    dx = _ptr(adx, n, zero)
    dy = _ptr(ady, n, zero)
    x = _ptr(ax, n, zero)
    y = _ptr(ay, n, zero)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        if kind == RELU:
            dx[j] += dy[j] if x[j] > zero else zero
        elif kind == TANH:
            yj = y[j]
            dx[j] += dy[j] * (one - yj * yj)
        elif kind == SIGMOID:
            yj = y[j]
            dx[j] += dy[j] * (yj * (one - yj))
        else:
            v = x[j]
            cdf = half * (one + math.erf(v * c))
            pdf = math.exp(-half * (v * v)) * c2
            dx[j] += dy[j] * (cdf + v * pdf)


def _consts(dtype):
    T = dtype.type
    return T(0), T(1), T(0.5), T(_INV_SQRT2)


def _checked(kernel, args, kind):
    """(size, dtype) of valid device arrays (the shared checks, c's exception types)."""
    dims, infos = check(kernel, args, device=True, kind=kind)
    return dims["*"], infos[0].dtype


def act_fwd(y, x, *, kind):
    n, dtype = _checked("act_fwd", (y, x), kind)
    if n == 0:
        return
    grid, threads = flat_grid(n)
    _act_fwd[grid, threads](address_of(y, "y"), address_of(x, "x"), n, int(kind), *_consts(dtype))


def act_bwd(dx, dy, x, y, *, kind):
    n, dtype = _checked("act_bwd", (dx, dy, x, y), kind)
    if n == 0:
        return
    grid, threads = flat_grid(n)
    _act_bwd[grid, threads](address_of(dx, "dx"), address_of(dy, "dy"), address_of(x, "x"),
                            address_of(y, "y"), n, int(kind), *_consts(dtype),
                            dtype.type(_INV_SQRT2PI))
