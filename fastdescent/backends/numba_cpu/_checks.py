"""Argument checks of the numba kernels, done in Python before any jitted call (so before any compile).

Numba would otherwise compile whatever it is given: a ``None`` column fails with a ``TypingError``
after a compile, and arrays whose shapes do not fit run anyway (reading and writing out of bounds).
The checks give the c backend's exception types (``backends/c_cffi``), with messages that name the
argument:

* multi-tensor rows: a required column (one of the contract row's columns that is not ``optional``)
  missing or ``None`` -> ``ValueError``;
* dense rows: an array that is not float32/float64 (the first written array decides) ->
  ``TypeError``; shapes or dtypes that do not fit together, arrays that are not C-contiguous, a
  read-only output -> ``ValueError``; a weight batch ``Bw`` other than 1 or B, a label outside
  [0, C) -> :class:`~fastdescent.errors.KernelError` with the C status code (``FD_ERR_SHAPE``,
  ``FD_ERR_ARG``), as the C library reports them.
"""

from __future__ import annotations

import numpy as np

from ..._contract import KERNELS as _ROWS
from ...errors import KernelError

__all__ = ["required", "bad_dtype", "bad_fit", "buffers", "kernel_error", "FLOATS",
           "ERR_ARG", "ERR_SHAPE"]

FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})

#: status codes and texts of csrc/fastdescent.h / fd_strerror, for the errors the C library reports
ERR_ARG = 3
ERR_SHAPE = 4
_STRERROR = {ERR_ARG: "an argument is outside its domain",
             ERR_SHAPE: "shapes or batch sizes do not fit together"}

#: row name -> columns that must be present
_REQUIRED = {r.name: tuple(c for c in r.columns if c not in r.optional)
             for r in _ROWS.values() if r.kind == "multi"}


def required(tab, kernel):
    """``tab.packed``, after checking that every required column of row ``kernel`` is present."""
    packed = tab.packed
    for name in _REQUIRED[kernel]:
        if packed.get(name) is None:
            how = "is None" if name in packed else "is missing"
            raise ValueError(f"{kernel}: the column {name!r} is required, but it {how}")
    return packed


def kernel_error(kernel, code):
    """The :class:`KernelError` the c backend raises for C status ``code``."""
    return KernelError(kernel, code, _STRERROR[code])


def _desc(arrays):
    return ", ".join(f"{k} {getattr(a, 'shape', type(a).__name__)} {getattr(a, 'dtype', '')}".rstrip()
                     for k, a in arrays.items() if a is not None)


def bad_dtype(kernel, arrays):
    """TypeError if the first array is not a float32/float64 array, else None."""
    name, first = next(iter(arrays.items()))
    dt = getattr(first, "dtype", None)
    if dt not in FLOATS:
        return TypeError(f"{kernel}: {name} must be a float32 or float64 array, got "
                         f"{dt if dt is not None else type(first).__name__}")
    return None


def bad_fit(kernel, arrays, expected):
    """The error for arrays that do not fit together: the TypeError of :func:`bad_dtype`, else a
    ValueError listing them (``expected`` says what was wanted)."""
    exc = bad_dtype(kernel, arrays)
    if exc is not None:
        return exc
    return ValueError(f"{kernel}: arrays do not fit together ({_desc(arrays)}); expected {expected}")


def buffers(kernel, written, read):
    """ValueError naming the first array (``{name: array}``; None skipped) that is not an ndarray,
    not C-contiguous, or (``written``) read-only."""
    for group, out in ((written, True), (read, False)):
        for name, a in group.items():
            if a is None:
                continue
            if not isinstance(a, np.ndarray):
                raise ValueError(f"{kernel}: {name} must be a NumPy array, got {type(a).__name__}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{kernel}: {name} is not C-contiguous")
            if out and not a.flags.writeable:
                raise ValueError(f"{kernel}: {name} is read-only")
