"""Handwritten digits, data-parallel over MPI: the 64-256-10 ReLU MLP of ``digits.py`` trained by
``fd.fit(..., comm=MPI.COMM_WORLD)`` on every rank started by ``mpirun``.

Every rank loads the same split; each global minibatch of ``--batch-size`` rows is cut into one
piece per rank, the gradients are summed with one collective per step (or reduce-scattered into
a sharded Adam with ``--shard``: each rank keeps 1/N of the optimizer state), and every rank ends with
the same parameters as a single-process run with the same batch size and seed. Rank 0 prints the
held-out accuracy (target >= 96%; the exit status is 1 otherwise) and the epoch time.

Run:  mpirun -n 2 python examples/mpi_digits.py [--epochs 30] [--batch-size 64] [--shard] [--threads 1]
      (as root add --allow-run-as-root; on a machine with fewer cores than ranks, --oversubscribe)
Needs:  pip install 'fastdescent[mpi]' scikit-learn
"""

import argparse
import os
import sys


import fastdescent as fd
import fastdescent.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits import limit_threads, load_digits_split  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--shard", action="store_true", help="shard Adam's state over the ranks (ZeRO-1)")
    ap.add_argument("--threads", type=int, default=1, help="kernel threads per rank")
    args = ap.parse_args(argv)
    comm = dist.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    X_train, X_test, y_train, y_test = load_digits_split()
    with limit_threads(args.threads):
        model = fd.nn.MLP([64, 256, 10], seed=0)
        opt = fd.Adam(model.parameters(), lr=args.lr)
        hist = fd.fit(model, X_train, y_train, optimizer=opt, epochs=args.epochs,
                      batch_size=args.batch_size, validation_data=(X_test, y_test),
                      progress=rank == 0, comm=comm, shard_optimizer=args.shard)
    acc = hist.val_accuracy[-1]  # reduced over the ranks: the same number everywhere
    if rank == 0:
        print(f"{size} rank(s){' (sharded Adam)' if args.shard else ''}: test accuracy {acc:.4f} "
              f"after {hist.n_epochs} epochs, median epoch {1e3 * hist.epoch_time:.1f} ms")
    same = comm.allgather(model.arena.flat_params.tobytes())
    if rank == 0 and any(s != same[0] for s in same):
        print("the ranks' parameters differ", file=sys.stderr)
        return 1
    return 0 if acc >= 0.96 else 1


if __name__ == "__main__":
    sys.exit(main())
