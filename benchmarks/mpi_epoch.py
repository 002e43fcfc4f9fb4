"""Epoch time of ``fd.fit`` over MPI, with the communication of a step broken out.

Two models: ``digits`` (the 64-256-10 ReLU MLP on scikit-learn's digits, batch 64) and ``big``
(784-3072-2048-10, 8.7M float32 parameters, on ``--rows`` random rows, batch 256). Run the same
model three ways and compare the epoch times (each line is one run):

    mpirun -n 2 python benchmarks/mpi_epoch.py --model big --threads 1   # 2 ranks x 1 thread
    mpirun -n 1 python benchmarks/mpi_epoch.py --model big --threads 2   # 1 rank x 2 threads
    mpirun -n 1 python benchmarks/mpi_epoch.py --model big --threads 1   # 1 rank x 1 thread

(as root add --allow-run-as-root; with more ranks than free cores add --oversubscribe and
``--mca mpi_yield_when_idle 1``.) With one rank, ``fit`` runs without a communicator (the plain
single-process loop); ``--shard`` steps a ShardedOptimizer (ZeRO-1) instead of allreduce + Adam.

The communication is measured by handing ``fit`` a communicator whose collectives are timed: an
``MPI.Intracomm`` subclass over ``COMM_WORLD`` that adds up, per collective call, the wall time
spent inside it and the bytes of its largest buffer (the message: the whole gradient for an
``Allreduce`` or a ``Reduce_scatter``, the whole parameter vector for an ``Allgatherv``). The time
inside a collective includes waiting for the slower rank. Calls moving less than 4 KiB (the
error/skip agreements, the epoch's metrics) are counted apart. Per step = the epoch's totals / its
optimizer steps; the figures are medians over the epochs after the first. A ring allreduce moves
2(N-1)/N times the message over each rank's link (reduce-scatter + allgather: the same).

Prints on rank 0: the median epoch time (``History.epoch_time``: the minibatch loop), the steps
per epoch, and per step: the data collectives' calls, bytes and time, the small collectives' calls
and time, and that time as a share of the step.
"""

import argparse
import os
import sys
import time

import numpy as np

import fastdescent as fd
import fastdescent.distributed as dist
from fastdescent.distributed import MPI

SMALL = 4096  # bytes: below this a collective is an agreement or a metric, not model data


def _nbytes(spec):
    """Bytes of an mpi4py buffer argument (an array, or [array, ...]); 0 for MPI.IN_PLACE/None."""
    if spec is None or spec is MPI.IN_PLACE:
        return 0
    if isinstance(spec, (list, tuple)):
        spec = spec[0]
    if spec is None or spec is MPI.IN_PLACE:
        return 0
    return memoryview(spec).nbytes


class TimedComm(MPI.Intracomm):
    """``COMM_WORLD`` whose buffer collectives add their time and message bytes to counters."""

    def reset(self):
        self.data = [0, 0, 0.0]   # calls, bytes, seconds of collectives moving >= SMALL bytes
        self.small = [0, 0.0]     # calls, seconds of the others (agreements, metrics)

    def _timed(self, fn, nbytes, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t
        if nbytes >= SMALL:
            self.data[0] += 1
            self.data[1] += nbytes
            self.data[2] += dt
        else:
            self.small[0] += 1
            self.small[1] += dt
        return out

    def Allreduce(self, sendbuf, recvbuf, op=MPI.SUM):
        return self._timed(super().Allreduce, max(_nbytes(sendbuf), _nbytes(recvbuf)),
                           sendbuf, recvbuf, op)

    def Reduce_scatter(self, sendbuf, recvbuf, recvcounts=None, op=MPI.SUM):
        return self._timed(super().Reduce_scatter, _nbytes(sendbuf), sendbuf, recvbuf,
                           recvcounts, op)

    def Allgather(self, sendbuf, recvbuf):
        return self._timed(super().Allgather, _nbytes(recvbuf), sendbuf, recvbuf)

    def Allgatherv(self, sendbuf, recvbuf):
        return self._timed(super().Allgatherv, _nbytes(recvbuf), sendbuf, recvbuf)

    def Bcast(self, buf, root=0):
        return self._timed(super().Bcast, _nbytes(buf), buf, root)


_ring_reduce_scatter = dist._ring_reduce_scatter


def _timed_ring(comm, src, *args, **kwargs):
    """The ring's reduce-scatter (its messages go over a duplicate of ``comm``, which TimedComm
    does not see), timed and counted as TimedComm counts ``Reduce_scatter``."""
    if isinstance(comm, TimedComm):
        return comm._timed(_ring_reduce_scatter, src.nbytes, comm, src, *args, **kwargs)
    return _ring_reduce_scatter(comm, src, *args, **kwargs)


dist._ring_reduce_scatter = _timed_ring


def _size(nbytes):
    return f"{nbytes / 2 ** 20:.2f} MiB" if nbytes >= 2 ** 20 else f"{nbytes / 2 ** 10:.1f} KiB"


def data(model, rows, seed=0):
    if model == "digits":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "examples"))
        from digits import load_digits_split
        X, _, y, _ = load_digits_split()
        return [64, 256, 10], X, y, 64
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=rows)
    return [784, 3072, 2048, 10], X, y, 256


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("digits", "big"), default="digits")
    ap.add_argument("--epochs", type=int, default=None, help="default: 11 (digits), 4 (big)")
    ap.add_argument("--rows", type=int, default=8000, help="rows of the big model's data")
    ap.add_argument("--threads", type=int, default=1, help="kernel threads per rank")
    ap.add_argument("--backend", default="c")
    ap.add_argument("--shard", action="store_true", help="a ShardedOptimizer (ZeRO-1)")
    ap.add_argument("--algorithm", choices=("auto", "ring", "mpi"), default="auto",
                    help="the gradient reduction fit uses (its default: auto)")
    args = ap.parse_args()
    # (fit takes the default algorithm; its threshold decides: none for "ring", never for "mpi")
    dist._RING_MIN_PER_RANK = {"auto": dist._RING_MIN_PER_RANK, "ring": 0,
                               "mpi": float("inf")}[args.algorithm]
    world = dist.world()
    rank, size = world.Get_rank(), world.Get_size()
    comm = TimedComm(world) if size > 1 else None
    fd.get_backend(args.backend).set_num_threads(args.threads)
    sizes, X, y, bs = data(args.model, args.rows)
    epochs = args.epochs or (11 if args.model == "digits" else 4)
    steps = -(-X.shape[0] // bs)
    model = fd.nn.MLP(sizes, seed=0, backend=args.backend)
    n_params = model.arena.flat_params.size
    marks = []

    def mark(epoch, logs, m):
        if comm is not None:
            marks.append((tuple(comm.data), tuple(comm.small)))
            comm.reset()

    if comm is not None:
        comm.reset()
    h = fd.fit(model, X, y, optimizer=fd.Adam(model.parameters(), lr=1e-3), epochs=epochs,
               batch_size=bs, progress=False, comm=comm, shard_optimizer=args.shard,
               callback=mark)
    if rank != 0:
        return
    print(f"{args.model} {'-'.join(map(str, sizes))} ({n_params} float32 parameters, "
          f"{4 * n_params / 2 ** 20:.1f} MiB), {X.shape[0]} rows, batch {bs}, {steps} steps per "
          f"epoch; {size} rank(s) x {args.threads} thread(s), backend {args.backend}"
          f"{', sharded Adam' if args.shard else ', Adam'}")
    print(f"  epoch (median of {epochs}): {1e3 * h.epoch_time:.1f} ms, "
          f"{1e3 * h.epoch_time / steps:.2f} ms per step")
    if comm is None:
        return
    later = marks[1:] or marks
    med = lambda k: float(np.median([k(d, s) for d, s in later]))  # noqa: E731
    calls = med(lambda d, s: d[0]) / steps
    moved = med(lambda d, s: d[1]) / steps
    t_data = med(lambda d, s: d[2]) / steps
    t_small = med(lambda d, s: s[1]) / steps
    small_calls = med(lambda d, s: s[0]) / steps
    ring = 2 * (size - 1) / size * 4 * n_params
    step = h.epoch_time / steps
    print(f"  per step: data collectives {calls:.1f} call(s), {_size(moved)} of messages "
          f"(ring model: {_size(ring)} over each rank's link), {1e3 * t_data:.3f} ms inside; "
          f"small collectives {small_calls:.1f} call(s), {1e3 * t_small:.3f} ms inside; "
          f"collectives {100 * (t_data + t_small) / step:.0f}% of the step")


if __name__ == "__main__":
    main()
