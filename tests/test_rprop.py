"""Rprop beyond the generic suites: torch.optim.Rprop's exact bits on hostile values (NaN, +-inf,
signed zeros, products that underflow, clamping, etas that round to 0 or 1 in float32), state dicts
moved both ways between fastdescent and torch mid-run, the learning rate's role (it only seeds the
step sizes), and Rprop-specific bad input (hyperparameters, overflowing scalars, aliasing) that
must leave parameters and state untouched.

torch's rule (``_single_tensor_rprop``) has no rounding-sensitive operation (products are compared
with 0, ``sign(g)*step_size`` is exact), so every backend must give torch's bits exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastdescent as fd
from conftest import Device, require_backend
from fastdescent import functional as F

torch = pytest.importorskip("torch")

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
SPECIALS = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e-30, -1e-30, 1e-200, 1e30, 3.0, -3.0]
SHAPES = [(37,), (3,), (), (0,), (2, 5)]

#: hyperparameter sets: defaults, maximize, clamping on both sides, lr above step_size_max, etas
#: that round to 1 (both) or to 0 (etaminus) in float32, huge etaplus, a frozen step size
HOSTILE_HP = {
    "default": dict(),
    "maximize": dict(maximize=True),
    "clamped": dict(lr=0.5, etas=(0.3, 1.5), step_sizes=(0.01, 0.6)),
    "lr_above_max": dict(lr=100.0),
    "etas_round_to_1": dict(etas=(1 - 1e-9, 1 + 1e-9)),
    "etaminus_rounds_to_0": dict(etas=(1e-50, 2.0), step_sizes=(0.0, 50)),
    "frozen": dict(lr=0.0, step_sizes=(0, 0)),
    "huge_etaplus": dict(lr=1e-3, etas=(0.5, 1e30), step_sizes=(1e-6, 1e30), maximize=True),
}


def _bits(a):
    a = np.ascontiguousarray(a).reshape(-1)
    return a.view(np.uint32 if a.dtype == F32 else np.uint64)


def assert_same_bits(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    bad = np.flatnonzero(_bits(got) != _bits(want))
    if bad.size:
        k = bad[:5]
        raise AssertionError(f"{what}: {bad.size} elements differ, e.g. at {k.tolist()}: "
                             f"{got.reshape(-1)[k]} != torch {want.reshape(-1)[k]}")


def hostile_data(dtype, steps, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    if init[0].size >= 4:
        init[0].reshape(-1)[:4] = [-0.0, 0.0, -0.0, 1.0]
    grads = []
    for k in range(steps):
        gs = []
        for s in shapes:
            g = rng.standard_normal(s).astype(dtype)
            if g.size >= 8:
                idx = rng.integers(0, g.size, g.size // 2)
                with np.errstate(over="ignore"):
                    g.reshape(-1)[idx] = np.array(rng.choice(SPECIALS, idx.size)).astype(dtype)
                if k % 3 == 0:
                    g.reshape(-1)[:3] = -0.0
            gs.append(g)
        grads.append(gs)
    return init, grads


def torch_params(init):
    return [torch.nn.Parameter(torch.tensor(a)) for a in init]


def torch_step(topt, tparams, gs):
    for p, g in zip(tparams, gs):
        p.grad = None if g is None else torch.tensor(g)
    with torch.no_grad():
        topt.step()


def assert_matches_torch(params, opt, tparams, topt, what, get=np.asarray):
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_same_bits(get(p), tp.detach().numpy(), f"{what}: params[{i}]")
    ours, theirs = opt.state_dict()["state"], topt.state_dict()["state"]
    assert sorted(ours) == sorted(theirs), f"{what}: state keys"
    for i, st in theirs.items():
        assert ours[i]["step"] == int(st["step"]), f"{what}: state[{i}]['step']"
        for n in ("prev", "step_size"):
            assert_same_bits(ours[i][n], st[n].numpy(), f"{what}: state[{i}][{n!r}]")


def to_torch_state_dict(sd):
    """fastdescent's state_dict in torch's form: tensors for the state (torch keeps whatever it is
    given there, and its step needs tensors)."""
    return {"state": {i: {n: torch.tensor(float(v)) if n == "step" else torch.from_numpy(v.copy())
                          for n, v in st.items()} for i, st in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


# ------------------------------------------------------------------------------ torch's bits
@pytest.mark.parametrize("hp", list(HOSTILE_HP))
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_hostile_values_match_torch_bitwise(host_backend, dtype, hp):
    """NaN/inf/signed-zero/underflowing gradients and extreme hyperparameters, 9 steps: the
    parameters and both state buffers are torch's bit for bit after every step."""
    init, grads = hostile_data(dtype, 9)
    params = [a.copy() for a in init]
    tparams = torch_params(init)
    opt = fd.Rprop(params, **HOSTILE_HP[hp], backend=host_backend)
    topt = torch.optim.Rprop(tparams, **HOSTILE_HP[hp], foreach=False)
    for k, gs in enumerate(grads):
        with np.errstate(all="ignore"):
            opt.step(gs)
        torch_step(topt, tparams, gs)
        assert_matches_torch(params, opt, tparams, topt, f"{hp}, step {k + 1}")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # simulator: inf*0
def test_hostile_values_match_torch_bitwise_cuda():
    """The same on the cuda backend (simulator: tiny arrays), float32 and float64 in one call."""
    require_backend("cuda")
    dev = Device("cuda")
    shapes = [(16,), (3,)]
    for dtype in (F32, F64):
        for hp in ("default", "maximize", "etaminus_rounds_to_0"):
            init, grads = hostile_data(dtype, 4, seed=3, shapes=shapes)
            params = [dev.put(a) for a in init]
            tparams = torch_params(init)
            opt = fd.Rprop(params, **HOSTILE_HP[hp], backend="cuda")
            topt = torch.optim.Rprop(tparams, **HOSTILE_HP[hp], foreach=False)
            for k, gs in enumerate(grads):
                opt.step([dev.put(g) for g in gs])
                torch_step(topt, tparams, gs)
                assert_matches_torch(params, opt, tparams, topt, f"cuda {hp}, step {k + 1}",
                                     get=dev.get)


def test_nan_gradient_follows_torch(host_backend):
    """torch.sign(NaN) = 0: a NaN gradient element does not move its parameter and keeps its step
    size; prev holds the NaN, so the next step keeps that step size again (g*NaN is NaN) but moves
    by the new gradient's sign. (torch, not IEEE propagation: the parameter never becomes NaN.)"""
    p = np.array([1.0, 1.0])
    opt = fd.Rprop([p], lr=0.1, backend=host_backend)
    opt.step([np.array([math.nan, 1.0])])
    np.testing.assert_array_equal(p, [1.0, 0.9])
    st = opt.state[0]
    assert math.isnan(st["prev"][0]) and st["prev"][1] == 1.0
    np.testing.assert_array_equal(st["step_size"], [0.1, 0.1])
    opt.step([np.array([1.0, 1.0])])
    np.testing.assert_array_equal(opt.state[0]["step_size"], [0.1, 0.1 * 1.2])
    np.testing.assert_array_equal(p, [1.0 - 0.1, 0.9 - 0.1 * 1.2])
    np.testing.assert_array_equal(opt.state[0]["prev"], [1.0, 1.0])


# ------------------------------------------------------------------------------ state dicts
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_torch_state_dict_loads_mid_run(host_backend, dtype):
    """torch runs 4 steps (one param skipped once, lr changed after the state exists, NaN/inf
    planted in its state), fastdescent loads its state_dict and both go on bit-identically."""
    hp = dict(lr=0.03, etas=(0.4, 1.3), step_sizes=(1e-4, 0.2), maximize=True)
    init, grads = hostile_data(dtype, 8, seed=5)
    tparams = torch_params(init)
    topt = torch.optim.Rprop(tparams, **hp, foreach=False)
    for k, gs in enumerate(grads[:4]):
        torch_step(topt, tparams, [None if (k == 1 and i == 1) else g for i, g in enumerate(gs)])
        if k == 1:
            topt.param_groups[0]["lr"] = 0.5  # too late for the params that already have state
    with torch.no_grad():
        topt.state[tparams[0]]["step_size"][0] = math.nan
        topt.state[tparams[0]]["prev"][1] = math.inf
    params = [p.detach().numpy().copy() for p in tparams]
    opt = fd.Rprop(params, **hp, backend=host_backend)
    opt.load_state_dict(topt.state_dict())
    assert opt.param_groups[0]["lr"] == 0.5
    assert_matches_torch(params, opt, tparams, topt, "after load")
    for k, gs in enumerate(grads[4:]):
        with np.errstate(all="ignore"):
            opt.step(gs)
        torch_step(topt, tparams, gs)
        assert_matches_torch(params, opt, tparams, topt, f"step {k + 5}")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_state_dict_loads_into_torch_mid_run(host_backend, dtype):
    """fastdescent runs 4 steps (a param without gradient until step 3), torch loads its
    state_dict (as tensors) and both go on bit-identically; and back into a fresh fastdescent."""
    hp = dict(lr=0.03, etas=(0.4, 1.3), step_sizes=(1e-4, 0.2))
    init, grads = hostile_data(dtype, 8, seed=6)
    params = [a.copy() for a in init]
    opt = fd.Rprop(params, **hp, backend=host_backend)
    for k, gs in enumerate(grads[:4]):
        with np.errstate(all="ignore"):
            opt.step([None if (k < 2 and i == 2) else g for i, g in enumerate(gs)])
    tparams = torch_params(params)
    topt = torch.optim.Rprop(tparams, **hp, foreach=False)
    topt.load_state_dict(to_torch_state_dict(opt.state_dict()))
    assert_matches_torch(params, opt, tparams, topt, "after load")
    for k, gs in enumerate(grads[4:6]):
        with np.errstate(all="ignore"):
            opt.step(gs)
        torch_step(topt, tparams, gs)
        assert_matches_torch(params, opt, tparams, topt, f"step {k + 5}")
    # torch -> a fresh fastdescent optimizer on another backend's copy of the params
    again = [p.detach().numpy().copy() for p in tparams]
    opt2 = fd.Rprop(again, **hp, backend="numpy")
    opt2.load_state_dict(topt.state_dict())
    for k, gs in enumerate(grads[6:]):
        with np.errstate(all="ignore"):
            opt2.step(gs)
        torch_step(topt, tparams, gs)
        assert_matches_torch(again, opt2, tparams, topt, f"reloaded, step {k + 7}")


def test_lr_seeds_new_state_only(host_backend):
    """lr is read when a parameter's state is created (its first gradient), as torch: changing it
    later changes nothing for params with state, and seeds the step sizes of the others."""
    init = [np.ones(3), np.ones(2)]
    params = [a.copy() for a in init]
    tparams = torch_params(init)
    opt = fd.Rprop(params, lr=0.1, backend=host_backend)
    topt = torch.optim.Rprop(tparams, lr=0.1, foreach=False)
    g = [np.array([1.0, -2.0, 3.0]), np.array([1.0, 1.0])]
    for k in range(4):
        gs = [g[0], None if k < 2 else g[1]]
        opt.step(gs)
        torch_step(topt, tparams, gs)
        if k == 0:
            opt.param_groups[0]["lr"] = 7.0
            topt.param_groups[0]["lr"] = 7.0
        assert_matches_torch(params, opt, tparams, topt, f"step {k + 1}")
    assert opt.state[1]["step_size"][0] == 7.0 * 1.2  # seeded at 7, grown once
    assert opt.state[0]["step_size"][0] == min(0.1 * 1.2 ** 3, 50)


# ------------------------------------------------------------------------------ bad input
def _stepped(backend, dtype=F32):
    rng = np.random.default_rng(9)
    params = [rng.standard_normal(s).astype(dtype) for s in [(4,), (2, 3)]]
    grads = [[rng.standard_normal(p.shape).astype(dtype) for p in params] for _ in range(2)]
    opt = fd.Rprop(params, lr=0.05, backend=backend)
    opt.step(grads[0])
    return opt, params, grads


def _snapshot(opt, params):
    state = {i: {n: (v if n == "step" else v.copy()) for n, v in st.items()}
             for i, st in opt.state.items()}
    return [p.copy() for p in params], state


def _assert_unchanged(opt, params, snap):
    for p, b in zip(params, snap[0]):
        assert_same_bits(p, b, "params")
    for i, st in snap[1].items():
        for n, v in st.items():
            if n == "step":
                assert opt.state[i]["step"] == v
            else:
                assert_same_bits(opt.state[i][n], v, f"state[{i}][{n!r}]")


@pytest.mark.parametrize("key,value,exc,name", [
    ("etas", (0.5, 1e300), ValueError, "etaplus"),
    ("step_sizes", (1e-6, 1e39), ValueError, "step_size_max"),
    ("etas", [1.2, 0.5], ValueError, "etas[0]"),
    ("etas", (0.5, np.float64("nan")), ValueError, "etas[1]"),
    ("step_sizes", (True, 1.0), TypeError, "step_sizes[0]"),
    ("step_sizes", "ab", TypeError, "step_sizes"),
    ("lr", -1e-3, ValueError, "lr"),
])
def test_bad_values_mid_run_change_nothing(host_backend, key, value, exc, name):
    """A bad value set between steps (including scalars that overflow float32, the parameters'
    dtype) raises naming it, before anything is written; fixing it lets the run go on."""
    opt, params, grads = _stepped(host_backend)
    snap = _snapshot(opt, params)
    good = opt.param_groups[0][key]
    opt.param_groups[0][key] = value
    with pytest.raises(exc, match=name.replace("[", r"\[").replace("]", r"\]")):
        opt.step(grads[1])
    _assert_unchanged(opt, params, snap)
    opt.param_groups[0][key] = good
    opt.step(grads[1])
    assert opt.state[0]["step"] == 2


def test_bad_state_dict_changes_nothing(host_backend):
    opt, params, grads = _stepped(host_backend)
    snap = _snapshot(opt, params)
    sd = opt.state_dict()
    bad = dict(sd, param_groups=[dict(sd["param_groups"][0], step_sizes=(1.0, 0.5))])
    with pytest.raises(ValueError, match="step_size_min"):
        opt.load_state_dict(bad)
    bad = dict(sd, state={0: dict(sd["state"][0]), 1: {"step": 1, "prev": sd["state"][1]["prev"]}})
    with pytest.raises(ValueError, match="step_size"):
        opt.load_state_dict(bad)
    bad = dict(sd, state={0: dict(sd["state"][0], weight_decay=np.zeros(4, np.float32))})
    with pytest.raises(ValueError, match="weight_decay"):
        opt.load_state_dict(bad)
    _assert_unchanged(opt, params, snap)


def test_no_weight_decay():
    """torch.optim.Rprop has no weight decay; neither has fastdescent's."""
    with pytest.raises(TypeError):
        fd.Rprop([np.zeros(2)], weight_decay=0.1)
    opt = fd.Rprop([np.zeros(2)], backend="numpy")
    opt.param_groups[0]["weight_decay"] = 0.1  # an unknown key is not applied...
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="weight_decay"):  # ...nor accepted from a state_dict
        fd.Rprop([np.zeros(2)], backend="numpy").load_state_dict(sd)


def test_gradient_aliasing_state_is_refused(host_backend):
    opt, params, grads = _stepped(host_backend)
    snap = _snapshot(opt, params)
    for name in ("prev", "step_size"):
        with pytest.raises(ValueError, match=r"grads\[1\]"):
            opt.step([grads[1][0], opt.state[1][name]])
    _assert_unchanged(opt, params, snap)


# ------------------------------------------------------------------------------ functional
def _fstate(params, lr):
    return [np.zeros_like(p) for p in params], [np.full_like(p, lr) for p in params]


def test_functional_is_torchs_functional_rprop(host_backend):
    """fastdescent.functional.rprop takes torch.optim's functional names (etaminus, etaplus,
    step_size_min, step_size_max) and gives the class's bits; float32 and float64 in one call."""
    rng = np.random.default_rng(10)
    init = [rng.standard_normal(3).astype(F32), rng.standard_normal((2, 2))]
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in init] for _ in range(5)]
    hp = dict(lr=0.04, etas=(0.3, 1.6), step_sizes=(1e-3, 0.1), maximize=True)
    cparams = [a.copy() for a in init]
    opt = fd.Rprop(cparams, **hp, backend=host_backend)
    fparams = [a.copy() for a in init]
    prevs, steps = _fstate(fparams, hp["lr"])
    for gs in grads:
        opt.step(gs)
        F.rprop(fparams, gs, prevs, steps, etaminus=0.3, etaplus=1.6, step_size_min=1e-3,
                step_size_max=0.1, maximize=True, backend=host_backend)
        for i in range(2):
            assert_same_bits(fparams[i], cparams[i], f"params[{i}]")
            assert_same_bits(prevs[i], opt.state[i]["prev"], f"prevs[{i}]")
            assert_same_bits(steps[i], opt.state[i]["step_size"], f"step_sizes[{i}]")


@pytest.mark.parametrize("bad,exc,name", [
    (dict(etaminus=1.0), ValueError, "etaminus"),
    (dict(etaminus=0.0), ValueError, "etaminus"),
    (dict(etaplus=1.0), ValueError, "etaplus"),
    (dict(etaplus=math.inf), ValueError, "etaplus"),
    (dict(etaplus="2"), TypeError, "etaplus"),
    (dict(step_size_min=-1.0), ValueError, "step_size_min"),
    (dict(step_size_min=2.0, step_size_max=1.0), ValueError, "step_size_min"),
    (dict(step_size_max=math.nan), ValueError, "step_size_max"),
    (dict(maximize=1), TypeError, "maximize"),
    (dict(etaplus=1e300), ValueError, "etaplus"),  # overflows float32
])
def test_functional_bad_hyperparameters(bad, exc, name):
    params = [np.ones(3, F32)]
    prevs, steps = _fstate(params, 0.1)
    before = [a.copy() for a in (*params, *prevs, *steps)]
    with pytest.raises(exc, match=name):
        F.rprop(params, [np.ones(3, F32)], prevs, steps, **bad, backend="numpy")
    for a, b in zip((*params, *prevs, *steps), before):
        assert_same_bits(a, b, "arrays")


def test_functional_state_aliasing_is_refused():
    params = [np.ones(4)]
    buf = np.zeros(4)
    with pytest.raises(ValueError, match=r"step_sizes\[0\]"):
        F.rprop(params, [np.ones(4)], [buf], [buf], backend="numpy")
    np.testing.assert_array_equal(params[0], 1.0)
