"""The compiled extension (``fastdescent._fastdescent_c``) and the helpers every c-backend module
shares. Importing this module never fails: if the extension is missing, ``lib`` is None and
``IMPORT_ERROR`` holds the cause (``check_available`` in ``__init__`` raises it)."""

from __future__ import annotations

import numpy as np

from ...errors import KernelError
from .._table import TensorTable, addresses

try:
    from ..._fastdescent_c import ffi, lib
except ImportError as exc:  # not built (no compiler, failed compile) or not loadable here
    ffi = lib = None
    NULL = None
    IMPORT_ERROR = exc
else:
    NULL = ffi.NULL
    IMPORT_ERROR = None

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)


_PTR = {F32: "float *[]", F64: "double *[]"}


class Table(TensorTable):
    """Tensor table whose columns are packed as C arrays of data pointers.

    ``packed[name]`` is a cffi ``float *[]`` / ``double *[]`` viewing an int64 array of the arrays'
    addresses (kept alive by the cdata); ``c_sizes`` is an ``int64_t[]`` over :attr:`sizes`.
    Absent columns are ``None`` in ``packed`` and passed to C as NULL.
    """

    def __init__(self, dtype, sizes):
        super().__init__(dtype, sizes)
        if ffi is None:
            raise ImportError(f"the c backend is not available: {IMPORT_ERROR}") from IMPORT_ERROR
        if self.dtype not in _PTR:
            raise TypeError(f"the c backend supports float32 and float64, got {self.dtype}")
        self.c_sizes = ffi.from_buffer("int64_t[]", self.sizes)
        self.c_f64 = self.dtype == F64

    def _pack(self, arrays, addrs):
        if addrs is None:
            addrs = addresses(arrays)
        else:
            addrs = np.ascontiguousarray(addrs, dtype=np.int64)
        if addrs.shape != (self.n,):
            raise ValueError(f"a column needs {self.n} arrays, got {addrs.shape[0]}")
        # the cdata keeps `addrs` alive for as long as the table holds it
        return ffi.from_buffer(_PTR[self.dtype], addrs)


def adopt(tab):
    """A c :class:`Table` with the columns of another TensorTable (for tables built elsewhere)."""
    new = Table(tab.dtype, tab.sizes)
    for name, arrays in tab.columns.items():
        new.set(name, arrays)
    return new


def strerror(code):
    """Text of a C status code (``fd_strerror``)."""
    return ffi.string(lib.fd_strerror(int(code))).decode()


def kernel_error(kernel, code):
    """The :class:`~fastdescent.errors.KernelError` for a non-zero status of ``kernel``."""
    return KernelError(kernel, int(code), strerror(code))
