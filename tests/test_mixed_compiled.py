"""The compiled mixed-precision steps (c, numba) beyond the shared kernel parity tests: the threaded
variants over many work items (bit-identical to the NumPy reference for any thread count and split),
every float16 bit pattern and the formats' edge values through the kernel, the 8-bit maps' special
blocks, ``grads_finite``, and bad arguments (clear errors, nothing written)."""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd
from fastdescent import precision as P
from fastdescent.backends._mixed import MixedPlan, state_map
from fastdescent.backends.numpy_ref import mixed as ref
from fastdescent.rules import get as get_rule

from _mixed_plans import columns, same_plans, store
from conftest import require_backend

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
PDT = {P.F32: np.float32, P.BF16: BF16, P.F16: np.float16}


@pytest.fixture(scope="module", params=["c", "numba"])
def nb(request):
    import importlib

    mod = require_backend(request.param)
    return importlib.import_module(mod.__name__ + ".mixed")


@pytest.fixture
def small_chunks(nb, monkeypatch):
    """Small work items, threaded from the first ones: many items per tensor (numba: 512-element
    items from element 0; c: a parallel grain of 512 elements)."""
    if nb.__name__.endswith("numba_cpu.mixed"):
        from fastdescent.backends.numba_cpu import _config

        monkeypatch.setattr(_config, "CHUNK", 512)
        monkeypatch.setattr(_config, "PARALLEL_MIN", 0)
        yield
    else:
        from fastdescent.backends import c_cffi

        old = c_cffi.get_parallel_grain()
        c_cffi.set_parallel_grain(512)
        yield
        c_cffi.set_parallel_grain(old)


@pytest.fixture
def restore_threads():
    yield
    fd.set_num_threads(0)


_store = store


def _plan(rule, hp, sizes, pcode, scode, master, stochastic, seed=0):
    params, mast, states = columns(rule, hp, sizes, pcode, scode, master,
                                   np.random.default_rng(seed))
    return MixedPlan(rule, params, pcode, mast, states, np.arange(len(sizes)) * 3 + 1, 99, stochastic)


def _copy(plan):
    st = {k: ([a.copy() for a in arrays], code, None if sc is None else [s.copy() for s in sc])
          for k, (arrays, code, sc) in plan.states.items()}
    return MixedPlan(plan.rule, [p.copy() for p in plan.params], plan.pcode,
                     None if plan.master is None else [m.copy() for m in plan.master], st,
                     plan.param_index, plan.seed, plan.stochastic)


def _grads(sizes, code, rng):
    out = []
    for n in sizes:
        g = (rng.standard_normal(n) * np.exp(rng.uniform(-10, 2, n))).astype(np.float32)
        out.append(_store(g, code))
    return out


def _steps(step_fn, plan, rule, hp, grads, grad_scale=1.0):
    r = get_rule(rule)
    for t, gs in enumerate(grads, start=1):
        plan.set_grads(gs)
        step_fn(plan, scalars=r.scalars(hp, t, t == 1), step=t, grad_scale=grad_scale)


CASES = [
    ("adam", dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, amsgrad=True,
                  maximize=False, decoupled_weight_decay=True), P.BF16, "int8", False, True),
    ("adam", dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                  maximize=True, decoupled_weight_decay=False), P.F16, P.BF16, True, True),
    ("sgd", dict(lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=1e-3, nesterov=False,
                 maximize=False), P.BF16, P.BF16, False, True),
    ("rmsprop", dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=0.0, momentum=0.5, centered=True,
                     maximize=False), P.F32, "int8", False, False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[2]}-{c[3]}")
def test_threaded_any_thread_count_matches_reference(nb, small_chunks, restore_threads, case):
    rule, hp, pcode, scode, master, sr = case
    sizes = [5000, 0, 3, 256 * 9 + 17, 600, 1]
    base = _plan(rule, hp, sizes, pcode, scode, master, sr)
    rng = np.random.default_rng(1)
    grads = [_grads(sizes, pcode if k % 2 else P.F32, rng) for k in range(3)]
    want = _copy(base)
    _steps(ref.mixed_step, want, rule, hp, grads, grad_scale=4.0)
    for threads in (1, 2, 3):
        fd.set_num_threads(threads)
        got = _copy(base)
        _steps(nb.mixed_step, got, rule, hp, grads, grad_scale=4.0)
        if hasattr(nb, "_work"):
            assert nb._work(got)[2]  # the threaded variant ran
        same_plans(want, got)


def test_every_float16_pattern_decodes_exactly(nb):
    """float16 gradients -> float32 master: p = 0 - 1 * (-g) is the exact float32 of every pattern."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    hp = dict(lr=1.0, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=True)
    plans = []
    for fn in (ref.mixed_step, nb.mixed_step):
        plan = MixedPlan("sgd", [np.zeros(bits.size, np.float16)], P.F16,
                         [np.zeros(bits.size, np.float32)], {}, np.zeros(1, np.int64), 0, False)
        plan.set_grads([bits.view(np.float16)])  # maximize: p = 0 + g
        fn(plan, scalars=get_rule("sgd").scalars(hp, 1, True), step=1)
        plans.append(plan)
    with np.errstate(invalid="ignore"):
        want = bits.view(np.float16).astype(np.float32)
    got = plans[1].master[0]
    # (0 - (-g): NaNs come out quieted with the sign flipped, -0 as +0; the reference does the same)
    plain = ~np.isnan(want) & (want != 0)
    np.testing.assert_array_equal(got[plain].view(np.uint32), want[plain].view(np.uint32))
    assert np.isnan(got[~plain & (want != 0)]).all()
    same_plans(plans[0], plans[1])


def _edge_values():
    rng = np.random.default_rng(5)
    f16 = [65504.0, 65519.99, 65520.0, 65535.0, 1e6, 2.0 ** -14, 2.0 ** -24, 2.0 ** -25,
           2.0 ** -25 * 1.0000001, 3 * 2.0 ** -25, 2.0 ** -26, 6.1e-5, 1.0 + 2.0 ** -11,
           1.0 + 3 * 2.0 ** -11, 1e-45, 3.4e38]
    bf = [1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 3.3895314e38, 3.4028235e38, 1e-40]
    x = np.array(f16 + bf, np.float32)
    x = np.concatenate([x, -x, [0.0, -0.0, np.inf, -np.inf]]).astype(np.float32)
    nan = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF, 0x7FA00000], np.uint32)
    wide = (rng.standard_normal(4000) * np.exp(rng.uniform(-110, 88, 4000))).astype(np.float32)
    return np.concatenate([x, nan.view(np.float32), wide]).astype(np.float32)


@pytest.mark.parametrize("pcode", [P.BF16, P.F16])
@pytest.mark.parametrize("sr", [False, True])
def test_rounding_edge_values_match_reference(nb, pcode, sr):
    """p = 0 - (-x) = x, stored in ``pcode``: ties, overflow, subnormals, NaN payloads, signed zeros."""
    x = _edge_values()
    hp = dict(lr=1.0, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=True)
    out = []
    for fn in (ref.mixed_step, nb.mixed_step):
        plan = MixedPlan("sgd", [np.zeros(x.size, PDT[pcode])], pcode, None, {},
                         np.zeros(1, np.int64), 0, sr)
        plan.set_grads([x.copy()])  # maximize: p = 0 + x (exact)
        fn(plan, scalars=get_rule("sgd").scalars(hp, 1, True), step=7)
        out.append(plan.params[0].view(np.uint16))
    np.testing.assert_array_equal(out[0], out[1])
    if not sr:
        with np.errstate(all="ignore"):
            want = x.astype(PDT[pcode]).view(np.uint16).copy()
        want[np.isnan(x)] = 0x7FC0 if pcode == P.BF16 else 0x7E00
        want[x == 0] = 0  # 0 + (-0) is +0
        np.testing.assert_array_equal(out[1], want)


@pytest.mark.parametrize("name", ["momentum_buffer", "square_avg"])
def test_8bit_special_blocks_match_reference(nb, name):
    """Blocks with a NaN, an inf, all zeros, values below the smallest normal scale, tiny values next
    to large ones (the unsigned map's round-up), a short last block: momentum_buffer = g on the first
    SGD step (signed map); RMSprop's square_avg (unsigned map)."""
    rng = np.random.default_rng(3)
    n = 256 * 7 + 100
    g = (rng.standard_normal(n) * np.exp(rng.uniform(-20, 5, n))).astype(np.float32)
    g[3] = np.nan
    g[256 + 7] = -np.inf
    g[512:768] = 0.0
    g[768:1024] = 1e-39
    g[1024:1280] = rng.standard_normal(256) * 1e-30
    g[1024] = 3.0
    g[1536:1536 + 40] = [2.0 ** k for k in range(-40, 0)]
    if name == "momentum_buffer":
        rule, hp = "sgd", dict(lr=0.0, momentum=0.9, dampening=0.0, weight_decay=0.0,
                               nesterov=False, maximize=False)
    else:
        rule, hp = "rmsprop", dict(lr=0.0, alpha=0.0, eps=1e-8, weight_decay=0.0, momentum=0.0,
                                   centered=False, maximize=False)
        g = np.sqrt(np.abs(g))  # square_avg = g * g
    plans = []
    for fn in (ref.mixed_step, nb.mixed_step):
        code = state_map(name)
        states = {name: ([np.zeros(n, np.uint8)], code, [np.zeros(P.nblocks(n), np.float32)])}
        plan = MixedPlan(rule, [np.zeros(n, BF16)], P.BF16, None, states, np.zeros(1, np.int64), 0,
                         False)
        plan.set_grads([g])
        fn(plan, scalars=get_rule(rule).scalars(hp, 1, True), step=1)
        fn(plan, scalars=get_rule(rule).scalars(hp, 2, False), step=2)  # reads the codes back
        plans.append(plan)
    same_plans(plans[0], plans[1])
    scales = plans[1].states[name][2][0]
    assert np.isnan(scales[0]) and np.isnan(scales[1]) and scales[2] == 0 and scales[3] == 0


@pytest.mark.parametrize("code", [P.F32, P.BF16, P.F16])
def test_grads_finite(nb, small_chunks, code):
    sizes = [3000, 7, 0, 1000]
    rng = np.random.default_rng(0)
    plan = MixedPlan("sgd", [np.zeros(n, PDT[code]) for n in sizes], code, None, {},
                     np.zeros(len(sizes), np.int64), 0, False)
    for where, bad in [(None, None), ((0, 2999), np.inf), ((3, 0), np.nan), ((1, 6), -np.inf)]:
        grads = [(rng.standard_normal(n)).astype(np.float32) for n in sizes]
        if where is not None:
            grads[where[0]][where[1]] = bad
        plan.set_grads([_store(g, code) if i % 2 else g for i, g in enumerate(grads)])
        assert nb.grads_finite(plan) is (where is None)
        assert nb.grads_finite(plan) == ref.grads_finite(plan)


def test_bad_arguments_raise_and_write_nothing(nb):
    hp = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=True,
              maximize=False, decoupled_weight_decay=False)
    plan = _plan("adam", dict(hp, amsgrad=False), [300, 20], P.BF16, P.BF16, False, True)
    before = _copy(plan)
    sc = get_rule("adam").scalars(hp, 1, True)
    with pytest.raises(ValueError, match="no gradients"):
        nb.mixed_step(plan, scalars=get_rule("adam").scalars(dict(hp, amsgrad=False), 1, True),
                      step=1)
    plan.set_grads([np.ones(300, np.float32), np.ones(20, np.float32)])
    with pytest.raises(ValueError, match="'max_exp_avg_sq' is required"):
        nb.mixed_step(plan, scalars=sc, step=1)
    with pytest.raises(TypeError, match="missing \\['maximize'\\]"):
        nb.mixed_step(plan, scalars={k: v for k, v in sc.items() if k != "maximize"}, step=1)
    plan.set_grads([np.ones(300, np.float32), np.ones(19, np.float32)])
    with pytest.raises(ValueError, match=r"grads\[1\] has 19 elements"):
        nb.mixed_step(plan, scalars=get_rule("adam").scalars(dict(hp, amsgrad=False), 1, True),
                      step=1)
    same_plans(before, plan)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[2]}-{c[3]}")
def test_c_generic_and_avx2_paths_agree(case):
    """The C step's portable path and its AVX2 path (Philox, the 8-bit encoder and decoder in
    intrinsics) give the same bits, over block tails, many tensors and every storage format."""
    C = require_backend("c")
    from fastdescent.backends.c_cffi import mixed as cm

    if C.get_simd_path() != "avx2-fma":
        pytest.skip("this CPU has no AVX2 path")
    rule, hp, pcode, scode, master, sr = case
    sizes = [5000, 3, 256 * 9 + 17, 1, 700]
    base = _plan(rule, hp, sizes, pcode, scode, master, sr)
    rng = np.random.default_rng(4)
    grads = [_grads(sizes, pcode if k % 2 else P.F32, rng) for k in range(3)]
    out = []
    try:
        for path in ("generic", "avx2-fma"):
            C.set_simd_path(path)
            got = _copy(base)
            _steps(cm.mixed_step, got, rule, hp, grads, grad_scale=2.0)
            out.append(got)
    finally:
        C.set_simd_path("auto")
    same_plans(out[0], out[1])
    want = _copy(base)
    _steps(ref.mixed_step, want, rule, hp, grads, grad_scale=2.0)
    same_plans(want, out[0])


@pytest.mark.parametrize("pcode", [P.BF16, P.F16])
def test_master_is_reread_where_the_parameter_was_written_from_outside(nb, pcode):
    """Between steps some parameters are overwritten (a model load, an in-place edit): those
    elements' master copies are re-read from the parameter, the others keep their float32 bits;
    bit for bit the reference."""
    rule, hp = "adam", dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            amsgrad=False, maximize=False, decoupled_weight_decay=False)
    sizes = [700, 3]
    base = _plan(rule, hp, sizes, pcode, P.F32, True, False)
    rng = np.random.default_rng(8)
    grads = [_grads(sizes, P.F32, rng) for _ in range(2)]
    outs = []
    for fn in (ref.mixed_step, nb.mixed_step):
        plan = _copy(base)
        _steps(fn, plan, rule, hp, grads[:1])
        kept = plan.master[0][1].copy()
        plan.params[0][::5] = np.asarray(np.linspace(-3, 3, 140), np.float32).astype(PDT[pcode])
        plan.params[1][0] = PDT[pcode].type(7.0) if hasattr(PDT[pcode], "type") else 7.0
        r = get_rule(rule)
        plan.set_grads([np.zeros(n, np.float32) for n in sizes])
        fn(plan, scalars=r.scalars(dict(hp, lr=0.0), 2, False), step=2)  # lr 0: only the re-read
        assert plan.master[0][0] == np.float32(-3.0) and plan.master[1][0] == np.float32(7.0)
        assert plan.master[0][1].view(np.uint32) == kept.view(np.uint32)  # untouched: its bits
        outs.append(plan)
    same_plans(outs[0], outs[1])
