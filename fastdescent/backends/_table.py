"""Tensor tables: the multi-tensor argument every kernel takes.

A table holds, for one dtype bucket, several *columns* (``param``, ``grad``, ``exp_avg`` ...): each a
list of C-contiguous 1-D arrays of that dtype, one per tensor, with one shared list of sizes. Backends
subclass :class:`TensorTable` and override :meth:`_pack` to turn a column into what their kernels take
(a cffi array of pointers, an int64 array of addresses, a device-side pointer table ...). The optimizer
layer builds a table once per bucket and only re-packs the ``grad`` column when the gradient arrays
change identity, so a step costs one kernel call per bucket, whatever the number of tensors.
"""

from __future__ import annotations

import numpy as np

from .._contract import KERNELS as _ROWS

__all__ = ["TensorTable", "addresses", "required_columns"]

#: multi-tensor row name -> the columns that must be present (those not ``optional``)
_REQUIRED = {r.name: tuple(c for c in r.columns if c not in r.optional)
             for r in _ROWS.values() if r.kind == "multi"}


def required_columns(kernel):
    """The columns of contract row ``kernel`` that every call needs (its non-optional columns)."""
    return _REQUIRED[kernel]


def addresses(arrays):
    """int64 array of the data addresses of host or device arrays (``__cuda_array_interface__``)."""
    out = np.empty(len(arrays), dtype=np.int64)
    for i, a in enumerate(arrays):
        if isinstance(a, np.ndarray):
            out[i] = a.__array_interface__["data"][0]
        else:
            out[i] = a.__cuda_array_interface__["data"][0]
    return out


def _missing(kernel, name, packed, why=""):
    how = "is None" if name in packed else "is missing"
    return ValueError(f"{kernel}: the column {name!r} is required{why}, but it {how}")


class TensorTable:
    """Columns of same-dtype contiguous 1-D arrays sharing one list of sizes.

    Parameters
    ----------
    dtype : numpy dtype
        Element type of every array in every column.
    sizes : sequence of int
        Number of elements of tensor ``i`` (the same in every column).
    """

    #: True for tables whose arrays live on a GPU.
    device = False

    def __init__(self, dtype, sizes):
        self.dtype = np.dtype(dtype)
        self.sizes = np.ascontiguousarray(sizes, dtype=np.int64)
        self.n = int(self.sizes.shape[0])
        self.total = int(self.sizes.sum()) if self.n else 0
        self.columns = {}
        self.packed = {}

    def set(self, name, arrays, addrs=None):
        """Set column ``name`` to ``arrays`` (a list of arrays, or None for an absent column).

        ``addrs`` is an optional int64 array of the arrays' data addresses, when the caller already
        has them (the optimizer computes them while validating); backends that need pointers use it.
        """
        self.columns[name] = arrays
        self.packed[name] = None if arrays is None else self._pack(arrays, addrs)
        return self

    def get(self, name):
        return self.columns.get(name)

    def require(self, kernel, *also):
        """:attr:`packed`, after checking that the columns kernel ``kernel`` reads are there.

        Every backend's multi-tensor kernels call this first, so that a required column that is
        ``None`` or was never set raises the same clear error everywhere, before anything is written
        (rather than cffi's TypeError, a NULL-pointer status, a Numba TypingError or
        ``'NoneType' object is not subscriptable``). The required columns are the contract row's
        non-optional ones, plus ``also``: optional columns this call's flags need (for example
        ``max_exp_avg_sq`` when ``amsgrad`` is set); falsy entries of ``also`` are skipped, so
        callers can write ``tab.require("adam", amsgrad and "max_exp_avg_sq")``.

        Raises
        ------
        ValueError
            ``"<kernel>: the column '<name>' is required, but it is None"`` (or ``is missing``).
        KeyError
            ``kernel`` is not a multi-tensor row of the contract.
        """
        packed = self.packed
        for name in _REQUIRED[kernel]:
            if packed.get(name) is None:
                raise _missing(kernel, name, packed)
        for name in also:
            if name and packed.get(name) is None:
                raise _missing(kernel, name, packed, " (by this call's scalars)")
        return packed

    def _pack(self, arrays, addrs):
        """Backend hook: turn a list of arrays into the kernel's representation.

        The arrays may have any shape (they are C-contiguous; kernels treat them as flat). ``addrs``
        may be None; :func:`addresses` computes it.
        """
        return arrays

    @classmethod
    def from_columns(cls, dtype, columns):
        """Build a table from ``{name: list of arrays or None}``; sizes come from the first column."""
        sizes = None
        for arrays in columns.values():
            if arrays is not None:
                sizes = [a.size for a in arrays]
                break
        if sizes is None:
            raise ValueError("a tensor table needs at least one present column")
        tab = cls(dtype, sizes)
        for name, arrays in columns.items():
            tab.set(name, arrays)
        return tab
