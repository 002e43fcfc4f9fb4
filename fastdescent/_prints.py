"""Layout fingerprints of many NumPy arrays in one call, for the functional API's table cache.

A cached table of array addresses may be reused only while every array it was built from is the
same object with the same data address, dtype, flags (writeable, contiguous, aligned) and shape.
Reading that through ``__array_interface__`` costs about 1 us an array (a dict per call): with 400
arrays the check cost 40x the kernel call it guarded. The C extension reads the same fields straight
from NumPy's public object layout (``PyArrayObject_fields``) for all arrays at once, walking the
caller's lists itself under the GIL (about 10 ns an array, and no Python loop over them). The layout
is checked against ``__array_interface__`` on probe arrays before it is trusted; without the C
extension, or if the check fails, :func:`array_prints` returns None and the caller falls back to
the per-array path.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["array_prints", "prints_equal", "prints_checker", "available", "SLOTS", "C_CONTIGUOUS",
           "ALIGNED", "WRITEABLE"]

#: columns of a print: object, data, dtype object, flags, ndim, dims[0..5], 0
SLOTS = 12
#: NumPy's flag bits (``ndarray.flags.num``; the C API's NPY_ARRAY_*), as the prints hold them
C_CONTIGUOUS = 0x0001
ALIGNED = 0x0100
WRITEABLE = 0x0400


def _raw(columns, ffi, lib, prev=None):
    """The prints of ``columns`` (None: not all readable), or with ``prev``: whether they equal it
    (read and compared in C, nothing written, stopping at the first difference)."""
    n = sum(map(len, columns))
    seqs = np.array([id(c) for c in columns], np.int64)
    if prev is not None:
        if prev.shape != (n, int(lib.FD_PY_PRINT_SLOTS)):
            return False
        return lib.fd_py_array_prints(ffi.from_buffer("int64_t[]", seqs), len(columns),
                                      id(np.ndarray), n, ffi.NULL,
                                      ffi.from_buffer("int64_t[]", prev)) == 0
    out = np.empty((n, int(lib.FD_PY_PRINT_SLOTS)), np.int64)
    rc = lib.fd_py_array_prints(ffi.from_buffer("int64_t[]", seqs), len(columns), id(np.ndarray), n,
                                ffi.from_buffer("int64_t[]", out), ffi.NULL)
    return None if rc < 0 else out


def prints_checker(columns, prev):
    """A function of no argument equivalent to ``prints_equal(columns, prev)`` for these very
    ``columns`` objects, with the call's buffers made once (one C call per use: what a cache that
    checks the same lists every step wants); None if the prints are unavailable. The caller must
    keep ``columns`` (and the arrays in them) alive, and not resize the lists, while it uses it."""
    impl = _get()
    if impl is None or not _columns_ok(columns) or prev is None:
        return None
    ffi, lib = impl
    n = sum(map(len, columns))
    if prev.shape != (n, int(lib.FD_PY_PRINT_SLOTS)):
        return None
    keep = (np.array([id(c) for c in columns], np.int64), np.ascontiguousarray(prev))
    seqs = ffi.from_buffer("int64_t[]", keep[0])
    prev_c = ffi.from_buffer("int64_t[]", keep[1])
    call, ncol, nd, null = lib.fd_py_array_prints, len(columns), id(np.ndarray), ffi.NULL

    def check(_keep=keep):
        return call(seqs, ncol, nd, n, null, prev_c) == 0

    return check


def _probe_ok(ffi, lib):
    ro = np.arange(4.0)
    ro.flags.writeable = False
    probes = [np.ones(3), np.ones((2, 3), np.float32), np.zeros(()), np.ones(9)[::2], ro,
              np.ones((2, 1, 3, 1, 2, 2), np.float32)]
    if int(lib.FD_PY_PRINT_SLOTS) != SLOTS:
        return False
    out = _raw([probes], ffi, lib)
    if out is None or not _raw([probes], ffi, lib, out) or _raw([probes[1:]], ffi, lib, out):
        return False
    flags = {C_CONTIGUOUS: "C_CONTIGUOUS", ALIGNED: "ALIGNED", WRITEABLE: "WRITEABLE"}
    for a, row in zip(probes, out):
        if any(bool(int(row[3]) & bit) != bool(a.flags[name]) for bit, name in flags.items()):
            return False
        want = [id(a), a.__array_interface__["data"][0], id(a.dtype), a.flags.num, a.ndim,
                *a.shape, *([-1] * (6 - a.ndim))]
        if list(map(int, row[:11])) != want:
            return False
    return True


@functools.cache  # decided once per process (a concurrent first call may probe twice: harmless)
def _get():
    """(ffi, lib) if the one-call fingerprints are usable here, else None."""
    try:
        from .backends.c_cffi import _lib

        if _lib.lib is not None and hasattr(_lib.lib, "fd_py_array_prints") \
                and _probe_ok(_lib.ffi, _lib.lib):
            return (_lib.ffi, _lib.lib)
    except Exception:  # noqa: BLE001 - any doubt: the per-array path
        pass
    return None


def available():
    """True if the one-call fingerprints are usable here."""
    return _get() is not None


def _columns_ok(columns):
    return bool(columns) and all(isinstance(c, (list, tuple)) for c in columns)


def array_prints(columns):
    """For the arrays of ``columns`` (lists or tuples of arrays), end to end: an (n, 12) int64
    array, per array its object address, data address, dtype object, flags, ndim and shape; None if
    unavailable here or if a column is not a list or tuple, or an entry is not exactly an ndarray (a
    subclass, a device array) or has more than 6 dimensions. The caller must hold references to the
    arrays."""
    impl = _get()
    if impl is None or not _columns_ok(columns):
        return None
    return _raw(columns, *impl)


def prints_equal(columns, prev):
    """True if :func:`array_prints` of ``columns`` would equal ``prev`` (an earlier result), found
    without building it (one C pass that stops at the first difference); False otherwise, also when
    the prints are unavailable."""
    impl = _get()
    if impl is None or not _columns_ok(columns):
        return False
    return _raw(columns, *impl, prev)
