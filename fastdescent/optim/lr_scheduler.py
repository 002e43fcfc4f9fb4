"""Learning-rate schedulers with torch.optim.lr_scheduler's names, signatures and semantics.

They work on any optimizer with torch-style ``param_groups`` (every fastdescent optimizer) and set
``optimizer.param_groups[i]["lr"]`` (and, for ``OneCycleLR``/``CyclicLR`` with
``cycle_momentum=True``, ``momentum`` or ``betas[0]``); the optimizer reads them at its next step.
As in torch:

* constructing a scheduler records ``group["initial_lr"]`` (``base_lrs``) and makes the initial step
  (``last_epoch`` becomes 0; ``LinearLR`` then already scales the lr by ``start_factor``);
* ``step()`` is called once per epoch (per batch for ``OneCycleLR``/``CyclicLR``), AFTER the
  optimizer's steps;
* the updates use torch's recursive ("chainable") forms, so two schedulers stepped together (or a
  :class:`ChainedScheduler`) compose the way torch's do; ``step(epoch)`` uses the closed form
  where torch has one; values equal torch's (same operations in the same order);
* ``ReduceLROnPlateau.step(metric)`` takes the monitored value.

Constructor arguments are validated up front: a wrong type raises ``TypeError`` and a bad value
(non-finite, negative, out of range) ``ValueError``, both naming the argument. ``state_dict()``
has torch's layout; ``load_state_dict`` accepts only the keys this scheduler keeps (plus torch's
internal ``_get_lr_called_within_step``, ignored), so a torch scheduler's state loads too.

:func:`fastdescent.fit` steps the schedulers given as ``scheduler=`` after every epoch (the
plateau one with the monitored metric).

Examples
--------
>>> import numpy as np, fastdescent as fd
>>> from fastdescent.optim.lr_scheduler import StepLR
>>> opt = fd.SGD([np.zeros(3)], lr=0.1)
>>> sched = StepLR(opt, step_size=2, gamma=0.5)
>>> lrs = []
>>> for epoch in range(5):
...     lrs.append(opt.param_groups[0]["lr"])   # ... train one epoch ...
...     sched.step()
>>> lrs
[0.1, 0.1, 0.05, 0.05, 0.025]
"""

from __future__ import annotations

import bisect
import math
import types
from collections import Counter
from collections.abc import Mapping

import numpy as np

from .._validate import check_flag, check_int, check_real

__all__ = ["LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR",
           "LinearLR", "ExponentialLR", "SequentialLR", "PolynomialLR", "CosineAnnealingLR",
           "ChainedScheduler", "ReduceLROnPlateau", "CyclicLR", "CosineAnnealingWarmRestarts",
           "OneCycleLR"]

#: state_dict keys torch writes that carry no schedule state: accepted by load_state_dict, ignored
_TORCH_ONLY_KEYS = ("_get_lr_called_within_step",)


# ----------------------------------------------------------------------------------- validation
def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _real(name, value, **bounds):
    # as the optimizers' check, also taking one-element arrays/tensors (float()-convertible)
    return check_real(name, value, coerce=True, **bounds)


_int = check_int
_flag = check_flag


def _choice(name, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


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


def _per_group(name, value, groups, **limits):
    """A real number or a list/tuple of one per param group (torch's ``_format_param``)."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"{name}: expected {len(groups)} values (one per param group), "
                             f"got {len(value)}")
        return [_real(f"{name}[{i}]", v, **limits) for i, v in enumerate(value)]
    return [_real(name, value, **limits)] * len(groups)


def _lambdas(name, value, groups):
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"{name}: expected {len(groups)} functions (one per param group), "
                             f"got {len(value)}")
        fns = list(value)
    else:
        fns = [value] * len(groups)
    for i, fn in enumerate(fns):
        if not callable(fn):
            where = f"{name}[{i}]" if isinstance(value, (list, tuple)) else name
            raise TypeError(f"{where} must be a function of the epoch, got {type(fn).__name__}")
    return fns


def _momentum_key(optimizer, groups):
    """``True`` to cycle ``betas[0]`` (Adam-like), ``False`` for ``momentum`` (SGD, RMSprop)."""
    defaults = getattr(optimizer, "defaults", None)
    keys = defaults if isinstance(defaults, Mapping) else groups[0]
    if "momentum" not in keys and "betas" not in keys:
        raise ValueError(f"cycle_momentum=True needs an optimizer with 'momentum' or 'betas' "
                         f"({type(optimizer).__name__} has neither); pass cycle_momentum=False")
    return "betas" in keys


def _set_momentum(group, use_beta1, value):
    if use_beta1:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group["momentum"] = value


def _check_sub_schedulers(owner, optimizer, schedulers):
    if isinstance(schedulers, (str, bytes)) or not hasattr(schedulers, "__len__"):
        raise TypeError(f"schedulers must be a list of schedulers, got {type(schedulers).__name__}")
    schedulers = list(schedulers)
    if not schedulers:
        raise ValueError(f"{owner} needs at least one scheduler in schedulers, got none")
    for i, s in enumerate(schedulers):
        if not hasattr(s, "optimizer") or not callable(getattr(s, "step", None)):
            raise TypeError(f"schedulers[{i}] must be a learning-rate scheduler, got "
                            f"{type(s).__name__}")
        if isinstance(s, ReduceLROnPlateau):
            raise ValueError(f"schedulers[{i}] is a ReduceLROnPlateau, which {owner} cannot step "
                             "(its step needs the metric)")
        if s.optimizer is not optimizer:
            raise ValueError(f"schedulers[{i}] ({type(s).__name__}) was built on a different "
                             f"optimizer than the {owner}'s")
    return schedulers


def _load_scheduler_state(sched, state_dict, *, special=()):
    """Validate ``state_dict`` against ``sched.state_dict()``'s keys, then return a plain dict copy
    without torch-only keys. ``special`` keys are left in the copy for the caller to handle."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    known = set(sched.state_dict())
    unknown = sorted(str(k) for k in state_dict if k not in known and k not in _TORCH_ONLY_KEYS)
    if unknown:
        raise ValueError(f"state_dict has keys {unknown} that {type(sched).__name__} does not keep "
                         f"(it keeps {sorted(known)})")
    return {k: v for k, v in state_dict.items() if k not in _TORCH_ONLY_KEYS}


def _fn_states(fns):
    """torch's convention: plain functions/lambdas are not saved (``None``); callable objects save
    a copy of their ``__dict__``."""
    return [None if isinstance(fn, types.FunctionType) else dict(fn.__dict__) for fn in fns]


# ---------------------------------------------------------------------------------------- base
class LRScheduler:
    """Base class (torch.optim.lr_scheduler.LRScheduler): subclasses implement :meth:`get_lr`
    (the recursive form) and optionally ``_get_closed_form_lr`` (used by ``step(epoch)``)."""

    _is_initial = False

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
        self._initial_step()

    def _initial_step(self):
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

    def step(self, epoch=None):
        """Advance one epoch and set every group's ``lr``. Call after the epoch's optimizer steps.

        ``epoch`` (deprecated in torch, kept for compatibility) jumps to that epoch, using the
        closed-form schedule where there is one."""
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = _int("epoch", epoch, 0)
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
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
        self.__dict__.update(_load_scheduler_state(self, state_dict))

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, lr={self._last_lr})"


class _LambdaState:
    """Constructor and state_dict handling shared by LambdaLR and MultiplicativeLR (torch's)."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        self.lr_lambdas = _lambdas("lr_lambda", lr_lambda, _groups(optimizer))
        super().__init__(optimizer, last_epoch)

    def state_dict(self):
        sd = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        sd["lr_lambdas"] = _fn_states(self.lr_lambdas)
        return sd

    def load_state_dict(self, state_dict):
        sd = _load_scheduler_state(self, state_dict)
        fns = sd.pop("lr_lambdas", None)
        if fns is not None and (not isinstance(fns, (list, tuple)) or len(fns) != len(self.lr_lambdas)):
            raise ValueError(f"state_dict['lr_lambdas'] must be a list of {len(self.lr_lambdas)} "
                             f"entries, got {fns!r}")
        self.__dict__.update(sd)
        for fn, saved in zip(self.lr_lambdas, fns or ()):
            if saved is not None:
                fn.__dict__.update(saved)


class LambdaLR(_LambdaState, LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)`` (one function, or a list with one per param group)."""

    def get_lr(self):
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaState, LRScheduler):
    """Multiply the lr by ``lr_lambda(epoch)`` every epoch (from epoch 1 on)."""

    def get_lr(self):
        if self._is_initial:
            return self._lrs()
        return [lr * fn(self.last_epoch) for fn, lr in zip(self.lr_lambdas, self._lrs())]


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

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each epoch in ``milestones`` (a repeated milestone
    multiplies once per occurrence)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        if isinstance(milestones, (str, bytes, Mapping)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"milestones must be a list of ints, got {type(milestones).__name__}")
        self.milestones = Counter(_int(f"milestones[{i}]", m, 0) for i, m in enumerate(milestones))
        self.gamma = _real("gamma", gamma, lo=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._lrs()]

    def _get_closed_form_lr(self):
        ms = sorted(self.milestones.elements())
        return [base * self.gamma ** bisect.bisect_right(ms, self.last_epoch) for base in self.base_lrs]


class ConstantLR(LRScheduler):
    """Scale the lr by ``factor`` for the first ``total_iters`` epochs, then restore it.

    ``factor`` must be in (0, 1] (torch accepts 0 and then divides by zero at ``total_iters``)."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        self.factor = _real("factor", factor, lo=0.0, hi=1.0, lo_open=True)
        self.total_iters = _int("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self._lrs()]
        if self.last_epoch != self.total_iters:
            return self._lrs()
        return [lr * (1.0 / self.factor) for lr in self._lrs()]

    def _get_closed_form_lr(self):
        return [base * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
                for base in self.base_lrs]


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

    def _get_closed_form_lr(self):
        s, f = self.start_factor, self.end_factor
        return [base * (s + (f - s) * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch: ``lr = base_lr * gamma**epoch``."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _real("gamma", gamma, lo=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    """Decay the lr to 0 over ``total_iters`` epochs:
    ``lr = base_lr * (1 - min(epoch, total_iters)/total_iters)**power``."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters = _int("total_iters", total_iters, 1)
        self.power = _real("power", power, lo=0.0)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, n = self.last_epoch, self.total_iters
        if self._is_initial or e > n:
            return self._lrs()
        decay = ((1.0 - e / n) / (1.0 - (e - 1) / n)) ** self.power
        return [lr * decay for lr in self._lrs()]

    def _get_closed_form_lr(self):
        n = self.total_iters
        return [base * (1.0 - min(n, self.last_epoch) / n) ** self.power for base in self.base_lrs]


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

    def _get_closed_form_lr(self):
        lo = self.eta_min
        return [lo + (base - lo) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


# ------------------------------------------------------------------------------- combinators
class _Composite(LRScheduler):
    """state_dict handling shared by SequentialLR and ChainedScheduler (torch's)."""

    def state_dict(self):
        sd = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        sd["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return sd

    def load_state_dict(self, state_dict):
        sd = _load_scheduler_state(self, state_dict)
        subs = sd.pop("_schedulers", None)
        if subs is not None and (not isinstance(subs, (list, tuple)) or len(subs) != len(self._schedulers)):
            raise ValueError(f"state_dict['_schedulers'] must be a list of {len(self._schedulers)} "
                             "state_dicts")
        for s, saved in zip(self._schedulers, subs or ()):
            s.load_state_dict(saved)
        self.__dict__.update(sd)


class SequentialLR(_Composite):
    """Run ``schedulers[0]`` until epoch ``milestones[0]``, then ``schedulers[1]`` (restarted at
    its epoch 0, closed form where it has one), and so on (torch's semantics)."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        groups = _groups(optimizer)
        schedulers = _check_sub_schedulers("SequentialLR", optimizer, schedulers)
        if isinstance(milestones, (str, bytes, Mapping)) or not hasattr(milestones, "__len__"):
            raise TypeError(f"milestones must be a list of ints, got {type(milestones).__name__}")
        milestones = [_int(f"milestones[{i}]", m, 0) for i, m in enumerate(milestones)]
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"milestones must have one entry fewer than schedulers: got "
                             f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        last_epoch = _int("last_epoch", last_epoch, -1)
        for i, g in enumerate(groups):
            if "initial_lr" not in g:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}]")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for g in groups:  # back to the initial lrs, and undo the sub-schedulers' initial steps
            g["lr"] = g["initial_lr"]
        self.recursive_undo()
        first = self._schedulers[bisect.bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def recursive_undo(self, sched=None):
        """Take back one ``last_epoch`` from every (nested) sub-scheduler."""
        s = self if sched is None else sched
        if hasattr(s, "_schedulers"):
            for sub in s._schedulers:
                self.recursive_undo(sub)
        elif hasattr(s, "last_epoch"):
            s.last_epoch -= 1

    def step(self):
        self.last_epoch += 1
        idx = bisect.bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            s._update_lr(0)
        else:
            s.step()
        self._last_lr = s.get_last_lr()


class ChainedScheduler(_Composite):
    """Step every scheduler in ``schedulers`` (in order) on each :meth:`step`."""

    def __init__(self, schedulers, optimizer=None):
        if isinstance(schedulers, (list, tuple)) and schedulers and optimizer is None:
            optimizer = getattr(schedulers[0], "optimizer", None)
        if optimizer is not None:
            _groups(optimizer)
        self._schedulers = _check_sub_schedulers("ChainedScheduler", optimizer, schedulers)
        self.optimizer = optimizer
        self._last_lr = self._lrs()

    def step(self):
        for s in self._schedulers:
            s.step()
        self._last_lr = self._lrs()


# ----------------------------------------------------------------------------------- plateau
class ReduceLROnPlateau(LRScheduler):
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
        self.min_lrs = _per_group("min_lr", min_lr, groups, lo=0.0)
        self.default_min_lr = None if isinstance(min_lr, (list, tuple)) else self.min_lrs[0]
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

    _is_better = is_better  # torch's name

    def step(self, metrics, epoch=None):
        """Record this epoch's ``metrics`` value and reduce the lr if it has plateaued."""
        current = _metric(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else _int("epoch", epoch, 0)
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

    def __repr__(self):
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, patience={self.patience}, "
                f"best={self.best}, lr={self._last_lr})")


# ------------------------------------------------------------------------------ per-batch ones
class CyclicLR(LRScheduler):
    """Cyclical learning rate (torch's CyclicLR): the lr cycles between ``base_lr`` and ``max_lr``
    over ``step_size_up + step_size_down`` steps (``mode`` ``"triangular"``, ``"triangular2"``,
    ``"exp_range"`` or a custom ``scale_fn``); with ``cycle_momentum`` the momentum (``betas[0]``
    for Adam-like optimizers) cycles inversely between ``max_momentum`` and ``base_momentum``.
    Step it after every batch."""

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, last_epoch=-1):
        groups = _groups(optimizer)
        self.optimizer = optimizer
        last_epoch = _int("last_epoch", last_epoch, -1)
        base_lrs = _per_group("base_lr", base_lr, groups, lo=0.0)
        self.max_lrs = _per_group("max_lr", max_lr, groups, lo=0.0)
        up = float(_int("step_size_up", step_size_up, 1))
        down = up if step_size_down is None else float(_int("step_size_down", step_size_down, 0))
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"scale_fn must be a function or None, got {type(scale_fn).__name__}")
        if scale_fn is None:
            _choice("mode", mode, ("triangular", "triangular2", "exp_range"))
        self.gamma = _real("gamma", gamma, lo=0.0, lo_open=True)
        scale_mode = _choice("scale_mode", scale_mode, ("cycle", "iterations"))
        cycle_momentum = _flag("cycle_momentum", cycle_momentum)
        if cycle_momentum:
            use_beta1 = _momentum_key(optimizer, groups)
            base_ms = _per_group("base_momentum", base_momentum, groups)
            max_ms = _per_group("max_momentum", max_momentum, groups)
        if last_epoch == -1:
            for lr, g in zip(base_lrs, groups):
                g["lr"] = lr
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = mode
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = use_beta1
            self.base_momentums = base_ms
            self.max_momentums = max_ms
            if last_epoch == -1:
                for m_max, m_base, g in zip(max_ms, base_ms, groups):
                    _set_momentum(g, use_beta1, m_max)
                    g["max_momentum"] = m_max
                    g["base_momentum"] = m_base
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self):
        if self._scale_fn_custom is None and self.mode in ("triangular", "triangular2"):
            self.scale_mode = "cycle"
        elif self._scale_fn_custom is None and self.mode == "exp_range":
            self.scale_mode = "iterations"

    def scale_fn(self, x):
        """The amplitude scale at ``x`` (cycle number or iteration, per ``scale_mode``)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def get_lr(self):
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        s = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base + (top - base) * scale_factor * s for base, top in zip(self.base_lrs, self.max_lrs)]
        if self.cycle_momentum:
            for g, m_base, m_max in zip(self.optimizer.param_groups, self.base_momentums,
                                        self.max_momentums):
                _set_momentum(g, self.use_beta1, m_max - (m_max - m_base) * scale_factor * s)
        return lrs

    def state_dict(self):
        sd = super().state_dict()
        fn = sd.pop("_scale_fn_custom")
        sd["_scale_fn_custom"] = None if fn is None else _fn_states([fn])[0]
        return sd

    def load_state_dict(self, state_dict):
        sd = _load_scheduler_state(self, state_dict)
        fn = sd.pop("_scale_fn_custom", None)
        self.__dict__.update(sd)
        if fn is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(fn)
        self._init_scale_fn()


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""SGDR: cosine annealing from ``base_lr`` to ``eta_min`` over ``T_i`` epochs, restarting at
    ``base_lr``; ``T_0`` is the first period and each next one is ``T_mult`` times longer.
    ``step(epoch)`` accepts a fractional epoch (e.g. ``epoch + i / iters`` per batch)."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        self.T_0 = _int("T_0", T_0, 1)
        self.T_i = self.T_0
        self.T_mult = _int("T_mult", T_mult, 1)
        self.eta_min = _real("eta_min", eta_min, lo=0.0)
        self.T_cur = _int("last_epoch", last_epoch, -1)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lo = self.eta_min
        return [lo + (base - lo) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base in self.base_lrs]

    def step(self, epoch=None):
        """Advance one epoch, or jump to ``epoch`` (a real number >= 0)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if not isinstance(epoch, (int, np.integer)) or _is_bool(epoch):
                epoch = _real("epoch", epoch, lo=0.0)
            elif epoch < 0:
                raise ValueError(f"epoch must be >= 0, got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr
        self._last_lr = self._lrs()


class OneCycleLR(LRScheduler):
    """The 1cycle policy (torch's OneCycleLR): the lr rises from ``max_lr/div_factor`` to
    ``max_lr`` over the first ``pct_start`` of ``total_steps`` (or ``epochs * steps_per_epoch``),
    then anneals (``anneal_strategy`` ``"cos"`` or ``"linear"``) to
    ``max_lr/(div_factor*final_div_factor)``; ``three_phase=True`` comes back to the initial lr
    symmetrically first. With ``cycle_momentum`` the momentum (``betas[0]`` for Adam-like
    optimizers) moves inversely between ``max_momentum`` and ``base_momentum``. Step it after
    every batch; stepping past ``total_steps`` raises ``ValueError``.

    A phase of zero length (e.g. ``pct_start * total_steps == 1``), where torch divides zero by
    zero, ends at its end value."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        groups = _groups(optimizer)
        self.optimizer = optimizer
        last_epoch = _int("last_epoch", last_epoch, -1)
        if total_steps is not None:
            self.total_steps = _int("total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_int("epochs", epochs, 1)
                                * _int("steps_per_epoch", steps_per_epoch, 1))
        else:
            raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
        pct_start = _real("pct_start", pct_start, lo=0.0, hi=1.0)
        self._anneal_func_type = _choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
        three_phase = _flag("three_phase", three_phase)
        max_lrs = _per_group("max_lr", max_lr, groups, lo=0.0)
        div_factor = _real("div_factor", div_factor, lo=0.0, lo_open=True)
        final_div_factor = _real("final_div_factor", final_div_factor, lo=0.0, lo_open=True)
        cycle_momentum = _flag("cycle_momentum", cycle_momentum)
        if cycle_momentum:
            use_beta1 = _momentum_key(optimizer, groups)
            max_ms = _per_group("max_momentum", max_momentum, groups)
            base_ms = _per_group("base_momentum", base_momentum, groups)
        n = self.total_steps
        up = float(pct_start * n) - 1
        if three_phase:
            self._schedule_phases = [
                dict(end_step=up, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=float(2 * pct_start * n) - 2, start_lr="max_lr", end_lr="initial_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum"),
                dict(end_step=n - 1, start_lr="initial_lr", end_lr="min_lr",
                     start_momentum="max_momentum", end_momentum="max_momentum"),
            ]
        else:
            self._schedule_phases = [
                dict(end_step=up, start_lr="initial_lr", end_lr="max_lr",
                     start_momentum="max_momentum", end_momentum="base_momentum"),
                dict(end_step=n - 1, start_lr="max_lr", end_lr="min_lr",
                     start_momentum="base_momentum", end_momentum="max_momentum"),
            ]
        if last_epoch == -1:
            for top, g in zip(max_lrs, groups):
                g["initial_lr"] = top / div_factor
                g["max_lr"] = top
                g["min_lr"] = g["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = use_beta1
            if last_epoch == -1:
                for m_max, m_base, g in zip(max_ms, base_ms, groups):
                    _set_momentum(g, use_beta1, m_max)
                    g["max_momentum"] = m_max
                    g["base_momentum"] = m_base
        super().__init__(optimizer, last_epoch)

    def _anneal_func(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"Tried to step {step} times. The specified number of total steps is "
                             f"{self.total_steps}")
        lrs = []
        last = len(self._schedule_phases) - 1
        for g in self.optimizer.param_groups:
            start = 0.0
            for i, ph in enumerate(self._schedule_phases):
                end = ph["end_step"]
                if step <= end or i == last:
                    pct = (step - start) / (end - start) if end != start else 1.0
                    lrs.append(self._anneal_func(g[ph["start_lr"]], g[ph["end_lr"]], pct))
                    if self.cycle_momentum:
                        _set_momentum(g, self.use_beta1, self._anneal_func(
                            g[ph["start_momentum"]], g[ph["end_momentum"]], pct))
                    break
                start = end
        return lrs
