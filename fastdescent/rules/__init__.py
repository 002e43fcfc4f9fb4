"""One rule per optimizer: everything about an update rule that is not per-element arithmetic.

A rule (:class:`Rule`) says, for one contract row (``fastdescent/_contract.py``):

- ``defaults``: the hyperparameters and their defaults (torch.optim's, where torch has the optimizer);
- ``check(hp)``: validation of a hyperparameter dict (a param group, or the functional API's keyword
  arguments), raising ``TypeError``/``ValueError`` naming the argument;
- ``state_names(hp)``: the state buffers those options need, in contract column order, with
  ``all_state`` (every buffer the optimizer may hold) and ``core_state`` (those every parameter with
  state has) and ``init_value(hp, name)`` (their initial fill);
- ``scalars(hp, step, first)``: the kernel's per-step scalars for step number ``step`` (1 on the first
  step; ``first`` is True when the state buffers were just created), derived in float64 here and
  nowhere else. Kernels round each float scalar once to the element type (:func:`kernel_scalars` for
  the Python-side backends; a C cast in ``csrc``) and do no further scalar arithmetic;
- ``post_passes(hp, step)``: the kernel passes that follow the update in the same step, with their
  scalars: the proximal L1 pass (row ``prox``, threshold ``prox_lr(hp, step) * l1``) for a group with
  ``l1 > 0`` on every optimizer, and SGD's gradient noise (row ``noise``) before it. ``prox_lr`` is the
  learning rate in force (Adagrad's rule overrides it with the decayed ``clr``).
- ``scalar_state`` (most rules have none): per-parameter float state that is not an array and that
  the per-step scalars depend on beyond the step count (NAdam's ``mu_product``, a running product of
  values of beta1). Such a rule's ``scalars(hp, step, first, sstate)`` reads it and
  ``next_scalar_state(hp, step, sstate)`` gives its value after the step; the optimizer classes keep
  it per bucket and the functional API takes it as an argument.

The optimizer classes (``fastdescent.optim``), the functional API (``fastdescent.functional``) and the
fused training step all take their rule from here. Dependencies run one way:
``nn -> optim -> rules / functional -> backends``; this package imports neither ``optim`` nor the
backends.

Adding an optimizer: one rule (here), one contract row, one C file (``csrc/fd_<name>.c``), one file per
backend (``fastdescent/backends/*/<name>.py``), one class (``fastdescent/optim/<name>.py``), one
functional entry and one benchmark case (``tests/test_contract.py`` checks the recipe).
"""

from __future__ import annotations

import math

import numpy as np

from .._contract import kernel_scalars  # noqa: F401  (re-exported: the kernels' rounding)
from .._validate import check_flag, check_real

__all__ = ["Rule", "RULES", "register", "get", "check_scalars", "kernel_scalars", "check_real",
           "check_flag", "check_betas", "check_l1"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_F32 = np.dtype(np.float32)


def check_betas(betas, name="betas"):
    """A pair (beta1, beta2), each in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    check_real(f"{name}[0]", betas[0], lo=0.0, hi=1.0, hi_open=True)
    check_real(f"{name}[1]", betas[1], lo=0.0, hi=1.0, hi_open=True)


def check_l1(hp):
    """The proximal L1 strength of a param group (``l1``, default 0): finite and >= 0."""
    return check_real("l1", hp.get("l1", 0.0), lo=0.0)


def check_scalars(scalars, where, dtype=None):
    """Raise ``ValueError`` if a per-step kernel scalar derived from valid hyperparameters is not
    finite (e.g. ``lr / (1 - beta1**t)`` overflowing for an lr near the float64 limit), or, for a
    float32 bucket (``dtype`` float32: also bfloat16/float16 ones, computed in float32), does not fit
    in float32 (kernels round each scalar once to the element type)."""
    lim = _FLOAT32_MAX if dtype == _F32 else math.inf
    for k, v in scalars.items():
        if not math.isfinite(v):
            raise ValueError(f"{where}: the per-step kernel scalar {k} = {v} is not finite; the "
                             "hyperparameters are too extreme for float64")
        if abs(v) > lim:
            raise ValueError(f"{where}: the per-step kernel scalar {k} = {v} overflows float32 "
                             "(the dtype the kernel computes in)")
    return scalars


class Rule:
    """An optimizer's update rule, minus the per-element arithmetic (which lives in the kernels)."""

    #: contract row (``fastdescent._contract.KERNELS``) that applies this rule
    name = ""
    #: constructor hyperparameters and their defaults
    defaults = {}
    #: every state buffer the optimizer may hold, and those every parameter with state has
    all_state = ()
    core_state = ()

    def check(self, hp):
        raise NotImplementedError

    def check_group(self, hp):
        """A param group's options: the rule's hyperparameters, then the ``l1`` option every
        optimizer has (what the NumPy-facing and the torch classes both check)."""
        self.check(hp)
        check_l1(hp)

    def step_scalars(self, hp, step, first, sstate=None):
        """:meth:`scalars` for a bucket about to take step ``step``, with its scalar state if the
        rule keeps one (``sstate``; None for the rules that keep none)."""
        if sstate is None:
            return self.scalars(hp, step, first)
        return self.scalars(hp, step, first, sstate)

    def state_names(self, hp):
        return self.core_state

    def init_value(self, hp, name):
        return 0.0

    def scalars(self, hp, step, first):
        raise NotImplementedError

    def prox_lr(self, hp, step):
        """The learning rate in force at step ``step``, which scales the proximal L1 threshold
        (docs/update-rules.md "L1"): the group's ``lr``. Rules whose step size is another rate override it
        (Adagrad: the decayed ``clr``)."""
        return float(hp["lr"])

    def post_passes(self, hp, step):
        """The kernel passes that follow this rule's update at step ``step``, in order: a list of
        ``(contract row, scalars)``, empty when there are none (then nothing else is called).

        Here: the proximal L1 pass (``prox``, ``threshold = prox_lr(hp, step) * l1``) when the group
        has ``l1 > 0`` (a group option of every optimizer, checked by :func:`check_l1`). A rule
        with passes of its own puts them before this one (SGD's gradient noise), so that the step
        ends with the thresholding and its exact zeros. Rows with ``per_tensor`` arguments get them
        from the caller (the optimizer passes each tensor's parameter index)."""
        l1 = float(hp.get("l1", 0.0))
        if l1 > 0.0:
            return [("prox", {"threshold": self.prox_lr(hp, step) * l1})]
        return []
    # ---- per-parameter scalar state (rules whose scalars depend on more than the step count)
    #: ``{name: initial value}``: floats kept per parameter next to ``step`` (e.g. NAdam's
    #: ``mu_product``). Empty for most rules; then the methods below are never called.
    scalar_state = {}

    def next_scalar_state(self, hp, step, sstate):
        """The scalar state (a dict) after step number ``step`` taken from ``sstate``."""
        return sstate

    def check_scalar_state(self, name, value, where):
        """A loaded scalar-state value as a float (``ValueError`` naming ``where`` if invalid)."""
        return check_real(where, value, coerce=True)

    def __repr__(self):
        return f"<rule {self.name}>"


RULES = {}


def register(rule):
    """Add ``rule`` (an instance) to :data:`RULES` under its name; returns it."""
    RULES[rule.name] = rule
    return rule


def get(name):
    """The rule for contract row ``name``."""
    try:
        return RULES[name]
    except KeyError:
        raise KeyError(f"no rule {name!r}; known: {sorted(RULES)}") from None


from . import adadelta, adagrad, adam, adamax, lamb, lion, nadam, radam, rmsprop, rprop, sgd  # noqa: E402,F401
