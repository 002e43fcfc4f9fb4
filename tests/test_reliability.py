"""Regression tests for the optimizer-layer holes an adversarial review found: each test fails on the
code before the fix. Backend-independent logic (validation, state_dict) runs once, on numpy; what
touches the kernel tables (packing, finiteness tables, aliasing of packed pointers) runs on every host
backend."""

from __future__ import annotations

import datetime
import math
import threading

import numpy as np
import pytest

import fastdescent as fd
from fastdescent import functional as F
from cases import BY_KIND, make
from conftest import require_backend


def full(n, v, dtype=np.float32):
    return np.full(n, v, dtype=dtype)


# ----------------------------------------------------------------------------- skipped steps
def test_skipped_step_then_in_place_fix_uses_the_new_values(host_backend):
    p = full(4, 0.0)
    opt = fd.SGD([p], lr=1.0, skip_nonfinite=True, backend=host_backend)
    opt.step([full(4, 100.0)])
    gB = [full(4, np.nan)]
    assert opt.step(gB) is False and opt.last_step_skipped
    gB[0][:] = 1.0
    assert opt.step(gB) is True
    np.testing.assert_array_equal(p, -101.0)


def test_skipped_step_on_first_call_then_fix(host_backend):
    p = full(4, 0.0)
    opt = fd.Adam([p], lr=0.1, skip_nonfinite=True, backend=host_backend)
    g = [full(4, np.inf)]
    assert opt.step(g) is False
    g[0][:] = 1.0
    assert opt.step(g) is True
    np.testing.assert_allclose(p, -0.1, rtol=1e-6)
    assert opt.state[0]["step"] == 1


@pytest.mark.parametrize("toggles", [(True, False, True), (False, True), (True, False, False, True)])
def test_skip_nonfinite_toggles_follow_the_current_value(host_backend, toggles):
    p = full(3, 0.0)
    opt = fd.SGD([p], lr=1.0, skip_nonfinite=toggles[0], backend=host_backend)
    g = [full(3, 1.0)]
    opt.step(g)
    for flag in toggles[1:]:
        opt.skip_nonfinite = flag
        if not flag:
            g = [full(3, 1.0)]  # new gradient arrays arrive while skipping is off
            opt.step(g)
    assert opt.skip_nonfinite is toggles[-1]
    before = p.copy()
    g[0][1] = np.nan  # the same arrays, now holding a NaN: skipping is on, so nothing changes
    assert opt.step(g) is False
    np.testing.assert_array_equal(p, before)
    g[0][1] = 1.0
    assert opt.step(g) is True
    np.testing.assert_array_equal(p, before - 1.0)


def test_skip_nonfinite_must_be_a_bool():
    opt = fd.SGD([full(2, 0.0)], lr=0.1, backend="numpy")
    with pytest.raises(TypeError, match="skip_nonfinite"):
        opt.skip_nonfinite = "yes"
    assert opt.skip_nonfinite is False


# ----------------------------------------------------------------------------- load_state_dict
def _adam_with_state(**kw):
    p = [np.arange(6, dtype=np.float32).reshape(2, 3), full(3, 1.0)]
    opt = fd.Adam(p, lr=0.1, backend="numpy", **kw)
    opt.step([np.ones_like(x) for x in p])
    return opt, p


def _snapshot(opt, params):
    return (repr(opt.param_groups), {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                         for k, v in st.items()} for i, st in opt.state.items()},
            [p.copy() for p in params])


def _assert_same(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for i in a[1]:
        assert a[1][i].keys() == b[1][i].keys()
        for k in a[1][i]:
            np.testing.assert_array_equal(a[1][i][k], b[1][i][k])
    for x, y in zip(a[2], b[2]):
        np.testing.assert_array_equal(x, y)


def _bad(sd, path, value):
    """A copy of state_dict ``sd`` with the entry at ``path`` set (or deleted, value=KeyError)."""
    import copy

    out = copy.deepcopy(sd)
    d = out
    for k in path[:-1]:
        d = d[k]
    if value is KeyError:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    return out


BAD_ENTRIES = [
    (("state", 0, "exp_avg"), None),
    (("state", 0, "exp_avg"), object()),
    (("state", 0, "exp_avg"), np.zeros((2, 3), np.complex64)),
    (("state", 0, "exp_avg"), "zeros"),
    (("state", 0, "exp_avg"), np.array([["a"] * 3] * 2)),
    (("state", 0, "exp_avg"), np.array([[datetime.datetime(2020, 1, 1)] * 3] * 2, dtype="datetime64[s]")),
    (("state", 0, "exp_avg"), np.zeros((3, 2), np.float32)),  # right size, wrong shape
    (("state", 0, "exp_avg"), np.zeros(6, np.float32)),
    (("state", 0, "exp_avg"), np.full((2, 3), 1e300)),  # overflows float32
    (("state", 0, "exp_avg"), np.zeros((2, 3), dtype=object)),
    (("state", 0, "exp_avg_sq"), KeyError),  # a required buffer missing
    (("state", 0, "step"), KeyError),
    (("state", 0, "step"), True),
    (("state", 0, "step"), "3"),
    (("state", 0, "step"), -1),
    (("state", 0, "step"), 2.5),
    (("state", 0, "step"), float("inf")),
    (("state", 0, "step"), 10 ** 400),
    (("state", 0, "step"), np.array([1, 2])),
    (("state", 0, "bogus"), np.zeros((2, 3), np.float32)),
    (("state", 0), "not a dict"),
    (("state", 7), {"step": 1}),
    (("state",), [1, 2]),
    (("param_groups",), "nope"),
    (("param_groups", 0), 3),
    (("param_groups", 0, "params"), KeyError),
    (("param_groups", 0, "params"), 5),
    (("param_groups", 0, "params"), [0, 0]),
    (("param_groups", 0, "params"), [[0], 1]),
    (("param_groups", 0, "lr"), 10 ** 400),
    (("param_groups", 0, "lr"), None),
    (("param_groups", 0, "betas"), (0.9, 1.5)),
    (("param_groups", 0, "betas"), KeyError),  # missing key: keeps ours (allowed) -> see below
    (("param_groups", 0, "nesterov"), True),  # a key Adam does not know
]


@pytest.mark.parametrize("path,value", BAD_ENTRIES, ids=lambda x: repr(x)[:40])
def test_bad_state_dict_raises_value_or_type_error_and_changes_nothing(path, value):
    opt, params = _adam_with_state()
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 0.5  # a good change that must not be half-applied
    bad = _bad(sd, path, value)
    before = _snapshot(opt, params)
    if path == ("param_groups", 0, "betas") and value is KeyError:
        opt.load_state_dict(bad)  # a missing hyperparameter keeps the optimizer's own value
        assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["lr"] == 0.5
        return
    with pytest.raises((ValueError, TypeError)) as info:
        opt.load_state_dict(bad)
    assert not isinstance(info.value, (KeyError, AttributeError, OverflowError, IndexError))
    _assert_same(before, _snapshot(opt, params))
    assert opt.param_groups[0]["lr"] == 0.1
    opt.step([np.ones_like(x) for x in params])  # and it still works


def test_state_values_are_value_errors_naming_the_entry():
    opt, _ = _adam_with_state()
    sd = opt.state_dict()
    for val in (None, object(), "x", np.zeros((2, 3), np.complex128)):
        with pytest.raises(ValueError, match=r"state_dict\['state'\]\[0\]\['exp_avg'\]"):
            opt.load_state_dict(_bad(sd, ("state", 0, "exp_avg"), val))
    with pytest.raises(ValueError, match=r"\['step'\]"):
        opt.load_state_dict(_bad(sd, ("state", 0, "step"), True))


def test_load_state_dict_accepts_torch_bookkeeping_keys_and_ignores_them():
    opt, params = _adam_with_state()
    sd = opt.state_dict()
    for k, v in dict(foreach=None, fused=None, capturable=False, differentiable=False,
                     initial_lr=0.1).items():
        sd["param_groups"][0][k] = v
    opt.load_state_dict(sd)
    assert "foreach" not in opt.param_groups[0]


def test_sgd_state_without_step_loads_as_torch_writes_it():
    p = full(3, 1.0)
    opt = fd.SGD([p], lr=0.1, momentum=0.9, backend="numpy")
    opt.load_state_dict({"state": {0: {"momentum_buffer": full(3, 2.0)}},
                         "param_groups": [dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0,
                                               nesterov=False, maximize=False, foreach=None,
                                               differentiable=False, fused=None, params=[0])]})
    opt.step([full(3, 1.0)])
    np.testing.assert_allclose(p, 1.0 - 0.1 * (0.9 * 2.0 + 1.0), rtol=1e-6)


def test_state_dict_round_trip_is_still_exact():
    opt, params = _adam_with_state(amsgrad=True)
    sd = opt.state_dict()
    opt2 = fd.Adam([x.copy() for x in params], lr=0.3, amsgrad=True, backend="numpy")
    opt2.load_state_dict(sd)
    sd2 = opt2.state_dict()
    assert sd2["param_groups"] == sd["param_groups"]
    for i in sd["state"]:
        for k, v in sd["state"][i].items():
            np.testing.assert_array_equal(v, sd2["state"][i][k])


# ----------------------------------------------------------------------------- decoupled weight decay
def test_decoupled_weight_decay_follows_adamw():
    rng = np.random.default_rng(0)
    init = rng.standard_normal(10).astype(np.float64)
    grads = rng.standard_normal((20, 10))
    a, b = init.copy(), init.copy()
    oa = fd.Adam([a], lr=0.05, weight_decay=0.3, decoupled_weight_decay=True, backend="numpy")
    ob = fd.AdamW([b], lr=0.05, weight_decay=0.3, backend="numpy")
    for g in grads:
        oa.step([g.copy()])
        ob.step([g.copy()])
    np.testing.assert_array_equal(a, b)
    assert ob.param_groups[0]["decoupled_weight_decay"] is True


def test_adamw_state_dict_into_adam_keeps_adamw_rule():
    rng = np.random.default_rng(1)
    init = rng.standard_normal(10)
    grads = rng.standard_normal((20, 10))
    ref = init.copy()
    oref = fd.AdamW([ref], lr=0.05, weight_decay=0.3, backend="numpy")
    x = init.copy()
    ow = fd.AdamW([x], lr=0.05, weight_decay=0.3, backend="numpy")
    for g in grads[:5]:
        oref.step([g.copy()])
        ow.step([g.copy()])
    y = x.copy()
    oa = fd.Adam([y], lr=0.05, weight_decay=0.3, backend="numpy")
    oa.load_state_dict(ow.state_dict())
    for g in grads[5:]:
        oref.step([g.copy()])
        oa.step([g.copy()])
    np.testing.assert_array_equal(y, ref)


def test_torch_adamw_state_dict_into_fd_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    init = rng.standard_normal(8)
    grads = rng.standard_normal((20, 8))
    tp = torch.nn.Parameter(torch.tensor(init.copy()))
    topt = torch.optim.AdamW([tp], lr=0.05, weight_decay=0.3)
    for g in grads[:5]:
        tp.grad = torch.tensor(g)
        topt.step()
    p = tp.detach().numpy().copy()
    opt = fd.Adam([p], lr=0.05, weight_decay=0.3, backend="numpy")
    opt.load_state_dict(topt.state_dict())
    for g in grads[5:]:
        tp.grad = torch.tensor(g)
        topt.step()
        opt.step([g.copy()])
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- threads
def test_one_optimizer_stepped_from_two_threads_loses_no_step(host_backend):
    import sys

    n = 1 << 17  # big enough that kernels (which release the GIL) overlap between threads
    p = full(n, 0.0)
    opt = fd.SGD([p, full(3, 0.0)], lr=1.0, backend=host_backend)
    errors = []
    barrier = threading.Barrier(3)

    def work(k):
        try:
            barrier.wait()
            for j in range(150):
                # fresh arrays every other step (re-validation and re-packing), a None sometimes
                opt.step([full(n, 1.0), None if (j + k) % 3 else full(3, 1.0)])
                if j % 50 == 0:
                    opt.state_dict()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    np.testing.assert_array_equal(p, -450.0)


# ----------------------------------------------------------------------------- aliasing
def test_grad_aliasing_another_param_is_rejected(host_backend):
    p0, p1 = full(4, 0.0), full(4, 0.0)
    opt = fd.SGD([p0, p1], lr=0.1, backend=host_backend)
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with params\[1\]"):
        opt.step([p1, full(4, 1.0)])
    big = np.zeros(8, np.float32)
    q0, q1 = big[:4], np.zeros(4, np.float32)
    opt = fd.SGD([q0, q1], lr=0.1, backend=host_backend)
    with pytest.raises(ValueError, match=r"grads\[1\] shares memory with params\[0\]"):
        opt.step([full(4, 1.0), big[2:6]])  # partial overlap
    np.testing.assert_array_equal(big, 0.0)


def test_grad_aliasing_optimizer_state_is_rejected(host_backend):
    p = full(5, 1.0)
    opt = fd.Adam([p], lr=0.1, backend=host_backend)
    opt.step([full(5, 1.0)])
    live = opt.state[0]["exp_avg"]
    before = p.copy()
    with pytest.raises(ValueError, match=r"grads\[0\] shares memory with .*state 'exp_avg'"):
        opt.step([live])
    np.testing.assert_array_equal(p, before)


def test_grads_may_share_memory_with_each_other(host_backend):
    p0, p1 = full(4, 0.0), full(4, 0.0)
    g = full(4, 1.0)
    opt = fd.SGD([p0, p1], lr=1.0, backend=host_backend)
    opt.step([g, g])
    np.testing.assert_array_equal(p0, -1.0)
    np.testing.assert_array_equal(p1, -1.0)


# ----------------------------------------------------------------------------- alignment, subclasses
def _misaligned(n, dtype=np.float32):
    buf = bytearray(n * np.dtype(dtype).itemsize + 1)
    return np.frombuffer(buf, dtype=dtype, offset=1, count=n)


def test_misaligned_arrays_are_rejected(host_backend):
    bad = _misaligned(4)
    assert bad.flags.writeable and bad.__array_interface__["data"][0] % 4
    with pytest.raises(ValueError, match=r"params\[0\] is not aligned"):
        fd.SGD([bad], lr=0.1, backend=host_backend)
    p = full(4, 0.0)
    opt = fd.SGD([p], lr=0.1, backend=host_backend)
    with pytest.raises(ValueError, match=r"grads\[0\] is not aligned"):
        opt.step([_misaligned(4)])
    with pytest.raises(ValueError, match=r"grads\[0\] is not aligned"):
        F.sgd([full(4, 0.0)], [_misaligned(4)], lr=0.1, backend=host_backend)
    with pytest.raises(ValueError, match="not aligned"):
        F.all_finite([_misaligned(4)], backend=host_backend)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_gradients_are_elementwise_on_every_backend(host_backend):
    p = np.zeros((2, 2), np.float64)
    g = np.matrix([[1.0, 2.0], [3.0, 4.0]])
    opt = fd.Adam([p], lr=0.1, backend=host_backend)
    opt.step([g])
    ref = np.zeros((2, 2))
    fd.Adam([ref], lr=0.1, backend="numpy").step([np.asarray(g)])
    np.testing.assert_array_equal(p, ref)
    np.testing.assert_allclose(opt.state[0]["exp_avg_sq"], 0.001 * np.asarray(g) ** 2)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_params_are_updated_in_place(host_backend):
    m = np.matrix(np.zeros((2, 2)))
    opt = fd.SGD([m], lr=1.0, backend=host_backend)
    opt.step([np.ones((2, 2))])
    np.testing.assert_array_equal(np.asarray(m), -1.0)
    assert type(opt.param_groups[0]["params"][0]) is np.matrix


def test_masked_arrays_are_refused_identically(host_backend):
    g = np.ma.masked_array(np.ones(3), mask=[0, 1, 0])
    opt = fd.SGD([np.zeros(3)], lr=1.0, backend=host_backend)
    with pytest.raises(TypeError, match=r"grads\[0\] is a masked array"):
        opt.step([g])
    with pytest.raises(TypeError, match="masked array"):
        F.clip_grad_norm_([g], 1.0, backend=host_backend)


# ----------------------------------------------------------------------------- param lists
def test_param_list_edits_raise_clearly():
    a, b = full(3, 0.0), full(3, 0.0)
    opt = fd.SGD([a], lr=1.0, backend="numpy")
    with pytest.raises(TypeError, match="add_param_group"):
        opt.param_groups[0]["params"].append(b)
    with pytest.raises(TypeError, match="add_param_group"):
        opt.param_groups[0]["params"][0] = b
    opt.param_groups[0]["params"] = [b]
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\] was replaced"):
        opt.step([full(3, 1.0)])
    np.testing.assert_array_equal(b, 0.0)
    np.testing.assert_array_equal(a, 0.0)


def test_param_groups_list_edits_raise_clearly():
    opt = fd.SGD([full(3, 0.0)], lr=1.0, backend="numpy")
    opt.param_groups.append({"params": [full(3, 0.0)], "lr": 0.1})
    with pytest.raises(ValueError, match="add_param_group"):
        opt.step([full(3, 1.0)])


def test_add_param_group_still_works():
    a, b = full(3, 0.0), full(2, 0.0)
    opt = fd.SGD([a], lr=1.0, backend="numpy")
    opt.step([full(3, 1.0)])
    opt.add_param_group({"params": [b], "lr": 0.5})
    opt.step([full(3, 1.0), full(2, 1.0)])
    np.testing.assert_array_equal(a, -2.0)
    np.testing.assert_array_equal(b, -0.5)


# ----------------------------------------------------------------------------- small ones
def test_huge_int_hyperparameter_is_a_value_error():
    with pytest.raises(ValueError, match="lr"):
        fd.SGD([full(2, 0.0)], lr=10 ** 400)
    with pytest.raises(ValueError, match="lr"):
        F.sgd([full(2, 0.0)], [full(2, 0.0)], lr=10 ** 400)


def test_info_reports_an_invalid_backend_env(monkeypatch):
    monkeypatch.setenv("FASTDESCENT_BACKEND", "bogus")
    out = fd.info()
    assert out["default"] is None and "bogus" in out["default_error"]
    assert out["auto"] in fd.available_backends()


def test_functional_required_column_none_is_the_same_error_everywhere(host_backend):
    p, g = [full(3, 0.0)], [full(3, 1.0)]
    with pytest.raises(ValueError, match="exp_avgs: required"):
        F.adam(p, g, None, [full(3, 0.0)], step=1, backend=host_backend)
    with pytest.raises(ValueError, match="grads: required"):
        F.sgd(p, None, lr=0.1, backend=host_backend)


def test_functional_check_false_keeps_the_size_checks(host_backend):
    p = [full(1000, 0.0)]
    with pytest.raises(ValueError, match=r"grads\[0\] has shape"):
        F.sgd(p, [full(10, 1.0)], lr=0.1, backend=host_backend, check=False)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] has shape"):
        F.adam(p, [full(1000, 1.0)], [full(3, 0.0)], [full(1000, 0.0)], step=1,
               backend=host_backend, check=False)
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype"):
        F.sgd(p, [np.ones(1000, np.float64)], lr=0.1, backend=host_backend, check=False)
    with pytest.raises(ValueError, match="C-contiguous"):
        F.sgd(p, [np.ones(2000, np.float32)[::-2]], lr=0.1, backend=host_backend, check=False)
    np.testing.assert_array_equal(p[0], 0.0)


def test_clip_grad_norm_reuses_tables_for_the_same_arrays(monkeypatch):
    from fastdescent import _arrays

    grads = [np.ones(3, np.float32) for _ in range(50)]
    F.clip_grad_norm_(grads, 1e9, backend="numpy")
    F.all_finite(grads, backend="numpy")  # (its own cache entry: it does not need writeable arrays)
    calls = []
    real = _arrays.inspect
    monkeypatch.setattr(_arrays, "inspect", lambda a, w: calls.append(w) or real(a, w))
    for _ in range(3):
        total = F.clip_grad_norm_(grads, 1e9, backend="numpy")
        assert F.all_finite(grads, backend="numpy")
    assert calls == []  # same arrays: no per-array inspection
    assert total == pytest.approx(math.sqrt(150))
    # a changed list is inspected again, and its contents are used
    grads2 = grads[:-1] + [np.full(3, np.nan, np.float32)]
    assert not F.all_finite(grads2, backend="numpy")
    assert len(calls) == 50


def test_functional_cache_sees_in_place_changes_and_new_arrays(host_backend):
    g = [full(4, 1.0)]
    assert F.all_finite(g, backend=host_backend)
    g[0][2] = np.inf
    assert not F.all_finite(g, backend=host_backend)
    g[0] = full(4, 2.0)  # same list object, new array
    assert F.all_finite(g, backend=host_backend)
    p = [full(4, 0.0)]
    F.sgd(p, g, lr=1.0, backend=host_backend)
    F.sgd(p, [full(4, 1.0)], lr=1.0, backend=host_backend)
    np.testing.assert_array_equal(p[0], -3.0)


def test_many_tensor_aliasing_check_is_not_quadratic():
    n = 20000
    block = np.zeros(n * 2, np.float32)
    params = [block[2 * i:2 * i + 2] for i in range(n)]
    opt = fd.SGD(params, lr=1.0, backend="numpy")
    grads = [np.ones(2, np.float32) for _ in range(n)]
    opt.step(grads)
    np.testing.assert_array_equal(block, -1.0)
    grads[n // 2] = block[10:12]  # aliases params[5]
    with pytest.raises(ValueError, match=r"grads\[10000\] shares memory with params\[5\]"):
        opt.step(grads)


def test_scheduler_load_state_dict_refuses_unknown_keys():
    from fastdescent.nn.schedulers import ReduceLROnPlateau, StepLR

    opt = fd.SGD([full(2, 0.0)], lr=0.1, backend="numpy")
    for sched in (StepLR(opt, step_size=2), ReduceLROnPlateau(opt)):
        sd = sched.state_dict()
        for bad in ({**sd, "optimizer": None}, {**sd, "bogus": 1}, [1, 2]):
            with pytest.raises(ValueError):
                sched.load_state_dict(bad)
        assert sched.optimizer is opt
        sched.load_state_dict(sd)


def test_overflowing_derived_scalars_raise_before_any_bucket_changes(host_backend):
    a, b = full(3, 1.0), np.full(3, 1.0)  # two dtype buckets
    opt = fd.Adam([a, b], lr=1e305, betas=(0.999999, 0.999), backend=host_backend)
    with pytest.raises(ValueError, match="step_size"):
        opt.step([full(3, 1.0), np.full(3, 1.0)])
    np.testing.assert_array_equal(a, 1.0)
    np.testing.assert_array_equal(b, 1.0)
    assert opt.state == {} or all(st["step"] == 0 for st in opt.state.values())
    with pytest.raises(ValueError, match="step_size"):
        F.adam([full(3, 1.0)], [full(3, 1.0)], [full(3, 0.0)], [full(3, 0.0)], step=1, lr=1e305,
               betas=(0.999999, 0.999), backend=host_backend)


def test_float32_overflowing_scalars_are_refused(host_backend):
    p = full(3, 1.0)
    opt = fd.SGD([p], lr=1e39, backend=host_backend)
    with pytest.raises(ValueError, match="overflows float32"):
        opt.step([full(3, 0.0)])
    np.testing.assert_array_equal(p, 1.0)
    q = np.ones(3)  # the same lr is fine for float64
    fd.SGD([q], lr=1e39, backend=host_backend).step([np.zeros(3)])
    np.testing.assert_array_equal(q, 1.0)
    with pytest.raises(ValueError, match="overflows float32"):
        F.sgd([full(3, 1.0)], [full(3, 0.0)], lr=1e39, backend=host_backend)


def test_adamw_stays_decoupled_after_loading_an_adam_state_dict():
    a = fd.Adam([full(3, 1.0)], weight_decay=0.5, backend="numpy")
    a.step([full(3, 1.0)])
    w = fd.AdamW([full(3, 1.0)], weight_decay=0.5, backend="numpy")
    w.load_state_dict(a.state_dict())
    assert w.param_groups[0]["decoupled_weight_decay"] is True


def test_functional_cache_does_not_let_a_read_only_array_be_written(host_backend):
    g = np.frombuffer(np.full(8, 100.0, np.float32).tobytes(), np.float32)  # immutable bytes
    assert F.all_finite([g], backend=host_backend)
    with pytest.raises(ValueError, match="read-only"):
        F.clip_grad_norm_([g], 1.0, backend=host_backend)
    h = full(8, 100.0)
    F.clip_grad_norm_([h], 1e9, backend=host_backend)
    h.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        F.clip_grad_norm_([h], 1.0, backend=host_backend)
    np.testing.assert_array_equal(h, 100.0)


@pytest.mark.parametrize("change", ["resize", "shape", "strides"])
def test_functional_cache_notices_arrays_changed_in_place(host_backend, change):
    p, g = np.ones(4), np.ones(4)
    F.sgd([p], [g], lr=0.5, backend=host_backend)
    if change == "resize":
        p.resize((1 << 16,), refcheck=False)  # moves the data: a cached pointer would dangle
        F.sgd([p], [np.ones(1 << 16)], lr=0.5, backend=host_backend)
        np.testing.assert_array_equal(p[4:], -0.5)
        return
    if change == "shape":
        p.shape = (2, 2)
        with pytest.raises(ValueError, match="shape"):
            F.sgd([p], [g], lr=0.5, backend=host_backend)
    else:
        base = np.ones(8)
        q = base[:4]
        F.sgd([q], [g], lr=0.5, backend=host_backend)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            q.strides = (16,)
        with pytest.raises(ValueError, match="contiguous"):
            F.sgd([q], [g], lr=0.5, backend=host_backend)


@pytest.mark.parametrize("backend", ["numpy", "c", "numba"])
def test_dense_outputs_must_not_overlap_inputs(backend):
    from conftest import require_backend

    K = require_backend(backend).KERNELS
    x = np.ones((1, 4, 4))
    w = np.ones((1, 4, 4))
    with pytest.raises(ValueError, match="y shares memory with x"):
        K["matmul_fwd"](x, x, w, None)
    dy = np.ones((1, 4, 4))
    with pytest.raises(ValueError, match="dw shares memory with dy"):
        K["matmul_bwd_w"](dy, None, x, dy)
    logits = np.ones((3, 4))
    with pytest.raises(ValueError, match="dlogits shares memory with logits"):
        K["xent_fwd_bwd"](logits, logits, np.zeros(3, np.int64), scale=1.0)
    a = np.ones(8)
    with pytest.raises(ValueError, match="y shares memory with x"):
        K["act_fwd"](a[1:], a[:-1], kind=1)
    K["act_fwd"](a, a, kind=1)  # exactly in place is allowed


@pytest.mark.parametrize("backend", ["numpy", "c", "numba"])
def test_activation_kind_errors_are_the_same_everywhere(backend):
    from conftest import require_backend

    from fastdescent.errors import KernelError

    K = require_backend(backend).KERNELS
    y, x = np.zeros(4), np.ones(4)
    for bad in (1.0, None, [1], True, "relu"):
        with pytest.raises(TypeError, match="kind must be an int"):
            K["act_fwd"](y, x, kind=bad)
    for bad in (2 ** 40 + 1, -1, 99):
        with pytest.raises(KernelError):
            K["act_fwd"](y, x, kind=bad)
    np.testing.assert_array_equal(y, 0.0)
    K["act_fwd"](y, x, kind=np.int64(1))


def test_version_is_written_once():
    """fastdescent/_version.py is the one place: the package metadata and the C library agree."""
    from importlib.metadata import version

    assert version("fastdescent") == fd.__version__
    if "c" in fd.available_backends():
        assert fd.get_backend("c").describe()["version"] == fd.__version__


@pytest.mark.parametrize("kind", list(BY_KIND))
def test_nonfinite_grads_give_no_runtime_warning_on_numpy(kind):
    """The numpy backend computes the IEEE results of the rule for NaN/inf gradients as the compiled
    backends do, silently (no RuntimeWarning that c and numba would not give), and the same bits."""
    import warnings

    case = BY_KIND[kind][-1]
    g = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -2.0], np.float32)
    out = {}
    for backend in ("numpy", "c"):
        params = [np.linspace(-1, 1, 6).astype(np.float32)]
        opt = make(fd, case, params, backend=backend)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for _ in range(3):
                opt.step([g.copy()])
        out[backend] = params[0]
    np.testing.assert_array_equal(out["numpy"], out["c"])


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_functional_cache_fast_prints_match_the_array_interface():
    """The one-call layout prints (C extension) agree with __array_interface__ and see every change
    that makes a cached table wrong: data moved with the same shape (resize there and back), dtype
    object, writeable flag, shape; subclasses and >6-d arrays are refused (the per-array path)."""
    from fastdescent import _prints

    require_backend("c")
    assert _prints.available()
    a, b = np.ones(5), np.ones((2, 3), np.float32)
    p1 = _prints.array_prints([[a, b]])
    assert p1.shape == (2, 12) and p1[0, 0] == id(a) and p1[0, 1] == a.__array_interface__["data"][0]
    assert _prints.prints_equal(([a], (b,)), p1)  # lists and tuples, end to end, compared
    a.resize((1 << 16,), refcheck=False)
    a.resize((5,), refcheck=False)  # same shape, the data (most likely) elsewhere
    p2 = _prints.array_prints([[a, b]])
    assert p2[0, 1] == a.__array_interface__["data"][0]
    assert _prints.prints_equal([[a, b]], p1) == (p2[0, 1] == p1[0, 1])
    b.flags.writeable = False
    p3 = _prints.array_prints([[a, b]])
    assert not _prints.prints_equal([[a, b]], p2) and not np.array_equal(p3[1], p2[1])
    assert _prints.prints_equal([[a, b]], p3)
    assert not _prints.prints_equal([[b, a]], p3)  # the same arrays in another order
    assert not _prints.prints_equal([[a, b, a]], p3)  # another length
    assert not _prints.prints_equal([[a]], p3)
    assert not _prints.prints_equal([[a, np.matrix(np.ones((2, 3)))]], p3)
    assert _prints.array_prints([[np.matrix(np.ones((2, 2)))]]) is None
    assert _prints.array_prints([[np.ones((1,) * 7)]]) is None
    assert _prints.array_prints([[a, "x"]]) is None
    assert _prints.array_prints([iter([a])]) is None  # only lists and tuples are walked
    assert not _prints.prints_equal([iter([a, b])], p3)


def test_functional_cache_sees_the_callers_list_changed_in_place(host_backend):
    """The functional API no longer copies the caller's lists on every call: a list edited in
    place between calls (an entry swapped, appended to) must miss the cache, never reuse a table
    over the old arrays."""
    p = [np.ones(4), np.ones(4)]
    g = [np.ones(4), np.ones(4)]
    F.sgd(p, g, lr=0.5, backend=host_backend)
    old = p[1]
    p[1] = np.ones(4)  # the same list object, another array
    F.sgd(p, g, lr=0.5, backend=host_backend)
    np.testing.assert_array_equal(p[1], 0.5)
    np.testing.assert_array_equal(old, 0.5)  # updated once, by the first call only
    p.append(np.ones(4))
    with pytest.raises(ValueError, match="grads: expected 3 arrays"):
        F.sgd(p, g, lr=0.5, backend=host_backend)
    g.append(np.ones(4))
    F.sgd(tuple(p), tuple(g), lr=0.5, backend=host_backend)
    np.testing.assert_array_equal(p[2], 0.5)


def test_functional_cache_sees_data_moved_under_the_same_shape(host_backend):
    p, g = np.ones(4), np.ones(4)
    F.sgd([p], [g], lr=0.5, backend=host_backend)
    p.resize((1 << 16,), refcheck=False)
    p.resize((4,), refcheck=False)  # back to the old shape: a cached pointer could dangle
    p[...] = 1.0
    F.sgd([p], [g], lr=0.5, backend=host_backend)
    np.testing.assert_array_equal(p, 0.5)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_functional_cache_with_subclasses_takes_the_checked_path(host_backend):
    p, g = np.matrix(np.ones((2, 2))), np.ones((2, 2))
    for _ in range(2):
        F.sgd([p], [g], lr=0.25, backend=host_backend)
    np.testing.assert_array_equal(np.asarray(p), 0.5)


def test_functional_cache_entry_of_fast_prints_then_arrays_beyond_six_dims(host_backend):
    """A table cached with the one-call prints, then the same arrays reshaped to 7-d (which those
    prints cannot describe): revalidated, not a crash (was: TypeError on the missing per-array
    prints)."""
    p, g = np.ones(4), np.ones(4)
    F.sgd([p], [g], lr=0.5, backend=host_backend)
    p.shape = g.shape = (1,) * 6 + (4,)
    F.sgd([p], [g], lr=0.5, backend=host_backend)
    np.testing.assert_array_equal(p.reshape(-1), 0.0)


def test_functional_cache_with_a_list_changed_by_another_thread():
    """The C walk over the caller's lists holds the GIL: another thread swapping and appending
    entries while calls run never makes a call use a table over arrays it did not validate (each
    call raises a clear error or updates arrays of the list it was given), and nothing crashes."""
    import threading

    require_backend("c")
    p = [np.ones(64, np.float32) for _ in range(50)]
    g = [np.ones(64, np.float32) for _ in range(50)]
    spare = [np.ones(64, np.float32) for _ in range(50)]
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            k = i % 50
            p[k], spare[k] = spare[k], p[k]
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(300):
            F.sgd(p, g, lr=1.0 / 1024, backend="c")
    finally:
        stop.set()
        t.join()
    done = np.concatenate([a for a in p + spare])
    assert np.all((done <= 1.0) & (done >= 1.0 - 300 / 1024))
    # every element took a whole number of steps (nothing half-written or written twice per call)
    np.testing.assert_array_equal((1.0 - done) * 1024, np.round((1.0 - done) * 1024))
