"""Numba options of the ``numba`` backend, in one place.

``JIT_OPTIONS``
    ``cache=True`` (compiled code is stored next to the sources, or in ``$NUMBA_CACHE_DIR``),
    ``nogil=True`` (kernels release the GIL), ``error_model="numpy"`` (a float division by zero gives
    IEEE inf/NaN, as NumPy does, instead of raising; it also keeps the loops free of zero checks so they
    vectorise), no ``fastmath``: the update rules must follow IEEE arithmetic with NaN/Inf and the
    NumPy backend's operation order. The update kernels are memory-bound (Adam fp32 runs at the
    speed of a plain 28 B/param streaming loop), so FMA contraction would buy nothing, and without it
    the element-wise kernels give exactly the NumPy backend's bits, which the tests check. The only
    fastmath flag anywhere is ``reassoc`` on the float64 sum helpers of the gradient norm
    (:data:`REDUCE_FASTMATH`).

``CHUNK``
    Elements per work item. Every kernel walks the flattened (tensor, element) space of its table in
    chunks of this many elements; a chunk may span many small tensors or a slice of a large one. The
    chunking does not depend on the thread count, so reductions (which combine per-chunk partials in
    chunk order) give the same bits serial or parallel, with any number of threads.

``PARALLEL_MIN``
    Tables with fewer elements than this run the serial variant of a kernel: waking the worker threads
    costs more than the work. Both variants are compiled from one Python body.

Both sizes can be overridden with ``FASTDESCENT_NUMBA_CHUNK`` / ``FASTDESCENT_NUMBA_PARALLEL_MIN``
(read once, at import). They are runtime arguments of the kernels, never compile-time constants, so a
change never leaves stale code in Numba's cache.

Numba's cache is invalidated by the timestamp of the file that defines a cached function only. A
kernel's cached code includes the helpers it calls from ``_ptr.py`` and the options set here, so
after editing ``_ptr.py`` or this file, delete this package's ``__pycache__/*.nbi`` and ``*.nbc``
(or touch the kernel modules). Editing a kernel module itself needs nothing.
"""

from __future__ import annotations

import os
import types as _pytypes

import numba

from ._threads import Parallel

__all__ = ["JIT_OPTIONS", "REDUCE_FASTMATH", "CHUNK", "PARALLEL_MIN", "jit", "jit_inline", "jit_reduce",
           "jit_variants"]

#: fastmath flags of the float64 sum helpers only: ``reassoc`` lets LLVM keep vector partial sums
#: (without it a sum is one serial chain of adds). No ``nnan``/``ninf``: NaN and Inf propagate. The
#: order of the partial sums is fixed by the compiled code, so results do not depend on the threads.
REDUCE_FASTMATH = frozenset({"reassoc"})

JIT_OPTIONS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)


def _env_int(name, default, lo):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        val = int(raw)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {raw!r}") from None
    if val < lo:
        raise ValueError(f"${name} must be >= {lo}, got {val}")
    return val


CHUNK = _env_int("FASTDESCENT_NUMBA_CHUNK", 1 << 14, 64)
PARALLEL_MIN = _env_int("FASTDESCENT_NUMBA_PARALLEL_MIN", 1 << 16, 0)


def jit(fn):
    """``numba.njit`` with the backend's options (small helpers, which LLVM inlines)."""
    return numba.njit(**JIT_OPTIONS)(fn)


def jit_inline(fn):
    """Like :func:`jit`, but inlined into its callers by Numba (``inline="always"``).

    Used for the per-segment element loops: LLVM does not inline them by itself (they are large once
    vectorised), and a call per tensor segment costs ~20-40 ns, which dominates tables of thousands of
    tiny tensors.
    """
    return numba.njit(inline="always", **JIT_OPTIONS)(fn)


def jit_reduce(fn):
    """:func:`jit` with :data:`REDUCE_FASTMATH`, for the per-segment float64 sums (not inlined, so
    the flags stay on this function and never reach the update arithmetic)."""
    return numba.njit(fastmath=set(REDUCE_FASTMATH), **JIT_OPTIONS)(fn)


def _renamed(fn, suffix):
    # A copy of ``fn`` with its own qualified name. Numba's cache files are keyed by the function's
    # qualified name and its index by (signature, bytecode), not by the jit flags, so the serial and
    # the parallel compilation of one body must not share a name or one would load the other's code.
    new = _pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__,
                                fn.__closure__)
    new.__qualname__ = fn.__qualname__ + suffix
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    return new


def jit_variants(body):
    """Compile one kernel body (written with ``numba.prange`` over chunks) twice.

    Returns ``(serial, parallel)``: ``prange`` runs as ``range`` in the serial dispatcher and is spread
    over Numba's thread pool in the parallel one, which comes wrapped in a :class:`._threads.Parallel`
    (it runs the serial code in a forked child and takes a lock under the ``workqueue`` layer; see
    :mod:`._threads`). Compilation is lazy, per signature (dtype), so a process only compiles or loads
    from cache the variants it calls.
    """
    serial = numba.njit(**JIT_OPTIONS)(_renamed(body, "_serial"))
    parallel = numba.njit(parallel=True, **JIT_OPTIONS)(_renamed(body, "_parallel"))
    return serial, Parallel(serial, parallel)
