"""Per-step time of the data-parallel pieces over MPI, for a flat float32 model of ``--n`` parameters.

Run (2 ranks, then 1 process, one kernel thread per rank):
    mpirun -n 2 python benchmarks/mpi_step.py --n 4194304
    mpirun -n 1 python benchmarks/mpi_step.py --n 4194304
(as root add --allow-run-as-root; with more ranks than free cores add --oversubscribe and
``--mca mpi_yield_when_idle 1``, or busy-polling ranks starve each other.)

Every case is timed once per round, in a shuffled order, for ``--reps`` rounds after a warm-up
round; each call is preceded by a barrier, and the buffers a call reduces are reset from a copy
(outside the timing) so that every case starts from the same values and the same cache state.
Prints, on rank 0, the median ms of each case and, for the gradient-averaging cases, the median
over rounds of the case's time over the bare ``Allreduce``'s time in the same round (a paired
ratio: the target for ``allreduce_grads`` on an arena is <= 1.1).

Cases: ``allreduce_grads`` on the arena (average, and ``average=False``; the default algorithm,
which takes the ring at this size, and ``algorithm='mpi'``: MPI's ``Allreduce``); the bare in-place
``Allreduce`` of the same bytes; the alternative way to average (``Reduce_scatter``, 1/N on the
local shard only, ``Allgatherv``) and its pieces alone; the 1/N pass alone; a local Adam step, the
plain data-parallel step (``allreduce_grads`` then ``Adam.step``, or the sum then
``Adam.step(grad_scale=N)``: the 1/N inside the update kernel) and ``ShardedOptimizer(Adam).step``
(the ring's reduce-scatter, and MPI's ``Reduce_scatter`` with ``algorithm='mpi'``).
"""

import argparse
import time

import numpy as np

import fastdescent as fd
import fastdescent.distributed as dist
from fastdescent.distributed import MPI

BASE = "MPI Allreduce alone, same bytes"
AVERAGING = ("allreduce_grads(arena)", "allreduce_grads(arena, average=False)",
             "allreduce_grads(arena, algorithm='mpi')",
             "allreduce_grads(arena, average=False, algorithm='mpi')",
             "Reduce_scatter + 1/N on the shard + Allgatherv", "1/N pass alone (np.multiply)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2 ** 22)
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    comm = dist.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    if "c" in fd.available_backends():
        fd.get_backend("c").set_num_threads(args.threads)
    n = args.n
    arena = fd.ParamArena([(n // 4,)] * 3 + [(n - 3 * (n // 4),)])
    fresh = np.random.default_rng(rank).normal(size=n).astype(np.float32)
    arena.flat_grads[...] = fresh
    g = arena.flat_grads  # the bare collectives reduce the same memory as allreduce_grads
    counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
    displs = [sum(counts[:r]) for r in range(size)]
    lo, hi = displs[rank], displs[rank] + counts[rank]
    shard = np.empty(counts[rank], np.float32)

    def rs_scale_ag():
        comm.Reduce_scatter([g, MPI.FLOAT], [shard, MPI.FLOAT], recvcounts=counts, op=MPI.SUM)
        np.multiply(shard, 1.0 / size, out=g[lo:hi])
        comm.Allgatherv(MPI.IN_PLACE, [g, (counts, displs), MPI.FLOAT])

    opt = fd.Adam(arena, lr=1e-3)
    sh = dist.ShardedOptimizer(fd.Adam, arena, comm, lr=1e-3)
    sh_mpi = dist.ShardedOptimizer(fd.Adam, arena, comm, lr=1e-3, algorithm="mpi")
    cases = {
        BASE: lambda: comm.Allreduce(MPI.IN_PLACE, [g, MPI.FLOAT], op=MPI.SUM),
        "allreduce_grads(arena)": lambda: dist.allreduce_grads(arena, comm),
        "allreduce_grads(arena, average=False)":
            lambda: dist.allreduce_grads(arena, comm, average=False),
        "allreduce_grads(arena, algorithm='mpi')":
            lambda: dist.allreduce_grads(arena, comm, algorithm="mpi"),
        "allreduce_grads(arena, average=False, algorithm='mpi')":
            lambda: dist.allreduce_grads(arena, comm, average=False, algorithm="mpi"),
        "Reduce_scatter + 1/N on the shard + Allgatherv": rs_scale_ag,
        "1/N pass alone (np.multiply)": lambda: np.multiply(g, 1.0 / size, out=g),
        "MPI Reduce_scatter alone": lambda: comm.Reduce_scatter(
            [g, MPI.FLOAT], [shard, MPI.FLOAT], recvcounts=counts, op=MPI.SUM),
        "MPI Allgatherv alone": lambda: comm.Allgatherv(MPI.IN_PLACE,
                                                        [g, (counts, displs), MPI.FLOAT]),
        "Adam.step, whole model, one rank's work": lambda: opt.step(),
        "allreduce_grads(arena) + Adam.step": lambda: (dist.allreduce_grads(arena, comm),
                                                       opt.step()),
        "allreduce_grads(average=False) + Adam.step(grad_scale=N)": lambda: opt.step(
            grad_scale=dist.allreduce_grads(arena, comm, average=False)),
        "ShardedOptimizer(Adam).step": lambda: sh.step(),
        "ShardedOptimizer(Adam, algorithm='mpi').step": lambda: sh_mpi.step(),
    }
    names = list(cases)
    times = {k: [] for k in names}
    order = list(names)
    shuffle = np.random.default_rng(12345)  # the same order on every rank
    for rnd in range(args.reps + 1):
        shuffle.shuffle(order)
        for k in order:
            g[...] = fresh
            comm.Barrier()
            t = time.perf_counter()
            cases[k]()
            dt = time.perf_counter() - t
            if rnd:
                times[k].append(dt)
    if rank != 0:
        return
    base = np.array(times[BASE])
    print(f"{size} rank(s), {n} float32 parameters ({4 * n / 2 ** 20:.0f} MiB of gradient), "
          f"{args.threads} kernel thread(s) per rank; median ms of {args.reps} shuffled rounds "
          f"(paired ratio: median over rounds of time / the bare Allreduce's time):")
    for k in names:
        v = np.array(times[k])
        ratio = f"   x{np.median(v / base):.3f}" if k in AVERAGING and size > 1 else ""
        print(f"  {k:58s} {1e3 * np.median(v):8.2f}{ratio}")
    st = sum(c for _, _, c in sh.shard_sizes)
    print(f"  optimizer state held here: {st} of {n} elements per buffer")


if __name__ == "__main__":
    main()
