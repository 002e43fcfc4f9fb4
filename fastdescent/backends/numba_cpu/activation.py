"""Element-wise activations and their derivatives (Numba). Mirrors csrc/fd_activation.c and
backends/numpy_ref/activation.py (formulas, expression order, constants rounded once to the element
type).

``kind``: 0 relu, 1 tanh, 2 sigmoid, 3 gelu (exact, erf-based).

    act_fwd  y = f(x)                 any shape; flattened, so y may be x (in place)
    act_bwd  dx += dy * f'(x)         relu: x > 0; tanh: 1 - y*y; sigmoid: y*(1 - y);
                                      gelu: 0.5*(1 + erf(x/sqrt2)) + x * exp(-x*x/2)/sqrt(2 pi)

The flattened arrays are cut into chunks of ``_config.CHUNK`` elements; big arrays run the chunks on
Numba's threads (the parallel variant of the same body). Element-wise, so results never depend on the
chunking or the thread count. No fastmath: NaN and Inf propagate as in NumPy.
"""

from __future__ import annotations

import math

from numba import prange

from ..._contract import ACT_KINDS
from .._dense_checks import check
from ._config import CHUNK, PARALLEL_MIN, jit, jit_variants
from . import _threads
from ._ptr import like

__all__ = ["act_fwd", "act_bwd"]

RELU, TANH, SIGMOID, GELU = (ACT_KINDS[k] for k in ("relu", "tanh", "sigmoid", "gelu"))
_INV_SQRT2 = 0.7071067811865476  # 1 / sqrt(2)
_INV_SQRT2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


@jit
def _fwd_seg(y, x, kind):
    # one loop per kind, so that each is a plain element loop (relu vectorises)
    zero = like(0.0, x)
    one = like(1.0, x)
    if kind == RELU:
        for i in range(x.shape[0]):
            v = x[i]
            y[i] = v if (v > zero or v != v) else zero
    elif kind == TANH:
        for i in range(x.shape[0]):
            y[i] = math.tanh(x[i])
    elif kind == SIGMOID:
        for i in range(x.shape[0]):
            y[i] = one / (math.exp(-x[i]) + one)
    elif kind == GELU:
        half = like(0.5, x)
        c = like(_INV_SQRT2, x)
        for i in range(x.shape[0]):
            v = x[i]
            y[i] = (half * v) * (math.erf(v * c) + one)


@jit
def _bwd_seg(dx, dy, x, y, kind):
    zero = like(0.0, x)
    one = like(1.0, x)
    if kind == RELU:
        for i in range(x.shape[0]):
            dx[i] += dy[i] if x[i] > zero else zero
    elif kind == TANH:
        for i in range(x.shape[0]):
            yi = y[i]
            dx[i] += dy[i] * (one - yi * yi)
    elif kind == SIGMOID:
        for i in range(x.shape[0]):
            yi = y[i]
            dx[i] += dy[i] * (yi * (one - yi))
    elif kind == GELU:
        half = like(0.5, x)
        c = like(_INV_SQRT2, x)
        c2 = like(_INV_SQRT2PI, x)
        for i in range(x.shape[0]):
            v = x[i]
            cdf = half * (one + math.erf(v * c))
            pdf = math.exp(-half * (v * v)) * c2
            dx[i] += dy[i] * (cdf + v * pdf)


def _fwd_body(y, x, kind, chunk):
    n = x.shape[0]
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        _fwd_seg(y[lo:hi], x[lo:hi], kind)  # 0-based views: the loops vectorise


def _bwd_body(dx, dy, x, y, kind, chunk):
    n = x.shape[0]
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        _bwd_seg(dx[lo:hi], dy[lo:hi], x[lo:hi], y[lo:hi], kind)


_FWD = jit_variants(_fwd_body)
_BWD = jit_variants(_bwd_body)


def _pick(pair, n):
    return pair[1] if n >= PARALLEL_MIN and _threads.threads() > 1 else pair[0]


def act_fwd(y, x, *, kind):
    check("act_fwd", (y, x), kind=kind)  # the shared checks (c's exception types; bad kind too)
    _pick(_FWD, x.size)(y.reshape(-1), x.reshape(-1), int(kind), CHUNK)


def act_bwd(dx, dy, x, y, *, kind):
    check("act_bwd", (dx, dy, x, y), kind=kind)
    _pick(_BWD, x.size)(dx.reshape(-1), dy.reshape(-1), x.reshape(-1), y.reshape(-1), int(kind),
                        CHUNK)
