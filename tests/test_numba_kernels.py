"""Numba backend: parity with the NumPy backend, serial and parallel paths, chunk boundaries.

The tables mix one bigger tensor with hundreds of tiny ones (sizes 0..8) and the chunk size is forced
small, so chunks start and end inside tensors and span many of them. Each optimizer option is run for
7 steps on the serial variant, the threaded variant and the default plan. The NumPy backend is the
oracle: with the default Numba options (no fastmath, hence no FMA contraction and no reassociation)
the element-wise kernels give the same bits; if fastmath is ever enabled the comparison falls back to
SEMANTICS.md's tolerances.

The general cross-backend suite lives elsewhere; this file is the Numba-specific safety net.
"""

from __future__ import annotations

import inspect
import math
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

from fastdescent import _contract  # noqa: E402
from fastdescent.backends import get_backend  # noqa: E402
from fastdescent import rules  # noqa: E402


# the rules' per-step scalars, with positional arguments for the tables below
def sgd_scalars(lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    return rules.get("sgd").scalars(dict(lr=lr, momentum=momentum, dampening=dampening,
                                         weight_decay=weight_decay, nesterov=nesterov,
                                         maximize=maximize), 1, first_step)


def adam_scalars(lr, betas, eps, weight_decay, amsgrad, maximize, decoupled, step):
    return rules.get("adam").scalars(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                          amsgrad=amsgrad, maximize=maximize,
                                          decoupled_weight_decay=decoupled), step, step == 1)


def rmsprop_scalars(lr, alpha, eps, weight_decay, momentum, centered, maximize):
    return rules.get("rmsprop").scalars(dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                             momentum=momentum, centered=centered,
                                             maximize=maximize), 1, False)


def adagrad_scalars(lr, lr_decay, weight_decay, eps, maximize, step):
    return rules.get("adagrad").scalars(dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                             eps=eps, maximize=maximize), step, step == 1)

def adamax_scalars(lr, betas, eps, weight_decay, maximize, step):
    return rules.get("adamax").scalars(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                            maximize=maximize), step, step == 1)


def adadelta_scalars(lr, rho, eps, weight_decay, maximize):
    return rules.get("adadelta").scalars(dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                              maximize=maximize), 1, False)


NB = get_backend("numba")
REF = get_backend("numpy")
from fastdescent.backends.numba_cpu import _config  # noqa: E402

STEPS = 7
DTYPES = [np.float32, np.float64]
EXACT = not _config.JIT_OPTIONS.get("fastmath")
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}

# forced chunk plans: (name, chunk, parallel); None means the table's default plan
PLANS = [("serial", 37, False), ("parallel", 37, True), ("default", None, None)]
#: extra plans for the reductions (same chunking serial/parallel must give the same bits)
REDUCE_PLANS = PLANS + [("serial-64", 64, False), ("parallel-64", 64, True)]


def _sizes(seed=0):
    rng = np.random.default_rng(seed)
    tiny = rng.integers(0, 9, size=120).tolist()
    return [5, 0, 3000] + tiny + [0, 130, 1]


def _make(dtype, names, seed=0, positive=(), fill=None):
    """{column: list of arrays} for ``names`` over _sizes(); ``positive`` columns are >= 0."""
    rng = np.random.default_rng(seed + 1)
    sizes = _sizes(seed)
    out = {}
    for name in names:
        if fill is not None and name in fill:
            out[name] = [np.full(s, fill[name], dtype=dtype) for s in sizes]
        elif name in positive:
            out[name] = [rng.random(s).astype(dtype) for s in sizes]
        else:
            out[name] = [rng.standard_normal(s).astype(dtype) for s in sizes]
    return out


def _copy(cols):
    return {k: None if v is None else [a.copy() for a in v] for k, v in cols.items()}


def _tables(dtype, cols, plan):
    _, chunk, parallel = plan
    t_nb = NB.Table.from_columns(dtype, cols)
    if chunk is not None:
        t_nb.plan(chunk=chunk, parallel=parallel)
    ref_cols = _copy(cols)
    t_ref = REF.Table.from_columns(dtype, ref_cols)
    return t_nb, t_ref


def _assert_same(t_nb, t_ref, dtype, names):
    for name in names:
        a_list, b_list = t_nb.columns[name], t_ref.columns[name]
        if a_list is None:
            assert b_list is None
            continue
        for i, (a, b) in enumerate(zip(a_list, b_list)):
            if EXACT:
                np.testing.assert_array_equal(a, b, err_msg=f"{name}[{i}]")
            else:
                np.testing.assert_allclose(a, b, err_msg=f"{name}[{i}]", **TOL[dtype])


def _new_grads(tab_nb, tab_ref, dtype, step):
    """Fresh gradients for this step, written into both tables' grad arrays."""
    rng = np.random.default_rng(1000 + step)
    for a, b in zip(tab_nb.columns["grad"], tab_ref.columns["grad"]):
        a[...] = rng.standard_normal(a.shape).astype(dtype)
        b[...] = a


def _run_steps(row, dtype, plan, cols, scalars_for_step, written):
    t_nb, t_ref = _tables(dtype, cols, plan)
    for step in range(1, STEPS + 1):
        if step > 1:
            _new_grads(t_nb, t_ref, dtype, step)
        sc = scalars_for_step(step)
        NB.KERNELS[row](t_nb, **sc)
        REF.KERNELS[row](t_ref, **sc)
        _assert_same(t_nb, t_ref, dtype, written)
    return t_nb


# ------------------------------------------------------------------------------------------ SGD
SGD_CASES = [
    dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    dict(momentum=0.0, dampening=0.0, weight_decay=0.01, nesterov=False, maximize=True),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    dict(momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False, maximize=True),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True, maximize=False),
    dict(momentum=0.5, dampening=0.0, weight_decay=0.0, nesterov=True, maximize=True),
]


@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", SGD_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_parity(case, dtype, plan):
    mom = case["momentum"] != 0
    names = ["param", "grad"] + (["momentum_buffer"] if mom else [])
    cols = _make(dtype, names)
    if not mom:
        cols["momentum_buffer"] = None

    def scalars(step):
        return sgd_scalars(0.05, case["momentum"], case["dampening"], case["weight_decay"],
                           case["nesterov"], case["maximize"], step == 1)

    _run_steps("sgd", dtype, plan, cols, scalars, ["param", "momentum_buffer"])


# ------------------------------------------------------------------------------------------ Adam
ADAM_CASES = [
    dict(amsgrad=False, maximize=False, decoupled=False, weight_decay=0.0),
    dict(amsgrad=True, maximize=False, decoupled=False, weight_decay=0.0),
    dict(amsgrad=False, maximize=True, decoupled=False, weight_decay=0.01),
    dict(amsgrad=True, maximize=True, decoupled=False, weight_decay=0.01),
    dict(amsgrad=False, maximize=False, decoupled=True, weight_decay=0.01),
    dict(amsgrad=True, maximize=False, decoupled=True, weight_decay=0.1),
    dict(amsgrad=False, maximize=True, decoupled=True, weight_decay=0.0),
]


@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", ADAM_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_adam_parity(case, dtype, plan):
    names = ["param", "grad", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if case["amsgrad"] else [])
    cols = _make(dtype, names, fill={"exp_avg": 0.0, "exp_avg_sq": 0.0, "max_exp_avg_sq": 0.0})
    if not case["amsgrad"]:
        cols["max_exp_avg_sq"] = None

    def scalars(step):
        return adam_scalars(0.01, (0.9, 0.99), 1e-8, case["weight_decay"], case["amsgrad"],
                            case["maximize"], case["decoupled"], step)

    _run_steps("adam", dtype, plan, cols, scalars,
               ["param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"])


# ------------------------------------------------------------------------------------------ RMSprop
RMSPROP_CASES = [
    dict(centered=False, momentum=0.0, weight_decay=0.0, maximize=False),
    dict(centered=True, momentum=0.0, weight_decay=0.01, maximize=False),
    dict(centered=False, momentum=0.9, weight_decay=0.0, maximize=True),
    dict(centered=True, momentum=0.9, weight_decay=0.01, maximize=True),
    dict(centered=False, momentum=0.0, weight_decay=0.01, maximize=True),
    dict(centered=True, momentum=0.5, weight_decay=0.0, maximize=False),
]


@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", RMSPROP_CASES,
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_rmsprop_parity(case, dtype, plan):
    names = ["param", "grad", "square_avg"]
    if case["centered"]:
        names.append("grad_avg")
    if case["momentum"] > 0:
        names.append("momentum_buffer")
    cols = _make(dtype, names, fill={"square_avg": 0.0, "grad_avg": 0.0, "momentum_buffer": 0.0})
    cols.setdefault("grad_avg", None)
    cols.setdefault("momentum_buffer", None)

    def scalars(step):
        return rmsprop_scalars(0.01, 0.9, 1e-8, case["weight_decay"], case["momentum"],
                               case["centered"], case["maximize"])

    _run_steps("rmsprop", dtype, plan, cols, scalars,
               ["param", "square_avg", "grad_avg", "momentum_buffer"])


# ------------------------------------------------------------------------------------------ Adagrad
ADAGRAD_CASES = [
    dict(lr_decay=0.0, weight_decay=0.0, maximize=False, initial_accumulator_value=0.0),
    dict(lr_decay=0.01, weight_decay=0.01, maximize=True, initial_accumulator_value=0.1),
    dict(lr_decay=0.1, weight_decay=0.0, maximize=False, initial_accumulator_value=0.5),
    dict(lr_decay=0.0, weight_decay=0.1, maximize=True, initial_accumulator_value=0.0),
]


@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", ADAGRAD_CASES,
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_adagrad_parity(case, dtype, plan):
    cols = _make(dtype, ["param", "grad", "sum"], fill={"sum": case["initial_accumulator_value"]})

    def scalars(step):
        return adagrad_scalars(0.05, case["lr_decay"], case["weight_decay"], 1e-10,
                               case["maximize"], step)

    _run_steps("adagrad", dtype, plan, cols, scalars, ["param", "sum"])


# ------------------------------------------------------------------------------------------ Rprop
RPROP_CASES = [
    dict(etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False),
    dict(etas=(0.4, 1.3), step_sizes=(1e-3, 0.06), maximize=True),
]


@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", RPROP_CASES, ids=["default", "clamped-maximize"])
def test_rprop_parity(case, dtype, plan):
    """Including NaN/inf/zero gradients and prevs (torch's sign(NaN) = 0 rule)."""
    cols = _make(dtype, ["param", "grad", "prev", "step_size"], fill={"step_size": 0.05})
    g, v = cols["grad"][2], cols["prev"][2]
    g[10], g[20], g[30], g[40], v[50], v[60] = np.nan, np.inf, -np.inf, 0.0, np.nan, 0.0

    def scalars(step):
        return rules.get("rprop").scalars(dict(lr=0.05, **case), step, step == 1)

    with np.errstate(invalid="ignore"):
        _run_steps("rprop", dtype, plan, cols, scalars, ["param", "prev", "step_size"])


# ------------------------------------------------------------------------------------------ Adamax
ADAMAX_CASES = [
    dict(betas=(0.9, 0.999), weight_decay=0.0, maximize=False),
    dict(betas=(0.3, 0.9), weight_decay=0.1, maximize=True),  # torch's other lerp branch
    dict(betas=(0.0, 0.99), weight_decay=0.0, maximize=True),
]


@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", ADAMAX_CASES,
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_adamax_parity(case, dtype, plan):
    cols = _make(dtype, ["param", "grad", "exp_avg", "exp_inf"], positive=("exp_inf",))

    def scalars(step):
        return adamax_scalars(0.02, case["betas"], 1e-8, case["weight_decay"], case["maximize"],
                              step)

    _run_steps("adamax", dtype, plan, cols, scalars, ["param", "exp_avg", "exp_inf"])


# ------------------------------------------------------------------------------------------ Adadelta
ADADELTA_CASES = [
    dict(rho=0.9, weight_decay=0.0, maximize=False),
    dict(rho=0.5, weight_decay=0.1, maximize=True),
    dict(rho=1.0, weight_decay=0.0, maximize=False),
]


@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", ADADELTA_CASES,
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_adadelta_parity(case, dtype, plan):
    cols = _make(dtype, ["param", "grad", "square_avg", "acc_delta"],
                 positive=("square_avg", "acc_delta"))

    def scalars(step):
        return adadelta_scalars(0.5, case["rho"], 1e-6, case["weight_decay"], case["maximize"])

    _run_steps("adadelta", dtype, plan, cols, scalars, ["param", "square_avg", "acc_delta"])


# ------------------------------------------------------------------------------------------ IEEE
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("plan", PLANS[:2], ids=[p[0] for p in PLANS[:2]])
def test_nonfinite_propagates_like_numpy(dtype, plan):
    """NaN/Inf gradients (and a NaN already in max_exp_avg_sq) give the NumPy backend's bits."""
    names = ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    cols = _make(dtype, names, positive=("exp_avg_sq", "max_exp_avg_sq"))
    g = cols["grad"][2]
    g[10], g[20], g[30] = np.nan, np.inf, -np.inf
    cols["max_exp_avg_sq"][2][40] = np.nan
    cols["grad"][-2][0] = 0.0
    cols["param"][-2][1] = np.inf
    t_nb, t_ref = _tables(dtype, cols, plan)
    for step in (1, 2, 3):
        sc = adam_scalars(0.01, (0.9, 0.99), 1e-8, 0.01, True, False, False, step)
        NB.KERNELS["adam"](t_nb, **sc)
        with np.errstate(invalid="ignore", over="ignore"):
            REF.KERNELS["adam"](t_ref, **sc)
    _assert_same(t_nb, t_ref, dtype, names)
    assert np.isnan(t_nb.columns["param"][2][10])


# ------------------------------------------------------------------------------------------ clip
def _grad_table(dtype, plan, seed=3):
    cols = _make(dtype, ["grad"], seed=seed)
    return _tables(dtype, cols, plan)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, 0.5, math.inf])
def test_norm_pow_sum(dtype, norm_type):
    results = []
    for plan in REDUCE_PLANS:
        t_nb, t_ref = _grad_table(dtype, plan)
        got = NB.KERNELS["norm_pow_sum"](t_nb, norm_type=norm_type)
        want = REF.KERNELS["norm_pow_sum"](t_ref, norm_type=norm_type)
        assert isinstance(got, float)
        assert got == pytest.approx(want, rel=1e-12)
        results.append((plan[1], got))
    # same chunking -> same bits, serial or parallel
    by_chunk = {}
    for chunk, got in results:
        by_chunk.setdefault(chunk, set()).add(got)
    assert all(len(v) == 1 for v in by_chunk.values()), by_chunk


def test_reductions_independent_of_thread_count():
    import numba

    t_nb, _ = _grad_table(np.float32, ("parallel", 37, True))
    before = numba.get_num_threads()
    try:
        outs = []
        for n in sorted({1, before}):
            numba.set_num_threads(n)
            outs.append((NB.KERNELS["norm_pow_sum"](t_nb, norm_type=2.0),
                         NB.KERNELS["norm_pow_sum"](t_nb, norm_type=math.inf),
                         NB.KERNELS["all_finite"](t_nb)))
        assert len(set(outs)) == 1, outs
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
def test_nonfinite_norms_and_all_finite(dtype, plan):
    t_nb, _ = _grad_table(dtype, plan)
    f = NB.KERNELS["all_finite"]
    assert f(t_nb) is True
    big, last = t_nb.columns["grad"][2], t_nb.columns["grad"][-1]
    for arr, idx, val in [(big, 2999, np.nan), (big, 0, np.inf), (last, 0, -np.inf)]:
        old = arr[idx]
        arr[idx] = val
        assert f(t_nb) is False
        if np.isnan(val):
            assert math.isnan(NB.KERNELS["norm_pow_sum"](t_nb, norm_type=math.inf))
            assert math.isnan(NB.KERNELS["norm_pow_sum"](t_nb, norm_type=2.0))
        else:
            assert NB.KERNELS["norm_pow_sum"](t_nb, norm_type=math.inf) == math.inf
            assert NB.KERNELS["norm_pow_sum"](t_nb, norm_type=1.0) == math.inf
        arr[idx] = old
    assert f(t_nb) is True


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("plan", PLANS, ids=[p[0] for p in PLANS])
def test_scale(dtype, plan):
    t_nb, t_ref = _grad_table(dtype, plan)
    for factor in (0.3, 1.7e-3):
        NB.KERNELS["scale"](t_nb, factor=factor)
        REF.KERNELS["scale"](t_ref, factor=factor)
    _assert_same(t_nb, t_ref, dtype, ["grad"])


# ------------------------------------------------------------------------------------------ tables
def test_plan_chunks_cross_tensor_boundaries():
    t = NB.Table(np.float32, [5, 0, 0, 7, 1, 0, 20])
    t.plan(chunk=4, parallel=True)
    assert t.offsets.tolist() == [0, 5, 5, 5, 12, 13, 13, 33]
    # pieces (tensor, first element, length): chunks [0,4) [4,8) ... [32,33) cut at tensor ends,
    # never a piece of an empty tensor
    assert t.pieces.tolist() == [[0, 0, 4], [0, 4, 1], [3, 0, 3], [3, 3, 4], [4, 0, 1], [6, 0, 3],
                                 [6, 3, 4], [6, 7, 4], [6, 11, 4], [6, 15, 4], [6, 19, 1]]
    assert t.piece_starts.tolist() == [0, 1, 3, 4, 6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize("chunk", [1, 3, 16, 1000])
def test_plan_pieces_cover_every_element_once(chunk):
    rng = np.random.default_rng(chunk)
    sizes = rng.integers(0, 40, size=30).tolist()
    t = NB.Table(np.float32, sizes).plan(chunk=chunk)
    seen = [np.zeros(n, np.int64) for n in sizes]
    for c in range(len(t.piece_starts) - 1):
        for tt, lo, k in t.pieces[t.piece_starts[c]:t.piece_starts[c + 1]]:
            assert k > 0
            g0 = t.offsets[tt] + lo
            assert c * chunk <= g0 and g0 + k <= (c + 1) * chunk  # inside its chunk
            seen[tt][lo:lo + k] += 1
    assert all((s == 1).all() for s in seen)


def test_empty_tables():
    for sizes in ([], [0, 0]):
        t = NB.Table(np.float64, sizes)
        for name in ("param", "grad", "exp_avg", "exp_avg_sq"):
            t.set(name, [np.zeros(0) for _ in sizes])
        t.set("max_exp_avg_sq", None)
        NB.KERNELS["adam"](t, **adam_scalars(0.1, (0.9, 0.99), 1e-8, 0, False, False, False, 1))
        assert NB.KERNELS["norm_pow_sum"](t, norm_type=2.0) == 0.0
        assert NB.KERNELS["norm_pow_sum"](t, norm_type=math.inf) == 0.0
        assert NB.KERNELS["all_finite"](t) is True


def test_missing_optional_column_is_an_error_not_a_crash():
    cols = _make(np.float32, ["param", "grad", "exp_avg", "exp_avg_sq"])
    t = NB.Table.from_columns(np.float32, cols)
    t.set("max_exp_avg_sq", None)
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        NB.KERNELS["adam"](t, **adam_scalars(0.1, (0.9, 0.99), 1e-8, 0, True, False, False, 1))
    t = NB.Table.from_columns(np.float32, _make(np.float32, ["param", "grad", "square_avg"]))
    t.set("grad_avg", None).set("momentum_buffer", None)
    with pytest.raises(ValueError, match="grad_avg"):
        NB.KERNELS["rmsprop"](t, **rmsprop_scalars(0.1, 0.9, 1e-8, 0, 0, True, False))
    with pytest.raises(ValueError, match="momentum_buffer"):
        NB.KERNELS["rmsprop"](t, **rmsprop_scalars(0.1, 0.9, 1e-8, 0, 0.9, False, False))
    t = NB.Table.from_columns(np.float32, _make(np.float32, ["param", "grad"]))
    t.set("momentum_buffer", None)
    with pytest.raises(ValueError, match="momentum_buffer"):
        NB.KERNELS["sgd"](t, **sgd_scalars(0.1, 0.9, 0, 0, False, False, True))


def test_table_reuses_given_addresses():
    arrs = [np.ones(3, np.float32), np.ones(4, np.float32)]
    addrs = np.array([a.ctypes.data for a in arrs], dtype=np.int64)
    t = NB.Table(np.float32, [3, 4]).set("param", arrs, addrs)
    assert t.packed["param"] is addrs
    t.set("grad", arrs)
    np.testing.assert_array_equal(t.packed["grad"], addrs)


# ------------------------------------------------------------------------------------------ contract
def test_rows_and_signatures_match_the_contract():
    for name, row in _contract.KERNELS.items():
        if row.kind != "multi":
            continue
        fn = NB.KERNELS[name]
        params = list(inspect.signature(fn).parameters.values())
        assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        kw = [p.name for p in params[1:]]
        assert kw == list(row.scalars), (name, kw)
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


def test_describe():
    d = NB.describe()
    for key in ("numba", "threading_layer", "threads", "cache_dir", "chunk", "parallel_min"):
        assert key in d
    assert NB.NAME == "numba" and NB.DEVICE is False


def test_importing_fastdescent_does_not_import_numba():
    code = ("import sys, fastdescent, fastdescent.functional, fastdescent.optim; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_numba_makes_the_backend_unavailable_with_the_cause():
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import fastdescent as fd\n"
        "try:\n"
        "    fd.get_backend('numba')\n"
        "except fd.BackendUnavailableError as e:\n"
        "    c = e.__cause__\n"
        "    print(type(c).__name__, isinstance(c.__cause__, ImportError), 'numba' in str(e))\n"
        "print('numba' in fd.available_backends())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ImportError", "True", "True", "False"], out.stdout + out.stderr


def test_python_scalars_of_any_numeric_type_reuse_one_specialisation():
    """bool/int flags and int scalars are coerced, so they never trigger a new compilation."""
    from fastdescent.backends.numba_cpu import adam as nb_adam

    cols = _make(np.float64, ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                 positive=("exp_avg_sq", "max_exp_avg_sq"))
    t = NB.Table.from_columns(np.float64, cols).plan(parallel=False)
    sc = adam_scalars(0.1, (0.9, 0.99), 1e-8, 0, True, False, False, 1)
    NB.KERNELS["adam"](t, **sc)
    before = len(nb_adam._adam_serial.signatures)
    sc.update(amsgrad=True, maximize=np.bool_(False), weight_decay=0, decay=1, eps=np.float32(1e-8))
    NB.KERNELS["adam"](t, **sc)
    assert len(nb_adam._adam_serial.signatures) == before
