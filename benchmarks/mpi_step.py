"""Per-step time of the data-parallel pieces over MPI, for a flat float32 model of ``--n`` parameters.

Run (2 ranks, then 1 process, one kernel thread per rank):
    mpirun -n 2 python benchmarks/mpi_step.py --n 4194304
    mpirun -n 1 python benchmarks/mpi_step.py --n 4194304
(as root add --allow-run-as-root; with more ranks than free cores add --oversubscribe and
``--mca mpi_yield_when_idle 1``, or busy-polling ranks starve each other.)

Prints, on rank 0, the median over ``--reps`` timed calls (after one warm-up, each call preceded by a
barrier) of: a local Adam step on the whole model, ShardedOptimizer(Adam).step, allreduce_grads on
the arena, and MPI's Allreduce / Reduce_scatter / Allgatherv of the same bytes alone.
"""

import argparse
import time

import numpy as np

import fastdescent as fd
import fastdescent.distributed as dist
from fastdescent.distributed import MPI


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2 ** 22)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    comm = dist.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    if "c" in fd.available_backends():
        fd.get_backend("c").set_num_threads(args.threads)
    n = args.n
    arena = fd.ParamArena([(n // 4,)] * 3 + [(n - 3 * (n // 4),)])
    arena.flat_grads[...] = np.random.default_rng(rank).normal(size=n).astype(np.float32)

    def timeit(fn):
        fn()
        comm.Barrier()
        ts = []
        for _ in range(args.reps):
            comm.Barrier()
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return 1e3 * float(np.median(ts))

    res = {}
    opt = fd.Adam(arena, lr=1e-3)
    res["Adam.step, whole model, one rank's work"] = timeit(lambda: opt.step())
    sh = dist.ShardedOptimizer(fd.Adam, arena, comm, lr=1e-3)
    res["ShardedOptimizer(Adam).step"] = timeit(lambda: sh.step())
    res["allreduce_grads(arena) + Adam.step"] = timeit(
        lambda: (dist.allreduce_grads(arena, comm), opt.step()))
    res["allreduce_grads(arena)"] = timeit(lambda: dist.allreduce_grads(arena, comm))
    g = arena.flat_grads.copy()
    res["MPI Allreduce alone, same bytes"] = timeit(
        lambda: comm.Allreduce(MPI.IN_PLACE, [g, MPI.FLOAT], op=MPI.SUM))
    counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
    displs = [sum(counts[:r]) for r in range(size)]
    recv = np.empty(counts[rank], np.float32)
    res["MPI Reduce_scatter alone"] = timeit(
        lambda: comm.Reduce_scatter([g, MPI.FLOAT], [recv, MPI.FLOAT], recvcounts=counts, op=MPI.SUM))
    res["MPI Allgatherv alone"] = timeit(
        lambda: comm.Allgatherv(MPI.IN_PLACE, [g, (counts, displs), MPI.FLOAT]))
    if rank == 0:
        print(f"{size} rank(s), {n} float32 parameters ({4 * n / 2 ** 20:.0f} MiB of gradient), "
              f"{args.threads} kernel thread(s) per rank; median ms of {args.reps}:")
        for k, v in res.items():
            print(f"  {k:42s} {v:9.2f}")
        st = sum(c for _, _, c in sh.shard_sizes)
        print(f"  optimizer state held here: {st} of {n} elements per buffer")


if __name__ == "__main__":
    main()
