"""``fd.set_flush_denormal`` / ``fd.get_flush_denormal``: the ``c`` backend's opt-in flush of
subnormal floats (csrc: ``fd_set_flush_denormal``).

Subnormal floats (below ``FLT_MIN`` = 1.18e-38 in float32) cost a microcode assist per result on x86
CPUs, tens to hundreds of cycles. They appear in real training: once a model has learnt its data, the
Adam moments of weights whose gradients are (nearly) zero decay geometrically into the subnormal range
(on the MNIST-shaped benchmark 19% of ``exp_avg`` after three epochs), and the step slows down 2-3x.
With the flush on, every ``c`` kernel call runs with the MXCSR bits FTZ (subnormal results become
zero) and DAZ (subnormal inputs read as zero) on the calling thread and on every thread of its
parallel regions, and each thread's own MXCSR comes back when the call returns: NumPy, torch and
the rest of the process keep IEEE subnormals (unlike ``torch.set_flush_denormal``, which changes the
calling thread for good).

The price is exactness: results below ``FLT_MIN`` change, so the ``c`` kernels no longer agree bit for
bit with the NumPy reference, the other backends or torch. Off by default. The ``numpy``, ``numba`` and
``cuda`` backends are not affected (they always compute subnormals).
"""

from __future__ import annotations

import numpy as np

__all__ = ["set_flush_denormal", "get_flush_denormal"]


def _lib():
    from .backends.c_cffi._lib import lib

    return lib


def set_flush_denormal(mode):
    """Flush subnormal floats to zero in the ``c`` backend's kernels (``True``) or compute them as
    IEEE 754 says (``False``, the default). Process-wide, for every later kernel call.

    ``False`` leaves each thread's own floating-point mode alone: a thread on which something else
    switched flushing on for good (``torch.set_flush_denormal(True)`` sets its calling thread's mode,
    and OpenMP threads it starts inherit it) flushes in fastdescent's kernels too.

    Returns True if the setting took effect; False if ``mode`` is True and flushing is not available
    (no ``c`` extension, or a CPU without SSE's MXCSR): the setting then stays off, as
    ``torch.set_flush_denormal`` reports. TypeError unless ``mode`` is a bool."""
    if not isinstance(mode, (bool, np.bool_)):
        raise TypeError(f"set_flush_denormal: mode must be a bool, got {type(mode).__name__} "
                        f"{mode!r}")
    lib = _lib()
    if lib is None:
        return not mode
    return bool(lib.fd_set_flush_denormal(int(bool(mode))))


def get_flush_denormal():
    """True if the ``c`` backend's kernels flush subnormal floats (:func:`set_flush_denormal`)."""
    lib = _lib()
    return bool(lib is not None and lib.fd_get_flush_denormal())
