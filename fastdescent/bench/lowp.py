"""Benchmark cases of the low-precision Adam step (``fastdescent bench --ops lowp``; docs/low-precision.md).

Configurations (``LOWP_CONFIGS``), each on one 2^25-element tensor and on ResNet-50's 161 parameter
tensors (25,557,032 elements; :func:`fastdescent.bench.torch_dropin.resnet50_shapes`), float32
gradients:

==================== ========== ======== ================== =========
config               parameters state    options            B/param
==================== ========== ======== ================== =========
adam-fp32            float32    float32  (the baseline)     28
adam-bf16-sr         bfloat16   float32  stochastic_round.  24
adam-bf16-sr-bf16    bfloat16   bfloat16 stochastic_round.  16
adam-int8            float32    int8     state_dtype="int8" 16.0625
adam-bf16-sr-int8    bfloat16   int8     both               12.0625
adam-bf16-master     bfloat16   float32  master_weights     32
==================== ========== ======== ================== =========

Bytes per parameter are computed from the formats (:func:`bytes_per_step`): the parameter read and
written (with a master copy too: the parameter is read to find elements written from outside, and
the copy is read and written: 8 B), the gradient read, each
of the two moments read and written (float32 8 B, bfloat16 4 B, 8-bit 2 B plus its block's float32
scale read and written: 8 B per 256 elements), exactly per tensor (a partial last block counts one
scale).

Implementations: fastdescent's host backends with a mixed-precision step (``c``, ``numba``; the
``numpy`` backend is the reference the check compares with, not timed here: an 8-bit step takes
seconds at 2^25 there) and the peers, each in the configuration whose formats it stores:

- ``torch-fused``: ``torch.optim.Adam(fused=True)`` on float32 (adam-fp32): the reference every
  row's ``time_vs_baseline`` is divided by (same run, timed interleaved with the backends);
- ``torchao-8bit``: ``torchao.optim.AdamW8bit(weight_decay=0)`` (adam-int8: float32 parameters,
  8-bit moments in blocks of 256);
- ``bnb-8bit``: ``bitsandbytes.optim.Adam8bit`` on CPU tensors (adam-int8);
- ``torchao-bf16-sr``: torchao's AdamW with ``bf16_stochastic_round=True``, ``weight_decay=0``, on
  bfloat16 parameters and gradients (adam-bf16-sr; torch requires the gradient in the parameter's
  dtype, so its bytes count a 2-byte gradient);
- (torchao and bitsandbytes keep float32 state for tensors under 4096 elements by default, torchao
  also for sizes that are not a multiple of 256: under 0.3% of ResNet-50's parameters; their rows
  count the 8-bit bytes throughout);
- ``roofline``: the streaming probe of float32 Adam (:class:`~fastdescent.bench.roofline.StreamProbe`:
  7 float32 streams, 28 B/param, the same element count). Its best-round bandwidth is the memory
  roofline of the layout; a row's roofline fraction is its achieved GB/s over the probe's.

The torchao and bitsandbytes peers take 0.5-4 s per step at 2^25: they form a group of their own
(``... (slow peers)``), timed one after the other with at most :data:`PEER_ROUNDS` rounds and
:data:`PEER_BUDGET_S` seconds each, and are compared with the main group's torch-fused and probe
rows through ``ref_group``. Peers that are not installed are skipped with the reason.

Checks before timing: a fastdescent backend's parameters and state after CHECK_STEPS steps must be
bit-identical to the NumPy backend's on the first :data:`CHECK_PREFIX` elements of every tensor
(stochastic rounding's bits and the 8-bit blocks depend only on the element index, so a prefix
reproduces them; adam-fp32 runs the float32 kernel and is held to rtol 1e-5, atol 1e-6).
torch-fused is compared with the NumPy float32 reference at the peers' tolerance; the slow peers,
which round or quantize differently, must move the parameters like the float32 reference in the
mean (see :func:`check_update`).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass

import numpy as np

from . import cases as C

__all__ = ["LowpConfig", "LOWP_CONFIGS", "LOWP_PEERS", "SLOW_PEERS", "PEER_CONFIG", "LOWP_BACKENDS",
           "RESNET50", "LINEAR50", "LOWP_LAYOUTS", "QUICK_LOWP_LAYOUTS", "BENCH_LOWP_LAYOUTS",
           "LowpCase", "lowp_cases",
           "bytes_per_step", "check_update", "CHECK_PREFIX", "PEER_ROUNDS", "PEER_BUDGET_S", "LR",
           "BASELINE"]

LR = 1e-3
#: elements of every tensor compared bit for bit with the NumPy backend (a multiple of 256)
CHECK_PREFIX = 1 << 16
#: the slow peers: at most this many timed rounds, and this many seconds of timing, per case
PEER_ROUNDS = 3
PEER_BUDGET_S = 15.0
#: the implementation every row's time is divided by (``time_vs_baseline``)
BASELINE = "torch-fused"

_STATE_BYTES = {"float32": 4, "bfloat16": 2, "int8": 1}
_ITEMSIZE = {"float32": 4, "bfloat16": 2}


@dataclass(frozen=True)
class LowpConfig:
    """One storage configuration of Adam: parameter dtype, state dtype, and how precision is kept."""

    name: str
    params: str  # "float32" or "bfloat16"
    state: str  # "float32", "bfloat16" or "int8"
    stochastic_rounding: bool = False
    master_weights: bool = False
    doc: str = ""

    @property
    def kwargs(self):
        """The optimizer's keyword arguments besides ``lr``."""
        kw = {}
        if self.stochastic_rounding:
            kw["stochastic_rounding"] = True
        if self.master_weights:
            kw["master_weights"] = True
        if self.state != "float32":
            kw["state_dtype"] = self.state
        return kw

    @property
    def param_dtype(self):
        if self.params == "bfloat16":
            from ..precision import bfloat16

            return bfloat16()
        return np.dtype(np.float32)


LOWP_CONFIGS = {
    c.name: c
    for c in [
        LowpConfig("adam-fp32", "float32", "float32", doc="float32 parameters and moments (baseline)"),
        LowpConfig("adam-bf16-sr", "bfloat16", "float32", stochastic_rounding=True,
                   doc="bfloat16 parameters, stochastic rounding, float32 moments"),
        LowpConfig("adam-bf16-sr-bf16", "bfloat16", "bfloat16", stochastic_rounding=True,
                   doc="bfloat16 parameters and moments, stochastic rounding"),
        LowpConfig("adam-int8", "float32", "int8", doc="float32 parameters, 8-bit moments"),
        LowpConfig("adam-bf16-sr-int8", "bfloat16", "int8", stochastic_rounding=True,
                   doc="bfloat16 parameters, stochastic rounding, 8-bit moments"),
        LowpConfig("adam-bf16-master", "bfloat16", "float32", master_weights=True,
                   doc="bfloat16 parameters, float32 master copy and moments"),
    ]
}
#: peers, in the configuration whose formats they store
PEER_CONFIG = {"torch-fused": "adam-fp32", "torchao-bf16-sr": "adam-bf16-sr",
               "torchao-8bit": "adam-int8", "bnb-8bit": "adam-int8"}
LOWP_PEERS = tuple(PEER_CONFIG)
SLOW_PEERS = ("torchao-bf16-sr", "torchao-8bit", "bnb-8bit")
#: the backends the lowp cases run on (numpy is the check's reference; cuda has no mixed step yet,
#: a backend without one is skipped with the reason)
LOWP_BACKENDS = ("c", "numba")
#: grad dtype of each peer (torch's optimizers need the gradient in the parameter's dtype)
_PEER_GRADS = {"torchao-bf16-sr": "bfloat16"}


def _resnet50():
    from .torch_dropin import resnet50_shapes

    return C.Layout("resnet50", resnet50_shapes())


RESNET50 = _resnet50()
LOWP_LAYOUTS = (C.single(2 ** 25), RESNET50)
LINEAR50 = C.Layout("linear50", ((64, 64), (64,)) * 50)
#: ``--quick``: a 2^22 tensor and 50 Linear(64, 64) layers (100 tensors, 208,000 elements)
QUICK_LOWP_LAYOUTS = (C.single(2 ** 22), LINEAR50)
#: benchmarks/bench_lowp.py (pytest-benchmark) by default; FASTDESCENT_BENCH_LOWP_FULL=1 there
#: takes LOWP_LAYOUTS
BENCH_LOWP_LAYOUTS = (C.single(2 ** 20), LINEAR50)


def bytes_per_step(layout, params, grads, state, master):
    """Bytes one Adam step must move over ``layout`` with these storage formats (module docstring).

    ``params``/``grads``: "float32" or "bfloat16"; ``state``: "float32", "bfloat16" or "int8";
    ``master``: a float32 master copy (read and written, besides the parameter)."""
    for what, val, allowed in (("params", params, _ITEMSIZE), ("grads", grads, _ITEMSIZE),
                               ("state", state, _STATE_BYTES)):
        if val not in allowed:
            raise ValueError(f"bytes_per_step: {what} must be one of {sorted(allowed)}, got {val!r}")
    p = _ITEMSIZE[params] * 2 + (8 if master else 0)
    per_elem = p + _ITEMSIZE[grads] + 2 * 2 * _STATE_BYTES[state]
    total = 0
    for shape in layout.shapes:
        n = math.prod(shape)
        total += per_elem * n
        if state == "int8":
            total += 2 * 2 * 4 * ((n + 255) // 256)  # two moments, each block's scale read + written
    return total


@dataclass(frozen=True)
class LowpCase:
    """Adam configuration ``config`` over ``layout`` by ``impl`` (a backend, a peer or ``roofline``)."""

    config: str
    layout: C.Layout
    impl: str
    seed: int = C.SEED
    section: str = "lowp"

    @property
    def cfg(self):
        return LOWP_CONFIGS[self.config]

    @property
    def op(self):
        return self.config

    @property
    def kind(self):
        if self.impl in C.BACKENDS:
            return "fastdescent"
        return "roofline" if self.impl == "roofline" else "peer"

    @property
    def ref_group(self):
        """The group holding this layout's roofline probe and torch-fused baseline."""
        return f"lowp {self.layout.name}"

    @property
    def group(self):
        if self.impl in SLOW_PEERS:
            return f"lowp {self.layout.name} (slow peers)"
        return self.ref_group

    @property
    def id(self):
        return f"lowp-{self.config}-{self.layout.name.replace(' ', '')}-{self.impl}"

    def __str__(self):
        return self.id

    # ---- what the runner reads besides the Case protocol
    @property
    def max_rounds(self):
        return PEER_ROUNDS if self.impl in SLOW_PEERS else None

    @property
    def budget_s(self):
        return PEER_BUDGET_S if self.impl in SLOW_PEERS else None

    @property
    def formats(self):
        """(params, grads, state, master) as stored by this implementation."""
        cfg = self.cfg
        if self.impl == "roofline":
            return ("float32", "float32", "float32", False)
        grads = _PEER_GRADS.get(self.impl, "float32")
        return (cfg.params, grads, cfg.state, cfg.master_weights)

    @property
    def dtype(self):
        return self.formats[0]

    @property
    def bytes_per_step(self):
        return bytes_per_step(self.layout, *self.formats)

    @property
    def row_info(self):
        params, grads, state, master = self.formats
        return {"config": self.config, "params": params, "grads": grads, "state": state,
                "master": master, "bytes_per_param": self.bytes_per_step / self.layout.elements,
                "ref_group": self.ref_group, "baseline": BASELINE}

    @property
    def memory_estimate(self):
        params, grads, state, master = self.formats
        per = (_ITEMSIZE[params] + _ITEMSIZE[grads] + 2 * _STATE_BYTES[state] + (4 if master else 0))
        if self.impl == "roofline":
            per = 16
        return per * self.layout.elements

    # ---- the Case protocol
    def unavailable(self):
        if self.config not in LOWP_CONFIGS:
            return f"unknown low-precision configuration {self.config!r}"
        impl = self.impl
        if impl in C.BACKENDS:
            if impl not in LOWP_BACKENDS:
                return (f"the lowp cases run on {', '.join(LOWP_BACKENDS)}; {impl!r} is not timed here"
                        + (" (it is the reference of the check)" if impl == "numpy" else ""))
            reason = C.backend_unavailable(impl)
            if reason is None:
                from ..backends import get_backend

                mod = get_backend(impl).__name__ + ".mixed"
                if importlib.util.find_spec(mod) is None:
                    reason = f"backend {impl!r} has no mixed-precision step ({mod}) yet"
            if reason is None and self.cfg.params == "bfloat16":
                reason = _ml_dtypes_unavailable()
            return reason
        if impl == "roofline":
            if self.config != "adam-fp32":
                return "the roofline probe is the float32 Adam stream (config adam-fp32)"
            from .roofline import probe_provider

            return probe_provider()[1]
        if impl not in PEER_CONFIG:
            return f"unknown implementation {impl!r}"
        if PEER_CONFIG[impl] != self.config:
            return f"{impl} stores the formats of {PEER_CONFIG[impl]}, not {self.config}"
        reason = C.torch_unavailable()
        if reason is not None or impl == "torch-fused":
            return reason
        if impl.startswith("torchao"):
            return _peer_import_problem("torchao", "torchao.optim")
        return _peer_import_problem("bitsandbytes", "bitsandbytes.optim")

    def build(self):
        cfg, impl = self.cfg, self.impl
        nbytes = self.bytes_per_step
        if impl == "roofline":
            from .roofline import StreamProbe

            spec = C.OPTIMIZERS["adam"]
            probe = StreamProbe(self.layout.elements, spec.reads, spec.writes, np.float32)
            return C.Instance(probe.run, None, bytes_per_step=probe.bytes, keep=probe,
                            note=f"streaming probe ({probe.provider}): float32 Adam's 4 arrays read, "
                                 "3 written in place (28 B/param); its bandwidth is the roofline of "
                                 "every configuration")
        p0, g0 = C._base_data(self.layout, C.DTYPE, self.seed)
        if impl in C.BACKENDS:
            import fastdescent as fd

            params = [np.array(p, dtype=cfg.param_dtype) for p in p0]
            grads = C._copies(g0)
            opt = fd.Adam(params, lr=LR, backend=impl, **cfg.kwargs)

            def result():
                return {"params": params, "state": opt.state}

            return C.Instance(functools.partial(opt.step, grads), result, bytes_per_step=nbytes,
                            keep=(opt, params, grads))
        import torch

        dt = torch.bfloat16 if cfg.params == "bfloat16" else torch.float32
        gdt = torch.bfloat16 if _PEER_GRADS.get(impl) == "bfloat16" else torch.float32
        tparams = [torch.nn.Parameter(torch.tensor(p).to(dt)) for p in p0]
        for t, g in zip(tparams, g0):
            t.grad = torch.tensor(g).to(gdt)
        if impl == "torch-fused":
            opt = torch.optim.Adam(tparams, lr=LR, fused=True)
        elif impl == "torchao-8bit":
            import torchao.optim

            opt = torchao.optim.AdamW8bit(tparams, lr=LR, weight_decay=0.0)
        elif impl == "torchao-bf16-sr":
            opt = _torchao_adamw()(tparams, lr=LR, weight_decay=0.0, bf16_stochastic_round=True)
        elif impl == "bnb-8bit":
            import bitsandbytes

            opt = bitsandbytes.optim.Adam8bit(tparams, lr=LR)
        else:
            raise ValueError(f"unknown implementation {impl!r}")

        def result():
            return {"params": [t.detach().float().numpy() for t in tparams]}

        return C.Instance(opt.step, result, bytes_per_step=nbytes, keep=(opt, tparams))

    def check(self, inst):
        """CHECK_STEPS steps, then compare (module docstring); returns what was compared."""
        for _ in range(C.CHECK_STEPS):
            inst.step()
        impl = self.impl
        if impl == "roofline":
            return None
        got = inst.result()
        if impl in C.BACKENDS:
            return _check_prefix(self, got)
        ref = C._reference_params("adam", self.layout, C.DTYPE, self.seed, C.CHECK_STEPS)
        if impl == "torch-fused":
            err = C._compare(self.id, got["params"], ref, 1e-4, 1e-5)
            return {"max_abs_err": err, "rtol": 1e-4, "atol": 1e-5, "steps": C.CHECK_STEPS}
        p0, _ = C._base_data(self.layout, C.DTYPE, self.seed)
        start = [np.array(p, dtype=self.cfg.param_dtype) for p in p0]
        return check_update(self.id, got["params"], start, ref, p0,
                            bf16=self.cfg.params == "bfloat16")


def _ml_dtypes_unavailable():
    try:
        import ml_dtypes  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"ml_dtypes is not installed ({type(exc).__name__}: {exc}): no bfloat16 NumPy dtype"
    return None


@functools.lru_cache(maxsize=None)
def _peer_import_problem(dist, module):
    """None if ``module`` imports, else the reason (cached: torchao's import takes seconds)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        return f"{dist} is not installed or does not load ({type(exc).__name__}: {exc})"
    return None


def _torchao_adamw():
    """torchao's AdamW that takes ``bf16_stochastic_round`` (``torchao.optim._AdamW`` in 0.1x)."""
    import torchao.optim

    for mod, name in ((torchao.optim, "_AdamW"), (torchao.optim, "AdamW")):
        cls = getattr(mod, name, None)
        if cls is not None:
            return cls
    raise ImportError("torchao.optim has no AdamW with bf16_stochastic_round (_AdamW)")


# ---------------------------------------------------------------------------- checks
def _flat_bits(a):
    a = np.ascontiguousarray(a).reshape(-1)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


@functools.lru_cache(maxsize=2)
def _prefix_reference(config, layout, seed, steps):
    """The NumPy backend's parameters and state after ``steps`` steps on the first CHECK_PREFIX
    elements of every tensor (same order, so the same param indices)."""
    import fastdescent as fd

    cfg = LOWP_CONFIGS[config]
    p0, g0 = C._base_data(layout, C.DTYPE, seed)
    params = [np.array(p.reshape(-1)[:CHECK_PREFIX], dtype=cfg.param_dtype) for p in p0]
    grads = [np.array(g.reshape(-1)[:CHECK_PREFIX]) for g in g0]
    opt = fd.Adam(params, lr=LR, backend="numpy", **cfg.kwargs)
    for _ in range(steps):
        opt.step(grads)
    return params, opt.state


def _check_prefix(case, got):
    """Compare a backend's result with the NumPy backend on every tensor's prefix."""
    ref_params, ref_state = _prefix_reference(case.config, case.layout, case.seed, C.CHECK_STEPS)
    exact = case.config != "adam-fp32"
    compared = 0
    worst = 0.0
    for i, (p, r) in enumerate(zip(got["params"], ref_params)):
        k = r.shape[0]
        pairs = [("param", p.reshape(-1)[:k], r)]
        for name, val in ref_state.get(i, {}).items():
            if name == "step":
                continue
            have = got["state"].get(i, {}).get(name)
            if have is None:
                raise C.CheckError(f"{case.id}: state {name!r} of tensor {i} is missing")
            pairs.append((name, np.asarray(have).reshape(-1)[:np.asarray(val).size], val))
        for name, a, b in pairs:
            b = np.asarray(b).reshape(-1)
            if exact:
                if a.dtype != b.dtype or not np.array_equal(_flat_bits(a), _flat_bits(b)):
                    bad = np.flatnonzero(_flat_bits(a) != _flat_bits(b)) if a.dtype == b.dtype else [0]
                    j = int(bad[0]) if len(bad) else 0
                    raise C.CheckError(
                        f"{case.id}: {name} of tensor {i} is not bit-identical to the NumPy backend "
                        f"(dtype {a.dtype} vs {b.dtype}; {len(bad)} elements differ, first at {j}: "
                        f"got {a[j]!r}, want {b[j]!r})")
            else:
                worst = max(worst, C._compare(f"{case.id} {name} of tensor {i}", [a], [b], 1e-5, 1e-6))
            compared += a.size
    if exact:
        return {"bit_identical_to": "numpy", "elements_compared": compared, "steps": C.CHECK_STEPS}
    return {"max_abs_err": worst, "rtol": 1e-5, "atol": 1e-6, "elements_compared": compared,
            "steps": C.CHECK_STEPS}


def check_update(name, got, start, ref, ref_start, *, bf16, lr=LR, steps=C.CHECK_STEPS):
    """A peer that rounds or quantizes its own way must still move the parameters as float32 Adam
    does, in the mean: with ``d = got - start`` and ``dref = ref - ref_start`` over all elements,
    ``mean(d * sign(dref)) / mean|dref|`` within [0.8, 1.2] (no update gives 0, a sign error -1)
    and ``mean|d - dref| / mean|dref|`` at most 0.25 (float32 parameters) or 1.0 (bfloat16: one
    unit in the last place, ~2^-9 of |p| on average, is about as large as two Adam updates of
    lr = 1e-3), and every value finite. Raises CheckError; returns the two figures."""
    num = dot = err = 0.0
    for g, s, r, rs in zip(got, start, ref, ref_start):
        g = np.asarray(g, np.float64).reshape(-1)
        if not np.isfinite(g).all():
            raise C.CheckError(f"{name}: non-finite parameters after {steps} steps")
        d = g - np.asarray(s, np.float64).reshape(-1)
        dref = np.asarray(r, np.float64).reshape(-1) - np.asarray(rs, np.float64).reshape(-1)
        num += float(np.abs(dref).sum())
        dot += float((d * np.sign(dref)).sum())
        err += float(np.abs(d - dref).sum())
    if num == 0.0:
        raise C.CheckError(f"{name}: the float32 reference did not move (nothing to compare)")
    direction, rel_err = dot / num, err / num
    limit = 1.0 if bf16 else 0.25
    if not (0.8 <= direction <= 1.2) or rel_err > limit:
        raise C.CheckError(
            f"{name}: the update does not follow float32 Adam: mean(d*sign(dref))/mean|dref| = "
            f"{direction:.3f} (want 0.8..1.2), mean|d-dref|/mean|dref| = {rel_err:.3f} "
            f"(want <= {limit}) after {steps} steps of lr={lr}")
    return {"direction": direction, "mean_rel_err": rel_err, "steps": steps}


def lowp_cases(layouts=LOWP_LAYOUTS, backends=LOWP_BACKENDS, *, configs=tuple(LOWP_CONFIGS),
               peers=True, roofline=True):
    """Every configuration on every layout: per layout, the backends (and torch-fused, the roofline)
    in one group, then the slow peers in a group of their own. Backends not in LOWP_BACKENDS are
    left out (numpy: the check's reference). ``peers``: True (all of :data:`LOWP_PEERS`), False, or
    the names of those to include."""
    backends = tuple(b for b in backends if b in LOWP_BACKENDS)
    if peers is True:
        peers = LOWP_PEERS
    elif not peers:
        peers = ()
    else:
        peers = tuple(peers)
        unknown = [p for p in peers if p not in PEER_CONFIG]
        if unknown:
            raise ValueError(f"lowp_cases: unknown peers {unknown}; choose from {LOWP_PEERS}")
    for c in configs:
        if c not in LOWP_CONFIGS:
            raise ValueError(f"lowp_cases: unknown configuration {c!r}; choose from "
                             f"{tuple(LOWP_CONFIGS)}")
    out = []
    for layout in layouts:
        main, slow = [], []
        for config in configs:
            for impl in backends:
                main.append(LowpCase(config, layout, impl))
            for impl, pc in PEER_CONFIG.items():
                if pc == config and impl in peers:
                    (slow if impl in SLOW_PEERS else main).append(LowpCase(config, layout, impl))
        if roofline:
            main.append(LowpCase("adam-fp32", layout, "roofline"))
        out += main + slow
    return out
