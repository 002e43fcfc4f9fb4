"""The training loop: :func:`fit` and the :class:`History` it returns."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from .._validate import check_flag, check_int
from .losses import get_loss
from .model import Sequential
from .schedulers import ReduceLROnPlateau

__all__ = ["fit", "History"]


class History:
    """Per-epoch record of a :func:`fit` run.

    Attributes
    ----------
    epoch : list of int
        Epoch numbers, starting at 1.
    history : dict of str -> list of float
        ``"loss"`` (mean training loss over the epoch's minibatches, each computed before its
        update), ``"val_loss"`` and ``"val_accuracy"`` (classification) when there is validation
        data, ``"lr"`` (the first param group's lr in force during the epoch), ``"time"`` (seconds
        for the whole epoch) and ``"train_time"`` (the minibatch loop alone). Also readable as
        attributes: ``hist.loss``, ``hist.val_accuracy`` ...
    monitor : str
        The metric watched by the convergence test, ``restore_best`` and ``ReduceLROnPlateau``.
    stop_reason : str
        ``"max_epochs"``, ``"converged"`` (tol / n_iter_no_change), ``"callback"`` or
        ``"nonfinite_loss"``.
    converged : bool
        True when training stopped on the convergence criterion.
    """

    def __init__(self, monitor="loss", params=None):
        self.epoch = []
        self.history = {}
        self.monitor = monitor
        self.params = dict(params or {})
        self.stop_reason = None
        self.converged = False
        self.restored_best = False

    def _append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __getattr__(self, name):
        hist = self.__dict__.get("history")
        if hist is not None and name in hist:
            return hist[name]
        raise AttributeError(f"'History' has no attribute {name!r} (recorded: {sorted(hist or {})})")

    def __len__(self):
        return len(self.epoch)

    @property
    def _mode_max(self):
        return self.monitor.endswith("accuracy")

    @property
    def best_epoch(self):
        """Epoch number (1-based) with the best value of :attr:`monitor` (the first on ties)."""
        values = self.history.get(self.monitor)
        if not values:
            return None
        arr = np.asarray(values, dtype=float)
        arr = np.where(np.isnan(arr), -np.inf if self._mode_max else np.inf, arr)
        return self.epoch[int(np.argmax(arr) if self._mode_max else np.argmin(arr))]

    @property
    def best(self):
        """The best value of :attr:`monitor`."""
        e = self.best_epoch
        return None if e is None else self.history[self.monitor][self.epoch.index(e)]

    @property
    def n_epochs(self):
        return len(self.epoch)

    @property
    def total_time(self):
        """Seconds spent in all epochs."""
        return float(sum(self.history.get("time", [])))

    @property
    def epoch_time(self):
        """Median seconds of the minibatch loop per epoch (excluding validation)."""
        t = self.history.get("train_time")
        return float(np.median(t)) if t else None

    def final(self, name):
        """Last recorded value of metric ``name``."""
        return self.history[name][-1]

    def as_dict(self):
        """Plain dict (JSON-serialisable): ``{"epoch": [...], <metric>: [...], ...}``."""
        out = {"epoch": list(self.epoch)}
        out.update({k: list(v) for k, v in self.history.items()})
        return out

    def plot(self, path=None, *, metrics=None, logy=None, title=None):
        """Plot the loss curve(s) (and accuracy, if recorded) and save it as a PNG.

        Parameters
        ----------
        path : str or path-like, optional
            Output file (default ``"history.png"``).
        metrics : list of str, optional
            Losses to draw on the first panel (default: ``loss`` and ``val_loss`` if present).
            Accuracy metrics, if recorded, go on a second panel.
        logy : bool, optional
            Logarithmic loss axis (default: when the loss spans more than two decades).
        title : str, optional

        Returns
        -------
        str : the path written.

        Needs matplotlib (uses its Agg canvas; the pyplot state is left alone).
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError("History.plot needs matplotlib, which is not installed: "
                              "pip install matplotlib (or pip install 'fastdescent[demo]')") from exc
        if not self.epoch:
            raise ValueError("History.plot: nothing to plot (no epoch recorded)")
        path = "history.png" if path is None else str(path)
        metrics = metrics or [m for m in ("loss", "val_loss") if m in self.history]
        for m in metrics:
            if m not in self.history:
                raise ValueError(f"metrics: {m!r} was not recorded; recorded: {sorted(self.history)}")
        accs = [m for m in ("accuracy", "val_accuracy") if m in self.history]
        fig = Figure(figsize=(9 if accs else 6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 2 if accs else 1, 1)
        vals = np.concatenate([np.asarray(self.history[m], float) for m in metrics])
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if logy is None:
            logy = vals.size > 0 and vals.max() / vals.min() > 100
        for m in metrics:
            ax.plot(self.epoch, self.history[m], marker="." if len(self.epoch) < 60 else None, label=m)
        if logy:
            ax.set_yscale("log")
        be = self.best_epoch
        if be is not None and self.monitor in metrics:
            ax.axvline(be, color="grey", ls=":", lw=1, label=f"best epoch ({be})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if accs:
            ax2 = fig.add_subplot(1, 2, 2)
            for m in accs:
                ax2.plot(self.epoch, self.history[m], label=m)
            ax2.set_xlabel("epoch")
            ax2.set_ylabel("accuracy")
            ax2.grid(True, alpha=0.3)
            ax2.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path

    def __repr__(self):
        if not self.epoch:
            return "History(empty)"
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items()
                         if k not in ("time", "train_time"))
        return (f"History({len(self.epoch)} epochs, stop_reason={self.stop_reason!r}, "
                f"best_epoch={self.best_epoch}, last: {last})")


# ---------------------------------------------------------------------------------------- checks
_as_int = check_int


def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int, a numpy Generator or None, got {seed!r}")
    return np.random.default_rng(seed)


def _schedulers(scheduler, optimizer):
    if scheduler is None:
        return []
    scheds = list(scheduler) if isinstance(scheduler, (list, tuple)) else [scheduler]
    for i, s in enumerate(scheds):
        if not callable(getattr(s, "step", None)) or not hasattr(s, "optimizer"):
            raise TypeError(f"scheduler[{i}] must be a learning-rate scheduler "
                            f"(fd.nn.StepLR(opt, ...) ...), got {type(s).__name__}")
        if s.optimizer is not optimizer:
            raise ValueError(f"scheduler[{i}] was built on a different optimizer than the one passed "
                             "to fit")
    return scheds


# ---------------------------------------------------------------------------------------- fit
def _masters(optimizer, copy=False):
    """{param index: master_param} of a fastdescent optimizer with master weights (live views, or
    copies); {} for any other optimizer."""
    from ..optim.base import Optimizer

    if not isinstance(optimizer, Optimizer):
        return {}
    out = {}
    for i, st in optimizer.state.items():
        m = st.get("master_param")
        if m is not None:
            out[i] = np.array(m, copy=True) if copy else m
    return out


def _restore_masters(optimizer, saved):
    """After the best parameters were written back: each master copy the optimizer holds gets its
    value saved with them, or (a master made since) the restored parameter's value."""
    live = _masters(optimizer)
    if not live:
        return
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, m in live.items():
        old = (saved or {}).get(i)
        m[...] = old if old is not None and old.shape == m.shape else params[i].astype(np.float32)


def fit(model, X, y, *, loss="cross_entropy", optimizer=None, epochs=10, batch_size=32, shuffle=True,
        seed=0, validation_split=None, validation_data=None, scheduler=None, scheduler_interval="epoch",
        tol=None, n_iter_no_change=10, monitor=None, restore_best=False, callback=None, progress=True,
        comm=None, shard_optimizer=False, data_sharded=False):
    """Train ``model`` on ``(X, y)`` with minibatch gradient descent; return a :class:`History`.

    Parameters
    ----------
    model : fastdescent.nn.Sequential (or MLP)
    X : array (n, in_features)
        Inputs (any real dtype; converted once to the model's dtype). For a model with one input,
        shape ``(n,)`` is accepted.
    y : array
        ``loss="cross_entropy"``: integer class labels ``(n,)`` in ``[0, out_features)``.
        ``loss="mse"``: targets ``(n, out_features)`` (or ``(n,)`` for one output).
    loss : {"cross_entropy", "mse"} or fastdescent.nn.cross_entropy / fastdescent.nn.mse
    optimizer : fastdescent optimizer, optional
        Built on the model's parameters (``fd.Adam(model.parameters(), lr=...)``); default
        ``fd.Adam(model.parameters(), lr=1e-3)`` on the model's backend.
    epochs : int, default 10
        Maximum number of epochs (passes over the training data).
    batch_size : int or None, default 32
        Minibatch size; None means full-batch gradient descent (one step per epoch). A size larger
        than the training set is clipped to it. The last minibatch of an epoch may be smaller.
    shuffle : bool, default True
        Draw a new permutation of the training data every epoch (from ``seed``).
    seed : int, numpy Generator or None, default 0
        Seeds the shuffling and the ``validation_split`` draw.
    validation_split : float in (0, 1), optional
        Hold out this fraction of ``(X, y)`` (a seeded random subset) for validation.
    validation_data : (X_val, y_val), optional
        Explicit validation set (exclusive with ``validation_split``).
    scheduler : scheduler or list of schedulers, optional
        ``fd.nn.StepLR`` ... built on ``optimizer``; stepped after every epoch (in list order, as
        torch chains them), or after every minibatch with ``scheduler_interval="step"``.
        ``ReduceLROnPlateau`` is stepped with the monitored metric, always once per epoch.
    scheduler_interval : {"epoch", "step"}, default "epoch"
        When the schedulers other than ``ReduceLROnPlateau`` step: ``"epoch"`` once after every
        epoch; ``"step"`` once after every optimizer step (every minibatch, in list order), as torch
        users drive ``OneCycleLR`` / ``CyclicLR`` -- build those with
        ``total_steps = epochs * ceil(n_train / batch_size)`` (``n_train`` after any
        ``validation_split``). A ``ReduceLROnPlateau`` in the list still steps once per epoch, with
        the epoch's monitored metric, after the epoch's last minibatch. A scheduler that refuses to
        step (``OneCycleLR`` past its ``total_steps`` raises ``ValueError``) stops ``fit`` with that
        error, as it would stop a hand-written loop. ``History.lr`` holds the lr of each epoch's
        first minibatch. The fused one-call-per-minibatch step (c / numba: Adam; c: SGD) reads the
        optimizer's lr and betas on every call, so per-step schedules are exact there too.
    tol : float or None, default None
        Convergence test (off when None): an epoch counts as "no change" when the monitored metric
        did not improve on the best value so far by more than ``tol`` (``loss >= best - tol``);
        training stops after ``n_iter_no_change`` such epochs in a row (scikit-learn's rule, with
        ``tol=0`` also stopping on an exactly flat loss).
    n_iter_no_change : int, default 10
    monitor : str, optional
        Metric for the convergence test / ``restore_best`` / ``ReduceLROnPlateau``: ``"loss"``,
        ``"val_loss"`` or ``"val_accuracy"``. Default: ``"val_loss"`` with validation data, else
        ``"loss"``.
    restore_best : bool, default False
        At the end, put back the parameters of the best epoch (by ``monitor``).
    callback : callable, optional
        ``callback(epoch, logs, model) -> bool``, called after every epoch with that epoch's metrics;
        returning True stops training.
    progress : bool, default True
        Show a tqdm progress bar over epochs (with the latest metrics); with ``comm``, on rank 0
        only.
    comm : mpi4py communicator, optional
        Data-parallel training over the ranks of ``comm`` (needs ``fastdescent[mpi]``; collective:
        every rank calls ``fit`` alike). Rank 0's parameters are broadcast first; each global
        minibatch (the rows a single process would take with the same ``batch_size`` and ``seed``)
        is cut into one contiguous piece per rank, each rank's gradient is weighted by its share of
        the rows and the gradients are summed (``fastdescent.distributed.allreduce_grads``), so the
        update is the single-process one up to float rounding, on every rank. Training loss and
        validation metrics are reduced over the ranks (each rank evaluates a slice of the
        validation set), so early stopping, ``restore_best``, ``ReduceLROnPlateau`` and callbacks
        (stopping when any rank's callback returns True) agree. An invalid argument on any rank,
        or an exception raised on one rank during training (a callback, a scheduler), raises the
        same error on every rank. The minibatch loop runs the kernel-by-kernel step (not the fused
        one-call step).
    shard_optimizer : bool, default False
        With ``comm``: shard the optimizer state over the ranks
        (:class:`fastdescent.distributed.ShardedOptimizer`, built from ``optimizer`` and its
        state). Schedulers built on ``optimizer`` keep working (the sharded one takes its
        hyperparameters before every step), and at the end ``optimizer`` holds the trained state
        (gathered). Passing a ShardedOptimizer as ``optimizer`` does the same (schedulers must then
        be built on it).
    data_sharded : bool, default False
        With ``comm``: each rank passes its own rows (``X``, ``y`` and ``validation_data`` differ
        per rank); each step takes from every rank a share of the global ``batch_size``
        proportional to its row count, and metrics are averaged over all ranks' rows. Not equal to
        a single-process run (the batches are drawn per rank), but the same estimator. A rank may
        hold no rows (or no validation rows) as long as some rank does.

    Returns
    -------
    History

    Notes
    -----
    Inputs are validated once (shapes against the model, finiteness, label range); the minibatch
    loop then only calls the closure made by :meth:`Sequential.make_train_step`, which makes kernel
    calls into buffers allocated before the first epoch. Each epoch draws a permutation of the
    training set; each minibatch's rows are gathered into a preallocated batch buffer just before its
    step (no copy of the whole set, which for large sets cost a gather through memory and fresh
    pages on every call, and the rows arrive in cache for the step that reads them).

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)); y = (X[:, 0] > 0).astype(int)
    >>> model = fd.nn.MLP([4, 16, 2], seed=0)
    >>> hist = fd.fit(model, X, y, loss="cross_entropy", optimizer=fd.Adam(model.parameters(), lr=1e-2),
    ...               epochs=30, batch_size=32, progress=False)
    >>> model.score(X, y) > 0.9
    True
    """
    if comm is None:
        if shard_optimizer is not False or data_sharded is not False:
            raise ValueError("shard_optimizer and data_sharded need comm (an mpi4py communicator)")
        return _fit(model, X, y, loss, optimizer, epochs, batch_size, shuffle, seed, validation_split,
                    validation_data, scheduler, scheduler_interval, tol, n_iter_no_change, monitor,
                    restore_best, callback, progress, None)
    shard_optimizer = check_flag("shard_optimizer", shard_optimizer)
    data_sharded = check_flag("data_sharded", data_sharded)
    from . import _parallel  # mpi4py, only when asked for (fastdescent[mpi])

    plan = _parallel.Plan(comm, shard_optimizer, data_sharded)
    try:
        return _fit(model, X, y, loss, optimizer, epochs, batch_size, shuffle, seed, validation_split,
                    validation_data, scheduler, scheduler_interval, tol, n_iter_no_change, monitor,
                    restore_best, callback, progress, plan)
    except Exception as exc:
        plan.fail(exc)  # every rank raises the first failing rank's error
        raise


def _fit(model, X, y, loss, optimizer, epochs, batch_size, shuffle, seed, validation_split,
         validation_data, scheduler, scheduler_interval, tol, n_iter_no_change, monitor, restore_best,
         callback, progress, plan):
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastdescent.nn model (Sequential, MLP), got {type(model).__name__}")
    spec = get_loss(loss)
    epochs = _as_int("epochs", epochs, 1)
    if batch_size is not None:
        batch_size = _as_int("batch_size", batch_size, 1)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    if not isinstance(restore_best, (bool, np.bool_)):
        raise TypeError(f"restore_best must be a bool, got {restore_best!r}")
    if tol is not None:
        if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, (int, float, np.integer, np.floating)):
            raise TypeError(f"tol must be a real number or None, got {tol!r}")
        tol = float(tol)
        if not math.isfinite(tol) or tol < 0:
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    n_iter_no_change = _as_int("n_iter_no_change", n_iter_no_change, 1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if not (isinstance(scheduler_interval, str) and scheduler_interval in ("epoch", "step")):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    rng = _rng(seed)

    x2, lead = model._check_X(X, "X")
    if len(lead) != 1:
        raise ValueError(f"X must have shape (n_samples, {model.in_features}), got {np.shape(X)}")
    yy = model._targets(spec, y)
    if yy.shape[0] != x2.shape[0]:
        raise ValueError(f"y has {yy.shape[0]} rows but X has {x2.shape[0]}")

    if validation_split is not None and validation_data is not None:
        raise ValueError("pass validation_split or validation_data, not both")
    xv = yv = None
    if validation_split is not None:
        if isinstance(validation_split, (bool, np.bool_)) or not isinstance(
                validation_split, (int, float, np.integer, np.floating)):
            raise TypeError(f"validation_split must be a float in (0, 1), got {validation_split!r}")
        vs = float(validation_split)
        if not 0.0 < vs < 1.0:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split!r}")
        n_all = x2.shape[0]
        n_val = int(round(n_all * vs))
        if n_val < 1 or n_all - n_val < 1:
            raise ValueError(f"validation_split={validation_split!r} of {n_all} samples leaves an empty "
                             "training or validation set")
        perm = rng.permutation(n_all)
        vidx, tidx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        xv, yv = x2[vidx], yy[vidx]
        x2, yy = x2[tidx], yy[tidx]
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        xv, vlead = model._check_X(validation_data[0], "validation_data[0]")
        if len(vlead) != 1:
            raise ValueError(f"validation_data[0] must have shape (n, {model.in_features})")
        yv = model._targets(spec, validation_data[1], "validation_data[1]")
        if yv.shape[0] != xv.shape[0]:
            raise ValueError(f"validation_data[1] has {yv.shape[0]} rows but validation_data[0] has "
                             f"{xv.shape[0]}")
        if xv.shape[0] == 0 and (plan is None or not plan.data_sharded):
            raise ValueError("validation_data is empty")
    has_val = xv is not None

    n = x2.shape[0]
    if n == 0 and (plan is None or not plan.data_sharded):
        raise ValueError("X has no rows")  # (with data_sharded, a rank may hold none)
    if monitor is None:
        monitor = "val_loss" if has_val else "loss"
    allowed = ("loss", "val_loss", "val_accuracy") if has_val else ("loss",)
    if spec.name != "cross_entropy":
        allowed = tuple(m for m in allowed if not m.endswith("accuracy"))
    if monitor not in allowed:
        raise ValueError(f"monitor must be one of {allowed} here, got {monitor!r}")
    mode_max = monitor.endswith("accuracy")

    if plan is not None:
        # every rank's inputs are valid from here on (or every rank raises the first error)
        plan.agree(n, xv.shape[0] if has_val else 0,
                   (model.arena.shapes, str(model.dtype), spec.name, epochs, batch_size,
                    bool(shuffle), type(optimizer).__name__, plan.data_sharded))
        if plan.total_train() == 0:
            raise ValueError("X has no rows on any rank")
        if has_val and plan.total_val() == 0:
            raise ValueError("validation_data is empty on every rank")
        plan.sync_params(model)
        optimizer = plan.optimizer(optimizer, model)
    elif optimizer is None:
        from ..optim import Adam
        optimizer = Adam(model.parameters(), lr=1e-3, backend=model.backend)
    # schedulers (and callbacks) edit the optimizer the caller passed, also when fit stepped a
    # ShardedOptimizer made from it (its hyperparameters follow before every step)
    user_opt = optimizer if plan is None or plan.source is None else plan.source
    scheds = _schedulers(scheduler, user_opt)
    if scheduler_interval == "step":
        # per-minibatch schedulers; ReduceLROnPlateau (needs the epoch's metric) stays per epoch
        batch_scheds = [s_ for s_ in scheds if not isinstance(s_, ReduceLROnPlateau)]
        epoch_scheds = [s_ for s_ in scheds if isinstance(s_, ReduceLROnPlateau)]
    else:
        batch_scheds, epoch_scheds = [], scheds
    bs = n if batch_size is None else min(batch_size, n)

    # ---- buffers and compiled steps, once
    K = model.in_features
    do_shuffle = bool(shuffle) and bs < n
    xp, yp = x2, yy
    steps = {}
    batches = []
    gathers = []  # per batch (rows s:e of the permutation, x buffer, y buffer) when shuffling
    n_report, n_val_report = n, (xv.shape[0] if has_val else 0)
    if plan is None:
        bufs = {}
        for s in range(0, n, bs):
            e = min(n, s + bs)
            m = e - s
            if m not in steps:
                steps[m] = _fast(model.make_train_step(optimizer, spec, rows=m))
            if do_shuffle:
                if m not in bufs:
                    bufs[m] = (np.empty((m,) + x2.shape[1:], x2.dtype),
                               np.empty((m,) + yy.shape[1:], yy.dtype))
                xb, yb = bufs[m]
                gathers.append((s, e, xb, yb))
                batches.append((steps[m], xb.reshape(1, m, K), yb, m))
            else:
                batches.append((steps[m], xp[s:e].reshape(1, m, K), yp[s:e], m))
    else:
        if do_shuffle:
            xp = np.empty_like(x2)
            yp = np.empty_like(yy)
        if plan.data_sharded:
            bs = batch_size if batch_size is not None else plan.total_train()
            bs = min(bs, plan.total_train())
            do_shuffle = bool(shuffle) and bs < plan.total_train()
            if do_shuffle and xp is x2:
                xp, yp = np.empty_like(x2), np.empty_like(yy)
        grads = model.arena.grads
        for s, e, m in plan.train_slices(n, bs):
            rows = e - s
            key = (rows, m)
            if key not in steps:
                # the loss kernel takes the 1/m of the global batch's mean: the ranks' gradients
                # are their shares of it, summed with no scaling pass; the loss returned is this
                # rank's share too (hence the weight m below)
                opt_step = plan.reduce_step(optimizer, model.arena)
                if rows:
                    steps[key] = model._compile(rows, spec, opt_step, grads, mean_rows=m)
                else:
                    steps[key] = _idle_step(model.arena, opt_step, grads)
            batches.append((steps[key], xp[s:e].reshape(1, rows, K), yp[s:e], m))
        n_report, n_val_report = plan.total_train(), plan.total_val()
        if has_val:
            vs_, ve_ = plan.val_slice(xv.shape[0])
            xv, yv = xv[vs_:ve_], yv[vs_:ve_]

    hist = History(monitor=monitor, params=dict(
        epochs=epochs, batch_size=batch_size, n_train=n_report, n_val=n_val_report,
        loss=spec.name, optimizer=type(optimizer).__name__, backend=model.backend,
        world_size=1 if plan is None else plan.size))
    best = -math.inf if mode_max else math.inf
    no_change = 0
    best_params = model.arena.flat_params.copy() if restore_best else None
    # (an optimizer with master_weights keeps float32 copies that the next step writes into the
    # parameters: they are saved and restored with them, or the first step would undo the restore)
    best_masters = _masters(optimizer, copy=True) if restore_best else None
    groups = user_opt.param_groups

    bar = None
    if progress and (plan is None or plan.rank == 0):
        try:
            from tqdm import tqdm
        except ImportError:
            warnings.warn("progress=True needs tqdm (pip install tqdm); training without a progress bar",
                          RuntimeWarning, stacklevel=2)
        else:
            bar = tqdm(total=epochs, unit="epoch", desc="fit", leave=True)

    try:
        for epoch in range(1, epochs + 1):
            lr = groups[0]["lr"]
            t0 = time.perf_counter()
            total = 0.0
            if do_shuffle:
                perm = rng.permutation(n)
                if not gathers:  # (with comm: the whole set, the ranks' slices are views of it)
                    np.take(x2, perm, axis=0, out=xp)
                    np.take(yy, perm, axis=0, out=yp)
            for k, (step, xb, yb, m) in enumerate(batches):
                if gathers:  # this minibatch's rows, into its buffer, just before its step
                    s, e, xg, yg = gathers[k]
                    # (mode="clip": the indices are a permutation, always in range; the default
                    # "raise" makes np.take gather into a temporary and copy it to out)
                    np.take(x2, perm[s:e], axis=0, out=xg, mode="clip")
                    np.take(yy, perm[s:e], axis=0, out=yg, mode="clip")
                total += step(xb, yb) * m
                for s_ in batch_scheds:
                    s_.step()
            t1 = time.perf_counter()
            if plan is None:
                logs = {"loss": total / n}
                if has_val:
                    ev = model._evaluate2(xv, yv, spec)
                    logs["val_loss"] = ev["loss"]
                    if "accuracy" in ev:
                        logs["val_accuracy"] = ev["accuracy"]
            else:
                logs = _reduced_logs(plan, model, spec, total, n_report, xv, yv, n_val_report)
            logs["lr"] = float(lr)
            t2 = time.perf_counter()
            logs["time"] = t2 - t0
            logs["train_time"] = t1 - t0
            hist._append(epoch, logs)

            value = logs[monitor]
            if not math.isfinite(logs["loss"]) or not math.isfinite(value):
                hist.stop_reason = "nonfinite_loss"
                warnings.warn(f"fit: the {'training' if not math.isfinite(logs['loss']) else monitor} "
                              f"loss became non-finite at epoch {epoch}; stopping (lower the learning "
                              "rate?)", RuntimeWarning, stacklevel=2)
                break
            improved = value > best if mode_max else value < best
            if tol is not None:
                small = (value <= best + tol) if mode_max else (value >= best - tol)
                no_change = no_change + 1 if small else 0
            if improved:
                best = value
                if best_params is not None:
                    best_params[...] = model.arena.flat_params
                    best_masters = _masters(optimizer, copy=True)
            for s_ in epoch_scheds:
                if isinstance(s_, ReduceLROnPlateau):
                    s_.step(value)
                else:
                    s_.step()
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k not in ("time", "train_time")},
                                refresh=False)
                bar.update(1)
            stop = callback is not None and bool(callback(epoch, dict(logs), model))
            if plan is not None:
                stop = plan.any(stop)  # one rank's callback stops every rank
            if stop:
                hist.stop_reason = "callback"
                break
            if tol is not None and no_change >= n_iter_no_change:
                hist.stop_reason = "converged"
                hist.converged = True
                break
        else:
            hist.stop_reason = "max_epochs"
    finally:
        if bar is not None:
            bar.close()
    if best_params is not None and math.isfinite(best):
        model.arena.flat_params[...] = best_params
        _restore_masters(optimizer, best_masters)
        hist.restored_best = True
    if plan is not None:
        if plan.source is not None:
            plan.write_back(optimizer)
        plan.finish()
    return hist



def _idle_step(arena, opt_step, grads):
    """The step of a rank with no rows in a global batch: a zero gradient, the collective step."""
    def step(x3, y):
        arena.flat_grads.fill(0)
        opt_step(grads)
        return 0.0
    return step


def _reduced_logs(plan, model, spec, total, n, xv, yv, n_val):
    """The epoch's metrics over every rank's rows (one allreduce): equal on every rank."""
    parts = [total, 0.0, 0.0]
    acc = False
    if xv is not None:
        acc = spec.name == "cross_entropy"
        if xv.shape[0]:
            ev = model._evaluate2(xv, yv, spec)
            parts[1] = ev["loss"] * xv.shape[0]
            parts[2] = ev.get("accuracy", 0.0) * xv.shape[0]
    tot = plan.sum(parts)
    logs = {"loss": float(tot[0]) / n}
    if xv is not None:
        logs["val_loss"] = float(tot[1]) / n_val
        if acc:
            logs["val_accuracy"] = float(tot[2]) / n_val
    return logs


def _fast(step):
    """The inner (1, rows, in)-only closure of a ``make_train_step(rows=...)`` callable, if it has one."""
    return getattr(step, "fast", step)
