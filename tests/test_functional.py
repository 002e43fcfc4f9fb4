"""The stateless functional API: the oracle's numbers, and the SAME bits as the optimizer classes."""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, CASES, make
from conftest import Device
from fastdescent import functional as F
from reference import RefOptimizer, assert_close

STEPS = 8
SHAPES = [(3, 2), (), (1,), (0,), (5,), (2, 1, 2)]
CUDA_SHAPES = [(3,), (), (2, 2)]
#: the functional layer (checks, the rule's scalars, one table per dtype) is the same code for every
#: backend: every case runs on numpy, the richest case of each optimizer on the others
RICHEST = [BY_KIND[k][-1] for k in BY_KIND]


def dtypes_for(dtype, n):
    if dtype == "mixed":
        return [np.float32 if i % 2 else np.float64 for i in range(n)]
    return [np.dtype(dtype)] * n


def new_state(case, host_params, dev):
    """The state lists the caller keeps, initialised as SEMANTICS.md says."""
    hp = case.hp
    z = lambda: [dev.put(np.zeros_like(p)) for p in host_params]  # noqa: E731
    if case.kind == "sgd":
        return {"momentum_buffers": z() if hp["momentum"] != 0 else None}
    if case.kind in ("adam", "adamw"):
        return {"exp_avgs": z(), "exp_avg_sqs": z(), "max_exp_avg_sqs": z() if hp["amsgrad"] else None}
    if case.kind == "rmsprop":
        return {"square_avgs": z(), "grad_avgs": z() if hp["centered"] else None,
                "momentum_buffers": z() if hp["momentum"] > 0 else None}
    if case.kind == "lion":
        return {"exp_avgs": z()}
    if case.kind == "lamb":
        return {"exp_avgs": z(), "exp_avg_sqs": z()}
    if case.kind == "rprop":  # prev starts at 0, step_size at lr
        return {"prevs": z(), "step_sizes": [dev.put(np.full_like(p, hp["lr"])) for p in host_params]}
    if case.kind == "nadam":  # mu_product: the caller's float, 1 before the first step
        return {"exp_avgs": z(), "exp_avg_sqs": z(), "mu_product": 1.0}
    if case.kind == "radam":
        return {"exp_avgs": z(), "exp_avg_sqs": z()}
    if case.kind == "adamax":
        return {"exp_avgs": z(), "exp_infs": z()}
    if case.kind == "adadelta":
        return {"square_avgs": z(), "acc_deltas": z()}
    init = hp.get("initial_accumulator_value", 0.0)
    return {"state_sums": [dev.put(np.full_like(p, init)) for p in host_params]}


def functional_step(case, params, grads, state, t, backend, check=True):
    hp = dict(case.hp)
    if case.kind == "sgd":
        F.sgd(params, grads, state["momentum_buffers"], first_step=(t == 1), backend=backend,
              check=check, **hp)
    elif case.kind in ("adam", "adamw"):
        getattr(F, case.kind)(params, grads, state["exp_avgs"], state["exp_avg_sqs"],
                              state["max_exp_avg_sqs"], step=t, backend=backend, check=check, **hp)
    elif case.kind == "rmsprop":
        F.rmsprop(params, grads, state["square_avgs"], state["grad_avgs"], state["momentum_buffers"],
                  backend=backend, check=check, **hp)
    elif case.kind == "lion":
        F.lion(params, grads, state["exp_avgs"], backend=backend, check=check, **hp)
    elif case.kind == "lamb":
        F.lamb(params, grads, state["exp_avgs"], state["exp_avg_sqs"], step=t, backend=backend,
               check=check, **hp)
    elif case.kind == "rprop":
        (etaminus, etaplus), (smin, smax) = hp.get("etas", (0.5, 1.2)), hp.get("step_sizes", (1e-6, 50))
        F.rprop(params, grads, state["prevs"], state["step_sizes"], etaminus=etaminus, etaplus=etaplus,
                step_size_min=smin, step_size_max=smax, maximize=hp.get("maximize", False),
                backend=backend, check=check)
    elif case.kind == "nadam":
        state["mu_product"] = F.nadam(params, grads, state["exp_avgs"], state["exp_avg_sqs"], step=t,
                                      mu_product=state["mu_product"], backend=backend, check=check,
                                      **hp)
    elif case.kind == "radam":
        F.radam(params, grads, state["exp_avgs"], state["exp_avg_sqs"], step=t, backend=backend,
                check=check, **hp)
    elif case.kind == "adamax":
        F.adamax(params, grads, state["exp_avgs"], state["exp_infs"], step=t, backend=backend,
                 check=check, **hp)
    elif case.kind == "adadelta":
        F.adadelta(params, grads, state["square_avgs"], state["acc_deltas"], backend=backend,
                   check=check, **hp)
    else:
        hp.pop("initial_accumulator_value", None)
        F.adagrad(params, grads, state["state_sums"], step=t, backend=backend, check=check, **hp)


STATE_OF = {"momentum_buffers": "momentum_buffer", "exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq",
            "max_exp_avg_sqs": "max_exp_avg_sq", "square_avgs": "square_avg", "grad_avgs": "grad_avg",
            "state_sums": "sum", "exp_infs": "exp_inf", "acc_deltas": "acc_delta", "prevs": "prev",
            "step_sizes": "step_size"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_functional_matches_reference_and_class(backend, case):
    """Every configuration, float32 and float64 tensors in one call (one kernel call per dtype)."""
    if backend != "numpy" and case not in RICHEST:
        pytest.skip("backend-independent layer: every case on numpy, the richest elsewhere")
    dtype = "mixed"
    dev = Device(backend)
    shapes = CUDA_SHAPES if backend == "cuda" else SHAPES
    rng = np.random.default_rng(31)
    dts = dtypes_for(dtype, len(shapes))
    init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dts)]
    grads = [[rng.standard_normal(s).astype(d) for s, d in zip(shapes, dts)] for _ in range(STEPS)]
    params = [dev.put(a) for a in init]
    state = new_state(case, init, dev)
    cls_params = [dev.put(a) for a in init]
    opt = make(fd, case, cls_params, backend=backend)
    ref = RefOptimizer(case.kind, [dict(case.hp, params=init)])
    for k, gs in enumerate(grads):
        functional_step(case, params, [dev.put(g) for g in gs], state, k + 1, backend)
        opt.step([dev.put(g) for g in gs])
        ref.step(gs)
        for j, (p, q) in enumerate(zip(params, cls_params)):
            got = dev.get(p)
            assert_close(got, ref.param(j), what=f"step {k + 1}: params[{j}]")
            np.testing.assert_array_equal(got, dev.get(q), err_msg=f"step {k + 1}: params[{j}] "
                                          "functional and class APIs differ")
        for key, arrays in state.items():
            if arrays is None:
                continue
            if key == "mu_product":  # NAdam's scalar state: the same float in all three
                for j in range(len(init)):
                    assert arrays == ref.state[j]["mu_product"] == opt.state[j]["mu_product"]
                continue
            name = STATE_OF[key]
            for j, a in enumerate(arrays):
                assert_close(dev.get(a), ref.state_array(j, name), what=f"{key}[{j}]")
                np.testing.assert_array_equal(dev.get(a), dev.get(opt.state[j][name]))


@pytest.mark.parametrize("kind", list(BY_KIND))
def test_check_false_gives_the_same_bits(host_backend, kind):
    case = BY_KIND[kind][-1]
    dev = Device(host_backend)
    rng = np.random.default_rng(32)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(3)]
    runs = []
    for check in (True, False):
        params = [a.copy() for a in init]
        state = new_state(case, init, dev)
        for k, gs in enumerate(grads):
            functional_step(case, params, gs, state, k + 1, host_backend, check=check)
        runs.append(params)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_single_arrays_and_tuples_are_accepted():
    p, g, m, v = np.ones(4), np.full(4, 2.0), np.zeros(4), np.zeros(4)
    F.adam(p, g, m, v, step=1, lr=0.1, backend="numpy")  # bare arrays: one tensor
    np.testing.assert_allclose(p, 0.9)
    np.testing.assert_allclose(m, 0.2)
    q = np.ones(3)
    F.sgd((q,), (np.ones(3),), lr=0.25, backend="numpy")
    np.testing.assert_array_equal(q, 0.75)


def test_functional_docstring_example():
    p = [np.ones(4, np.float32)]
    g = [np.ones(4, np.float32)]
    m = [np.zeros(4, np.float32)]
    v = [np.zeros(4, np.float32)]
    F.adam(p, g, m, v, step=1, lr=0.1, backend="numpy")
    np.testing.assert_allclose(p[0], np.full(4, 0.9, np.float32), rtol=1e-6)


def test_adagrad_lr_decay_uses_step():
    """clr = lr / (1 + (t-1)*lr_decay): step 3 with lr_decay 0.5 halves the first step's lr."""
    out = []
    for t in (1, 3):
        p, s = [np.zeros(1)], [np.zeros(1)]
        F.adagrad(p, [np.ones(1)], s, step=t, lr=1.0, lr_decay=0.5, eps=0.0, backend="numpy")
        out.append(-p[0][0])
    assert out[0] == pytest.approx(1.0) and out[1] == pytest.approx(0.5)
