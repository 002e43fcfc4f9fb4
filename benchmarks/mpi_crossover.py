"""Where the ring pays: ``allreduce_grads`` with ``algorithm='ring'`` and ``'mpi'`` (mean and sum)
against MPI's bare in-place ``Allreduce`` of the same float32 buffer, over a range of sizes, and the
ring's message size (``--pieces``). Chooses ``algorithm='auto'``'s threshold and the ring's 256 KiB
messages (``fastdescent/distributed.py``).

Run: ``mpirun -n 2 python benchmarks/mpi_crossover.py [--reps 31]`` (as root add
``--allow-run-as-root``; with more ranks than free cores ``--oversubscribe --mca
mpi_yield_when_idle 1``). Every case once per round in a shuffled order, a barrier before each
call, the buffer reset from a copy outside the timing; prints on rank 0 the median ms of the bare
``Allreduce`` and, for each case, the median over rounds of its time over the bare ``Allreduce``'s
in the same round.
"""

import argparse
import time

import numpy as np

import fastdescent.distributed as dist
from fastdescent.distributed import MPI


def _measure(comm, n, reps, cases):
    fresh = np.random.default_rng(comm.Get_rank()).normal(size=n).astype(np.float32)
    g = fresh.copy()
    names = ["Allreduce"] + list(cases)
    times = {k: [] for k in names}
    shuffle = np.random.default_rng(n)  # the same order on every rank
    for rnd in range(reps + 1):
        shuffle.shuffle(names)
        for k in names:
            g[...] = fresh
            comm.Barrier()
            t = time.perf_counter()
            if k == "Allreduce":
                comm.Allreduce(MPI.IN_PLACE, [g, MPI.FLOAT], op=MPI.SUM)
            else:
                cases[k](g)
            if rnd:
                times[k].append(time.perf_counter() - t)
    base = np.array(times["Allreduce"])
    return np.median(base), {k: np.median(np.array(times[k]) / base) for k in cases}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--sizes", default="14,16,18,19,20,21,22,24",
                    help="log2 of the float32 element counts (default: %(default)s)")
    ap.add_argument("--pieces", default="64,128,256,512,1024",
                    help="ring message sizes in KiB to compare at 2**22 elements")
    args = ap.parse_args()
    comm = dist.world()
    rank = comm.Get_rank()

    def ag(g, **kw):
        dist.allreduce_grads(g, comm, **kw)

    cases = {
        "ring mean": lambda g: ag(g, algorithm="ring"),
        "mpi mean": lambda g: ag(g, algorithm="mpi"),
        "ring sum": lambda g: ag(g, algorithm="ring", average=False),
        "mpi sum": lambda g: ag(g, algorithm="mpi", average=False),
    }
    if rank == 0:
        print(f"{comm.Get_size()} ranks; paired ratio to the bare Allreduce, median of "
              f"{args.reps} rounds")
        print(f"  {'elements':>10s} {'MiB':>7s} {'Allreduce ms':>12s} " + " ".join(
            f"{k:>10s}" for k in cases))
    for e in map(int, args.sizes.split(",")):
        ms, ratios = _measure(comm, 2 ** e, args.reps, cases)
        if rank == 0:
            print(f"  {2 ** e:>10d} {4 * 2 ** e / 2 ** 20:7.2f} {1e3 * ms:12.3f} " + " ".join(
                f"{ratios[k]:10.3f}" for k in cases), flush=True)
    default = dist._RING_PIECE
    pieces = {}
    for kib in map(int, args.pieces.split(",")):
        def run(g, kib=kib):
            dist._RING_PIECE = kib * 1024
            try:
                ag(g, algorithm="ring")
            finally:
                dist._RING_PIECE = default
        pieces[f"{kib} KiB"] = run
    ms, ratios = _measure(comm, 2 ** 22, args.reps, pieces)
    if rank == 0:
        print(f"  ring mean at 2**22 elements by message size (Allreduce {1e3 * ms:.3f} ms): "
              + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
