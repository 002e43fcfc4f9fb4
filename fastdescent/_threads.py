"""Threads of the CPU backends: how many the kernels use, and how OpenMP's threads wait.

Thread count. :func:`set_num_threads` / :func:`get_num_threads` (``fd.set_num_threads``) apply to the
``c`` and ``numba`` kernels alike; ``FASTDESCENT_NUM_THREADS`` sets the initial value. 0 (the
default) means each backend's own default (OpenMP's / Numba's: every core). A kernel goes
multi-threaded only when its work is large enough for a parallel region to pay (per-kernel grains:
65,536 elements per thread for the optimizer updates, about 4M multiply-adds for a GEMM), whatever
the count: small work, such as a small MLP's whole training step, never waits on a thread pool.

Waiting. GNU OpenMP's threads spin for a while at the end of a parallel region before they sleep.
On a machine whose other cores are busy (a CI runner, a notebook next to a data loader) a spinning
or descheduled thread can make every parallel region wait a scheduler time slice: measured here with
one of two cores kept busy, a 784-128-10 MLP epoch (8,000 rows) on ``c`` took 87 ms with spinning
threads and 55 ms with ``OMP_WAIT_POLICY=PASSIVE`` (the one-thread time), and under heavier load
(four busy processes) 2.7 s against 0.065 s. But sleeping threads take long to wake on this machine
(a VM): with PASSIVE, a quiet machine ran a 2^20-element Adam step in 635 us instead of 334 us. So
fastdescent leaves the policy to the user: ``OMP_WAIT_POLICY=PASSIVE`` (set before the first import
of fastdescent, numba or any OpenMP library) for shared, loaded machines, the default for dedicated
ones, or ``fd.set_num_threads(1)``. :func:`state` reports the policy in force.

The ``c`` backend's dense-layer GEMMs need none of this to stay near one-thread speed on a busy
machine: their regions have no inner barrier (threads take units from a counter), and a threaded GEMM
that cost more than its calling thread alone would have makes the next GEMMs run on one thread for
50 ms to 2 s (``fd.info()["backends"]["c"]["gemm_backoff"]`` counts the stalls; results do not
change). The default spinning still costs under load: each threaded region leaves OpenMP's threads
spinning for milliseconds afterwards.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

__all__ = ["configure_wait_policy", "set_num_threads", "get_num_threads", "requested", "state"]

_lock = threading.Lock()
_requested = 0  # 0: the backends' defaults
_wait = {"policy": None, "runtime_loaded_before": None}


def _openmp_runtime_loaded():
    """True if a GNU/LLVM OpenMP runtime is mapped into this process already (Linux), None if
    this cannot be told."""
    try:
        with open("/proc/self/maps") as f:
            return any(("libgomp" in line or "libomp" in line or "libiomp" in line) for line in f)
    except OSError:
        return None


def configure_wait_policy():
    """Record the OpenMP wait policy the environment chose (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``;
    None: OpenMP's default, spin then sleep) and whether an OpenMP runtime was loaded before
    fastdescent (it read the environment then). Called by ``import fastdescent``."""
    env = os.environ
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        _wait["policy"] = env.get("OMP_WAIT_POLICY") or f"GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']}"
    _wait["runtime_loaded_before"] = _openmp_runtime_loaded()


def _parse(n, what):
    """``n`` as an int >= 0 (ints and NumPy integers, never bool); ValueError naming it otherwise."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{what} must be an int >= 0 (0: the backends' defaults), got {n!r}")
    return int(n)


def _from_env():
    """FASTDESCENT_NUM_THREADS as an int >= 0; a bad value is ignored with a RuntimeWarning (an
    import must not fail over it) and reported by :func:`state`."""
    text = os.environ.get("FASTDESCENT_NUM_THREADS", "").strip()
    if not text:
        return 0
    try:
        n = int(text)
        if n < 0:
            raise ValueError
        return n
    except ValueError:
        _wait["env_error"] = f"FASTDESCENT_NUM_THREADS={text!r} ignored: not an int >= 0"
        import warnings

        warnings.warn(f"fastdescent: {_wait['env_error']}", RuntimeWarning, stacklevel=3)
        return 0


def requested():
    """The thread count asked for (0: the backends' defaults)."""
    return _requested


def set_num_threads(n):
    """Threads the ``c`` and ``numba`` kernels may use: an int >= 1, or 0 for each backend's default
    (every core). Applies to the whole process (every Python thread); ValueError naming ``n``
    otherwise. Results do not depend on it (the kernels' chunking does not)."""
    global _requested
    n = _parse(n, "n")
    from . import backends as _b

    with _lock:
        _requested = n  # first: a backend loading now applies it when it is registered
        for name in ("c", "numba"):
            mod = _b._loaded.get(name)
            if mod is not None:
                mod.apply_num_threads(n)
        c = sys.modules.get("fastdescent.backends.c_cffi")  # imported directly, not registered yet
        if c is not None and "c" not in _b._loaded and getattr(c, "lib", None) is not None:
            c.apply_num_threads(n)


def get_num_threads():
    """The thread count the CPU kernels use at most: the value set (or FASTDESCENT_NUM_THREADS), or
    the backends' default when that is 0 (``os.cpu_count()`` unless OMP_NUM_THREADS /
    NUMBA_NUM_THREADS say otherwise)."""
    if _requested:
        return _requested
    from . import backends as _b

    for name in ("c", "numba"):
        if name in _b._loaded:
            return int(_b._loaded[name].default_num_threads())
    return os.cpu_count() or 1


def state():
    """For ``fd.info()``: the count asked for, and the OpenMP wait policy with where it came from."""
    return {"requested": _requested, "effective": get_num_threads(), "wait_policy": dict(_wait)}


_requested = _from_env()
