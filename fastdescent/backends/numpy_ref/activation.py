"""Element-wise activations and their derivatives (NumPy). Mirrors csrc/fd_activation.c and
backends/*/activation.py.

``kind``: 0 relu, 1 tanh, 2 sigmoid, 3 gelu (exact, erf-based: torch's default ``approximate='none'``).

    forward   y = f(x)                         (y may be x)
    backward  dx += dy * f'(x)                  using y = f(x) where that is cheaper:
              relu     f' = 1 if x > 0 else 0   (0 at x == 0, as torch)
              tanh     f' = 1 - y*y
              sigmoid  f' = y * (1 - y)
              gelu     f' = Phi(x) + x * phi(x),  Phi(x) = 0.5 * (1 + erf(x / sqrt 2)),
                                                  phi(x) = exp(-x*x / 2) / sqrt(2 pi)

Arithmetic is in the element type, in the order written here (the compiled backends follow it);
constants are rounded once to the element type. NaN propagates through every kind. Arguments are
checked first, by the checks every backend shares (``backends/_dense_checks``: the c backend's
exception types, KernelError FD_ERR_ARG for an unknown kind), so a bad call writes nothing.
"""

import math

import numpy as np

from ..._contract import ACT_KINDS
from .._dense_checks import check

try:  # vectorised erf; without SciPy, the C library's erf one element at a time
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - SciPy is optional
    _erf_scalar = np.frompyfunc(math.erf, 1, 1)

    def _erf(x):
        return _erf_scalar(x).astype(x.dtype)

RELU, TANH, SIGMOID, GELU = (ACT_KINDS[k] for k in ("relu", "tanh", "sigmoid", "gelu"))
INV_SQRT2 = 0.7071067811865476  # 1 / sqrt(2)
INV_SQRT2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


def _bad_kind(kind):  # unreachable through the API layer, which validates kind
    return ValueError(
        f"activation kind must be 0 (relu), 1 (tanh), 2 (sigmoid) or 3 (gelu), got {kind!r}")


def act_fwd(y, x, *, kind):
    check("act_fwd", (y, x), kind=kind)
    if kind == RELU:
        np.maximum(x, 0, out=y)  # NaN propagates
    elif kind == TANH:
        np.tanh(x, out=y)
    elif kind == SIGMOID:
        with np.errstate(over="ignore"):  # exp(-x) -> inf for x << 0 gives y = 0, as it should
            e = np.exp(-x)
        e += 1
        np.divide(1, e, out=y)
    elif kind == GELU:
        cdf = _erf(x * INV_SQRT2)
        cdf += 1
        np.multiply(0.5 * x, cdf, out=y)
    else:
        raise _bad_kind(kind)


def act_bwd(dx, dy, x, y, *, kind):
    check("act_bwd", (dx, dy, x, y), kind=kind)
    if kind == RELU:
        dx += np.where(x > 0, dy, 0)
    elif kind == TANH:
        dx += dy * (1 - y * y)
    elif kind == SIGMOID:
        dx += dy * (y * (1 - y))
    elif kind == GELU:
        cdf = 0.5 * (1 + _erf(x * INV_SQRT2))
        pdf = np.exp(-0.5 * (x * x)) * INV_SQRT2PI
        dx += dy * (cdf + x * pdf)
    else:
        raise _bad_kind(kind)
