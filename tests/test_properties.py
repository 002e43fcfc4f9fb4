"""Property-based tests that hunt: random sequences of operations on an optimizer, run on
every host backend at once and compared after EVERY operation with a model of SEMANTICS.md
(``tests/_stateful_ref.py``, around the oracle's rules in ``tests/reference.py``) and with
fastdescent's own ``numpy`` backend.

Operations (hypothesis ``RuleBasedStateMachine``, one machine per optimizer class):

* step with fresh gradient arrays (some ``None``: that param is skipped, state and step unchanged);
* step with the SAME gradient arrays mutated in place (the optimizer caches validation and packing
  by array identity: this is where stale-gradient bugs hide), or passed again unchanged;
* NaN/Inf injected into a gradient, with ``skip_nonfinite`` on (nothing changes, the step is counted
  as skipped) or off (IEEE arithmetic, as torch);
* toggling ``opt.skip_nonfinite`` at run time: any sequence of toggles behaves as if the flag had
  always had its current value;
* hyperparameter edits through ``opt.param_groups[i][key] = value`` (options such as amsgrad,
  centered, momentum included), and invalid edits (the step raises, nothing changes);
* ``add_param_group`` (valid, and invalid: bad hyperparameters or a param already present);
* malformed gradient lists (wrong dtype or shape: the step raises, nothing changes);
* ``state_dict()`` -> ``load_state_dict()`` into the same or a fresh optimizer; loading an older
  saved state dict (state and hyperparameters come back, params keep their values; a state dict whose
  group structure no longer fits raises and changes nothing); loading corrupted state dicts (raises,
  changes nothing: the load is atomic);
* a checkpoint round trip through ``fastdescent.checkpoint`` when that module exists.

Plus properties of the functional API (vs the optimizer classes and the model) and of
``clip_grad_norm_`` (vs the oracle's norms, NaN/Inf included, norm types 1, 2, inf and others).

Profiles: ``ci`` (the default: derandomized, no example database, so CI is deterministic and fast)
and ``long`` (random, many more examples and longer runs, with the example database), chosen with
``FASTDESCENT_HYPOTHESIS_PROFILE=long``. A failure prints the shrunk operation sequence.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import fastdescent as fd
from fastdescent import functional as F
from _stateful_ref import Model, clip_reference
from reference import SCALAR_STATE, assert_close, state_names

# ------------------------------------------------------------------------------ profiles
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
             HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=25, stateful_step_count=30, deadline=None,
                          derandomize=True, database=None, print_blob=True,
                          suppress_health_check=_SUPPRESS)
settings.register_profile("long", max_examples=600, stateful_step_count=80, deadline=None,
                          derandomize=False, print_blob=True, suppress_health_check=_SUPPRESS)
PROFILE_NAME = os.environ.get("FASTDESCENT_HYPOTHESIS_PROFILE", "ci")
PROFILE = settings.get_profile(PROFILE_NAME)

#: host backends that load here; "numpy" (the reference backend) first
BACKENDS = ["numpy"] + [b for b in fd.available_backends() if b not in ("numpy", "cuda")]

CLASSES = {"sgd": fd.SGD, "adam": fd.Adam, "adamw": fd.AdamW, "rmsprop": fd.RMSprop,
           "adagrad": fd.Adagrad, "nadam": fd.NAdam, "radam": fd.RAdam, "adamax": fd.Adamax,
           "adadelta": fd.Adadelta, "rprop": fd.Rprop,
           "lion": fd.Lion, "lamb": fd.LAMB}
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

# ------------------------------------------------------------------------------ strategies
SHAPES = st.sampled_from([(), (0,), (1,), (3,), (7,), (2, 3), (17,), (4, 5), (50,), (0, 3)])
DTYPES = st.sampled_from([F32, F64])
BAD_VALUES = st.sampled_from([math.nan, math.inf, -math.inf])

#: per optimizer: hyperparameter -> values a valid edit may take
HP_VALUES = {
    "sgd": dict(lr=[0.01, 0.05, 0.1, 0.3], momentum=[0.0, 0.5, 0.9], dampening=[0.0, 0.1, 0.5],
                weight_decay=[0.0, 0.01, 0.1], nesterov=[False, True], maximize=[False, True]),
    "adam": dict(lr=[1e-3, 0.01, 0.1], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.99), (0.99, 0.9)],
                 eps=[1e-8, 1e-6, 0.1], weight_decay=[0.0, 0.01, 0.1], amsgrad=[False, True],
                 maximize=[False, True], decoupled_weight_decay=[False, True]),
    "rmsprop": dict(lr=[1e-3, 0.01, 0.05], alpha=[0.99, 0.9, 0.5], eps=[1e-8, 1e-4],
                    weight_decay=[0.0, 0.01, 0.1], momentum=[0.0, 0.5, 0.9],
                    centered=[False, True], maximize=[False, True]),
    "adagrad": dict(lr=[0.01, 0.1, 0.5], lr_decay=[0.0, 0.1, 1.0], weight_decay=[0.0, 0.01, 0.1],
                    initial_accumulator_value=[0.0, 0.1, 1.0], eps=[1e-10, 1e-5],
                    maximize=[False, True]),
    "lion": dict(lr=[1e-3, 0.01, 0.05], betas=[(0.9, 0.99), (0.5, 0.9), (0.0, 0.99), (0.95, 0.5)],
                 weight_decay=[0.0, 0.01, 0.1], maximize=[False, True]),
    "lamb": dict(lr=[1e-3, 0.01, 0.1], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)],
                 eps=[1e-6, 1e-3], weight_decay=[0.0, 0.01, 0.1], bias_correction=[False, True],
                 maximize=[False, True]),
    "rprop": dict(lr=[0.01, 0.05, 0.2], etas=[(0.5, 1.2), (0.3, 1.5), (0.9, 1.01)],
                  step_sizes=[(1e-6, 50), (1e-3, 0.1), (0.0, 1.0)], maximize=[False, True]),
    # betas[0] in {0.5, 0.3, 0.0}: torch's lerp takes its other branch
    "adamax": dict(lr=[2e-3, 0.01, 0.1], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.99), (0.3, 0.5)],
                   eps=[1e-8, 1e-6, 0.1], weight_decay=[0.0, 0.01, 0.1], maximize=[False, True]),
    "adadelta": dict(lr=[0.1, 0.5, 1.0], rho=[0.9, 0.5, 0.0, 1.0], eps=[1e-6, 1e-3],
                     weight_decay=[0.0, 0.01, 0.1], maximize=[False, True]),
}
HP_VALUES["nadam"] = dict(lr=[1e-3, 0.01, 0.1], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)],
                          eps=[1e-8, 1e-6, 0.1], weight_decay=[0.0, 0.01, 0.1],
                          momentum_decay=[4e-3, 0.0, 0.5], maximize=[False, True],
                          decoupled_weight_decay=[False, True])
# beta2 = 0.5 never rectifies; 0.9 from step 6 on (the runs are long enough for both)
HP_VALUES["radam"] = dict(lr=[1e-3, 0.01, 0.1], betas=[(0.9, 0.999), (0.5, 0.9), (0.0, 0.5)],
                          eps=[1e-8, 1e-6, 0.1], weight_decay=[0.0, 0.01, 0.1],
                          maximize=[False, True], decoupled_weight_decay=[False, True])
HP_VALUES["adamw"] = HP_VALUES["adam"]
#: per-group keys the constructor does not take (AdamW is always decoupled; a group may say otherwise)
NOT_IN_CTOR = {"adamw": {"decoupled_weight_decay"}}

#: invalid edits: (key, value) -- each must make step() raise and change nothing
INVALID = {
    "sgd": [("lr", -0.1), ("lr", math.nan), ("momentum", -0.5), ("weight_decay", math.inf),
            ("nesterov", 1), ("lr", "0.1")],
    "adam": [("lr", -0.1), ("lr", math.nan), ("betas", (1.0, 0.9)), ("betas", (0.9,)),
             ("eps", -1.0), ("amsgrad", "yes")],
    "rmsprop": [("lr", -0.1), ("alpha", -0.5), ("eps", math.nan), ("momentum", -1.0),
                ("centered", None)],
    "adagrad": [("lr", -0.1), ("lr_decay", -1.0), ("eps", math.inf), ("weight_decay", -0.1),
                ("maximize", 0)],
    "lion": [("lr", -0.1), ("lr", math.nan), ("betas", (1.0, 0.9)), ("betas", (0.9,)),
             ("weight_decay", -1.0), ("maximize", "yes")],
    "lamb": [("lr", -0.1), ("betas", (0.9, 1.0)), ("eps", -1.0), ("weight_decay", math.nan),
             ("bias_correction", 1), ("maximize", None)],
    "rprop": [("lr", -0.1), ("etas", (1.0, 1.2)), ("etas", (0.5,)), ("step_sizes", (1.0, 0.5)),
              ("step_sizes", (0.0, math.inf)), ("maximize", 0)],
    "adamax": [("lr", -0.1), ("betas", (1.0, 0.9)), ("betas", (0.9,)), ("eps", -1.0),
               ("weight_decay", math.nan), ("maximize", 1)],
    "adadelta": [("lr", math.inf), ("rho", 1.5), ("rho", -0.1), ("eps", math.nan),
                 ("weight_decay", -0.1), ("maximize", None)],
}
INVALID["nadam"] = [("lr", -0.1), ("betas", (0.9, 1.0)), ("eps", math.nan), ("momentum_decay", -1.0),
                    ("decoupled_weight_decay", "yes"), ("maximize", 0)]
INVALID["radam"] = [("lr", math.inf), ("betas", (-0.1, 0.9)), ("eps", -1.0), ("weight_decay", -0.1),
                    ("decoupled_weight_decay", None), ("maximize", 1)]
INVALID["adamw"] = INVALID["adam"]


def fix_sgd(hp):
    """Make an SGD option set valid (nesterov needs momentum > 0 and dampening == 0)."""
    if hp.get("nesterov") and (hp.get("momentum", 0.0) <= 0 or hp.get("dampening", 0.0) != 0):
        hp["nesterov"] = False
    return hp


@st.composite
def hyper_sets(draw, kind, partial=False):
    """A dict of hyperparameters for ``kind`` (all keys, or a random subset if ``partial``)."""
    hp = {}
    for k, vals in HP_VALUES[kind].items():
        if not partial and k in NOT_IN_CTOR.get(kind, ()):
            continue
        if partial and not draw(st.booleans()):
            continue
        hp[k] = draw(st.sampled_from(vals))
    if kind == "sgd" and not partial:
        fix_sgd(hp)
    return hp


def grad_values(seed, shapes, dtypes, scale):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s) * scale, dtype=d) for s, d in zip(shapes, dtypes)]


def checkpoint_api():
    """(save_checkpoint, load_checkpoint) or the reason they cannot be used."""
    try:
        from fastdescent.checkpoint import load_checkpoint, save_checkpoint
    except Exception as exc:  # ImportError, or a half-written module
        return None, f"fastdescent.checkpoint is not importable ({type(exc).__name__}: {exc})"
    return (save_checkpoint, load_checkpoint), None


def _call_checkpoint(fn, path, opt):
    """Call save/load_checkpoint whichever way round it takes (path, optimizer)."""
    params = inspect.signature(fn).parameters
    if "optimizer" in params:
        return fn(path, optimizer=opt)
    names = list(params)
    if names and names[0] in ("path", "file", "filename", "f", "fname", "dst", "src"):
        return fn(path, opt)
    return fn(opt, path)


# ------------------------------------------------------------------------------ the machine
class OptimizerMachine(RuleBasedStateMachine):
    """One optimizer per host backend plus the model, driven through the same operations."""

    kind = None  # set by the subclasses below

    def __init__(self):
        super().__init__()
        self.model = None

    # .................................................................. helpers
    @property
    def n(self):
        return len(self.model.params)

    def _shapes(self):
        return [p.shape for p in self.model.params]

    def _dtypes(self):
        return [p.dtype for p in self.model.params]

    def _snapshot_all(self):
        """Host copies of everything observable, per backend (for 'nothing changed' checks)."""
        out = {}
        for b, opt in self.opts.items():
            out[b] = dict(
                params=[p.copy() for p in self.params[b]],
                state={i: {k: (v if k == "step" else np.array(v, copy=True)) for k, v in s.items()}
                       for i, s in opt.state.items()},
                groups=[{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
                sizes=[len(g["params"]) for g in opt.param_groups],
                flags=(opt.skip_nonfinite, opt.last_step_skipped, opt.skipped_steps),
            )
        return out

    def _assert_unchanged(self, before, what):
        after = self._snapshot_all()
        for b in self.opts:
            x, y = before[b], after[b]
            for i, (p, q) in enumerate(zip(x["params"], y["params"])):
                np.testing.assert_array_equal(q, p, err_msg=f"{b}: {what} changed params[{i}]")
            assert x["state"].keys() == y["state"].keys(), f"{b}: {what} changed the state keys"
            for i in x["state"]:
                assert x["state"][i].keys() == y["state"][i].keys(), f"{b}: {what} state[{i}] names"
                for k, v in x["state"][i].items():
                    np.testing.assert_array_equal(y["state"][i][k], v,
                                                  err_msg=f"{b}: {what} changed state[{i}][{k!r}]")
            assert y["sizes"] == x["sizes"], f"{b}: {what} changed the param groups"
            assert len(y["groups"]) == len(x["groups"])
            for gi, (g0, g1) in enumerate(zip(x["groups"], y["groups"])):
                assert _same_hypers(g1, g0), f"{b}: {what} changed param_groups[{gi}]: {g0} -> {g1}"
            assert y["flags"] == x["flags"], f"{b}: {what} changed skip flags {x['flags']} -> {y['flags']}"

    def _do_step(self, grads_per_backend, values):
        """Step every backend and the model; check the returned flag."""
        expect = self.model.step(values)
        for b, opt in self.opts.items():
            got = opt.step(grads_per_backend[b])
            assert got is expect, f"{b}: step() returned {got!r}, the model {expect!r}"
            self.grads[b] = grads_per_backend[b]

    def _new_grads(self, values):
        return {b: [None if v is None else v.copy() for v in values] for b in self.opts}

    def _make_opt(self, backend, groups, skip):
        return CLASSES[self.kind](groups, **self.ctor_hp, backend=backend, skip_nonfinite=skip)

    # .................................................................. setup
    @initialize(shapes=st.lists(SHAPES, min_size=1, max_size=4),
                dtypes=st.lists(DTYPES, min_size=4, max_size=4),
                data=st.data(), skip=st.booleans(), seed=st.integers(0, 2 ** 16))
    def setup(self, shapes, dtypes, data, skip, seed):
        kind = self.kind
        self.ctor_hp = data.draw(hyper_sets(kind), label="constructor hyperparameters")
        dtypes = dtypes[:len(shapes)]
        init = grad_values(seed, shapes, dtypes, 1.0)
        self.model = Model(kind, [dict(params=init)], self.ctor_hp, skip_nonfinite=skip)
        self.params, self.opts, self.grads = {}, {}, {}
        for b in BACKENDS:
            self.params[b] = [a.copy() for a in init]
            self.opts[b] = self._make_opt(b, [dict(params=self.params[b])], skip)
            assert self.opts[b].backend == b
            self.grads[b] = None
        self.group_sizes = [len(init)]
        self.saved = []

    # .................................................................. steps
    @rule(seed=st.integers(0, 2 ** 16), none_bits=st.one_of(st.just(0), st.integers(0, 255)),
          bad=st.one_of(st.none(), st.tuples(st.integers(0, 7), st.integers(0, 63), BAD_VALUES)),
          scale=st.sampled_from([1.0, 1.0, 0.0, 1e-3, 30.0]))
    def step_fresh(self, seed, none_bits, bad, scale):
        """Step with new gradient arrays (``None`` where bit i of none_bits is set)."""
        values = grad_values(seed, self._shapes(), self._dtypes(), scale)
        values = [None if (none_bits >> i) & 1 else v for i, v in enumerate(values)]
        self._inject(values, bad)
        self._do_step(self._new_grads(values), values)

    @precondition(lambda self: self.model is not None and self.grads["numpy"] is not None)
    @rule(seed=st.integers(0, 2 ** 16), mutate=st.booleans(),
          bad=st.one_of(st.none(), st.tuples(st.integers(0, 7), st.integers(0, 63), BAD_VALUES)),
          scale=st.sampled_from([1.0, 0.0, 1e-3]))
    def step_in_place(self, seed, mutate, bad, scale):
        """Step again with the same gradient arrays, written in place (or unchanged if not mutate).
        Params added since the last step get new arrays; a list passed as-is keeps its Nones."""
        values = grad_values(seed, self._shapes(), self._dtypes(), scale)
        old = self.grads["numpy"]
        for i in range(self.n):
            if i < len(old) and old[i] is None:
                values[i] = None
            elif i < len(old) and not mutate:
                values[i] = old[i].copy()
        self._inject(values, bad)
        per_backend = {}
        for b in self.opts:
            gs = list(self.grads[b])
            for i in range(self.n):
                if i >= len(gs):
                    gs.append(None if values[i] is None else values[i].copy())
                elif gs[i] is not None:
                    gs[i][...] = values[i]  # same array object, new contents
            per_backend[b] = gs
        self._do_step(per_backend, values)

    def _inject(self, values, bad):
        if bad is None:
            return
        i, pos, val = bad
        present = [k for k, v in enumerate(values) if v is not None and v.size]
        if not present:
            return
        k = present[i % len(present)]
        values[k].reshape(-1)[pos % values[k].size] = val
        note(f"grads[{k}] holds {val} at flat position {pos % values[k].size}")

    @rule(flag=st.booleans())
    def set_skip_nonfinite(self, flag):
        for opt in self.opts.values():
            opt.skip_nonfinite = flag
        self.model.skip_nonfinite = flag

    # .................................................................. hyperparameters
    @rule(gi=st.integers(0, 7), data=st.data())
    def edit_hyper(self, gi, data):
        """``opt.param_groups[gi][key] = value`` (valid values; SGD's nesterov kept consistent)."""
        gi %= len(self.group_sizes)
        key = data.draw(st.sampled_from(sorted(HP_VALUES[self.kind])), label="key")
        value = data.draw(st.sampled_from(HP_VALUES[self.kind][key]), label="value")
        new = dict(self.model.hypers(gi), **{key: value})
        if self.kind == "sgd":
            if key == "nesterov" and value:
                new.update(momentum=0.9 if new["momentum"] <= 0 else new["momentum"], dampening=0.0)
            fix_sgd(new)
        for k, v in new.items():
            if self.model.param_groups[gi][k] != v or type(self.model.param_groups[gi][k]) is not type(v):
                for opt in self.opts.values():
                    opt.param_groups[gi][k] = v
                self.model.param_groups[gi][k] = v

    @rule(gi=st.integers(0, 7), which=st.integers(0, 5), seed=st.integers(0, 2 ** 16))
    def invalid_hyper_step(self, gi, which, seed):
        """An invalid edit makes the next step raise, changing nothing; then it is undone."""
        gi %= len(self.group_sizes)
        key, value = INVALID[self.kind][which % len(INVALID[self.kind])]
        values = grad_values(seed, self._shapes(), self._dtypes(), 1.0)
        before = self._snapshot_all()
        olds = {}
        for b, opt in self.opts.items():
            olds[b] = opt.param_groups[gi][key]
            opt.param_groups[gi][key] = value
            gs = [v.copy() for v in values]
            with pytest.raises((ValueError, TypeError)):
                opt.step(gs)
        for b, opt in self.opts.items():
            opt.param_groups[gi][key] = olds[b]
        self._assert_unchanged(before, f"a step with param_groups[{gi}][{key!r}] = {value!r}")

    @precondition(lambda self: self.model is not None)
    @rule(i=st.integers(0, 7), how=st.sampled_from(["dtype", "shape", "length"]))
    def malformed_grads(self, i, how):
        """A gradient list with a wrong dtype, shape or length raises and changes nothing."""
        values = grad_values(0, self._shapes(), self._dtypes(), 1.0)
        i %= self.n
        before = self._snapshot_all()
        for opt in self.opts.values():
            gs = [v.copy() for v in values]
            if how == "dtype":
                gs[i] = gs[i].astype(F32 if gs[i].dtype == F64 else F64)
            elif how == "shape":
                gs[i] = np.zeros((gs[i].size + 1,), gs[i].dtype)
            else:
                gs = gs[:-1]
            with pytest.raises((ValueError, TypeError)):
                opt.step(gs)
        self._assert_unchanged(before, f"a step with a bad gradient list ({how} of grads[{i}])")

    # .................................................................. param groups
    @precondition(lambda self: self.model is not None and len(self.group_sizes) < 4)
    @rule(shapes=st.lists(SHAPES, min_size=1, max_size=2), dtypes=st.lists(DTYPES, min_size=2, max_size=2),
          data=st.data(), seed=st.integers(0, 2 ** 16),
          flaw=st.sampled_from([None, None, None, "duplicate", "hyper"]))
    def add_group(self, shapes, dtypes, data, seed, flaw):
        """``add_param_group``; missing keys come from the constructor's defaults. A flawed group (a
        param already in the optimizer, or an invalid hyperparameter) raises and changes nothing."""
        hp = data.draw(hyper_sets(self.kind, partial=True), label="group hyperparameters")
        if self.kind == "sgd" and fix_sgd(dict(self.model.defaults, **hp)) != dict(self.model.defaults, **hp):
            hp["nesterov"] = False
        dtypes = dtypes[:len(shapes)]
        init = grad_values(seed, shapes, dtypes, 1.0)
        if flaw is not None:
            before = self._snapshot_all()
            for b, opt in self.opts.items():
                ps = [a.copy() for a in init]
                bad_hp = dict(hp)
                if flaw == "duplicate":
                    ps.append(self.params[b][seed % self.n])
                    if ps[-1].size == 0:  # an empty array overlaps nothing: use a sized one if any
                        sized = [p for p in self.params[b] if p.size]
                        if not sized:
                            return
                        ps[-1] = sized[0]
                else:
                    bad_hp["lr"] = -1.0
                with pytest.raises((ValueError, TypeError)):
                    opt.add_param_group(dict(bad_hp, params=ps))
            self._assert_unchanged(before, f"a flawed add_param_group ({flaw})")
            return
        self.model.add_param_group(dict(hp, params=init))
        for b, opt in self.opts.items():
            ps = [a.copy() for a in init]
            self.params[b].extend(ps)
            opt.add_param_group(dict(hp, params=ps))
        self.group_sizes.append(len(init))

    # .................................................................. state dicts
    @rule(fresh=st.booleans())
    def state_dict_round_trip(self, fresh):
        """``sd = opt.state_dict()``, then load it into the same optimizer or a fresh one (same
        constructor arguments, same params) and go on with that one."""
        for b in list(self.opts):
            opt = self.opts[b]
            sd = opt.state_dict()
            self._check_sd(sd, b)
            if fresh:
                groups, k = [], 0
                for size in self.group_sizes:
                    groups.append(dict(params=self.params[b][k:k + size]))
                    k += size
                new = self._make_opt(b, groups, self.model.skip_nonfinite)
                new.load_state_dict(sd)
                self.opts[b] = new
            else:
                opt.load_state_dict(sd)
        self.model.load(self.model.snapshot())  # a load of one's own state (AdamW: re-decoupled)
        if fresh:  # a fresh optimizer's counters start at zero (they are not part of the state)
            self.model.last_step_skipped = False
            self.model.skipped_steps = 0

    @rule()
    def save(self):
        """Keep a state dict (and a deep copy of it) for a later ``load_saved``."""
        sds = {b: opt.state_dict() for b, opt in self.opts.items()}
        for b, sd in sds.items():
            self._check_sd(sd, b)
        self.saved = (self.saved + [(sds, copy.deepcopy(sds), self.model.snapshot(),
                                     list(self.group_sizes))])[-3:]

    @precondition(lambda self: self.model is not None and self.saved)
    @rule(k=st.integers(0, 2))
    def load_saved(self, k):
        """Load an older state dict: state, step counts and hyperparameters come back, params keep
        their current values. The saved dict must not have changed since (it is a copy). If the group
        structure has changed since, the load raises and changes nothing."""
        sds, pristine, snap, sizes = self.saved[k % len(self.saved)]
        for b in self.opts:
            _assert_sd_equal(sds[b], pristine[b], f"{b}: the saved state_dict changed after saving")
        if sizes != self.group_sizes:
            before = self._snapshot_all()
            for b, opt in self.opts.items():
                with pytest.raises(ValueError):
                    opt.load_state_dict(copy.deepcopy(sds[b]))
            self._assert_unchanged(before, "a load_state_dict with another group structure")
            return
        for b, opt in self.opts.items():
            opt.load_state_dict(copy.deepcopy(sds[b]))
        self.model.load(copy.deepcopy(snap))

    @rule(how=st.sampled_from(["size", "name", "step", "hyper", "groups", "key", "nonnumeric",
                               "group_size"]))
    def load_corrupted(self, how):
        """A corrupted state dict raises and leaves the optimizer exactly as it was (atomic load).
        The corruption sits on the LAST state entry / group, after valid ones."""
        before = self._snapshot_all()
        for b, opt in self.opts.items():
            sd = opt.state_dict()
            keys = sorted(k for k, v in sd["state"].items() if len(v) > 1)
            h = how
            if h == "nonnumeric":  # on a non-empty state array (an empty one has no value to convert)
                keys = [k for k in keys if self.model.params[k].size]
            if h in ("size", "name", "step", "nonnumeric") and not keys:
                h = "hyper"
            if h == "size":
                st_ = sd["state"][keys[-1]]
                name = sorted(n for n in st_ if n != "step" and isinstance(st_[n], np.ndarray))[0]
                st_[name] = np.zeros(st_[name].size + 1, st_[name].dtype)
            elif h == "name":
                sd["state"][keys[-1]]["bogus"] = np.zeros(self.model.params[keys[-1]].shape)
            elif h == "step":
                sd["state"][keys[-1]]["step"] = -1
            elif h == "nonnumeric":
                st_ = sd["state"][keys[-1]]
                name = sorted(n for n in st_ if n != "step" and isinstance(st_[n], np.ndarray))[-1]
                st_[name] = np.full(st_[name].shape, "x")
            elif h == "hyper":
                sd["param_groups"][-1]["lr"] = -1.0
            elif h == "groups":
                sd["param_groups"].append(dict(sd["param_groups"][-1], params=[10 ** 6]))
            elif h == "key":
                sd["state"][10 ** 6] = {"step": 1}
            elif h == "group_size":
                sd["param_groups"][-1]["params"] = sd["param_groups"][-1]["params"] + [10 ** 6]
            note(f"{b}: corrupted state_dict ({h})")
            with pytest.raises((ValueError, TypeError)):
                opt.load_state_dict(sd)
        self._assert_unchanged(before, f"a failed load_state_dict ({how})")

    @rule()
    def checkpoint_round_trip(self):
        """save_checkpoint / load_checkpoint into the same optimizer (fastdescent.checkpoint)."""
        api, reason = checkpoint_api()
        if api is None:
            note(f"checkpoint round trip skipped: {reason}")
            return
        save, load = api
        with tempfile.TemporaryDirectory() as tmp:
            for b, opt in self.opts.items():
                path = os.path.join(tmp, f"{b}.ckpt")
                _call_checkpoint(save, path, opt)
                _call_checkpoint(load, path, opt)
        self.model.load(self.model.snapshot())  # a load of one's own state (AdamW: re-decoupled)

    # .................................................................. checks
    def _check_sd(self, sd, b):
        snap = self.model.snapshot()
        assert sorted(sd["state"]) == sorted(snap["state"]), \
            f"{b}: state_dict keys {sorted(sd['state'])} != {sorted(snap['state'])}"
        for i, exp in snap["state"].items():
            got = sd["state"][i]
            assert set(got) == set(exp), f"{b}: state_dict['state'][{i}] names {sorted(got)}"
            assert got["step"] == exp["step"] and isinstance(got["step"], int)
            for n in exp:
                if n != "step":
                    # arrays; scalar state (NAdam's mu_product) as floats
                    assert isinstance(got[n], float if isinstance(exp[n], float) else np.ndarray)
                    assert_close(got[n], exp[n], what=f"{b}: state_dict['state'][{i}][{n!r}]")
        assert len(sd["param_groups"]) == len(snap["param_groups"])
        for g, e in zip(sd["param_groups"], snap["param_groups"]):
            assert g["params"] == e["params"]
            assert _same_hypers(g, e), f"{b}: state_dict param_groups {g} != {e}"

    @invariant()
    def matches_model(self):
        if self.model is None:
            return
        m = self.model
        exp_state = m.expected_state()
        ref_opt = self.opts["numpy"]
        for b, opt in self.opts.items():
            assert opt.skip_nonfinite == m.skip_nonfinite
            assert opt.last_step_skipped == m.last_step_skipped, \
                f"{b}: last_step_skipped {opt.last_step_skipped}, expected {m.last_step_skipped}"
            assert opt.skipped_steps == m.skipped_steps, \
                f"{b}: skipped_steps {opt.skipped_steps}, expected {m.skipped_steps}"
            assert len(opt.param_groups) == len(m.param_groups)
            k = 0
            for gi, (g, e) in enumerate(zip(opt.param_groups, m.param_groups)):
                assert _same_hypers(g, e), f"{b}: param_groups[{gi}] {g} != model {e}"
                assert len(g["params"]) == len(e["params"])
                for p in g["params"]:
                    assert p is self.params[b][k]
                    k += 1
            for i, (p, e) in enumerate(zip(self.params[b], m.params)):
                assert_close(p, e, what=f"{b}: params[{i}] vs the model")
            state = opt.state
            for i in range(self.n):
                got, exp = state.get(i), exp_state.get(i)
                gnames = set(got or ()) - {"step"}
                enames = set(exp or ()) - {"step"}
                assert gnames == enames, f"{b}: state[{i}] names {sorted(gnames)} != {sorted(enames)}"
                if not enames:
                    continue
                assert got["step"] == exp["step"], f"{b}: state[{i}]['step'] {got['step']} != {exp['step']}"
                for n in enames:
                    assert_close(got[n], exp[n], what=f"{b}: state[{i}][{n!r}] vs the model")
            if b == "numpy":
                continue
            # the compiled backend against fastdescent's numpy backend
            ref_state = ref_opt.state
            for i, (p, q) in enumerate(zip(self.params[b], self.params["numpy"])):
                assert_close(p, q, what=f"{b}: params[{i}] vs the numpy backend")
            for i, st_ in state.items():
                for n, v in st_.items():
                    if n == "step":
                        assert v == ref_state[i]["step"]
                    else:
                        assert_close(v, ref_state[i][n], what=f"{b}: state[{i}][{n!r}] vs numpy")


def _same_hypers(g, e):
    keys = set(g) - {"params"}
    if keys != set(e) - {"params"}:
        return False
    for k in keys:
        a, b = g[k], e[k]
        if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
            if tuple(a) != tuple(b):
                return False
        elif not (a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)):
            return False
    return True


def _assert_sd_equal(a, b, what):
    assert a["state"].keys() == b["state"].keys(), what
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys(), what
        for n in a["state"][i]:
            np.testing.assert_array_equal(a["state"][i][n], b["state"][i][n], err_msg=what)
    assert len(a["param_groups"]) == len(b["param_groups"]), what
    for x, y in zip(a["param_groups"], b["param_groups"]):
        assert x["params"] == y["params"] and _same_hypers(x, y), what


def _machine(kind):
    cls = type(f"{CLASSES[kind].__name__}Machine", (OptimizerMachine,), {"kind": kind})
    case = cls.TestCase
    case.settings = PROFILE
    return case


TestSGDMachine = _machine("sgd")
TestAdamMachine = _machine("adam")
TestAdamWMachine = _machine("adamw")
TestRMSpropMachine = _machine("rmsprop")
TestAdagradMachine = _machine("adagrad")
TestLionMachine = _machine("lion")
TestLAMBMachine = _machine("lamb")
TestRpropMachine = _machine("rprop")
TestAdamaxMachine = _machine("adamax")
TestAdadeltaMachine = _machine("adadelta")
TestNAdamMachine = _machine("nadam")
TestRAdamMachine = _machine("radam")


def test_backends_under_test():
    """The machines run every host backend that loads here (numpy first, the reference)."""
    assert BACKENDS[0] == "numpy"
    assert "cuda" not in BACKENDS


def test_checkpoint_module_available():
    """The machines' checkpoint_round_trip op needs fastdescent.checkpoint."""
    api, reason = checkpoint_api()
    if api is None:
        pytest.skip(f"checkpoint round trip op inactive: {reason}")


# ------------------------------------------------------------------------------ functional API
@st.composite
def functional_cases(draw):
    kind = draw(st.sampled_from(sorted(CLASSES)))
    hp = draw(hyper_sets(kind))
    shapes = draw(st.lists(SHAPES, min_size=1, max_size=4))
    dtypes = draw(st.lists(DTYPES, min_size=len(shapes), max_size=len(shapes)))
    steps = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 16))
    return kind, hp, shapes, dtypes, steps, seed


def _functional_step(kind, hp, params, grads, state, t):
    """One step of fastdescent.functional with the state lists in ``state`` (created here)."""
    zeros = lambda fill=0.0: [np.full(p.shape, fill, p.dtype) for p in params]  # noqa: E731
    if kind == "sgd":
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = zeros()
        kw = {k: hp[k] for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")}
        F.sgd(params, grads, state["momentum_buffer"] if hp["momentum"] != 0 else None,
              first_step=t == 1, **kw, backend=state["backend"])
    elif kind in ("adam", "adamw"):
        for n in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            state.setdefault(n, zeros())
        kw = {k: v for k, v in hp.items() if k != "decoupled_weight_decay"}
        if kind == "adam":
            F.adam(params, grads, state["exp_avg"], state["exp_avg_sq"],
                   state["max_exp_avg_sq"] if hp["amsgrad"] else None, step=t, **kw,
                   decoupled=hp["decoupled_weight_decay"], backend=state["backend"])
        else:
            F.adamw(params, grads, state["exp_avg"], state["exp_avg_sq"],
                    state["max_exp_avg_sq"] if hp["amsgrad"] else None, step=t, **kw,
                    backend=state["backend"])
    elif kind == "rmsprop":
        for n in ("square_avg", "grad_avg", "momentum_buffer"):
            state.setdefault(n, zeros())
        F.rmsprop(params, grads, state["square_avg"], state["grad_avg"] if hp["centered"] else None,
                  state["momentum_buffer"] if hp["momentum"] > 0 else None, **hp,
                  backend=state["backend"])
    elif kind == "lion":
        state.setdefault("exp_avg", zeros())
        F.lion(params, grads, state["exp_avg"], **hp, backend=state["backend"])
    elif kind == "lamb":
        for n in ("exp_avg", "exp_avg_sq"):
            state.setdefault(n, zeros())
        F.lamb(params, grads, state["exp_avg"], state["exp_avg_sq"], step=t, **hp,
               backend=state["backend"])
    elif kind == "rprop":
        state.setdefault("prev", zeros())
        state.setdefault("step_size", zeros(hp["lr"]))  # step sizes start at lr
        (etaminus, etaplus), (smin, smax) = hp["etas"], hp["step_sizes"]
        F.rprop(params, grads, state["prev"], state["step_size"], etaminus=etaminus, etaplus=etaplus,
                step_size_min=smin, step_size_max=smax, maximize=hp["maximize"],
                backend=state["backend"])
    elif kind == "adamax":
        for n in ("exp_avg", "exp_inf"):
            state.setdefault(n, zeros())
        F.adamax(params, grads, state["exp_avg"], state["exp_inf"], step=t, **hp,
                 backend=state["backend"])
    elif kind == "adadelta":
        for n in ("square_avg", "acc_delta"):
            state.setdefault(n, zeros())
        F.adadelta(params, grads, state["square_avg"], state["acc_delta"], **hp,
                   backend=state["backend"])
    elif kind in ("nadam", "radam"):
        for n in ("exp_avg", "exp_avg_sq"):
            state.setdefault(n, zeros())
        if kind == "nadam":  # the functional form takes mu_product and returns its new value
            state["mu_product"] = F.nadam(params, grads, state["exp_avg"], state["exp_avg_sq"],
                                          step=t, mu_product=state.get("mu_product", 1.0), **hp,
                                          backend=state["backend"])
        else:
            F.radam(params, grads, state["exp_avg"], state["exp_avg_sq"], step=t, **hp,
                    backend=state["backend"])
    else:
        state.setdefault("sum", zeros(hp["initial_accumulator_value"]))
        kw = {k: v for k, v in hp.items() if k != "initial_accumulator_value"}
        F.adagrad(params, grads, state["sum"], step=t, **kw, backend=state["backend"])


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=functional_cases())
@PROFILE
def test_functional_matches_class_and_model(backend, case):
    """fastdescent.functional.<opt> over random shapes/dtypes == the optimizer class (same backend)
    == the model, after every step."""
    kind, hp, shapes, dtypes, steps, seed = case
    init = grad_values(seed, shapes, dtypes, 1.0)
    grads = [grad_values(seed + 1 + k, shapes, dtypes, 1.0) for k in range(steps)]
    fparams = [a.copy() for a in init]
    cparams = [a.copy() for a in init]
    opt = CLASSES[kind](cparams, **hp, backend=backend)
    model = Model(kind, [dict(params=init)], hp)
    fstate = {"backend": backend}
    for t, gs in enumerate(grads, start=1):
        _functional_step(kind, hp, fparams, [g.copy() for g in gs], fstate, t)
        opt.step([g.copy() for g in gs])
        model.step(gs)
        for i, (a, c, e) in enumerate(zip(fparams, cparams, model.params)):
            assert_close(a, c, what=f"step {t}: functional vs class params[{i}]")
            assert_close(a, e, what=f"step {t}: functional vs model params[{i}]")
        ostate = opt.state
        for i in range(len(init)):
            for n in state_names(kind, hp):
                assert_close(fstate[n][i], ostate[i][n],
                             what=f"step {t}: state[{i}][{n!r}] functional vs class")
                assert_close(fstate[n][i], model.state[i][n],
                             what=f"step {t}: state[{i}][{n!r}] functional vs model")
            for n in SCALAR_STATE.get(kind, ()):
                assert fstate[n] == ostate[i][n] == model.state[i][n], f"step {t}: {n} of params[{i}]"


# ------------------------------------------------------------------------------ clip_grad_norm_
@st.composite
def clip_cases(draw):
    shapes = draw(st.lists(SHAPES, min_size=1, max_size=5))
    dtypes = draw(st.lists(DTYPES, min_size=len(shapes), max_size=len(shapes)))
    seed = draw(st.integers(0, 2 ** 16))
    scale = draw(st.sampled_from([1.0, 1.0, 0.0, 1e-3, 1e3, 1e-30, 1e20]))
    specials = draw(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 63),
                                       st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1e30])),
                             max_size=2))
    norm_type = draw(st.sampled_from([2.0, 1.0, math.inf, 2, 1, 3.0, 0.5]))
    max_norm = draw(st.sampled_from([1.0, 0.0, 0.5, 10.0, 1e3, 1e30]))
    strict = draw(st.booleans())
    return shapes, dtypes, seed, scale, specials, norm_type, max_norm, strict


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=clip_cases())
@PROFILE
def test_clip_grad_norm_matches_numpy(backend, case):
    """clip_grad_norm_: the returned total is the norm of all gradients together (float64);
    the gradients are scaled by min(1, max_norm/(total + 1e-6)); a non-finite total leaves them
    unchanged and warns (or raises FloatingPointError with error_if_nonfinite=True)."""
    shapes, dtypes, seed, scale, specials, norm_type, max_norm, strict = case
    with np.errstate(all="ignore"):
        grads = grad_values(seed, shapes, dtypes, scale)
    for i, pos, val in specials:
        g = grads[i % len(grads)]
        if g.size:
            with np.errstate(all="ignore"):
                g.reshape(-1)[pos % g.size] = val
    total_exp, clipped = clip_reference(grads, max_norm, float(norm_type))
    work = [g.copy() for g in grads]
    if clipped is None:
        if strict:
            with pytest.raises(FloatingPointError):
                F.clip_grad_norm_(work, max_norm, norm_type, error_if_nonfinite=True, backend=backend)
        else:
            with pytest.warns(RuntimeWarning):
                total = F.clip_grad_norm_(work, max_norm, norm_type, backend=backend)
            assert (math.isnan(total) and math.isnan(total_exp)) or total == total_exp, \
                f"total {total!r}, expected {total_exp!r}"
        for i, (a, g) in enumerate(zip(work, grads)):
            np.testing.assert_array_equal(a, g, err_msg=f"grads[{i}] changed although the norm is "
                                                         "not finite")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total = F.clip_grad_norm_(work, max_norm, norm_type, error_if_nonfinite=strict,
                                  backend=backend)
    assert isinstance(total, float)
    assert total == pytest.approx(total_exp, rel=1e-12, abs=0.0), f"norm_type {norm_type}"
    for i, (a, e) in enumerate(zip(work, clipped)):
        assert_close(a, e, what=f"clipped grads[{i}]")
    # the top-level alias is the same function
    assert fd.clip_grad_norm_ is F.clip_grad_norm_
