"""The model behind the hypothesis state machines of ``tests/test_properties.py``: an optimizer's
bookkeeping around the update rules of the oracle, ``tests/reference.py``.

Nothing here imports fastdescent. The rules, their state buffers (:func:`reference.state_names`), the
defaults and the clip-by-norm reference are :mod:`reference`'s (literal per-element loops written
from SEMANTICS.md: float32 arithmetic without fused multiply-add, in the textual order of the rules);
the property tests keep their tensors small enough for them to run after every operation.

:class:`Model` adds what the property tests need around the rules: param groups (with the
``add_param_group`` rule that missing keys come from the constructor's defaults; Adam's per-group
``decoupled_weight_decay`` option included), per-parameter step counts (a ``None`` gradient skips
its parameter: state and step unchanged, as torch), lazily created state (a state buffer an option
needs is created at the first step that needs it, by the rule: zeros, or
``initial_accumulator_value`` for Adagrad's ``sum``; buffers an option no longer needs are kept),
``skip_nonfinite`` (a step whose present gradients hold a NaN/Inf changes nothing and is counted),
and state-dict snapshots, all on NumPy arrays (scalar state, NAdam's ``mu_product``, as floats).
"""

from __future__ import annotations

import copy
import math

import numpy as np

import reference

__all__ = ["DEFAULTS", "Model", "clip_reference"]

#: :data:`reference.DEFAULTS` plus Adam's per-group ``decoupled_weight_decay`` (AdamW is Adam with
#: it on; the oracle's rule takes it as ``decoupled``)
DEFAULTS = {kind: dict(hp) for kind, hp in reference.DEFAULTS.items()}
DEFAULTS["adam"]["decoupled_weight_decay"] = False
DEFAULTS["adamw"]["decoupled_weight_decay"] = True
#: Lion's and LAMB's groups carry the proximal-L1 option ``l1`` (0: no L1 step), which the oracle's
#: rules do not take
for _kind in ("lion", "lamb"):
    DEFAULTS[_kind]["l1"] = 0.0
#: the options every optimizer (l1) and SGD (gradient noise) have beyond the rules, off by default
for _hp in DEFAULTS.values():
    _hp["l1"] = 0.0
DEFAULTS["sgd"].update(noise_std=0.0, noise_decay=0.0, seed=0)


class Model:
    """The reference optimizer: host arrays only, copies of everything it is given.

    Attributes mirror fastdescent's public surface: ``param_groups`` (hyperparameters and the global
    indices of their params), ``params`` (arrays), ``state`` ({index: {"step": t, name: array}}),
    ``skip_nonfinite``, ``last_step_skipped``, ``skipped_steps``.
    """

    def __init__(self, kind, groups, defaults, *, skip_nonfinite=False):
        self.kind = kind
        self.defaults = dict(DEFAULTS[kind])
        self.defaults.update(defaults)
        self.param_groups = []
        self.params = []
        self.state = {}
        self.skip_nonfinite = bool(skip_nonfinite)
        self.last_step_skipped = False
        self.skipped_steps = 0
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group):
        g = dict(self.defaults)
        g.update({k: v for k, v in group.items() if k != "params"})
        idx = []
        for a in group["params"]:
            idx.append(len(self.params))
            self.params.append(np.array(a, copy=True))
        g["params"] = idx
        self.param_groups.append(g)

    def hypers(self, gi):
        return {k: v for k, v in self.param_groups[gi].items() if k != "params"}

    def step(self, grads):
        """One step; returns False (and changes nothing else) if it was skipped as non-finite."""
        assert len(grads) == len(self.params)
        if self.skip_nonfinite:
            if not all(np.isfinite(g).all() for g in grads if g is not None):
                self.last_step_skipped = True
                self.skipped_steps += 1
                return False
        self.last_step_skipped = False  # as if the flag had always had its current value
        rule = reference.RULES[self.kind]
        for gi, group in enumerate(self.param_groups):
            hp = self.hypers(gi)
            post = {k: hp.pop(k) for k in reference.POST_OPTIONS if k in hp}
            if self.kind in ("adam", "adamw") and "decoupled_weight_decay" in hp:
                hp["decoupled"] = hp.pop("decoupled_weight_decay")
            for i in group["params"]:
                if grads[i] is None:
                    continue
                p = self.params[i]
                st = self.state.setdefault(i, {"step": 0})
                st["step"] += 1
                # the oracle works on flat lists of floats and creates the state it is missing;
                # scalar state (NAdam's mu_product) is a float
                lists = {k: v if isinstance(v, float) else v.reshape(-1).tolist()
                         for k, v in st.items() if k != "step"}
                g = np.asarray(grads[i], dtype=p.dtype).reshape(-1).tolist()
                new = rule(p.reshape(-1).tolist(), g, lists, st["step"], p.dtype, **hp)
                if post.get("noise_std", 0.0) > 0:
                    new = reference.noise(new, i, st["step"], p.dtype,
                                          noise_std=post["noise_std"],
                                          noise_decay=post.get("noise_decay", 0.0),
                                          seed=post.get("seed", 0))
                if post.get("l1", 0.0) > 0:
                    lr_t = reference.prox_lr(self.kind, group, st["step"])
                    new = reference.prox(new, lr_t * post["l1"], p.dtype)
                p[...] = np.array(new, dtype=p.dtype).reshape(p.shape)
                st.update({k: v if isinstance(v, float) else
                           np.array(v, dtype=p.dtype).reshape(p.shape)
                           for k, v in lists.items()})
        return True

    # ------------------------------------------------------------------ state dicts
    def expected_state(self):
        """{index: {"step": t, name: array}} for the params that have state: arrays, or a step
        count (SGD without momentum holds no array, but its step count is kept: ``{"step": t}``)."""
        return {i: st for i, st in self.state.items() if len(st) > 1 or st["step"] > 0}

    def snapshot(self):
        """What ``state_dict()`` must hold now (deep copies)."""
        groups = []
        idx = 0
        for gi, group in enumerate(self.param_groups):
            g = self.hypers(gi)
            g["params"] = list(range(idx, idx + len(group["params"])))
            idx += len(group["params"])
            groups.append(g)
        return {"state": copy.deepcopy(self.expected_state()), "param_groups": groups}

    def load(self, snap):
        """``load_state_dict(snap)`` (snap from :meth:`snapshot`, same group structure)."""
        for mine, saved in zip(self.param_groups, snap["param_groups"]):
            for k, v in saved.items():
                if k != "params":
                    mine[k] = v
            if self.kind == "adamw":  # AdamW stays decoupled through a load, as torch's AdamW
                mine["decoupled_weight_decay"] = True
        self.state = copy.deepcopy(snap["state"])


def clip_reference(grads, max_norm, norm_type):
    """(total, clipped arrays or None when the total is not finite): :func:`reference.clip_grad_norm`."""
    total, clipped = reference.clip_grad_norm(grads, max_norm, norm_type)
    return total, (clipped if math.isfinite(total) else None)
