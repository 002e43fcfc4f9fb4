"""Learning-rate schedulers with torch.optim.lr_scheduler's names and semantics.

They work on any optimizer with torch-style ``param_groups`` (every fastdescent optimizer) and set
``optimizer.param_groups[i]["lr"]``; the optimizer reads it at its next step. As in torch:

* constructing a scheduler records ``group["initial_lr"]`` (``base_lrs``) and makes the initial step
  (``last_epoch`` becomes 0; ``LinearLR`` then already scales the lr by ``start_factor``);
* ``step()`` is called once per epoch, AFTER that epoch's optimizer steps;
* the updates use torch's recursive ("chainable") forms, so two schedulers stepped together compose
  the way torch's do (e.g. ``LinearLR`` warm-up with ``ExponentialLR``); values match torch's to
  floating-point rounding;
* ``ReduceLROnPlateau.step(metric)`` takes the monitored value.

:func:`fastdescent.fit` steps the schedulers given as ``scheduler=`` after every epoch (the
plateau one with the monitored metric).

Examples
--------
>>> import numpy as np, fastdescent as fd
>>> opt = fd.SGD([np.zeros(3)], lr=0.1)
>>> sched = fd.nn.StepLR(opt, step_size=2, gamma=0.5)
>>> lrs = []
>>> for epoch in range(5):
...     lrs.append(opt.param_groups[0]["lr"])   # ... train one epoch ...
...     sched.step()
>>> lrs
[0.1, 0.1, 0.05, 0.05, 0.025]
"""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR",
           "ReduceLROnPlateau"]


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _real(name, value, *, lo=None, hi=None, lo_open=False, hi_open=False):
    if (_is_bool(value) or isinstance(value, (str, bytes, complex))
            or not isinstance(value, (int, float)) and not hasattr(value, "__float__")):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):  # e.g. a numpy array of several values
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return v


def _int(name, value, lo):
    if _is_bool(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _metric(value):
    """A monitored value as a float (NaN allowed: it counts as a bad epoch, as in torch)."""
    if _is_bool(value) or isinstance(value, (str, bytes, complex)) or not hasattr(value, "__float__"):
        raise TypeError(f"metrics must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metrics must be a real number, got {type(value).__name__} {value!r}") from None


def _groups(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) and "lr" in g
                                                             for g in groups):
        raise TypeError(f"optimizer must be an optimizer with param_groups (dicts with an 'lr'), "
                        f"got {type(optimizer).__name__}")
    return groups


class LRScheduler:
    """Base class (torch.optim.lr_scheduler.LRScheduler): subclasses implement :meth:`get_lr`."""

    def __init__(self, optimizer, last_epoch=-1):
        groups = _groups(optimizer)
        self.optimizer = optimizer
        last_epoch = _int("last_epoch", last_epoch, -1)
        if last_epoch == -1:
            for g in groups:
                g.setdefault("initial_lr", g["lr"])
        else:
            for i, g in enumerate(groups):
                if "initial_lr" not in g:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when "
                                   "resuming a scheduler with last_epoch >= 0")
        self.base_lrs = [g["initial_lr"] for g in groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def _lrs(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_lr(self):
        """The learning rates for epoch ``last_epoch`` (already incremented)."""
        raise NotImplementedError

    def step(self):
        """Advance one epoch and set every group's ``lr``. Call after the epoch's optimizer steps."""
        self._step_count += 1
        self.last_epoch += 1
        values = self.get_lr()
        for g, lr in zip(self.optimizer.param_groups, values):
            g["lr"] = lr
        self._last_lr = self._lrs()

    def get_last_lr(self):
        """The learning rates set by the last :meth:`step` (a list, one per param group)."""
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer (torch's layout)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` (torch's layout). Only the keys this scheduler's own
        state_dict has are accepted (never ``optimizer``); anything else raises ``ValueError`` and
        changes nothing."""
        _load_scheduler_state(self, state_dict)

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self._last_lr})"


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs:
    ``lr = base_lr * gamma**(epoch // step_size)``."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _real("gamma", gamma, lo=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch: ``lr = base_lr * gamma**epoch``."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _real("gamma", gamma, lo=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs (torch's recursive
    form; without other schedulers acting on the lr it equals
    :math:`\eta_{min} + (\eta_{base} - \eta_{min})(1 + \cos(\pi\,t/T_{max}))/2`, and it continues
    periodically past ``T_max``)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _int("T_max", T_max, 1)
        self.eta_min = _real("eta_min", eta_min, lo=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._lrs()
        if self._step_count == 1 and e > 0:
            return [lo + (base - lo) * (1 + math.cos(e * math.pi / T)) / 2 for base in self.base_lrs]
        if (e - 1 - T) % (2 * T) == 0:
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
                    for base, lr in zip(self.base_lrs, self._lrs())]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - lo) + lo
                for lr in self._lrs()]


class LinearLR(LRScheduler):
    """Scale the lr linearly from ``start_factor * base_lr`` to ``end_factor * base_lr`` over
    ``total_iters`` epochs, then keep it (a warm-up with the defaults ``start_factor=1/3``,
    ``end_factor=1``, ``total_iters=5``)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        self.start_factor = _real("start_factor", start_factor, lo=0.0, hi=1.0, lo_open=True)
        self.end_factor = _real("end_factor", end_factor, lo=0.0, hi=1.0)
        self.total_iters = _int("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e = self.last_epoch
        if e == 0:
            return [lr * self.start_factor for lr in self._lrs()]
        if self._is_initial or e > self.total_iters:
            return self._lrs()
        s, f = self.start_factor, self.end_factor
        mult = 1.0 + (f - s) / (self.total_iters * s + (e - 1) * (f - s))
        return [lr * mult for lr in self._lrs()]


class ReduceLROnPlateau:
    """Multiply the lr by ``factor`` when a metric stopped improving for ``patience`` epochs.

    Same parameters and rule as torch's: an epoch improves when ``metric < best*(1-threshold)``
    (``mode="min"``, ``threshold_mode="rel"``; ``best - threshold`` for ``"abs"``, mirrored for
    ``"max"``); after more than ``patience`` epochs without improvement every group's lr becomes
    ``max(lr*factor, min_lr)`` (if that changes it by more than ``eps``), followed by ``cooldown``
    epochs during which bad epochs are not counted.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        groups = _groups(optimizer)
        self.optimizer = optimizer
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.factor = _real("factor", factor, lo=0.0, hi=1.0, hi_open=True)
        self.patience = _int("patience", patience, 0)
        self.threshold = _real("threshold", threshold, lo=0.0)
        self.cooldown = _int("cooldown", cooldown, 0)
        self.eps = _real("eps", eps, lo=0.0)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(groups):
                raise ValueError(f"min_lr: expected {len(groups)} values (one per param group), "
                                 f"got {len(min_lr)}")
            self.min_lrs = [_real(f"min_lr[{i}]", v, lo=0.0) for i, v in enumerate(min_lr)]
        else:
            self.min_lrs = [_real("min_lr", min_lr, lo=0.0)] * len(groups)
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in groups]
        self._reset()

    def _reset(self):
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def is_better(self, a, best):
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return a < best * (1.0 - self.threshold) if rel else a < best - self.threshold
        return a > best * (self.threshold + 1.0) if rel else a > best + self.threshold

    def step(self, metrics):
        """Record this epoch's ``metrics`` value and reduce the lr if it has plateaued."""
        current = _metric(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for i, g in enumerate(self.optimizer.param_groups):
                old = float(g["lr"])
                new = max(old * self.factor, self.min_lrs[i])
                if old - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`; unknown keys raise ``ValueError`` and change nothing."""
        _load_scheduler_state(self, state_dict)

    def __repr__(self):
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, patience={self.patience}, "
                f"best={self.best}, lr={self._last_lr})")


def _load_scheduler_state(sched, state_dict):
    from collections.abc import Mapping

    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    known = set(sched.state_dict())
    unknown = sorted(str(k) for k in state_dict if k not in known)
    if unknown:
        raise ValueError(f"state_dict has keys {unknown} that {type(sched).__name__} does not keep "
                         f"(it keeps {sorted(known)})")
    sched.__dict__.update(state_dict)
