"""Parity: every backend x every configuration x dtype x shape set against the oracle (tests/reference.py).

Each run takes :data:`STEPS` steps with fresh random gradients, halves ``param_groups[0]["lr"]`` after
step :data:`LR_CHANGE_AT`, and after EVERY step compares the parameters, every state array (names,
shapes, dtypes, values) and the step count with :class:`reference.RefOptimizer`, within the contract's
dtype-aware tolerances. Shape sets: one tensor; many small tensors of mixed shapes (a 0-d scalar, a
size-1 and a size-0 tensor among them); a :class:`fastdescent.ParamArena` (host backends: its
update is coalesced into one flat tensor). ``mixed`` puts float32 and float64 tensors in one optimizer.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, CASES, CUDA_CASES, make
from conftest import HOST_BACKENDS, Device, require_backend
from reference import RefOptimizer, assert_close

STEPS = 8
LR_CHANGE_AT = 4  # after this many steps, param_groups[0]["lr"] is halved

SHAPES = {
    "single": [(5, 7)],
    "many": [(3,), (2, 3), (), (1,), (4, 1, 2), (0,), (17,)],
    "arena": [(4, 3), (5,), (), (2, 2, 2), (1,)],
}
CUDA_SHAPES = {"single": [(3, 4)], "many": [(3,), (), (2, 2), (0,)]}
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def dtypes_for(dtype, n):
    if dtype == "mixed":
        return [F32 if i % 2 == 0 else F64 for i in range(n)]
    return [np.dtype(dtype)] * n


def make_data(seed, shapes, dtypes, steps=STEPS, none=None):
    """Initial params and per-step grads (None where ``none[step]`` names the index)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dt) for s, dt in zip(shapes, dtypes)]
    grads = []
    for k in range(steps):
        gs = [rng.standard_normal(s).astype(dt) for s, dt in zip(shapes, dtypes)]
        for i in (none or {}).get(k, ()):
            gs[i] = None
        grads.append(gs)
    return init, grads


_REF_CACHE = {}


def reference_trajectory(case, shapes, dtypes, seed, *, groups=None, lr_change=True, none=None):
    """Snapshots of (params, state) after each step of the oracle; cached across backends."""
    key = (case.id, tuple(shapes), tuple(d.str for d in dtypes), seed, repr(groups), lr_change,
           repr(none))
    if key in _REF_CACHE:
        return _REF_CACHE[key]
    init, grads = make_data(seed, shapes, dtypes, none=none)
    if groups is None:
        groups = [dict(params=list(range(len(init))))]
    ref = RefOptimizer(case.kind, [{**case.hp, **{k: v for k, v in g.items() if k != "params"},
                                    "params": [init[i] for i in g["params"]]} for g in groups])
    order = [i for g in groups for i in g["params"]]
    traj = []
    for k, gs in enumerate(grads):
        ref.step([gs[i] for i in order])
        if lr_change and k + 1 == LR_CHANGE_AT:
            ref.param_groups[0]["lr"] *= 0.5
        traj.append(([ref.param(j) for j in range(len(order))],
                     {j: {n: (st[n] if n == "step" else ref.state_array(j, n)) for n in st}
                      for j, st in ref.state.items()}))
    _REF_CACHE[key] = (init, grads, order, traj)
    return _REF_CACHE[key]


def check_against(opt, params, expected, dev, what):
    """Compare ``opt``'s params and state with one reference snapshot."""
    ref_params, ref_state = expected
    assert len(params) == len(ref_params)
    for j, (p, rp) in enumerate(zip(params, ref_params)):
        assert_close(dev.get(p), rp, what=f"{what}: params[{j}]")
    state = opt.state
    for j in range(len(ref_params)):
        rst = ref_state.get(j, {})
        rnames = {n for n in rst if n != "step"}
        st = state.get(j)
        if not rnames:
            # no state arrays for this parameter (SGD without momentum, or never stepped)
            assert st is None or set(st) == {"step"}, f"{what}: unexpected state {st and set(st)}"
            if st is not None and rst:
                assert st["step"] == rst["step"], f"{what}: state[{j}]['step']"
            continue
        assert st is not None, f"{what}: params[{j}] has no state, expected {sorted(rnames)}"
        assert set(st) - {"step"} == rnames, f"{what}: state[{j}] names {sorted(st)} != {sorted(rnames)}"
        assert st["step"] == rst["step"], f"{what}: state[{j}]['step'] {st['step']} != {rst['step']}"
        assert isinstance(st["step"], int)
        for n in sorted(rnames):
            assert_close(dev.get(st[n]), rst[n], what=f"{what}: state[{j}][{n!r}]")


def run_and_compare(backend, case, shape_set, dtype, seed=0, *, shapes=None, groups=None,
                    lr_change=True, none=None):
    dev = Device(backend)
    shapes = shapes or SHAPES[shape_set]
    dtypes = dtypes_for(dtype, len(shapes))
    init, grads, order, traj = reference_trajectory(case, shapes, dtypes, seed, groups=groups,
                                                    lr_change=lr_change, none=none)
    arena = None
    if shape_set == "arena":
        arena = fd.ParamArena(shapes, dtypes[0])
        for dst, src in zip(arena.params, init):
            dst[...] = src
        params = arena.params
        opt = make(fd, case, arena, backend=backend)
    else:
        params = [dev.put(a) for a in init]
        if groups is None:
            opt = make(fd, case, params, backend=backend)
        else:
            opt = make(fd, case, [{**{k: v for k, v in g.items() if k != "params"},
                                   "params": [params[i] for i in g["params"]]} for g in groups],
                       backend=backend)
        params = [params[i] for i in order]
    assert opt.backend == backend
    for k, gs in enumerate(grads):
        gs = [gs[i] for i in order]
        if arena is not None:
            for dst, src in zip(arena.grads, gs):
                dst[...] = src
            assert opt.step() is True
        else:
            assert opt.step([None if g is None else dev.put(g) for g in gs]) is True
        if lr_change and k + 1 == LR_CHANGE_AT:
            opt.param_groups[0]["lr"] *= 0.5
        check_against(opt, params, traj[k], dev, f"step {k + 1}")
    return opt


# ------------------------------------------------------------------------------ the main grid
#: every kernel path on every host backend, each dtype at least once: "single" runs the one-tensor
#: path in float32 and float64; "many-mixed" the multi-tensor path with float32 and float64 tensors in
#: one optimizer (one call per dtype bucket); "arena" the coalescing of a ParamArena into one flat
#: tensor (the same one-tensor kernels as "single"). many-float32, many-float64 and arena-float64
#: ran the same kernels on the same paths again (about 40% of this file's time).
HOST_GRID = [("single", "float32"), ("single", "float64"), ("many", "mixed"), ("arena", "float32")]


@pytest.mark.parametrize("shape_set,dtype", HOST_GRID, ids=[f"{s}-{d}" for s, d in HOST_GRID])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_parity_host(backend, case, shape_set, dtype):
    require_backend(backend)
    run_and_compare(backend, case, shape_set, dtype)


# "single" runs the kernels over one-tensor plans (chunks computed), "many" over multi-tensor plans
# (chunks listed); "mixed" puts float32 and float64 tensors in one optimizer, so it covers the float64
# multi-tensor path ("many-float64" was the same kernels on half as many dtypes)
CUDA_GRID = [("single", "float32"), ("many", "mixed")]


@pytest.mark.parametrize("shape_set,dtype", CUDA_GRID, ids=[f"{s}-{d}" for s, d in CUDA_GRID])
@pytest.mark.parametrize("case", CUDA_CASES, ids=lambda c: c.id)
def test_parity_cuda(case, shape_set, dtype):
    require_backend("cuda")
    run_and_compare("cuda", case, shape_set, dtype, shapes=CUDA_SHAPES[shape_set])


# ------------------------------------------------------------------------------ param groups
#: a second group that differs from the case in several hyperparameters (options flipped too)
GROUP2 = {
    "sgd": dict(lr=0.1, momentum=0.5, dampening=0.25, weight_decay=0.2, nesterov=False,
                maximize=True),
    "adam": dict(lr=0.003, betas=(0.5, 0.9), amsgrad=True, weight_decay=0.2, maximize=True),
    "adamw": dict(lr=0.003, betas=(0.5, 0.9), amsgrad=False, weight_decay=0.3, maximize=True),
    "rmsprop": dict(lr=0.02, alpha=0.9, centered=True, momentum=0.3, weight_decay=0.2),
    "adagrad": dict(lr=0.3, lr_decay=0.2, initial_accumulator_value=0.25, weight_decay=0.2,
                    eps=1e-5),
    "lion": dict(lr=0.03, betas=(0.5, 0.9), weight_decay=0.2, maximize=True),
    "lamb": dict(lr=0.1, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.2, bias_correction=False,
                 maximize=True),
    "rprop": dict(lr=0.05, etas=(0.3, 1.4), step_sizes=(1e-4, 0.1), maximize=True),
    "nadam": dict(lr=0.003, betas=(0.5, 0.9), momentum_decay=0.1, weight_decay=0.2,
                  decoupled_weight_decay=True, maximize=True),
    "radam": dict(lr=0.003, betas=(0.5, 0.9), weight_decay=0.2, decoupled_weight_decay=True,
                  maximize=True),
    "adamax": dict(lr=0.005, betas=(0.3, 0.95), eps=1e-4, weight_decay=0.2, maximize=True),
    "adadelta": dict(lr=0.3, rho=0.8, eps=1e-4, weight_decay=0.2, maximize=True),
}


def _groups(kind):
    # listed out of index order on purpose: group 0 holds params 4, 0, 2; group 1 the others
    return [dict(params=[4, 0, 2]), dict(params=[1, 3, 5, 6], **GROUP2[kind])]


@pytest.mark.parametrize("dtype", ["float32", "float64", "mixed"])
@pytest.mark.parametrize("kind", list(BY_KIND))
def test_param_groups(backend, kind, dtype):
    """Two groups with different hyperparameters (and options) in one optimizer; lr of group 0
    changes mid-run. Group 1 sets only some keys: the others come from the constructor's defaults."""
    if backend != "numpy" and dtype != "mixed":
        pytest.skip("group handling is backend-independent: every dtype on numpy, mixed elsewhere")
    case = BY_KIND[kind][0]
    shapes = SHAPES["many"] if backend != "cuda" else [(3,), (), (2, 2), (1,), (2,), (0,), (3,)]
    run_and_compare(backend, case, "many", dtype, shapes=shapes, groups=_groups(kind))


# ------------------------------------------------------------------------------ None gradients
#: step -> indices whose gradient is None. Param 3 gets its first gradient at step 3 (fresh state
#: then, with its own step count); param 1 skips steps 2-3; param 0 skips the last step.
NONE = {0: (3,), 1: (1, 3), 2: (1,), STEPS - 1: (0,)}
RICHEST = [BY_KIND[k][-1] for k in BY_KIND]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_none_grads(backend, case):
    """A None gradient skips its parameter: param, state and step bit-for-bit unchanged (as torch).
    float32 and float64 tensors alternate, so the skipped ones move between dtype buckets."""
    if backend != "numpy" and case not in RICHEST:
        pytest.skip("skipping is backend-independent: every case on numpy, the richest elsewhere")
    dtype = "mixed"
    dev = Device(backend)
    shapes = SHAPES["many"] if backend != "cuda" else CUDA_SHAPES["many"]
    dtypes = dtypes_for(dtype, len(shapes))
    init, grads, order, traj = reference_trajectory(case, shapes, dtypes, 1, none=NONE)
    params = [dev.put(a) for a in init]
    opt = make(fd, case, params, backend=backend)
    for k, gs in enumerate(grads):
        before_p = [dev.get(p) for p in params]
        before_s = {j: {n: (v if n == "step" else dev.get(v)) for n, v in st.items()}
                    for j, st in opt.state.items()}
        opt.step([None if g is None else dev.put(g) for g in gs])
        if k + 1 == LR_CHANGE_AT:
            opt.param_groups[0]["lr"] *= 0.5
        after = opt.state
        for j in NONE.get(k, ()):
            np.testing.assert_array_equal(dev.get(params[j]), before_p[j])
            if j in before_s:
                assert after[j]["step"] == before_s[j]["step"]
                for n, v in before_s[j].items():
                    if n != "step":
                        np.testing.assert_array_equal(dev.get(after[j][n]), v)
            else:
                assert j not in after, f"params[{j}] got state without ever having a gradient"
        check_against(opt, params, traj[k], dev, f"step {k + 1}")


# ------------------------------------------------------------------------------ large tables
#: > numba's PARALLEL_MIN (65536) elements over several chunks, with empty and size-1 tensors
LARGE_SHAPES = [(40000,), (0,), (1,), (150, 201), (17,)]
LARGE_CASES = RICHEST


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", LARGE_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("backend", [b for b in HOST_BACKENDS if b != "numpy"])
def test_large_tables_match_numpy(backend, case, dtype):
    """Compiled host backends on tables big enough for their threaded/vectorised paths agree with the
    NumPy backend (itself checked element by element against the oracle above)."""
    require_backend(backend)
    dtypes = dtypes_for(dtype, len(LARGE_SHAPES))
    init, grads = make_data(7, LARGE_SHAPES, dtypes, steps=7)
    runs = {}
    for name in ("numpy", backend):
        params = [a.copy() for a in init]
        opt = make(fd, case, params, backend=name)
        for k, gs in enumerate(grads):
            opt.step(gs)
            if k == 2:
                opt.param_groups[0]["lr"] *= 0.5
        runs[name] = (params, opt.state_dict()["state"])
    (p0, s0), (p1, s1) = runs["numpy"], runs[backend]
    for j, (a, b) in enumerate(zip(p1, p0)):
        assert_close(a, b, what=f"params[{j}]")
    assert s0.keys() == s1.keys()
    for j in s0:
        assert s0[j].keys() == s1[j].keys()
        for n in s0[j]:
            if n == "step":
                assert s1[j][n] == s0[j][n]
            else:
                assert_close(s1[j][n], s0[j][n], what=f"state[{j}][{n!r}]")


def test_oracle_is_not_trivially_satisfied():
    """Guard against a tautology: a run whose lr differs by one part in a million (float64), or whose
    eps sits inside the sqrt instead of outside, must FAIL the comparison."""
    from dataclasses import replace
    case = BY_KIND["adam"][-1]
    shapes, dtypes = SHAPES["single"], [F64]
    _, _, _, traj = reference_trajectory(case, shapes, dtypes, 0)
    init, grads = make_data(0, shapes, dtypes)
    params = [a.copy() for a in init]
    other = replace(case, hp=dict(case.hp, lr=case.hp["lr"] * (1 + 1e-6)))
    opt = make(fd, other, params, backend="numpy")
    opt.step(grads[0])
    with pytest.raises(AssertionError):
        check_against(opt, params, traj[0], Device("numpy"), "step 1")
    # eps inside the sqrt (another library's convention): the oracle must see the difference
    from reference import adam as ref_adam
    st = {}
    p = [float(x) for x in init[0].reshape(-1)]
    g = [float(x) for x in grads[0][0].reshape(-1)]
    outside = ref_adam(p, g, st, 1, F64, lr=0.1, betas=(0.9, 0.999), eps=1e-3, weight_decay=0.0,
                       amsgrad=False, maximize=False, decoupled=False)
    inside = [pj - 0.1 / (1 - 0.9) * (0.1 * gj) / np.sqrt(0.001 * gj * gj / (1 - 0.999) + 1e-3)
              for pj, gj in zip(p, g)]
    with pytest.raises(AssertionError):
        assert_close(np.array(outside), np.array(inside))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(BY_KIND))
def test_add_param_group_mid_run(backend, kind, dtype):
    """add_param_group after some steps: the new params start at step 1 and the old ones go on
    counting (bias corrections, Adagrad's lr decay and SGD's first momentum step depend on it)."""
    if backend != "numpy" and dtype != "float32":
        pytest.skip("group handling is backend-independent: both dtypes on numpy, float32 elsewhere")
    dev = Device(backend)
    case = BY_KIND[kind][-1]
    shapes = [(3,), (2, 2), (), (4,)] if backend == "cuda" else [(5,), (2, 3), (), (7,)]
    dtypes = dtypes_for(dtype, len(shapes))
    init, grads = make_data(3, shapes, dtypes)
    ref = RefOptimizer(case.kind, [dict(case.hp, params=init[:2])])
    params = [dev.put(a) for a in init]
    opt = make(fd, case, params[:2], backend=backend)
    extra = dict(GROUP2[kind])
    for k, gs in enumerate(grads):
        if k == 3:
            ref.add_param_group(dict(case.hp, **extra, params=init[2:]))
            opt.add_param_group(dict(extra, params=params[2:]))
        n = 2 if k < 3 else 4
        ref.step(gs[:n])
        opt.step([dev.put(g) for g in gs[:n]])
        expected = ([ref.param(j) for j in range(n)],
                    {j: {nm: (v if nm == "step" else ref.state_array(j, nm)) for nm, v in st.items()}
                     for j, st in ref.state.items()})
        check_against(opt, params[:n], expected, dev, f"step {k + 1}")
