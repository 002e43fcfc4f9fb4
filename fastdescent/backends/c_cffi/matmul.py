"""Dense-layer matmul, forward and backward (C). Mirrors csrc/fd_matmul.c and backends/*/matmul.py.

x (B, M, K), w (Bw, K, N), b (Bw, N), y / dy (B, M, N); Bw == 1 or Bw == B; one dtype (float32 or
float64), C-contiguous. The dimensions are read from the arrays' shapes; pointers are taken with
``ffi.from_buffer`` (which refuses non-contiguous arrays, and read-only ones for written buffers),
so a call costs one C call plus a few hundred nanoseconds per array.
"""

from __future__ import annotations

from .._dense_checks import check_overlap
from ._lib import F32, F64, NULL, ffi, kernel_error, lib

__all__ = ["matmul_fwd", "matmul_bwd_x", "matmul_bwd_w"]

if lib is not None:
    _fb = ffi.from_buffer
    _CF32, _CF64 = ffi.typeof("float[]"), ffi.typeof("double[]")  # resolved once: cheaper calls
    _FWD = {F32: (lib.fd_matmul_fwd_f32, _CF32), F64: (lib.fd_matmul_fwd_f64, _CF64)}
    _BWD_X = {F32: (lib.fd_matmul_bwd_x_f32, _CF32), F64: (lib.fd_matmul_bwd_x_f64, _CF64)}
    _BWD_W = {F32: (lib.fd_matmul_bwd_w_f32, _CF32), F64: (lib.fd_matmul_bwd_w_f64, _CF64)}


def _bad_call(kernel, table, arrays):
    """The error for arrays a kernel cannot take (called only once a fast check has failed)."""
    first = next(iter(arrays.values()))
    if getattr(first, "dtype", None) not in table:
        return TypeError(f"{kernel}: float32 or float64 arrays, got {getattr(first, 'dtype', type(first))}")
    desc = ", ".join(f"{k} {getattr(a, 'shape', type(a).__name__)} {getattr(a, 'dtype', '')}"
                     for k, a in arrays.items() if a is not None)
    return ValueError(f"{kernel}: arrays do not fit together ({desc}); expected 3-D x (B, M, K), "
                      "w (Bw, K, N), y/dy (B, M, N), 2-D b (Bw, N), Bw in (1, B), one dtype")


def matmul_fwd(y, x, w, b):
    """y[i] = x[i] @ w[i or 0] (+ b[i or 0])."""
    try:
        B, M, K = x.shape
        Bw, K2, N = w.shape
        fn, ct = _FWD[y.dtype]
        dt = y.dtype
        ok = (y.shape == (B, M, N) and K2 == K and x.dtype == dt and w.dtype == dt
              and (b is None or (b.shape == (Bw, N) and b.dtype == dt)))
    except (AttributeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise _bad_call("matmul_fwd", _FWD, dict(y=y, x=x, w=w, b=b))
    check_overlap("matmul_fwd", (y, x, w, b))
    rc = fn(B, Bw, M, K, N, _fb(ct, y, require_writable=True), _fb(ct, x), _fb(ct, w),
            NULL if b is None else _fb(ct, b))
    if rc:
        raise kernel_error("matmul_fwd", rc)


def matmul_bwd_x(dx, dy, w):
    """dx[i] += dy[i] @ w[i or 0].T"""
    try:
        B, M, K = dx.shape
        Bw, K2, N = w.shape
        fn, ct = _BWD_X[dx.dtype]
        dt = dx.dtype
        ok = dy.shape == (B, M, N) and K2 == K and dy.dtype == dt and w.dtype == dt
    except (AttributeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise _bad_call("matmul_bwd_x", _BWD_X, dict(dx=dx, dy=dy, w=w))
    check_overlap("matmul_bwd_x", (dx, dy, w))
    rc = fn(B, Bw, M, K, N, _fb(ct, dx, require_writable=True), _fb(ct, dy), _fb(ct, w))
    if rc:
        raise kernel_error("matmul_bwd_x", rc)


def matmul_bwd_w(dw, db, x, dy):
    """dw[j] += sum over i mapped to j of x[i].T @ dy[i]; db[j] += column sums of dy[i]."""
    try:
        B, M, K = x.shape
        Bw, K2, N = dw.shape
        fn, ct = _BWD_W[dw.dtype]
        dt = dw.dtype
        ok = (dy.shape == (B, M, N) and K2 == K and x.dtype == dt and dy.dtype == dt
              and (db is None or (db.shape == (Bw, N) and db.dtype == dt)))
    except (AttributeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise _bad_call("matmul_bwd_w", _BWD_W, dict(dw=dw, db=db, x=x, dy=dy))
    check_overlap("matmul_bwd_w", (dw, db, x, dy))
    rc = fn(B, Bw, M, K, N, _fb(ct, dw, require_writable=True),
            NULL if db is None else _fb(ct, db, require_writable=True), _fb(ct, x), _fb(ct, dy))
    if rc:
        raise kernel_error("matmul_bwd_w", rc)
