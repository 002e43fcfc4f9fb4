"""Trajectories against torch.optim (for-loop mode, ``foreach=False``) for every configuration.

fastdescent follows torch.optim's published semantics (SEMANTICS.md), so the same configuration, fed
the same gradients, must give the same parameters and the same state (``exp_avg`` ...) within the
contract's tolerances, on every host backend, including a mid-run learning-rate change, None
gradients, and a torch state_dict loaded into fastdescent mid-run.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdescent as fd  # noqa: E402
from cases import BY_KIND, CASES, TORCH_NAMES, make  # noqa: E402
from conftest import HOST_BACKENDS, require_backend  # noqa: E402
from reference import assert_close  # noqa: E402

STEPS = 8
LR_CHANGE_AT = 4
SHAPES = [(4, 3), (), (1,), (2, 1, 3), (0,), (9,)]
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


#: kinds whose torch state holds a scalar that torch keeps in its default dtype (NAdam's
#: ``mu_product``: float32 by default, whatever the parameters' dtype); fastdescent keeps it in
#: float64, which is torch's behaviour under a float64 default dtype, so these run with that
#: (test_nadam.py covers torch's float32 default separately)
FLOAT64_DEFAULT_KINDS = {"nadam"}


@contextlib.contextmanager
def torch_defaults(case):
    """torch's default dtype for comparing ``case`` (see FLOAT64_DEFAULT_KINDS)."""
    if case.kind not in FLOAT64_DEFAULT_KINDS:
        yield
        return
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def torch_opt(case, tparams):
    if case.kind not in TORCH_NAMES:
        pytest.skip(f"torch.optim has no {case.cls_name} (checked against the oracle and optax "
                    "instead)")
    return getattr(torch.optim, TORCH_NAMES[case.kind])(tparams, **case.hp, foreach=False)


def data(seed, dtype, steps=STEPS, none=None):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = []
    for k in range(steps):
        gs = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        for i in (none or {}).get(k, ()):
            gs[i] = None
        grads.append(gs)
    return init, grads


def torch_params(init):
    return [torch.nn.Parameter(torch.tensor(a)) for a in init]


def torch_step(topt, tparams, gs):
    for p, g in zip(tparams, gs):
        p.grad = None if g is None else torch.tensor(g)
    topt.step()


def compare_state(ours, theirs, what):
    """ours: our state_dict()['state']; theirs: torch's. Same entries, names, values and step."""
    for i, tst in theirs.items():
        tnames = {n for n, v in tst.items() if n != "step" and v is not None}
        ost = ours.get(i, {})
        if "step" in tst and float(tst["step"]) == 0 and not ost:
            continue  # torch's Adagrad creates state in __init__; we create it on the first update
        assert {n for n in ost if n != "step"} == tnames, f"{what}: state[{i}] names"
        if "step" in tst and tnames:
            assert ost["step"] == int(float(tst["step"])), f"{what}: state[{i}]['step']"
        for n in tnames:
            assert_close(ost[n], tst[n].numpy(), what=f"{what}: state[{i}][{n!r}]")
    for i, ost in ours.items():
        if any(n != "step" for n in ost):
            assert i in theirs, f"{what}: we have state for params[{i}], torch has none"


def check_params(params, tparams, what):
    for j, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), what=f"{what}: params[{j}]")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_trajectory_matches_torch(backend, case, dtype):
    require_backend(backend)
    init, grads = data(11, np.dtype(dtype))
    params = [a.copy() for a in init]
    tparams = torch_params(init)
    opt = make(fd, case, params, backend=backend)
    topt = torch_opt(case, tparams)
    with torch.no_grad(), torch_defaults(case):
        for k, gs in enumerate(grads):
            opt.step(gs)
            torch_step(topt, tparams, gs)
            if k + 1 == LR_CHANGE_AT:
                opt.param_groups[0]["lr"] *= 0.5
                topt.param_groups[0]["lr"] *= 0.5
            check_params(params, tparams, f"step {k + 1}")
    compare_state(opt.state_dict()["state"], topt.state_dict()["state"], "final")


#: param 2 first gets a gradient at step 3; param 0 skips steps 2-3; param 5 skips the last step
NONE = {0: (2,), 1: (0, 2), 2: (0,), STEPS - 1: (5,)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [c for k in BY_KIND for c in (BY_KIND[k][-1], BY_KIND[k][-2])],
                         ids=lambda c: c.id)
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_none_grads_match_torch(backend, case, dtype):
    require_backend(backend)
    init, grads = data(12, np.dtype(dtype), none=NONE)
    params = [a.copy() for a in init]
    tparams = torch_params(init)
    opt = make(fd, case, params, backend=backend)
    topt = torch_opt(case, tparams)
    with torch.no_grad(), torch_defaults(case):
        for k, gs in enumerate(grads):
            opt.step(gs)
            torch_step(topt, tparams, gs)
            check_params(params, tparams, f"step {k + 1}")
            compare_state(opt.state_dict()["state"], topt.state_dict()["state"], f"step {k + 1}")


@pytest.mark.parametrize("case", [c for k in BY_KIND for c in (BY_KIND[k][-1], BY_KIND[k][-2])],
                         ids=lambda c: c.id)
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_load_torch_state_dict(backend, case):
    """A torch state_dict (same layout: tensors, a tensor step, extra group keys) loads into
    fastdescent mid-run, and both then go on identically."""
    require_backend(backend)
    init, grads = data(13, np.dtype(np.float64))
    tparams = torch_params(init)
    topt = torch_opt(case, tparams)
    with torch.no_grad(), torch_defaults(case):
        for gs in grads[:4]:
            torch_step(topt, tparams, gs)
        params = [p.detach().numpy().copy() for p in tparams]
        opt = make(fd, case, params, backend=backend)
        opt.load_state_dict(topt.state_dict())
        compare_state(opt.state_dict()["state"], topt.state_dict()["state"], "after load")
        for k, gs in enumerate(grads[4:]):
            opt.step(gs)
            torch_step(topt, tparams, gs)
            check_params(params, tparams, f"step {k + 5}")
        compare_state(opt.state_dict()["state"], topt.state_dict()["state"], "final")


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, float("inf")])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_clip_grad_norm_matches_torch(backend, dtype, norm_type):
    require_backend(backend)
    rng = np.random.default_rng(5)
    # (torch cannot take the inf-norm of an empty tensor: no zero-size tensor here)
    grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES if 0 not in s]
    tparams = torch_params([np.zeros_like(g) for g in grads])
    for p, g in zip(tparams, grads):
        p.grad = torch.tensor(g)
    total_t = float(torch.nn.utils.clip_grad_norm_(tparams, 0.5, norm_type=norm_type, foreach=False))
    total = fd.clip_grad_norm_(grads, 0.5, norm_type=norm_type, backend=backend)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert total == pytest.approx(total_t, rel=rtol)
    for g, p in zip(grads, tparams):
        assert_close(g, p.grad.numpy())
