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
  the Python-side backends; a C cast in ``csrc``) and do no further scalar arithmetic.

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

from .._contract import row as _row
from .._validate import check_flag, check_real

__all__ = ["Rule", "RULES", "register", "get", "check_scalars", "kernel_scalars", "check_real",
           "check_flag", "check_betas"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_F32 = np.dtype(np.float32)


def check_betas(betas, name="betas"):
    """A pair (beta1, beta2), each in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    check_real(f"{name}[0]", betas[0], lo=0.0, hi=1.0, hi_open=True)
    check_real(f"{name}[1]", betas[1], lo=0.0, hi=1.0, hi_open=True)


def check_scalars(scalars, where, dtype=None):
    """Raise ``ValueError`` if a per-step kernel scalar derived from valid hyperparameters is not
    finite (e.g. ``lr / (1 - beta1**t)`` overflowing for an lr near the float64 limit), or, for a
    float32 bucket, does not fit in float32 (kernels round each scalar once to the element type)."""
    lim = _FLOAT32_MAX if dtype == _F32 else math.inf
    for k, v in scalars.items():
        if not math.isfinite(v):
            raise ValueError(f"{where}: the per-step kernel scalar {k} = {v} is not finite; the "
                             "hyperparameters are too extreme for float64")
        if abs(v) > lim:
            raise ValueError(f"{where}: the per-step kernel scalar {k} = {v} overflows float32 "
                             "(the parameters' dtype)")
    return scalars


def kernel_scalars(name, scalars, dtype):
    """The scalars of contract row ``name`` as the kernels use them, in the row's order: each float
    rounded once to ``dtype`` (NumPy scalars), each flag (a name listed in the row's ``flags``, or an
    int value) as a Python int. The one rounding function of the Python-side backends (numpy, numba,
    cuda); C rounds the same float64 values with a cast."""
    r = _row(name)
    T = np.dtype(dtype).type
    out = []
    for k in r.scalars:
        v = scalars[k]
        out.append(int(v) if k in r.flags or isinstance(v, (bool, int, np.integer)) else T(v))
    return tuple(out)


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

    def state_names(self, hp):
        return self.core_state

    def init_value(self, hp, name):
        return 0.0

    def scalars(self, hp, step, first):
        raise NotImplementedError

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


from . import adagrad, adam, lamb, lion, rmsprop, sgd  # noqa: E402,F401  (each registers its rule)
