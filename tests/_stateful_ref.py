"""A vectorised pure-NumPy model of an optimizer, written from SEMANTICS.md, for the property tests.

Nothing here imports fastdescent. Each update rule is the text of SEMANTICS.md as whole-array NumPy
operations in the element type ``T`` of the parameter (float32 or float64), in the textual order of
the rules, with every derived constant (``1 - beta1``, ``1 - dampening``, the bias corrections...)
computed in float64 and rounded ONCE to ``T``. NumPy's float32 ``+ - * / sqrt`` are IEEE float32
operations without fused multiply-add, so this model computes the same numbers as the literal oracle
in ``tests/reference.py`` (which it does not import: it is an independent transcription), only fast
enough to run after every operation of a hypothesis state machine.

:class:`Model` adds what the property tests need around the rules: param groups (with the
``add_param_group`` rule that missing keys come from the constructor's defaults), per-parameter step
counts (a ``None`` gradient skips its parameter: state and step unchanged, as torch), lazily created
state (a state buffer an option needs is created at the first step that needs it: zeros, or
``initial_accumulator_value`` for Adagrad's ``sum``; buffers an option no longer needs are kept),
``skip_nonfinite`` (a step whose present gradients hold a NaN/Inf changes nothing and is counted),
and state-dict snapshots.
"""

from __future__ import annotations

import copy
import math

import numpy as np

__all__ = ["DEFAULTS", "needed_state", "Model", "clip_reference"]

DEFAULTS = {
    "sgd": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                maximize=False),
    "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, decoupled_weight_decay=False),
    "adamw": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                  maximize=False, decoupled_weight_decay=True),
    "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                    maximize=False),
    "adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                    eps=1e-10, maximize=False),
}


def needed_state(kind, hp):
    """State buffers SEMANTICS.md lists for ``kind`` with options ``hp`` (``step`` aside)."""
    if kind == "sgd":
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()
    if kind in ("adam", "adamw"):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if hp["amsgrad"] else ())
    if kind == "rmsprop":
        return (("square_avg",) + (("grad_avg",) if hp["centered"] else ())
                + (("momentum_buffer",) if hp["momentum"] > 0 else ()))
    if kind == "adagrad":
        return ("sum",)
    raise KeyError(kind)


# ------------------------------------------------------------------------------------ the rules
# Each rule updates one tensor in place: p (param), g (a private copy of the gradient), st (dict of
# state arrays, already created), t (step count after incrementing). T = p.dtype.type.

def _sgd(p, g, st, t, first, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    T = p.dtype.type
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + T(weight_decay) * p
    if momentum != 0:
        b = st["momentum_buffer"]
        if first:
            b[...] = g
        else:
            b[...] = T(momentum) * b + T(1.0 - dampening) * g
        g = g + T(momentum) * b if nesterov else b.copy()
    p[...] = p - T(lr) * g


def _adam(p, g, st, t, first, *, lr, betas, eps, weight_decay, amsgrad, maximize,
          decoupled_weight_decay):
    # AdamW is Adam with decoupled_weight_decay=True (a per-group option, as in torch 2.13)
    decoupled = decoupled_weight_decay
    T = p.dtype.type
    beta1, beta2 = float(betas[0]), float(betas[1])
    bc1 = 1.0 - beta1 ** t
    bc2 = 1.0 - beta2 ** t
    if maximize:
        g = -g
    if decoupled:
        p[...] = p * T(1.0 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + T(weight_decay) * p
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m[...] = T(beta1) * m + T(1.0 - beta1) * g
    v[...] = T(beta2) * v + (T(1.0 - beta2) * g) * g
    if amsgrad:
        vmax = st["max_exp_avg_sq"]
        vmax[...] = np.maximum(vmax, v)  # NaN-propagating, over the RAW v
        vv = vmax
    else:
        vv = v
    denom = np.sqrt(vv) / T(math.sqrt(bc2)) + T(eps)
    p[...] = p - T(lr / bc1) * (m / denom)


def _rmsprop(p, g, st, t, first, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    T = p.dtype.type
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + T(weight_decay) * p
    v = st["square_avg"]
    v[...] = T(alpha) * v + (T(1.0 - alpha) * g) * g
    if centered:
        a = st["grad_avg"]
        a[...] = T(alpha) * a + T(1.0 - alpha) * g
        avg = np.sqrt(v - a * a) + T(eps)
    else:
        avg = np.sqrt(v) + T(eps)
    if momentum > 0:
        b = st["momentum_buffer"]
        b[...] = T(momentum) * b + g / avg
        p[...] = p - T(lr) * b
    else:
        p[...] = p - T(lr) * (g / avg)


def _adagrad(p, g, st, t, first, *, lr, lr_decay, weight_decay, initial_accumulator_value, eps,
             maximize):
    T = p.dtype.type
    clr = lr / (1.0 + (t - 1) * lr_decay)
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + T(weight_decay) * p
    s = st["sum"]
    s[...] = s + g * g
    p[...] = p - T(clr) * (g / (np.sqrt(s) + T(eps)))


RULES = {"sgd": _sgd, "adam": _adam, "adamw": _adam, "rmsprop": _rmsprop, "adagrad": _adagrad}


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
        rule = RULES[self.kind]
        with np.errstate(all="ignore"):
            for gi, group in enumerate(self.param_groups):
                hp = self.hypers(gi)
                names = needed_state(self.kind, self.param_groups[gi])
                for i in group["params"]:
                    if grads[i] is None:
                        continue
                    p = self.params[i]
                    st = self.state.setdefault(i, {"step": 0})
                    first = any(n not in st for n in names)
                    for n in names:
                        if n not in st:
                            fill = group["initial_accumulator_value"] if n == "sum" else 0.0
                            st[n] = np.full(p.shape, fill, dtype=p.dtype)
                    st["step"] += 1
                    arrays = {k: v for k, v in st.items() if k != "step"}
                    g = np.array(grads[i], dtype=p.dtype, copy=True)
                    rule(p, g, arrays, st["step"], first, **hp)
        return True

    # ------------------------------------------------------------------ state dicts
    def expected_state(self):
        """{index: {"step": t, name: array}} for the params that hold state arrays (SGD without
        momentum holds none: fastdescent, like torch, then has no entry for the param)."""
        return {i: st for i, st in self.state.items() if len(st) > 1}

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
        self.state = copy.deepcopy(snap["state"])


def clip_reference(grads, max_norm, norm_type):
    """(total, clipped arrays or None when the total is not finite) per SEMANTICS.md, with NumPy's
    norms in float64."""
    flat = np.concatenate([np.asarray(g, dtype=np.float64).reshape(-1) for g in grads])
    with np.errstate(all="ignore"):
        if np.isnan(flat).any():
            total = math.nan
        elif math.isinf(norm_type):
            total = float(np.max(np.abs(flat))) if flat.size else 0.0
        elif norm_type == 2.0:
            total = float(np.linalg.norm(flat)) if flat.size else 0.0
        elif norm_type == 1.0:
            total = float(np.sum(np.abs(flat)))
        else:
            total = float(np.sum(np.abs(flat) ** norm_type) ** (1.0 / norm_type))
    if not math.isfinite(total):
        return total, None
    coef = max_norm / (total + 1e-6)
    if coef >= 1.0:
        return total, [np.array(g, copy=True) for g in grads]
    return total, [np.asarray(g) * np.asarray(g).dtype.type(coef) for g in grads]
