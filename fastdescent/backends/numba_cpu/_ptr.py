"""Helpers shared by the kernels: arrays from raw addresses, scalar rounding.

A table column reaches a kernel as an int64 array of data addresses (one per tensor), so one jitted
call handles any number of tensors without building a typed list of arrays in Python. Inside the
kernel, :func:`segment` turns (address, first element, length) into a 1-D C-contiguous array of the
table's dtype. The dtype comes from ``proto``, an empty array of that dtype passed to every kernel: it
selects the compiled specialisation (float32 or float64) and types the pointers and the scalars.
"""

from __future__ import annotations

import numpy as np
from numba import carray, types
from numba.extending import intrinsic

from ._config import jit

__all__ = ["pointer", "like", "segment", "PROTOS", "EMPTY_ADDRS"]


@intrinsic
def pointer(typingctx, addr, offset, proto):
    """``(int64 address, element offset, proto array) -> CPointer(proto.dtype)`` at address + offset."""
    if not isinstance(addr, types.Integer) or not isinstance(offset, types.Integer):
        return None
    if not isinstance(proto, types.Array):
        return None
    ptrty = types.CPointer(proto.dtype)
    sig = ptrty(addr, offset, proto)

    def codegen(context, builder, signature, args):
        base = builder.inttoptr(args[0], context.get_value_type(ptrty))
        off = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.gep(base, [off], inbounds=True)

    return sig, codegen


@intrinsic
def like(typingctx, x, proto):
    """Round the scalar ``x`` to ``proto``'s element type (once, as NumPy's weak scalars do)."""
    if not isinstance(proto, types.Array) or not isinstance(x, (types.Number, types.Boolean)):
        return None
    sig = proto.dtype(x, proto)

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], signature.args[0], signature.return_type)

    return sig, codegen


@jit
def segment(addr, lo, n, proto):
    """The ``n`` elements starting at element ``lo`` of the tensor whose data is at ``addr``."""
    return carray(pointer(addr, lo, proto), n)


#: ``proto`` arrays (empty, one per dtype) and the address column given for absent optional columns.
PROTOS = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}
EMPTY_ADDRS = np.zeros(0, dtype=np.int64)
