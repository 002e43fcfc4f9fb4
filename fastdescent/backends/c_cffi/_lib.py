"""The compiled extension (``fastdescent._fastdescent_c``) and the helpers every c-backend module
shares. Importing this module never fails: if the extension is missing, ``lib`` is None and
``IMPORT_ERROR`` holds the cause (``check_available`` in ``__init__`` raises it).

- If the build could not compile the extension, it left the compiler's output in
  ``fastdescent/_c_build_error.txt`` (see ``csrc/cffi_build.py``); that text is part of
  ``IMPORT_ERROR``, so ``fastdescent.info()["backends"]["c"]["reason"]`` shows the compiler error.
- ``FASTDESCENT_C_EXTENSION=/path/to/_fastdescent_c.<suffix>.so`` loads that file as the extension
  instead of the installed one (used by the sanitizer CI stage, ``make -C csrc sanitize``, to run
  the Python tests against an ASan/UBSan build without touching the installed package).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import numpy as np

from ...errors import KernelError
from .._table import TensorTable, addresses

EXTENSION_ENV = "FASTDESCENT_C_EXTENSION"
BUILD_ERROR_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "_c_build_error.txt")
_MODULE = "fastdescent._fastdescent_c"


def build_error_text(path=None):
    """The compiler output the build left when the extension failed to compile, or None."""
    path = BUILD_ERROR_FILE if path is None else path
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return None
    return text or None


def _load_extension():
    """(ffi, lib) of the extension: the file named by $FASTDESCENT_C_EXTENSION, else the installed
    module. Raises ImportError (with the build's compiler output when there is one)."""
    path = os.environ.get(EXTENSION_ENV, "")
    if path:
        if not os.path.isfile(path):
            raise ImportError(f"{EXTENSION_ENV}={path!r}: no such file")
        loader = importlib.machinery.ExtensionFileLoader(_MODULE, path)
        spec = importlib.util.spec_from_file_location(_MODULE, path, loader=loader)
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        sys.modules[_MODULE] = mod
        return mod.ffi, mod.lib
    try:
        from ..._fastdescent_c import ffi, lib
    except ImportError as exc:
        text = build_error_text()
        if text is None:
            raise
        raise ImportError(f"{exc}; the C extension failed to build at install time:\n{text}") from exc
    return ffi, lib


try:
    ffi, lib = _load_extension()
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
