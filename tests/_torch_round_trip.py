"""A state_dict round trip with torch.optim, both ways, mid-run (used by the per-optimizer tests).

torch runs a few steps; fastdescent loads torch's state_dict and both go on (compared after every
step); then a fresh torch optimizer over copies of fastdescent's parameters loads fastdescent's
state_dict (arrays turned into tensors, ``step`` into torch's float32 step tensor) and both go on
again. Two param groups with different hyperparameters, a parameter without a gradient in one step
(so the per-parameter step counts differ), and the final states compared entry by entry.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd
from reference import assert_close

SHAPES = [(4, 3), (), (5,), (2, 2)]
PHASE = 3  # steps per phase: torch alone, then fd loaded from torch, then torch loaded from fd


def to_torch_state_dict(sd, torch):
    """fastdescent's state_dict in the form torch.optim's load_state_dict takes (tensors)."""
    state = {i: {k: torch.tensor(float(v)) if k == "step" else torch.tensor(v) for k, v in st.items()}
             for i, st in sd["state"].items()}
    return {"state": state, "param_groups": [dict(g) for g in sd["param_groups"]]}


def _step_torch(topt, tparams, gs, torch):
    for p, g in zip(tparams, gs):
        p.grad = None if g is None else torch.tensor(g)
    topt.step()


def _compare(params, tparams, what):
    for j, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), what=f"{what}: params[{j}]")


def _compare_state(sd, tsd, what):
    assert sd["state"].keys() == tsd["state"].keys(), what
    for i, st in tsd["state"].items():
        assert set(sd["state"][i]) == set(st), f"{what}: state[{i}] names"
        for k, v in st.items():
            if k == "step":
                assert sd["state"][i][k] == int(float(v)), f"{what}: state[{i}]['step']"
            else:
                assert_close(sd["state"][i][k], v.numpy(), what=f"{what}: state[{i}][{k!r}]")


def round_trip(cls_name, hp0, hp1, backend, dtype, seed=7):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(3 * PHASE)]
    grads[PHASE + 1][1] = None  # params[1] misses one step: its step count lags behind
    tparams = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    tcls = getattr(torch.optim, cls_name)
    topt = tcls([dict(params=tparams[:2], **hp0), dict(params=tparams[2:], **hp1)], foreach=False)
    with torch.no_grad():
        for gs in grads[:PHASE]:
            _step_torch(topt, tparams, gs, torch)
        params = [p.detach().numpy().copy() for p in tparams]
        opt = getattr(fd, cls_name)([dict(params=params[:2], **hp0), dict(params=params[2:])],
                                    **hp1, backend=backend)
        opt.load_state_dict(topt.state_dict())
        _compare_state(opt.state_dict(), topt.state_dict(), "torch -> fd")
        for k, gs in enumerate(grads[PHASE:2 * PHASE]):
            opt.step(gs)
            _step_torch(topt, tparams, gs, torch)
            _compare(params, tparams, f"fd loaded from torch, step {PHASE + k + 1}")
        tparams2 = [torch.nn.Parameter(torch.tensor(p)) for p in params]
        topt2 = tcls([dict(params=tparams2[:2]), dict(params=tparams2[2:])], foreach=False)
        topt2.load_state_dict(to_torch_state_dict(opt.state_dict(), torch))
        for g, saved in zip(topt2.param_groups, opt.param_groups):  # the hyperparameters went over
            assert all(g[k] == v for k, v in saved.items() if k != "params")
        _compare_state(opt.state_dict(), topt2.state_dict(), "fd -> torch")
        for k, gs in enumerate(grads[2 * PHASE:]):
            opt.step(gs)
            _step_torch(topt2, tparams2, gs, torch)
            _compare(params, tparams2, f"torch loaded from fd, step {2 * PHASE + k + 1}")
        _compare_state(opt.state_dict(), topt2.state_dict(), "final")
        # and the original torch run, which never saw fastdescent, agrees with both
        for gs in grads[2 * PHASE:]:
            _step_torch(topt, tparams, gs, torch)
        _compare(params, tparams, "final, the torch run that never left torch")
