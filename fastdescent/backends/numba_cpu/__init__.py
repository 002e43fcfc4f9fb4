"""The ``numba`` backend: ``@njit`` kernels over tensor tables, parallel where it pays.

One jitted call per table, whatever its number of tensors: a column reaches the kernel as an int64
array of data addresses (:meth:`Table._pack`), and the kernel rebuilds typed arrays from them
(``_ptr.segment``). Work is split into fixed-size chunks of the flattened (tensor, element) space, so one
huge tensor and thousands of tiny ones both spread over the threads; small tables run the serial
variant of the same body. Options (caching, GIL release, error model, sizes) live in ``_config``.

Threads, fork and concurrency (``_threads``):

* Several Python threads may step different optimizers at once (the kernels release the GIL). Under
  Numba's ``omp`` and ``tbb`` threading layers the threaded kernels then run concurrently; under
  ``workqueue``, which is not thread-safe (concurrent launches abort the process), this package's
  threaded kernel calls are serialised by a lock.
* ``fork()``: a child forked after the parent ran a threaded kernel under a fork-unsafe layer (GNU
  OpenMP, ``omp``; Numba would kill the child with "fork() called from a process already using GNU
  OpenMP, this is unsafe.") runs the serial variant of every kernel for the rest of its life, with
  identical results. An at-fork handler (``os.register_at_fork``) sets this up; ``tbb`` and
  ``workqueue`` children, children of processes that never went threaded, and ``spawn`` /
  ``forkserver`` children keep the threaded kernels. ``describe()["threads_state"]`` shows the mode.

Arguments are checked in Python before any jitted call, by the checks every backend shares: a
missing or ``None`` required column raises ``ValueError`` naming it (``TensorTable.require``; never a
Numba ``TypingError`` after a compile), and the dense kernels raise the c backend's exception types
for arrays that do not fit together (``backends/_dense_checks``).

Importing :mod:`fastdescent` never imports this package; the registry imports it on first use. If Numba
is missing, this package still imports (with no kernels) and :func:`check_available` raises
``ImportError`` with the cause chained, which the registry reports as ``BackendUnavailableError``.
"""

from __future__ import annotations

import numpy as np

from .._table import TensorTable, addresses

NAME = "numba"
DEVICE = False

try:
    import numba as _numba
except ImportError as _exc:  # pragma: no cover - exercised only without numba
    _numba = None
    _IMPORT_ERROR = _exc
else:
    _IMPORT_ERROR = None


def check_available():
    """Raise ``ImportError`` (cause chained) if the backend cannot run here."""
    if _IMPORT_ERROR is not None:
        raise ImportError(f"the numba backend needs the 'numba' package: {_IMPORT_ERROR}") \
            from _IMPORT_ERROR


if _numba is not None:
    from . import _config, _threads
    from ._ptr import PROTOS

    class Table(TensorTable):
        """Tensor table whose columns are int64 arrays of data addresses.

        Besides the columns it holds the chunk plan every kernel body walks (the one chunk walker of
        this backend, computed once per table): the elements of all tensors, end to end, are cut
        into chunks of ``chunk`` elements (one work item of the threaded variant each), and each
        chunk into *pieces*, one per tensor it touches: ``pieces`` is an (npieces, 3) int64 array of
        ``(tensor, first element in the tensor, length)``, ``piece_starts`` (nchunks + 1) gives the
        pieces of chunk ``c`` as ``pieces[piece_starts[c]:piece_starts[c + 1]]`` (empty tensors
        have none). A body is::

            for c in prange(piece_starts.shape[0] - 1):
                for q in range(piece_starts[c], piece_starts[c + 1]):
                    t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
                    ...  # elements lo:lo+k of tensor t

        Reductions keep one partial per chunk, combined in chunk order (deterministic for a given
        plan). Also ``offsets`` (n + 1 prefix sums of the sizes), ``proto`` (an empty array of the
        dtype, which selects the compiled specialisation) and ``parallel`` (whether the table is big
        enough for the threaded variant).
        """

        def __init__(self, dtype, sizes):
            super().__init__(dtype, sizes)
            try:
                self.proto = PROTOS[self.dtype]
            except KeyError:
                raise TypeError(f"the numba backend supports float32 and float64, not {self.dtype}") \
                    from None
            offsets = np.zeros(self.n + 1, dtype=np.int64)
            np.cumsum(self.sizes, out=offsets[1:])
            self.offsets = offsets
            self.plan()

        def plan(self, chunk=None, parallel=None):
            """(Re)compute the chunk plan: ``chunk`` elements per work item (default
            ``_config.CHUNK``); ``parallel`` forces the threaded (True) or serial (False) variant,
            default: threaded when the table has at least ``_config.PARALLEL_MIN`` elements and Numba
            has more than one thread. Returns the table."""
            chunk = _config.CHUNK if chunk is None else int(chunk)
            if chunk < 1:
                raise ValueError(f"chunk must be >= 1, got {chunk}")
            self.chunk = chunk
            offsets = self.offsets
            total = int(offsets[-1])
            # piece boundaries: every tensor boundary and every chunk boundary
            bounds = np.union1d(offsets, np.arange(0, total, chunk, dtype=np.int64))
            lo, hi = bounds[:-1], bounds[1:]
            keep = hi > lo
            lo, hi = lo[keep], hi[keep]
            # the last tensor whose offset is <= lo holds element `lo` (this skips empty tensors)
            t = np.searchsorted(offsets, lo, side="right") - 1
            self.pieces = np.ascontiguousarray(np.stack([t, lo - offsets[t], hi - lo], axis=1),
                                               dtype=np.int64).reshape(-1, 3)
            nchunks = -(-total // chunk)
            self.piece_starts = np.searchsorted(lo // chunk, np.arange(nchunks + 1),
                                                side="left").astype(np.int64)
            # the tensor holding each chunk's first element (LAMB combines per-tensor partials
            # across chunks with it)
            self.chunk_first = t[self.piece_starts[:-1]].astype(np.int64)
            if parallel is None:
                parallel = self.total >= _config.PARALLEL_MIN and _numba.config.NUMBA_NUM_THREADS > 1
            self.parallel = bool(parallel)
            return self

        def _pack(self, arrays, addrs):
            if addrs is None:
                return addresses(arrays)
            return np.ascontiguousarray(addrs, dtype=np.int64)

    from .. import collect_kernels

    KERNELS = collect_kernels(__name__)
else:  # pragma: no cover
    Table = TensorTable
    KERNELS = {}


def _cache_dir():
    try:  # where Numba actually stores this backend's compiled kernels (a private attribute)
        from .adam import _adam_serial

        return _adam_serial._cache._cache_path
    except Exception:  # pragma: no cover - older/newer Numba internals
        return _numba.config.CACHE_DIR or "__pycache__ next to the kernel sources"


def apply_num_threads(n):
    """``fd.set_num_threads`` for this backend (0: Numba's default)."""
    _threads.set_requested(n)


def default_num_threads():
    """Threads a parallel kernel call uses here."""
    return _threads.threads()


def describe():
    """Numba version, threading layer, thread count, cache directory, chunking."""
    check_available()
    cfg = _numba.config
    try:
        layer = _numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        layer = f"not started (configured: {cfg.THREADING_LAYER})"
    return {
        "numba": _numba.__version__,
        "threading_layer": layer,
        "threads": _threads.threads(),
        "cache_dir": _cache_dir(),
        "chunk": _config.CHUNK,
        "parallel_min": _config.PARALLEL_MIN,
        "jit_options": dict(_config.JIT_OPTIONS),
        "threads_state": _threads.state(),
    }
