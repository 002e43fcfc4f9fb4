"""Data-parallel ``fit`` over MPI: the plan of who trains on which rows, and the collective steps.

Imported by :func:`fastdescent.fit` only when it is given a communicator (it imports mpi4py through
:mod:`fastdescent.distributed`).

Each global minibatch (the rows a single-process ``fit`` with the same ``batch_size`` and seed
would take) is cut into one contiguous piece per rank. Every rank computes the gradient of its
piece's loss summed and divided by the global batch's row count (the loss kernel's ``scale``, so
no extra pass over the gradient) and the ranks sum: the result is exactly the gradient of the
global batch's mean loss (up to float rounding), whatever the split.
"""

from __future__ import annotations

import numpy as np

from .. import distributed as _dist
from ..optim import Adam
from ..optim.base import Optimizer

MPI = _dist.MPI


def _split(n, parts):
    """Cut points of ``n`` rows into ``parts`` contiguous, nearly equal pieces."""
    base, extra = divmod(n, parts)
    cuts = [0]
    for r in range(parts):
        cuts.append(cuts[-1] + base + (1 if r < extra else 0))
    return cuts


class Plan:
    """A data-parallel fit on ``comm``: agreement, batch plan, optimizer, reductions."""

    def __init__(self, comm, shard_optimizer, data_sharded):
        self.comm = _dist._check_comm(comm, "comm")
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.shard = bool(shard_optimizer)
        self.data_sharded = bool(data_sharded)
        self.source = None  # the plain optimizer fit converted into a ShardedOptimizer

    # ---- errors: every rank raises the first failing rank's error
    def fail(self, exc):
        """Report ``exc`` (raised on this rank) to the others, which are waiting in an agreement
        (every collective of fit's loop that a rank can wait in is one: the input agreement, each
        step's, each epoch's metrics and callback agreement, the final one): every rank raises the
        first failing rank's error. An error that was already raised on every rank alike is left
        as it is."""
        if getattr(exc, "agreed", False):
            return
        _dist._agree(self.comm, exc)

    def finish(self):
        """The last agreement of a run: a rank that failed after the last epoch's agreement
        (progress bar, restore_best) reports it here instead of leaving the others waiting."""
        _dist._agree(self.comm, None)

    def agree(self, n_train, n_val, loop_args):
        """Called once every input has been checked: agree (raising everywhere on any error), check
        that every rank passed the same ``loop_args`` (the arguments that shape the training loop,
        compared through a checksum of their repr) and learn every rank's row counts."""
        got = _dist._agree(self.comm, None, (float(n_train), float(n_val), _dist._crc(loop_args)))
        if not (got[:, 2] == got[0, 2]).all():
            raise _dist._agreed(ValueError(
                "fit: the ranks passed different arguments (model shapes, loss, epochs, "
                "batch_size, shuffle or optimizer): every rank must call fit alike"))
        self.n_train = got[:, 0].astype(np.int64)
        self.n_val = got[:, 1].astype(np.int64)
        if not self.data_sharded and not ((self.n_train == self.n_train[0]).all()
                                          and (self.n_val == self.n_val[0]).all()):
            raise _dist._agreed(ValueError(
                "fit: the ranks passed data of different sizes; every rank passes the same (X, y) "
                "unless data_sharded=True"))

    # ---- the optimizer
    def optimizer(self, optimizer, model):
        if isinstance(optimizer, _dist.ShardedOptimizer):
            if optimizer._arena is not model.arena:
                raise ValueError("optimizer: a ShardedOptimizer passed to fit must be built on "
                                 "model.parameters()")
            self.shard = True
            return optimizer
        if optimizer is None:
            if self.shard:
                return _dist.ShardedOptimizer(Adam, model.parameters(), self.comm, lr=1e-3,
                                              backend=model.backend)
            return Adam(model.parameters(), lr=1e-3, backend=model.backend)
        if self.shard:
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"optimizer must be a fastdescent optimizer, got "
                                f"{type(optimizer).__name__}")
            self.source = optimizer
            return _dist.ShardedOptimizer.from_optimizer(optimizer, self.comm)
        return optimizer

    def mirror(self, sharded):
        """Copy the hyperparameters of the optimizer fit converted (which schedulers and callbacks
        edit) into the ShardedOptimizer that steps in its place."""
        for src, dst in zip(self.source.param_groups, sharded.param_groups):
            for k, v in src.items():
                if k != "params":
                    dst[k] = v

    def write_back(self, sharded):
        """Leave the converted optimizer holding the trained state (gathered from the shards), so
        that the caller's optimizer continues (or is checkpointed) where fit stopped."""
        self.mirror(sharded)
        self.source.load_state_dict(sharded.state_dict())

    def sync_params(self, model):
        """Start every rank from rank 0's parameters."""
        if self.size > 1:
            flat = model.arena.flat_params
            if flat.dtype not in _dist._MPI_TYPES:  # bfloat16/float16 storage: its raw bytes
                flat = flat.view(np.uint8)
                self.comm.Bcast(flat, root=0)
                return
            self.comm.Bcast([flat, _dist._MPI_TYPES[flat.dtype]], root=0)

    # ---- batches
    def train_slices(self, n_local, bs):
        """[(start, stop, rows of the global batch)] of this rank's rows, per step of an epoch."""
        if not self.data_sharded:
            out = []
            for s in range(0, n_local, bs):
                e = min(n_local, s + bs)
                c = _split(e - s, self.size)
                out.append((s + c[self.rank], s + c[self.rank + 1], e - s))
            return out
        n_all = self.n_train
        n = int(n_all.sum())
        steps = -(-n // bs)
        bounds = [[(j * bs * int(nr)) // n for j in range(steps)] + [int(nr)] for nr in n_all]
        out = []
        for j in range(steps):
            rows = sum(b[j + 1] - b[j] for b in bounds)
            me = bounds[self.rank]
            out.append((me[j], me[j + 1], rows))
        return out

    def val_slice(self, n_local):
        if self.data_sharded:
            return 0, n_local
        c = _split(n_local, self.size)
        return c[self.rank], c[self.rank + 1]

    def total_train(self):
        return int(self.n_train.sum()) if self.data_sharded else int(self.n_train[0])

    def total_val(self):
        return int(self.n_val.sum()) if self.data_sharded else int(self.n_val[0])

    def reduce_step(self, optimizer, arena):
        """The optimizer step run after a rank's backward pass: the local gradient (already this
        rank's share of the global batch's mean: the loss kernel scaled it by 1/rows of the global
        batch) summed over the ranks, then the update."""
        comm = self.comm
        if isinstance(optimizer, _dist.ShardedOptimizer):
            source = self.source

            def opt_step(grads):
                if source is not None:
                    self.mirror(optimizer)
                optimizer.step(reduce="sum")
        else:
            def opt_step(grads):
                _dist.allreduce_grads(arena, comm, average=False)
                optimizer.step(grads)
        return opt_step

    # ---- agreement during training (agreements, so that a failing rank can join them)
    def sum(self, values):
        """The sum over ranks of (at most 3) float values, in rank order (equal on every rank)."""
        got = _dist._agree(self.comm, None, [float(v) for v in values])
        return got.sum(axis=0)

    def any(self, flag):
        return bool(_dist._agree(self.comm, None, (1.0 if flag else 0.0,))[:, 0].any())
