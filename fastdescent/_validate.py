"""Scalar argument checks shared by the optimizers, the functional API, the schedulers and ``fit``:
each raises ``TypeError`` (wrong kind) or ``ValueError`` (out of range) with a message naming the
argument, and returns the value as a plain Python number."""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["check_real", "check_int", "check_flag"]


def check_real(name, value, *, lo=None, hi=None, lo_open=False, hi_open=False, coerce=False):
    """A finite real number within [lo, hi] (open ends if asked), as a float.

    Accepted: int, float and NumPy scalars (never bool); with ``coerce``, also any object with
    ``__float__`` that converts (a 0-d array, a one-element tensor), but never str/bytes/complex.
    """
    if type(value) is float:  # the common case, checked per call by the functional API
        v = value
    else:
        v = _to_real(name, value, coerce)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return v


def _to_real(name, value, coerce):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not isinstance(value, (int, float, np.integer, np.floating)):
        if not coerce or isinstance(value, (str, bytes, complex)) or not hasattr(value, "__float__"):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
        try:
            float(value)
        except (TypeError, ValueError):  # e.g. an array of several values
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} "
                            f"{value!r}") from None
    try:
        return float(value)
    except OverflowError:  # a Python int beyond float's range (10**400)
        raise ValueError(f"{name} must be finite, got an int too large for a float "
                         f"({value!r:.40}...)") from None


def check_int(name, value, lo):
    """An integer >= ``lo`` (``operator.index``: ints and NumPy integers, never bool), as an int."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def check_flag(name, value):
    """A bool (Python or NumPy), as a bool."""
    if value is True or value is False:
        return value
    if not isinstance(value, np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


#: the largest float32
FLOAT32_MAX = 3.4028234663852886e38


def check_loss_scale(name, value, *, coerce=False):
    """A loss scale (``grad_scale``, a GradScaler's scale): a finite real > 0 that stays positive
    and finite in float32, the type the kernels divide the gradients by it in (1e39 would be inf,
    1e-300 zero)."""
    import numpy as np

    v = check_real(name, value, lo=0.0, lo_open=True, coerce=coerce)
    if v > FLOAT32_MAX or np.float32(v) == 0.0:
        raise ValueError(f"{name} must be representable in float32 (the kernels divide the "
                         f"gradients by it in float32): between "
                         f"{np.finfo(np.float32).smallest_subnormal} and {FLOAT32_MAX:.6g}, got "
                         f"{value!r}")
    return v
