"""The memory-roofline streaming pass (``fd_stream_f32`` / ``fd_stream_f64``) for benchmarks.

``stream(dsts, srcs)`` reads every array of ``srcs`` and writes every array of ``dsts`` once, with
the update kernels' threading. To measure the roofline of a kernel, move the same bytes: Adam fp32
reads p, g, m, v and writes p, m, v in place, so ``stream([p, m, v], [p, g, m, v])`` (28 B/element).
:func:`prepare_stream` packs the pointers once and returns a no-argument callable, for timing loops.
"""

from __future__ import annotations

import numpy as np

from ._lib import F32, F64, ffi, kernel_error, lib

__all__ = ["stream", "prepare_stream"]


def prepare_stream(dsts, srcs):
    """A callable running one streaming pass over ``dsts`` (written) and ``srcs`` (read).

    All arrays must be C-contiguous, of one dtype (float32 or float64) and one size; ``dsts`` must be
    writeable. A dst may also appear among the srcs (in-place traffic, as an optimizer update).
    """
    dsts, srcs = list(dsts), list(srcs)
    arrays = dsts + srcs
    if not arrays:
        raise ValueError("stream: give at least one array")
    dtype, n = arrays[0].dtype, arrays[0].size
    if dtype not in (F32, F64):
        raise TypeError(f"stream: float32 or float64 arrays, got {dtype}")
    for i, a in enumerate(arrays):
        what = f"dsts[{i}]" if i < len(dsts) else f"srcs[{i - len(dsts)}]"
        if not isinstance(a, np.ndarray):
            raise TypeError(f"stream: {what} must be a numpy array")
        if a.dtype != dtype or a.size != n:
            raise ValueError(f"stream: {what} has dtype {a.dtype} and size {a.size}, "
                             f"expected {dtype} and {n}")
        if not a.flags.c_contiguous:
            raise ValueError(f"stream: {what} is not C-contiguous")
        if i < len(dsts) and not a.flags.writeable:
            raise ValueError(f"stream: {what} is read-only")
    ptr = "float *[]" if dtype == F32 else "double *[]"
    src_ptrs = ffi.new(ptr, [ffi.cast(ptr[:-2], a.ctypes.data) for a in srcs]) if srcs else ffi.NULL
    dst_ptrs = ffi.new(ptr, [ffi.cast(ptr[:-2], a.ctypes.data) for a in dsts]) if dsts else ffi.NULL
    fn = lib.fd_stream_f32 if dtype == F32 else lib.fd_stream_f64
    nsrc, ndst = len(srcs), len(dsts)

    def run():
        rc = fn(n, nsrc, src_ptrs, ndst, dst_ptrs)
        if rc:
            raise kernel_error("stream", rc)

    run.keepalive = arrays  # the pointers stay valid as long as the callable lives
    return run


def stream(dsts, srcs):
    """One streaming pass: ``dst[i] = sum of srcs[k][i]`` for every dst (see module docstring)."""
    prepare_stream(dsts, srcs)()
