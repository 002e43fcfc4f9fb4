"""Bit casts between float32 and integers for the Numba kernels (CPU and CUDA targets alike):
``bits(x)`` is the 32 bits of a float32 as a non-negative int64, ``as_float(u)`` the float32 whose
bits are the low 32 bits of the integer ``u``. The mixed-precision steps round and decode the
narrow formats on these bits (``fastdescent.precision``). Imported only by Numba backends."""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["bits", "as_float"]


@intrinsic
def bits(typingctx, x):
    """The 32 bits of a float32, as a non-negative int64."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def as_float(typingctx, u):
    """The float32 whose bits are the low 32 bits of the integer ``u``."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        w = args[0]
        width = signature.args[0].bitwidth
        if width > 32:
            w = builder.trunc(w, ir.IntType(32))
        elif width < 32:
            w = builder.zext(w, ir.IntType(32))
        return builder.bitcast(w, ir.FloatType())

    return types.float32(u), codegen
