"""When the threaded variant of a kernel may run: after ``fork()``, and under the ``workqueue`` layer.

Every kernel body is compiled serial and parallel (:func:`._config.jit_variants`); the parallel
dispatcher is wrapped in a :class:`Parallel`, which is what the kernels call. It runs the threaded
code unless one of two Numba threading-layer limits would make that crash:

Fork
    GNU OpenMP (Numba's ``omp`` layer, the default here when TBB is absent) cannot be used in a child
    forked from a process whose OpenMP pool has started: Numba kills the child ("fork() called from a
    process already using GNU OpenMP, this is unsafe."). An at-fork handler
    (``os.register_at_fork(after_in_child=...)``) therefore switches a child whose parent had started
    the pool under a layer other than ``tbb`` or ``workqueue`` (both fork-safe) to the serial variants
    for the rest of its life. Results are identical (the chunking does not depend on the threads);
    only the speed-up is lost. A child of a process that never ran a threaded kernel, or a ``spawn`` /
    ``forkserver`` child, is unaffected.

Concurrency
    The ``workqueue`` layer is not thread-safe: two Python threads launching parallel kernels at once
    abort the process ("Terminating: Nested parallel kernel launch detected ..."). While that layer is
    active, threaded kernel calls are serialised by a process-wide lock (serial-variant calls, the
    small tables, still run concurrently). Until the first threaded call has chosen the layer, calls
    take the lock too; once the layer is known to be ``omp`` or ``tbb`` (thread-safe), they run
    concurrently without it. Only this package's kernels take the lock: other ``parallel=True`` Numba
    code run concurrently under ``workqueue`` can still collide with them.
"""

from __future__ import annotations

import os
import threading

import numba

__all__ = ["Parallel", "serial_only", "state", "set_requested", "threads"]

#: layers whose pool survives fork() (Numba's documentation: tbb and workqueue are fork-safe)
_FORK_SAFE = frozenset({"tbb", "workqueue"})
#: layers that may be entered by several threads at once
_THREAD_SAFE = frozenset({"tbb", "omp"})

_lock = threading.Lock()
_requested = 0  # fd.set_num_threads for this backend (0: Numba's default, NUMBA_NUM_THREADS)
_serial_only = False  # set in a forked child whose parent's (fork-unsafe) pool had started
_free = False  # True once the layer is known to be thread-safe: no lock needed


def _layer():
    """The threading layer in use, or None before Numba's thread pool has started here."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _after_fork_in_child():
    global _lock, _serial_only, _free
    _lock = threading.Lock()  # another parent thread may have held it at fork time
    layer = _layer()
    if layer is not None and layer not in _FORK_SAFE:
        _serial_only = True
        _free = False  # so that calls reach the _serial_only test


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_requested(n):
    """``fd.set_num_threads`` for this backend: 1 runs the serial variants, k > 1 gives each
    parallel call min(k, NUMBA_NUM_THREADS) threads, 0 Numba's default."""
    global _requested
    _requested = int(n)


def threads():
    """Threads a parallel kernel call may use now."""
    n = numba.config.NUMBA_NUM_THREADS
    return min(_requested, n) if _requested else n


def serial_only():
    """True in a forked child that must not use Numba's thread pool (see the module docstring)."""
    return _serial_only


def state():
    """``{"layer": ..., "serial_only": ..., "lock": ...}`` for ``describe()``: the threading layer
    (None before Numba's pool starts), whether this forked child runs serial kernels only, and
    whether threaded kernel calls are serialised (a layer that is not thread-safe, or not known yet).
    """
    layer = _layer()
    return {"layer": layer, "serial_only": _serial_only,
            "lock": not (_free or layer in _THREAD_SAFE)}


class Parallel:
    """The parallel dispatcher of a kernel body, called through the guards above.

    Calls run ``parallel(*args)``, or ``serial(*args)`` in a forked child (see :func:`serial_only`).
    Attribute access (``signatures``, ``py_func`` ...) goes to the parallel dispatcher.
    """

    __slots__ = ("serial", "parallel")

    def __init__(self, serial, parallel):
        self.serial = serial
        self.parallel = parallel

    def __call__(self, *args):
        global _free
        if _requested:
            if _requested == 1:
                return self.serial(*args)
            # Numba's thread count is per calling thread: set it for this one, every call (cheap)
            numba.set_num_threads(min(_requested, numba.config.NUMBA_NUM_THREADS))
        if _free:
            return self.parallel(*args)
        if _serial_only:
            return self.serial(*args)
        with _lock:
            out = self.parallel(*args)
            if _layer() in _THREAD_SAFE:
                _free = True
        return out

    def __getattr__(self, name):
        if name in Parallel.__slots__:  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.parallel, name)

    def __repr__(self):
        return f"Parallel({self.parallel!r})"
