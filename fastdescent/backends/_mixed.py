"""The mixed-precision step's argument: a :class:`MixedPlan` per bucket (backend-independent).

A mixed-precision bucket is one param group's tensors of one parameter dtype (float32, bfloat16 or
float16) whose step is not the plain float32 kernel's: low-precision parameters, a float32 master
copy, state stored in bfloat16 or 8 bits, or a ``grad_scale``. Each host backend's
``mixed.mixed_step(plan, *, scalars, step, grad_scale)`` runs it: per element, the values are read
into float32 (:mod:`fastdescent.precision`), the rule's float32 update runs on them exactly as the
float32 kernel does (same order of operations, so a float32 master follows fp32 training bit for bit
given the same gradients), and the results are stored back (rounded to nearest, stochastically
rounded, or quantized per 256-element block). ``docs/low-precision.md`` is the specification.

Columns and storage codes (``fastdescent.precision``: F32, BF16, F16, Q8S, Q8U):

- ``param``: one array per tensor, all of storage ``pcode``;
- ``grad``: one array per tensor, each float32 or the parameter's dtype (``gcodes``: per tensor);
- ``master``: float32 copies of the parameters, or None;
- ``states``: the rule's state columns (:data:`STATE_COLUMNS` order), each absent (None) or a list of
  arrays of storage ``scodes[k]``, with per-tensor float32 ``scales`` (``nblocks(n)`` each) for the
  8-bit codes.

The rule's per-step scalars are those of its float32 kernel (``fastdescent._contract``).
"""

from __future__ import annotations

import numpy as np

from .. import precision as P
from ._table import addresses

__all__ = ["MIXED_RULES", "STATE_COLUMNS", "SIGNED_STATE", "MixedPlan", "GradList", "state_map"]

from ..precision import MIXED_RULES, SIGNED_STATE, state_map  # noqa: E402,F401  (re-exported)

#: the state columns of each mixed rule, in contract order
STATE_COLUMNS = {r: P.state_columns(r) for r in MIXED_RULES}
#: most state columns of a mixed rule (C: FD_MIXED_MAX_STATE)
MAX_STATE = 3


class MixedPlan:
    """Everything but the gradients and the per-step scalars of one mixed-precision bucket.

    Parameters
    ----------
    rule : str
        One of :data:`MIXED_RULES`.
    params : list of arrays
        C-contiguous parameter arrays, all of storage ``pcode``.
    pcode : int
    master : list of float32 arrays or None
    states : dict name -> (list of arrays, code, list of float32 scale arrays or None)
        Present state columns (absent ones are simply not in the dict).
    param_index : int64 array
        Each tensor's position in the optimizer's parameter list (keys the random bits).
    seed : int
    stochastic : bool
        Round the parameters (bfloat16) and bfloat16 state stochastically.
    """

    __slots__ = ("rule", "n", "sizes", "params", "pcode", "master", "states", "param_index", "seed",
                 "stochastic", "grads", "gcodes", "addr", "cache")

    def __init__(self, rule, params, pcode, master, states, param_index, seed, stochastic):
        if rule not in MIXED_RULES:
            raise ValueError(f"the mixed-precision step supports {MIXED_RULES}, not {rule!r}")
        unknown = set(states) - set(STATE_COLUMNS[rule])
        if unknown:
            raise ValueError(f"{rule}: no state column(s) {sorted(unknown)}")
        self.rule = rule
        self.params = list(params)
        self.n = len(self.params)
        self.sizes = np.array([p.size for p in self.params], dtype=np.int64)
        self.pcode = int(pcode)
        self.master = None if master is None else list(master)
        self.states = dict(states)
        self.param_index = np.ascontiguousarray(param_index, dtype=np.int64)
        self.seed = int(seed)
        self.stochastic = bool(stochastic)
        self.grads = None
        self.gcodes = None
        self.addr = {"param": addresses(self.params)}
        if self.master is not None:
            self.addr["master"] = addresses(self.master)
        for name, (arrays, _code, scales) in self.states.items():
            self.addr[name] = addresses(arrays)
            if scales is not None:
                self.addr[name + ".scale"] = addresses(scales)
        self.cache = {}  # backend-private packed forms

    def set_grads(self, grads, addrs=None):
        """The step's gradients (a list aligned with ``params``; float32 or the parameter's dtype)."""
        codes = np.empty(self.n, dtype=np.int8)
        for i, g in enumerate(grads):
            c = P.code_of_dtype(g.dtype)
            if c is None or (c != P.F32 and c != self.pcode):
                raise ValueError(f"grads: a gradient of dtype {g.dtype} for a {P.CODE_NAMES[self.pcode]} "
                                 "parameter; gradients must be float32 or the parameter's dtype")
            codes[i] = c
        self.grads = list(grads)
        self.gcodes = codes
        self.addr["grad"] = addresses(self.grads) if addrs is None else addrs
        self.cache.pop("grad", None)
        return self

    def column(self, name):
        """(arrays, code, scales) of a state column, or None if absent."""
        return self.states.get(name)


class GradList:
    """Gradients alone (float32, bfloat16 or float16), for ``grads_finite``: the attributes of a
    :class:`MixedPlan` that the check reads (``n``, ``sizes``, ``grads``, ``gcodes``,
    ``addr["grad"]``, ``cache``)."""

    __slots__ = ("n", "sizes", "grads", "gcodes", "addr", "cache")

    def __init__(self, grads):
        self.grads = list(grads)
        self.n = len(self.grads)
        self.sizes = np.array([g.size for g in self.grads], dtype=np.int64)
        codes = [P.code_of_dtype(g.dtype) for g in self.grads]
        if any(c is None for c in codes):
            raise ValueError("grads: every gradient must be float32, bfloat16 or float16")
        self.gcodes = np.array(codes, dtype=np.int8)
        self.addr = {"grad": addresses(self.grads)}
        self.cache = {}
