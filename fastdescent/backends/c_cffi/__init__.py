"""The ``c`` backend: the C library in ``csrc/`` bound through cffi (API mode), the default on CPU.

Every kernel is one call into ``libfastdescent`` (``csrc/fastdescent.h``) per tensor table: the
table's columns are packed once into arrays of data pointers (int64 address arrays viewed as
``T *[]``), so a step costs one C call whatever the number of tensors. Threads: OpenMP inside the
library (:func:`set_num_threads`, :func:`set_parallel_grain`); AVX2+FMA code is chosen at run time
(:func:`set_simd_path`).

fork: OpenMP's thread pool does not survive ``fork()``. In a process created by ``fork()``
(``os.fork``, ``multiprocessing`` with the "fork" start method, ...) after the extension was loaded,
the C library runs every kernel on the calling thread (:func:`get_num_threads` returns 1 there) and
gives the same results; without this, a child of a process that had run a multi-threaded step would
hang forever in its first parallel kernel. "spawn" and "forkserver" children start afresh, with
threads.

If the extension failed to build, :data:`IMPORT_ERROR` (shown by ``fastdescent.info()``) includes
the compiler's output, which the build saved in ``fastdescent/_c_build_error.txt``.
``FASTDESCENT_C_EXTENSION=/path/to/extension.so`` loads another build of the extension (the
sanitizer CI stage uses it); see ``_lib.py``.
"""

from __future__ import annotations

import numpy as np

from .. import collect_kernels
from ._lib import IMPORT_ERROR, Table, ffi, kernel_error, lib

NAME = "c"
DEVICE = False

__all__ = ["NAME", "DEVICE", "Table", "KERNELS", "check_available", "describe", "get_num_threads",
           "set_num_threads", "max_threads", "apply_num_threads", "default_num_threads",
           "get_parallel_grain", "set_parallel_grain", "gemm_backoff", "set_gemm_backoff",
           "gemm_avx512", "set_gemm_avx512",
           "get_simd_path", "set_simd_path", "ffi", "lib"]


def check_available():
    """Raise ImportError, with the cause chained, if the compiled extension cannot be used."""
    if IMPORT_ERROR is not None:
        raise ImportError(
            "the c backend's extension fastdescent._fastdescent_c is not available "
            f"(it did not build or does not load here): {IMPORT_ERROR}"
        ) from IMPORT_ERROR


def get_num_threads():
    """Threads the C kernels may use."""
    return int(lib.fd_get_num_threads())


def max_threads():
    """Most threads :func:`set_num_threads` accepts (``FD_MAX_THREADS``, 1024)."""
    return int(lib.FD_MAX_THREADS)


def set_num_threads(n):
    """Set the C kernels' thread count (1 <= n <= :func:`max_threads`), or 0 for OpenMP's default
    (OMP_NUM_THREADS or the CPU count). Without OpenMP, or in a process made by ``fork()``, the
    kernels stay single-threaded. ValueError (naming n) outside that range."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if n > max_threads():
        raise ValueError(f"n must be <= {max_threads()} (FD_MAX_THREADS), got {n!r}")
    rc = lib.fd_set_num_threads(int(n))
    if rc:
        raise kernel_error("set_num_threads", rc)


def apply_num_threads(n):
    """``fd.set_num_threads`` for this backend (0: OpenMP's default)."""
    set_num_threads(min(int(n), max_threads()))


def default_num_threads():
    """The thread count in force here (OpenMP's default unless set)."""
    return get_num_threads()


def get_parallel_grain():
    """Fewest elements per thread before a C kernel goes multi-threaded (0: built-in defaults)."""
    return int(lib.fd_get_parallel_grain())


def set_parallel_grain(n):
    """Set the multi-threading grain (elements per thread, >= 1), or 0 for the built-in defaults
    (65536 for the optimizer updates, 131072 for the light kernels)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    rc = lib.fd_set_parallel_grain(int(n))
    if rc:
        raise kernel_error("set_parallel_grain", rc)


def gemm_backoff():
    """The busy-machine back-off of the multi-threaded GEMMs (``fd_gemm_backoff`` in
    ``csrc/fastdescent.h``): ``{"enabled", "parallel_calls", "stalls", "stalled_s",
    "single_thread_calls", "left_s"}``: whether it is on, the multi-threaded GEMM regions run, the
    stalls among them (over 50 us slower than the calling thread alone would have been) and the
    seconds it waited for its team in those, the GEMMs run on one thread because of them, and the seconds of
    back-off left now (counters since the extension was loaded)."""
    out = ffi.new("int64_t[5]")
    lib.fd_gemm_backoff_stats(out)
    return {"enabled": bool(lib.fd_gemm_backoff(-1)), "parallel_calls": int(out[3]),
            "stalls": int(out[0]), "stalled_s": int(out[4]) / 1e9,
            "single_thread_calls": int(out[1]), "left_s": int(out[2]) / 1e9}


def set_gemm_backoff(enabled):
    """Turn the GEMMs' busy-machine back-off on (the default) or off (every GEMM then uses the
    threads its size allows, as tests of the threaded paths need). ``enabled`` must be a bool."""
    if not isinstance(enabled, (bool, np.bool_)):
        raise ValueError(f"enabled must be a bool, got {enabled!r}")
    lib.fd_gemm_backoff(1 if enabled else 0)


def gemm_avx512():
    """True if the dense-layer GEMMs use their AVX-512 micro-kernel now (on the avx2-fma path, for
    outputs at least 32 / 16 columns wide; ``fd_gemm_avx512`` in ``csrc/fastdescent.h``)."""
    return bool(lib.fd_gemm_avx512(-1))


def set_gemm_avx512(enabled):
    """Let the GEMMs use their AVX-512 micro-kernel (the default where the CPU has AVX-512F;
    KernelError where it has not) or keep them on AVX2. Same results either way. ``enabled`` must be
    a bool."""
    if not isinstance(enabled, (bool, np.bool_)):
        raise ValueError(f"enabled must be a bool, got {enabled!r}")
    rc = lib.fd_gemm_avx512(1 if enabled else 0)
    if rc < 0:
        raise kernel_error("set_gemm_avx512", rc)


_PATHS = {"generic": 0, "avx2-fma": 1}


def get_simd_path():
    """The kernel code path in use: ``"generic"`` or ``"avx2-fma"``."""
    return "avx2-fma" if lib.fd_get_simd_path() == 1 else "generic"


def set_simd_path(path):
    """Force ``"generic"`` or ``"avx2-fma"`` (KernelError if this CPU/build lacks it), or
    ``"auto"`` for the best one available."""
    if path == "auto":
        code = -1
    elif path in _PATHS:
        code = _PATHS[path]
    else:
        raise ValueError(f"path must be one of {sorted(_PATHS)} or 'auto', got {path!r}")
    rc = lib.fd_set_simd_path(code)
    if rc:
        raise kernel_error("set_simd_path", rc)


_FEATURES = [(1, "sse2"), (2, "avx"), (4, "avx2"), (8, "fma"), (16, "avx512f"), (32, "neon")]


def describe():
    """Version, build, threads, CPU features and the active code paths, for fastdescent.info()."""
    feats = int(lib.fd_cpu_features())
    omp = int(lib.fd_openmp_version())
    return {
        "version": ffi.string(lib.fd_version()).decode(),
        "build": ffi.string(lib.fd_build_info()).decode(),
        "threads": get_num_threads(),
        "parallel_grain": get_parallel_grain(),
        "openmp": bool(omp),
        "openmp_version": omp,
        "cpu_features": [name for bit, name in _FEATURES if feats & bit],
        "simd_path": get_simd_path(),
        "avx2": get_simd_path() == "avx2-fma",
        "gemm_avx512": gemm_avx512(),
        "gemm_backoff": gemm_backoff(),
    }


KERNELS = collect_kernels(__name__) if IMPORT_ERROR is None else {}

if lib is not None:  # fd.set_num_threads / FASTDESCENT_NUM_THREADS reach the library however it is
    from ... import _threads  # imported (through the registry or directly as this module)

    if _threads.requested():
        apply_num_threads(_threads.requested())
