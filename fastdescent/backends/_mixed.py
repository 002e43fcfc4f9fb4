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

__all__ = ["MIXED_RULES", "STATE_COLUMNS", "SIGNED_STATE", "SCALARS", "MixedPlan", "GradList",
           "state_map", "mixed_module", "scalar_vector", "check_columns", "check_call", "checked_grads"]

from ..precision import MIXED_RULES, SIGNED_STATE, state_map  # noqa: E402,F401  (re-exported)

#: the state columns of each mixed rule, in contract order
STATE_COLUMNS = {r: P.state_columns(r) for r in MIXED_RULES}
#: most state columns of a mixed rule (C: FD_MIXED_MAX_STATE)
MAX_STATE = 3

#: the float32 kernel's keyword scalars of each rule, in the order of the compiled kernels' vector
#: constants the numba CPU and CUDA mixed kernels share (module globals: numba freezes them into the
#: compiled code): float32 rounding and 8-bit map values, and the Philox word split
_HALF = np.float32(0.5)
_TWO_M14 = np.float32(2.0 ** -14)
_TWO_23 = np.float32(2.0 ** 23)
_QMAX = np.float32(P.QMAX)
_QCLAMP = np.float32(4.0)
_ONE = np.float32(1.0)
_FLT_MIN = np.float32(2.0 ** -126)
_NAN = np.float32(np.nan)
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)

SCALARS = {
    "adam": ("beta1", "beta2", "eps", "weight_decay", "decay", "step_size", "bias_correction2_sqrt",
             "amsgrad", "maximize"),
    "sgd": ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "first_step"),
    "rmsprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
}
#: state columns the flags of a rule's scalars need besides its required ones
_NEEDS = {
    "adam": lambda s: (s["amsgrad"] and "max_exp_avg_sq",),
    "sgd": lambda s: (s["momentum"] != 0 and "momentum_buffer",),
    "rmsprop": lambda s: (s["centered"] and "grad_avg", s["momentum"] > 0 and "momentum_buffer"),
}


def mixed_module(backend, who=""):
    """The mixed-precision step module of a backend package (``backends/<backend>/mixed.py``);
    ValueError (prefixed with ``who``) naming the backend if it has none."""
    import importlib

    try:
        return importlib.import_module(backend.__name__ + ".mixed")
    except ModuleNotFoundError:
        raise ValueError(f"{who}the {backend.NAME!r} backend has no mixed-precision step "
                         "(bfloat16/float16 parameters, 8-bit or bfloat16 state, grad_scale) yet; "
                         "use 'c', 'numba' or 'numpy' for such groups") from None


def scalar_vector(rule, scalars):
    """float64 vector of a rule's scalars in :data:`SCALARS` order (TypeError naming what is
    missing or unexpected)."""
    names = SCALARS[rule]
    extra = sorted(set(scalars) - set(names))
    missing = [k for k in names if k not in scalars]
    if extra or missing:
        raise TypeError(f"mixed_step: {rule}'s scalars are {names}; "
                        f"missing {missing}, unexpected {extra}")
    return np.array([float(scalars[k]) for k in names], dtype=np.float64)


def check_columns(plan, scalars):
    """The state columns the rule and this call's flags need are there (the float32 kernels'
    ``TensorTable.require`` message); the rest of the plan was checked when it was built."""
    from ._table import required_columns

    always = [c for c in required_columns(plan.rule) if c in STATE_COLUMNS[plan.rule]]
    for name in always + [c for c in _NEEDS[plan.rule](scalars) if c]:
        if plan.states.get(name) is None:
            why = "" if name in always else " (by this call's scalars)"
            raise ValueError(f"{plan.rule}: the column {name!r} is required{why}, but it is missing")


def check_call(plan, scalars, grad_scale):
    """The checks every backend's ``mixed_step`` makes before touching memory; returns (the
    scalar vector, the seed, grad_scale as a float)."""
    sc = scalar_vector(plan.rule, scalars)
    check_columns(plan, scalars)
    gs = float(grad_scale)
    if not (np.isfinite(gs) and gs > 0):
        raise ValueError(f"mixed_step: grad_scale must be finite and > 0, got {grad_scale!r}")
    return sc, plan.seed, gs


def checked_grads(plan, who, key):
    """(addresses, codes as int64) of the plan's gradients, checked once per ``set_grads`` and
    cached under ``plan.cache[key]``."""
    grads = plan.grads
    if grads is None:
        raise ValueError(f"{who}: the plan has no gradients (call plan.set_grads(grads) first)")
    c = plan.cache.get(key)
    if c is not None and c[0] is grads:
        return c[1], c[2]
    if len(grads) != plan.n:
        raise ValueError(f"{who}: grads holds {len(grads)} arrays for {plan.n} parameters")
    for i, g in enumerate(grads):
        if g.size != plan.sizes[i]:
            raise ValueError(f"{who}: grads[{i}] has {g.size} elements, its parameter "
                             f"{int(plan.sizes[i])}")
        if not g.flags.c_contiguous:
            raise ValueError(f"{who}: grads[{i}] is not C-contiguous")
    g_a = np.ascontiguousarray(plan.addr["grad"], dtype=np.int64)
    codes = np.ascontiguousarray(plan.gcodes, dtype=np.int64)
    plan.cache[key] = (grads, g_a, codes)
    return g_a, codes


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
                 "stochastic", "grads", "gcodes", "addr", "cache", "table")

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
        self._check()
        self.table = self._state_table()

    def _check(self):
        """The plan's invariants, checked once (every backend's kernel relies on them): param_index
        and seed in range, a master copy only for low-precision parameters, every array C-contiguous
        with its tensor's element count in its storage's item size, 8-bit columns with their
        per-block float32 scales."""
        from .._arrays import inspect

        where = f"MixedPlan({self.rule!r})"
        if self.pcode not in (P.F32, P.BF16, P.F16):
            raise ValueError(f"{where}: the parameters' storage code must be float32, bfloat16 or "
                             f"float16, got {self.pcode!r}")
        if self.param_index.shape != (self.n,) or (self.param_index < 0).any():
            raise ValueError(f"{where}: param_index must hold {self.n} values >= 0 (one per tensor), "
                             f"got {self.param_index!r}")
        if not 0 <= self.seed < 1 << 64:
            raise ValueError(f"{where}: the seed must be in [0, 2**64), got {self.seed}")
        if self.master is not None and self.pcode == P.F32:
            raise ValueError(f"{where}: a master copy is kept for bfloat16/float16 parameters only")

        def layout(arrays, what, itemsize, blocks=False):
            if len(arrays) != self.n:
                raise ValueError(f"{where}: {what} holds {len(arrays)} arrays for {self.n} tensors")
            for i, a in enumerate(arrays):
                info = inspect(a, f"{what}[{i}]")
                want = P.nblocks(self.sizes[i]) if blocks else int(self.sizes[i])
                if not info.contiguous:
                    raise ValueError(f"{where}: {what}[{i}] is not C-contiguous")
                if info.dtype.itemsize != itemsize or info.size != want:
                    raise ValueError(f"{where}: {what}[{i}] holds {info.size} elements of "
                                     f"{info.dtype}; expected {want} of {itemsize} bytes")

        layout(self.params, "params", P.storage_dtype(self.pcode).itemsize)
        if self.master is not None:
            layout(self.master, "master", 4)
        for name, (arrays, code, scales) in self.states.items():
            if code not in P.CODE_NAMES:
                raise ValueError(f"{where}: state column {name!r} has the unknown storage code "
                                 f"{code!r}")
            layout(arrays, name, P.storage_dtype(code).itemsize)
            if code in (P.Q8S, P.Q8U):
                if scales is None:
                    raise ValueError(f"{self.rule}: the 8-bit state column {name!r} has no scales")
                layout(scales, name + " scales", 4, blocks=True)

    def _state_table(self):
        """(addresses, scale addresses) as int64 (MAX_STATE, n) and the storage codes (MAX_STATE,)
        of the state columns in :data:`STATE_COLUMNS` order, -1 (and address 0) for an absent one:
        the compiled kernels' view of the state."""
        addr = np.zeros((MAX_STATE, self.n), np.int64)
        scale_addr = np.zeros((MAX_STATE, self.n), np.int64)
        codes = np.full(MAX_STATE, -1, np.int64)
        for k, name in enumerate(STATE_COLUMNS[self.rule]):
            col = self.states.get(name)
            if col is None:
                continue
            codes[k] = int(col[1])
            addr[k] = self.addr[name]
            if col[2] is not None:
                scale_addr[k] = self.addr[name + ".scale"]
        return addr, scale_addr, codes

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

    def release_grads(self):
        """Drop every reference the plan (and its backends' caches) holds to the gradients of the
        last ``set_grads``, so that their memory can be reused (torch's allocator)."""
        grads, self.grads = self.grads, None
        if grads is None:
            return
        for key in [k for k, v in self.cache.items() if isinstance(v, tuple) and v and v[0] is grads]:
            del self.cache[key]

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
