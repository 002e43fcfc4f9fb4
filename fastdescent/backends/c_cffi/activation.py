"""Elementwise activations, forward and backward (C). Mirrors csrc/fd_activation.c and
backends/*/activation.py. kind: 0 relu, 1 tanh, 2 sigmoid, 3 gelu (exact, erf-based).

Arrays of any shape, one size and dtype (float32 or float64), C-contiguous; y may be x (in place).
"""

from __future__ import annotations

from .._dense_checks import check_kind, check_overlap
from ._lib import F32, F64, ffi, kernel_error, lib

__all__ = ["act_fwd", "act_bwd"]

if lib is not None:
    _fb = ffi.from_buffer
    _CF32, _CF64 = ffi.typeof("float[]"), ffi.typeof("double[]")  # resolved once: cheaper calls
    _FWD = {F32: (lib.fd_act_fwd_f32, _CF32), F64: (lib.fd_act_fwd_f64, _CF64)}
    _BWD = {F32: (lib.fd_act_bwd_f32, _CF32), F64: (lib.fd_act_bwd_f64, _CF64)}


def _bad_call(kernel, table, arrays):
    """The error for arrays a kernel cannot take (called only once a fast check has failed)."""
    first = next(iter(arrays.values()))
    if getattr(first, "dtype", None) not in table:
        return TypeError(f"{kernel}: float32 or float64 arrays, got {getattr(first, 'dtype', type(first))}")
    desc = ", ".join(f"{k} {getattr(a, 'shape', type(a).__name__)} {getattr(a, 'dtype', '')}"
                     for k, a in arrays.items())
    return ValueError(f"{kernel}: arrays must have one size and dtype ({desc})")


def act_fwd(y, x, *, kind):
    """y = f(x) elementwise."""
    try:
        fn, ct = _FWD[y.dtype]
        n = x.size
        ok = y.size == n and x.dtype == y.dtype
    except (AttributeError, KeyError):
        ok = False
    if not ok:
        raise _bad_call("act_fwd", _FWD, dict(y=y, x=x))
    check_overlap("act_fwd", (y, x))
    kind = check_kind("act_fwd", kind)
    rc = fn(n, _fb(ct, y, require_writable=True), _fb(ct, x), kind)
    if rc:
        raise kernel_error("act_fwd", rc)


def act_bwd(dx, dy, x, y, *, kind):
    """dx += dy * f'(x), with y = f(x)."""
    try:
        fn, ct = _BWD[dx.dtype]
        n, dt = dx.size, dx.dtype
        ok = (dy.size == n and x.size == n and y.size == n and dy.dtype == dt and x.dtype == dt
              and y.dtype == dt)
    except (AttributeError, KeyError):
        ok = False
    if not ok:
        raise _bad_call("act_bwd", _BWD, dict(dx=dx, dy=dy, x=x, y=y))
    check_overlap("act_bwd", (dx, dy, x, y))
    kind = check_kind("act_bwd", kind)
    rc = fn(n, _fb(ct, dx, require_writable=True), _fb(ct, dy), _fb(ct, x), _fb(ct, y), kind)
    if rc:
        raise kernel_error("act_bwd", rc)
