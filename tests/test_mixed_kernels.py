"""The mixed-precision step's kernels: every host backend bit-identical to the NumPy reference
(``backends/numpy_ref/mixed.py``, the written-out spec of ``docs/low-precision.md``), and the
reference itself checked against the plain float32 kernels and the formats' definitions."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from fastdescent import precision as P
from fastdescent.backends._mixed import STATE_COLUMNS, MixedPlan, state_map
from fastdescent.rules import get as get_rule

from conftest import require_backend

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

HPS = {
    "adam": [dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                  maximize=False, decoupled_weight_decay=False),
             dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True,
                  maximize=True, decoupled_weight_decay=True)],
    "sgd": [dict(lr=1e-2, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
                 maximize=False),
            dict(lr=5e-2, momentum=0.8, dampening=0.0, weight_decay=1e-2, nesterov=True,
                 maximize=True)],
    "rmsprop": [dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                     centered=False, maximize=False),
                dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2, momentum=0.9,
                     centered=True, maximize=False)],
}
SIZES = [0, 1, 7, 255, 256, 257, 1000, 3 * 256 + 5]
PDT = {P.F32: np.float32, P.BF16: BF16, P.F16: np.float16}


def _mixed(backend):
    mod = require_backend(backend)
    return importlib.import_module(mod.__name__ + ".mixed").mixed_step


def _state_names(rule, hp):
    r = get_rule(rule)
    return [n for n in STATE_COLUMNS[rule] if n in r.state_names(hp)]


def _make(rule, hp, pcode, scode, master, stochastic, gmode, seed=7):
    """Fresh host arrays of a plan (deterministic): (plan-args dict, list of grads per step)."""
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal(n) * 0.5).astype(np.float32) for n in SIZES]
    p_store = [P.encode(p, pcode).view(PDT[pcode]) if pcode != P.F32 else p.copy() for p in params]
    mast = [P.decode(p, pcode) for p in p_store] if master else None
    states = {}
    for name in _state_names(rule, hp):
        code = state_map(name) if scode == "int8" else {"float32": P.F32, "bfloat16": P.BF16}[scode]
        arrays = [np.zeros(n, dtype=P.storage_dtype(code)) for n in SIZES]
        scales = ([np.zeros(P.nblocks(n), np.float32) for n in SIZES]
                  if code in (P.Q8S, P.Q8U) else None)
        states[name] = (arrays, code, scales)
    grads = []
    for _ in range(4):
        gs = []
        for i, n in enumerate(SIZES):
            g = (rng.standard_normal(n) * np.exp(rng.uniform(-8, 2, n))).astype(np.float32)
            if n > 3:
                g[3] = 0.0
            gcode = pcode if (gmode == "param" or (gmode == "mixed" and i % 2)) else P.F32
            gs.append(P.encode(g, gcode).view(PDT[gcode]) if gcode != P.F32 else g)
        grads.append(gs)
    return dict(params=p_store, master=mast, states=states), grads


def _copy_args(args):
    st = {k: ([a.copy() for a in arrays], code, None if sc is None else [s.copy() for s in sc])
          for k, (arrays, code, sc) in args["states"].items()}
    return dict(params=[p.copy() for p in args["params"]],
                master=None if args["master"] is None else [m.copy() for m in args["master"]],
                states=st)


def _run(backend, rule, hp, pcode, args, grads, stochastic, grad_scale=1.0, seed=3):
    step_fn = _mixed(backend)
    a = _copy_args(args)
    plan = MixedPlan(rule, a["params"], pcode, a["master"], a["states"],
                     np.arange(len(SIZES), dtype=np.int64) + 5, seed, stochastic)
    r = get_rule(rule)
    for t, gs in enumerate(grads, start=1):
        if grad_scale != 1.0:
            gs = [(P.decode(g, P.code_of_dtype(g.dtype)) * np.float32(grad_scale))
                  .astype(np.float32) for g in gs]
        plan.set_grads(gs)
        step_fn(plan, scalars=r.scalars(hp, t, t == 1), step=t, grad_scale=grad_scale)
    return a


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint8)


def _assert_same(x, y):
    for pa, pb in zip(x["params"], y["params"]):
        np.testing.assert_array_equal(_bits(pa), _bits(pb))
    if x["master"] is not None:
        for pa, pb in zip(x["master"], y["master"]):
            np.testing.assert_array_equal(_bits(pa), _bits(pb))
    for name, (arrays, _code, sc) in x["states"].items():
        arrays2, _, sc2 = y["states"][name]
        for k, (pa, pb) in enumerate(zip(arrays, arrays2)):
            np.testing.assert_array_equal(_bits(pa), _bits(pb), err_msg=f"{name}[{k}]")
        if sc is not None:
            for k, (pa, pb) in enumerate(zip(sc, sc2)):
                np.testing.assert_array_equal(_bits(pa), _bits(pb), err_msg=f"{name} scale[{k}]")


# (pcode, state, master, stochastic, grads): every storage path at least once
CONFIGS = [
    (P.BF16, "float32", False, True, "param"),
    (P.BF16, "bfloat16", False, True, "f32"),
    (P.BF16, "int8", False, True, "mixed"),
    (P.BF16, "float32", True, False, "param"),
    (P.F16, "float32", True, False, "mixed"),
    (P.F16, "int8", False, False, "param"),
    (P.F32, "int8", False, False, "f32"),
    (P.F32, "bfloat16", False, False, "f32"),
    (P.BF16, "bfloat16", False, False, "param"),
]


@pytest.mark.parametrize("backend", ["c", "numba"])
@pytest.mark.parametrize("rule", sorted(HPS))
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_backend_matches_reference(backend, rule, cfg):
    pcode, scode, master, sr, gmode = cfg
    for k, hp in enumerate(HPS[rule]):
        args, grads = _make(rule, hp, pcode, scode, master, sr, gmode, seed=k)
        ref = _run("numpy", rule, hp, pcode, args, grads, sr)
        got = _run(backend, rule, hp, pcode, args, grads, sr)
        _assert_same(ref, got)


@pytest.mark.parametrize("backend", ["numpy", "c", "numba"])
def test_grad_scale_divides_in_float32(backend):
    """grad_scale: the kernel divides (float32) by the scale; scaling by a power of two then
    unscaling gives exactly the unscaled step."""
    hp = HPS["adam"][0]
    args, grads = _make("adam", hp, P.BF16, "float32", True, False, "f32")
    plain = _run(backend, "adam", hp, P.BF16, args, grads, False)
    scaled = _run(backend, "adam", hp, P.BF16, args, grads, False, grad_scale=1024.0)
    _assert_same(plain, scaled)


@pytest.mark.parametrize("rule", sorted(HPS))
def test_reference_master_follows_fp32(rule):
    """With a master copy, the float32 master follows the plain float32 kernel exactly given the
    same (upcast) gradients; the parameter is the master rounded to nearest."""
    from fastdescent.backends.numpy_ref import KERNELS
    from fastdescent.backends._table import TensorTable

    hp = HPS[rule][1]
    args, grads = _make(rule, hp, P.BF16, "float32", True, False, "param")
    out = _run("numpy", rule, hp, P.BF16, args, grads, False)
    r = get_rule(rule)
    names = _state_names(rule, hp)
    for i, n in enumerate(SIZES):
        p = args["master"][i].copy()
        st = {name: np.zeros(n, np.float32) for name in names}
        for t, gs in enumerate(grads, start=1):
            tab = TensorTable(np.float32, [n]).set("param", [p]).set(
                "grad", [P.decode(gs[i], P.BF16)])
            for name in STATE_COLUMNS[rule]:
                tab.set(name, [st[name]] if name in st else None)
            KERNELS[rule](tab, **r.scalars(hp, t, t == 1))
        np.testing.assert_array_equal(out["master"][i], p)
        np.testing.assert_array_equal(_bits(out["params"][i]), _bits(P.encode(p, P.BF16)))


def test_stochastic_rounding_unbiased_and_accumulates():
    """1000 updates of -1e-4 to a bf16 1.0: ~0.9 with stochastic rounding, 1.0 with nearest."""
    from fastdescent.backends.numpy_ref.mixed import mixed_step

    n = 4096
    for sr, lo, hi in ((True, 0.891, 0.909), (False, 1.0, 1.0)):
        p = np.ones(n, dtype=BF16)
        plan = MixedPlan("sgd", [p], P.BF16, None, {}, np.zeros(1, np.int64), 11, sr)
        plan.set_grads([np.full(n, 1e-4, np.float32)])
        sc = get_rule("sgd").scalars(HPS["sgd"][0] | dict(momentum=0.0, lr=1.0), 1, True)
        for t in range(1, 1001):
            mixed_step(plan, scalars=sc, step=t)
        m = float(p.astype(np.float32).mean())
        assert lo <= m <= hi, (sr, m)


def test_sr_probability_matches_distance():
    x = np.full(200000, np.float32(1.0) + np.float32(3 * 2.0 ** -10), np.float32)  # 3/8 of an ulp
    r = P.sr_random(5, 1, 3, 0, 0, x.size)
    up = (P.bf16_round_stochastic(x, r).astype(np.float32) > 1.0).mean()
    assert abs(up - 0.375) < 0.005
    # the bits of an element do not depend on where a chunk starts
    np.testing.assert_array_equal(P.sr_random(5, 1, 3, 0, 1001, 77), r[1001:1078])


def test_formats_match_ml_dtypes_and_numpy():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(50000) * np.exp(rng.uniform(-30, 30, 50000))).astype(np.float32)
    x[:4] = [np.inf, -np.inf, 0.0, -0.0]
    np.testing.assert_array_equal(P.encode(x, P.BF16).view(np.uint16),
                                  x.astype(BF16).view(np.uint16))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(P.encode(x, P.F16).view(np.uint16),
                                      x.astype(np.float16).view(np.uint16))
    assert P.encode(np.array([np.nan, -np.nan], np.float32), P.BF16).view(np.uint16).tolist() == \
        [0x7FC0, 0x7FC0]


@pytest.mark.parametrize("code", [P.Q8S, P.Q8U])
def test_q8_error_bound(code):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(20000) * np.exp(rng.uniform(-12, 0, 20000))).astype(np.float32)
    if code == P.Q8U:
        x = x * x
    codes, scales = P.q8_quantize(x, code)
    y = P.q8_dequantize(codes, scales, code)
    a = np.repeat(scales * np.float32(P.QMAX), P.BLOCK)[:x.size]
    lo = a * np.float32(2.0 ** (-14 if code == P.Q8S else -30) / P.QMAX)
    normal = np.abs(x) >= lo
    rel = np.abs(y[normal] - x[normal]) / np.abs(x[normal])
    assert rel.max() <= 2.0 ** -4 * (1 + 2.0 ** -20)
    step = np.repeat(scales, P.BLOCK)[:x.size] * np.float32(2.0 ** (-18 if code == P.Q8S else -33))
    assert (np.abs(y[~normal] - x[~normal]) <= step[~normal] * 1.0001).all()
    assert np.array_equal(np.sign(y), np.sign(x)) or code == P.Q8S


@pytest.mark.parametrize("backend", ["c"])
@pytest.mark.parametrize("code", [P.Q8S, P.Q8U])
def test_c_q8_helpers_match_reference(backend, code):
    mod = require_backend(backend)
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(3000) * np.exp(rng.uniform(-40, 5, 3000))).astype(np.float32)
    x[[5, 700]] = [np.nan, np.inf]
    if code == P.Q8U:
        x = np.abs(x)
    x[1300:1600] = 1e-39  # a block below the smallest normal scale
    codes, scales = P.q8_quantize(x, code)
    c2, s2 = mod.lib and importlib.import_module(mod.__name__ + ".mixed").q8_quantize(x, code)
    np.testing.assert_array_equal(codes, c2)
    np.testing.assert_array_equal(scales.view(np.uint32), s2.view(np.uint32))
    y = importlib.import_module(mod.__name__ + ".mixed").q8_dequantize(codes, scales, code)
    np.testing.assert_array_equal(y.view(np.uint32), P.q8_dequantize(codes, scales, code)
                                  .view(np.uint32))


def test_plan_layout_is_checked_when_built():
    """A plan whose arrays do not fit its tensors (a state buffer or a scale array of the wrong
    length, a master of the wrong dtype, a non-contiguous parameter, a bad seed or param_index) is
    refused when it is built, naming the column: every backend's kernel trusts the plan."""
    n = 300
    p = [np.zeros(n, BF16)]
    idx = np.zeros(1, np.int64)
    ok = {"exp_avg": ([np.zeros(n, np.uint8)], P.Q8S, [np.zeros(2, np.float32)])}
    MixedPlan("sgd", p, P.BF16, None, {"momentum_buffer": ok["exp_avg"]}, idx, 0, False)
    bad = [
        (dict(states={"momentum_buffer": ([np.zeros(n - 1, np.uint8)], P.Q8S,
                                          [np.zeros(2, np.float32)])}), "momentum_buffer\\[0\\]"),
        (dict(states={"momentum_buffer": ([np.zeros(n, np.uint8)], P.Q8S,
                                          [np.zeros(1, np.float32)])}), "momentum_buffer scales"),
        (dict(states={"momentum_buffer": ([np.zeros(n, np.uint8)], P.Q8S, None)}), "no scales"),
        (dict(master=[np.zeros(n, np.float16)]), "master\\[0\\]"),
        (dict(params=[np.zeros(2 * n, BF16)[::2]]), "not C-contiguous"),
        (dict(seed=-1), "seed"),
        (dict(index=np.array([-1])), "param_index"),
        (dict(pcode=P.F32, params=[np.zeros(n, np.float32)], master=[np.zeros(n, np.float32)]),
         "master copy"),
    ]
    for kw, match in bad:
        args = dict(params=p, pcode=P.BF16, master=None, states={}, index=idx, seed=0)
        args.update(kw)
        with pytest.raises(ValueError, match=match):
            MixedPlan("sgd", args["params"], args["pcode"], args["master"], args["states"],
                      args["index"], args["seed"], False)
