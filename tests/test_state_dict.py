"""state_dict / load_state_dict: torch-like layout, exact round trip, across backends, validation."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, CASES, make
from conftest import ALL_BACKENDS, Device, require_backend
from reference import SCALAR_STATE, assert_close, state_names

SHAPES = [(3, 2), (), (5,), (1,), (2, 2)]
#: saving and loading is the same code for every backend: every case runs on numpy, the richest
#: configuration of each optimizer on the others
RICHEST = [BY_KIND[k][-1] for k in BY_KIND]
CUDA_SHAPES = [(3,), (), (2, 2)]
STEPS, SAVE_AT = 8, 4


def data(seed, shapes, dtypes, steps=STEPS):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    grads = [[rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)] for _ in range(steps)]
    return init, grads


def mixed(n):
    return [np.float32 if i % 2 else np.float64 for i in range(n)]


def groups_of(case, params):
    """Two param groups: the case's options, and the same with a different lr."""
    return [dict(params=params[:2]), dict(params=params[2:], lr=case.hp["lr"] * 3)]


def run(backend, case, init, grads, *, save_at=None, load_backend=None):
    """Run all steps; if ``save_at``, save there and continue in a FRESH optimizer (fresh arrays
    holding the same values) on ``load_backend``. Returns (host params, state_dict, saved)."""
    dev = Device(backend)
    params = [dev.put(a) for a in init]
    opt = make(fd, case, groups_of(case, params), backend=backend)
    saved = None
    for k, gs in enumerate(grads):
        if k == save_at:
            saved = opt.state_dict()
            dev = Device(load_backend or backend)
            params = [dev.put(Device(backend).get(p)) for p in params]
            opt = make(fd, case, groups_of(case, params), backend=load_backend or backend)
            opt.load_state_dict(saved)
        opt.step([dev.put(g) for g in gs])
        if k == 2:
            opt.param_groups[0]["lr"] *= 0.5  # saved with the state, restored by the load
    return [dev.get(p) for p in params], opt.state_dict(), saved


def assert_same(sd_a, sd_b, exact=True):
    assert sd_a["state"].keys() == sd_b["state"].keys()
    for i in sd_a["state"]:
        a, b = sd_a["state"][i], sd_b["state"][i]
        assert a.keys() == b.keys(), i
        for n in a:
            if n == "step" or exact:
                np.testing.assert_array_equal(a[n], b[n], err_msg=f"state[{i}][{n!r}]")
            else:
                assert_close(a[n], b[n], what=f"state[{i}][{n!r}]")
    assert len(sd_a["param_groups"]) == len(sd_b["param_groups"])
    for ga, gb in zip(sd_a["param_groups"], sd_b["param_groups"]):
        assert ga == gb


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_exact_round_trip(backend, case):
    """save -> load into a fresh optimizer -> continue == an uninterrupted run, bit for bit."""
    if backend != "numpy" and case not in RICHEST:
        pytest.skip("backend-independent: every case on numpy, the richest elsewhere")
    shapes = CUDA_SHAPES if backend == "cuda" else SHAPES
    init, grads = data(21, shapes, mixed(len(shapes)))
    p_a, sd_a, _ = run(backend, case, init, grads)
    p_b, sd_b, saved = run(backend, case, init, grads, save_at=SAVE_AT)
    for a, b in zip(p_a, p_b):
        np.testing.assert_array_equal(a, b)
    assert_same(sd_a, sd_b, exact=True)
    assert saved["param_groups"][0]["lr"] == case.hp["lr"] * 0.5


@pytest.mark.parametrize("kind", list(BY_KIND))
@pytest.mark.parametrize("dst", ALL_BACKENDS)
@pytest.mark.parametrize("src", ALL_BACKENDS)
def test_load_across_backends(src, dst, kind):
    """A state saved on one backend loads into another (host NumPy state arrays in between)."""
    if src == dst:
        pytest.skip("the same backend: test_exact_round_trip")
    require_backend(src)
    require_backend(dst)
    if "cuda" in (src, dst) and kind != "adam":
        pytest.skip("cuda (simulator): adam only")
    case = BY_KIND[kind][-1]
    shapes = CUDA_SHAPES if "cuda" in (src, dst) else SHAPES
    init, grads = data(22, shapes, mixed(len(shapes)))
    p_a, sd_a, _ = run(src, case, init, grads)
    p_b, sd_b, _ = run(src, case, init, grads, save_at=SAVE_AT, load_backend=dst)
    for j, (a, b) in enumerate(zip(p_a, p_b)):
        assert_close(b, a, what=f"params[{j}]")
    assert_same(sd_a, sd_b, exact=False)


@pytest.mark.parametrize("case", [c for k in BY_KIND for c in BY_KIND[k]], ids=lambda c: c.id)
def test_layout(backend, case):
    """torch's layout: {"state": {int: {"step": int, name: host array}}, "param_groups":
    [{hyperparameters..., "params": [ints]}]}, indices running on across groups; a self-contained
    copy (later steps do not change it; changing it does not change the optimizer)."""
    if backend != "numpy" and case not in RICHEST:
        pytest.skip("backend-independent: every case on numpy, the richest elsewhere")
    dev = Device(backend)
    shapes = CUDA_SHAPES if backend == "cuda" else SHAPES
    init, grads = data(23, shapes, mixed(len(shapes)))
    params = [dev.put(a) for a in init]
    opt = make(fd, case, groups_of(case, params), backend=backend)
    opt.step([dev.put(g) for g in grads[0]])
    opt.step([dev.put(g) for g in grads[1]])
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], list(range(2, len(shapes)))]
    for g, mine in zip(sd["param_groups"], opt.param_groups):
        assert set(case.hp) | {"params"} <= set(g)
        assert {k: v for k, v in g.items() if k != "params"} == {
            k: v for k, v in mine.items() if k != "params"}
    assert sd["param_groups"][1]["lr"] == case.hp["lr"] * 3
    names = state_names(case.kind, case.hp)
    if names:
        assert sorted(sd["state"]) == list(range(len(shapes)))
    for i, st in sd["state"].items():
        assert type(i) is int
        assert type(st["step"]) is int and st["step"] == 2
        assert set(st) == {"step", *names, *SCALAR_STATE.get(case.kind, ())}
        for n in names:
            assert type(st[n]) is np.ndarray
            assert st[n].shape == init[i].shape and st[n].dtype == init[i].dtype
        for n in SCALAR_STATE.get(case.kind, ()):  # scalar state (NAdam's mu_product): a float
            assert type(st[n]) is float
    frozen = copy.deepcopy(sd)
    # self-contained: more steps do not change it ...
    opt.step([dev.put(g) for g in grads[2]])
    assert_same(sd, frozen)
    # ... and scribbling on it does not change the optimizer
    before = opt.state_dict()
    for st in sd["state"].values():
        for n in names:
            st[n][...] = 123.0
    sd["param_groups"][0]["lr"] = 99.0
    assert_same(opt.state_dict(), before)
    # pickles (a checkpoint) and loads back to the same thing
    opt2 = make(fd, case, groups_of(case, [dev.put(a) for a in init]), backend=backend)
    opt2.load_state_dict(pickle.loads(pickle.dumps(before)))
    assert_same(opt2.state_dict(), before)


# ------------------------------------------------------------------------------ validation
def _good(backend="numpy"):
    """An Adam(amsgrad) optimizer with two groups and state, its params and the grads."""
    case = BY_KIND["adam"][-1]
    init, grads = data(24, SHAPES, mixed(len(SHAPES)))
    params = [a.copy() for a in init]
    opt = make(fd, case, groups_of(case, params), backend=backend)
    opt.step(grads[0])
    opt.step(grads[1])
    return case, opt, params, grads


def _bad_states():
    def drop_group(sd):
        sd["param_groups"].pop()

    def extra_group(sd):
        sd["param_groups"].append(dict(sd["param_groups"][0], params=[99]))

    def drop_param(sd):
        sd["param_groups"][1]["params"].pop()
        sd["state"].pop(len(SHAPES) - 1)

    def extra_param(sd):
        sd["param_groups"][0]["params"].append(99)

    def wrong_size(sd):
        sd["state"][0]["exp_avg"] = np.zeros(7)

    def wrong_size_last(sd):  # the error is in the last entry: nothing before it may be applied
        sd["state"][len(SHAPES) - 1]["max_exp_avg_sq"] = np.zeros(1)

    def negative_step(sd):
        sd["state"][1]["step"] = -1

    def fractional_step(sd):
        sd["state"][1]["step"] = 2.5

    def nan_step(sd):
        sd["state"][1]["step"] = float("nan")

    def unknown_index(sd):
        sd["state"][42] = dict(sd["state"][0])

    def bad_lr(sd):
        sd["param_groups"][1]["lr"] = -1.0

    def bad_flag(sd):
        sd["param_groups"][0]["amsgrad"] = "yes"

    def unknown_state_name(sd):
        sd["state"][0]["not_a_state"] = np.zeros_like(sd["state"][0]["exp_avg"])

    def no_state_key(sd):
        del sd["state"]

    return [drop_group, extra_group, drop_param, extra_param, wrong_size, wrong_size_last,
            negative_step, fractional_step, nan_step, unknown_index, bad_lr, bad_flag,
            unknown_state_name, no_state_key]


@pytest.mark.parametrize("corrupt", _bad_states(), ids=lambda f: f.__name__)
def test_load_validates_and_leaves_optimizer_untouched(corrupt):
    case, opt, params, grads = _good()
    twin_case, twin, twin_params, _ = _good()
    sd = opt.state_dict()
    corrupt(sd)
    before = opt.state_dict()
    with pytest.raises((ValueError, TypeError)):
        opt.load_state_dict(sd)
    assert_same(opt.state_dict(), before)
    # and it goes on exactly as an optimizer that never saw the bad state
    for gs in grads[2:5]:
        opt.step(gs)
        twin.step(gs)
    for a, b in zip(params, twin_params):
        np.testing.assert_array_equal(a, b)
    assert_same(opt.state_dict(), twin.state_dict())


def test_load_rejects_non_dict():
    _, opt, _, _ = _good()
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict([1, 2, 3])


def test_load_into_fresh_optimizer_then_state_dict_is_identity(backend):
    """load(sd) then state_dict() gives sd back (values, steps, groups), also before any step."""
    dev = Device(backend)
    case = BY_KIND["rmsprop"][-1]
    shapes = CUDA_SHAPES if backend == "cuda" else SHAPES
    init, grads = data(25, shapes, mixed(len(shapes)))
    params = [dev.put(a) for a in init]
    opt = make(fd, case, groups_of(case, params), backend=backend)
    for gs in grads[:3]:
        opt.step([dev.put(g) for g in gs])
    sd = opt.state_dict()
    fresh = make(fd, case, groups_of(case, [dev.put(a) for a in init]), backend=backend)
    fresh.load_state_dict(sd)
    assert_same(fresh.state_dict(), sd)
    assert all(fresh.state[i]["step"] == 3 for i in fresh.state)
