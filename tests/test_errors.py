"""Bad input, as data. Every case asserts the exception type, that the message NAMES the offending
argument, and that parameters and state are bit-for-bit unchanged afterwards (a good step is taken
first, so there is state to protect) — and that the optimizer then goes on exactly like a twin that
never saw the bad call. The same for the functional API.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, make
from conftest import Device
from fastdescent import functional as F

SHAPES = [(3, 2), (4,), (), (2, 2)]
NAN, INF = math.nan, math.inf


def _named(msg, name):
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", msg) is not None


def assert_names(excinfo, name):
    msg = str(excinfo.value)
    assert _named(msg, name), f"the message does not name {name!r}: {msg!r}"


#: functional argument name -> the kernel-table column name (fastdescent._contract)
COLUMN_OF = {"params": "param", "grads": "grad", "exp_avgs": "exp_avg", "exp_avg_sqs": "exp_avg_sq",
             "max_exp_avg_sqs": "max_exp_avg_sq", "square_avgs": "square_avg",
             "grad_avgs": "grad_avg", "momentum_buffers": "momentum_buffer", "state_sums": "sum",
             "prevs": "prev", "step_sizes": "step_size"}


def assert_names_loosely(excinfo, name):
    """The argument (``exp_avgs[1]``) or its column (``exp_avg[1]``) is named, with the index.
    (That the functional API names the ARGUMENT is test_functional_messages_name_the_argument.)"""
    msg = str(excinfo.value)
    arg, _, rest = name.partition("[")
    alt = COLUMN_OF.get(arg, arg) + (f"[{rest}" if rest else "")
    assert _named(msg, name) or _named(msg, alt), f"the message names neither {name!r} nor {alt!r}: {msg!r}"


def make_arrays(dev, dtype=np.float32, seed=0):
    """Params (params[0] is a view into a larger host buffer, to build overlapping arrays) and grads."""
    rng = np.random.default_rng(seed)
    host = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[dev.put(rng.standard_normal(s).astype(dtype)) for s in SHAPES] for _ in range(3)]
    if dev.is_device:
        return [dev.put(a) for a in host], grads, None
    buf = np.zeros(20, dtype)
    params = [buf[2:8].reshape(3, 2)] + [a.copy() for a in host[1:]]
    params[0][...] = host[0]
    return params, grads, buf


def snapshot(opt, params, dev):
    return [dev.get(p) for p in params], opt.state_dict()


def assert_unchanged(opt, params, dev, snap):
    ps, sd = snap
    for j, (p, before) in enumerate(zip(params, ps)):
        np.testing.assert_array_equal(dev.get(p), before, err_msg=f"params[{j}] changed")
    now = opt.state_dict()
    assert now["state"].keys() == sd["state"].keys()
    for i, st in sd["state"].items():
        assert now["state"][i].keys() == st.keys()
        for n, v in st.items():
            np.testing.assert_array_equal(now["state"][i][n], v, err_msg=f"state[{i}][{n!r}] changed")


def thin(backend, kind):
    """Validation runs before any kernel and is the same code for every backend: every optimizer runs
    on numpy; on c, numba and cuda only the Adam rows run (a smoke that the backend's path raises
    before any change; on cuda they cover device arrays)."""
    if backend != "numpy" and kind != "adam":
        pytest.skip("validation is backend-independent: every optimizer on numpy, adam elsewhere")


def setup(kind, backend, **hp):
    """A stepped optimizer (maximal state for ``kind``), its twin, params and grads."""
    dev = Device(backend)
    case = BY_KIND[kind][-1]
    out = []
    for _ in range(2):
        params, grads, buf = make_arrays(dev)
        opt = make(fd, case, params, backend=backend)
        opt.step(grads[0])
        out.append((opt, params, grads, buf))
    return dev, out[0], out[1]


def assert_goes_on_like_twin(dev, mine, twin):
    (opt, params, grads, _), (topt, tparams, tgrads, _) = mine, twin
    opt.step(grads[1])
    topt.step(tgrads[1])
    for p, q in zip(params, tparams):
        np.testing.assert_array_equal(dev.get(p), dev.get(q))


# ------------------------------------------------------------------------------ hyperparameters
# (kinds, {hyperparameters}, exception, name the message must contain)
HYPER = [
    ("all", dict(lr=-0.1), ValueError, "lr"),
    ("all", dict(lr=NAN), ValueError, "lr"),
    ("all", dict(lr=INF), ValueError, "lr"),
    ("all", dict(lr="0.1"), TypeError, "lr"),
    ("all", dict(lr=True), TypeError, "lr"),
    ("all", dict(lr=None), TypeError, "lr"),
    ("all", dict(weight_decay=-0.1), ValueError, "weight_decay"),
    ("all", dict(weight_decay=NAN), ValueError, "weight_decay"),
    ("all", dict(weight_decay=-INF), ValueError, "weight_decay"),
    ("all", dict(maximize=1), TypeError, "maximize"),
    ("all", dict(maximize="no"), TypeError, "maximize"),
    ("lamb", dict(eps=-1e-8), ValueError, "eps"),
    ("lamb", dict(eps=NAN), ValueError, "eps"),
    ("lamb", dict(eps=INF), ValueError, "eps"),
    ("lion lamb", dict(betas=(1.0, 0.999)), ValueError, "betas[0]"),
    ("lion lamb", dict(betas=(-0.1, 0.999)), ValueError, "betas[0]"),
    ("lion lamb", dict(betas=(NAN, 0.999)), ValueError, "betas[0]"),
    ("lion lamb", dict(betas=(0.9, 1.0)), ValueError, "betas[1]"),
    ("lion lamb", dict(betas=(0.9, INF)), ValueError, "betas[1]"),
    ("lion lamb", dict(betas=0.9), TypeError, "betas"),
    ("lion lamb", dict(betas=(0.9,)), TypeError, "betas"),
    ("adamax adadelta", dict(eps=-1e-8), ValueError, "eps"),
    ("adamax adadelta", dict(eps=NAN), ValueError, "eps"),
    ("adamax adadelta", dict(eps=INF), ValueError, "eps"),
    ("adamax", dict(betas=(1.0, 0.999)), ValueError, "betas[0]"),
    ("adamax", dict(betas=(-0.1, 0.999)), ValueError, "betas[0]"),
    ("adamax", dict(betas=(NAN, 0.999)), ValueError, "betas[0]"),
    ("adamax", dict(betas=(0.9, 1.0)), ValueError, "betas[1]"),
    ("adamax", dict(betas=(0.9, INF)), ValueError, "betas[1]"),
    ("adamax", dict(betas=0.9), TypeError, "betas"),
    ("adamax", dict(betas=(0.9,)), TypeError, "betas"),
    ("adam adamw rmsprop adagrad nadam radam", dict(eps=-1e-8), ValueError, "eps"),
    ("adam adamw rmsprop adagrad nadam radam", dict(eps=NAN), ValueError, "eps"),
    ("adam adamw rmsprop adagrad nadam radam", dict(eps=INF), ValueError, "eps"),
    ("adam adamw nadam radam", dict(betas=(1.0, 0.999)), ValueError, "betas[0]"),
    ("adam adamw nadam radam", dict(betas=(-0.1, 0.999)), ValueError, "betas[0]"),
    ("adam adamw nadam radam", dict(betas=(NAN, 0.999)), ValueError, "betas[0]"),
    ("adam adamw nadam radam", dict(betas=(0.9, 1.0)), ValueError, "betas[1]"),
    ("adam adamw nadam radam", dict(betas=(0.9, INF)), ValueError, "betas[1]"),
    ("adam adamw nadam radam", dict(betas=0.9), TypeError, "betas"),
    ("adam adamw nadam radam", dict(betas=(0.9,)), TypeError, "betas"),
    ("nadam radam", dict(decoupled_weight_decay=1), TypeError, "decoupled_weight_decay"),
    ("nadam", dict(momentum_decay=-1e-3), ValueError, "momentum_decay"),
    ("nadam", dict(momentum_decay=NAN), ValueError, "momentum_decay"),
    ("nadam", dict(momentum_decay="0.004"), TypeError, "momentum_decay"),
    ("adam adamw", dict(amsgrad=1), TypeError, "amsgrad"),
    ("sgd rmsprop", dict(momentum=-0.5), ValueError, "momentum"),
    ("sgd rmsprop", dict(momentum=NAN), ValueError, "momentum"),
    ("sgd", dict(dampening=NAN), ValueError, "dampening"),
    ("sgd", dict(dampening=INF), ValueError, "dampening"),
    ("sgd", dict(momentum=0.0, dampening=0.0, nesterov=True), ValueError, "nesterov"),
    ("sgd", dict(momentum=0.9, dampening=0.5, nesterov=True), ValueError, "nesterov"),
    ("sgd", dict(nesterov=1), TypeError, "nesterov"),
    ("rmsprop", dict(alpha=-0.1), ValueError, "alpha"),
    ("rmsprop", dict(alpha=NAN), ValueError, "alpha"),
    ("rmsprop", dict(centered=0), TypeError, "centered"),
    ("adagrad", dict(lr_decay=-0.1), ValueError, "lr_decay"),
    ("adagrad", dict(lr_decay=INF), ValueError, "lr_decay"),
    ("adagrad", dict(initial_accumulator_value=-1.0), ValueError, "initial_accumulator_value"),
    ("adagrad", dict(initial_accumulator_value=NAN), ValueError, "initial_accumulator_value"),
    ("lamb", dict(bias_correction=1), TypeError, "bias_correction"),
    ("rprop", dict(etas=(1.0, 1.2)), ValueError, "etas[0]"),
    ("rprop", dict(etas=(0.0, 1.2)), ValueError, "etas[0]"),
    ("rprop", dict(etas=(NAN, 1.2)), ValueError, "etas[0]"),
    ("rprop", dict(etas=(0.5, 1.0)), ValueError, "etas[1]"),
    ("rprop", dict(etas=(0.5, INF)), ValueError, "etas[1]"),
    ("rprop", dict(etas=(0.5, "2")), TypeError, "etas[1]"),
    ("rprop", dict(etas=0.5), TypeError, "etas"),
    ("rprop", dict(etas=(0.5, 1.2, 2.0)), TypeError, "etas"),
    ("rprop", dict(step_sizes=(-1e-6, 50)), ValueError, "step_sizes[0]"),
    ("rprop", dict(step_sizes=(NAN, 50)), ValueError, "step_sizes[0]"),
    ("rprop", dict(step_sizes=(1e-6, INF)), ValueError, "step_sizes[1]"),
    ("rprop", dict(step_sizes=(1.0, 0.5)), ValueError, "step_sizes[0]"),
    ("rprop", dict(step_sizes=None), TypeError, "step_sizes"),
    ("adadelta", dict(rho=1.5), ValueError, "rho"),
    ("adadelta", dict(rho=-0.1), ValueError, "rho"),
    ("adadelta", dict(rho=NAN), ValueError, "rho"),
    ("adadelta", dict(rho="0.9"), TypeError, "rho"),
]
KINDS = list(BY_KIND)
#: hyperparameters an "all" row may set only for the optimizers that have them (Rprop has no
#: weight decay)
NOT_ALL = {"rprop": {"weight_decay"}}


def _hid(kind, hp):
    return kind + "-" + ",".join(f"{k}={v!r}" for k, v in hp.items())


CUDA_HYPER = {"adam-lr=nan", "adam-betas=(1.0, 0.999)", "adam-amsgrad=1"}
HYPER_CASES = [pytest.param(k, hp, exc, name, id=_hid(k, hp))
               for kinds, hp, exc, name in HYPER
               for k in (KINDS if kinds == "all" else kinds.split())
               if not set(hp) & NOT_ALL.get(k, set())]


@pytest.mark.parametrize("kind,hp,exc,name", HYPER_CASES)
def test_bad_hyperparameter_in_constructor(kind, hp, exc, name):
    params, _, _ = make_arrays(Device("numpy"))
    before = [p.copy() for p in params]
    case = BY_KIND[kind][-1]
    with pytest.raises(exc) as ei:
        getattr(fd, case.cls_name)(params, **{**case.hp, **hp}, backend="numpy")
    assert_names(ei, name)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


@pytest.mark.parametrize("kind,hp,exc,name", HYPER_CASES)
def test_bad_hyperparameter_set_mid_run(backend, kind, hp, exc, name):
    """A bad value written into param_groups between steps is caught by step(), before any change."""
    thin(backend, kind)
    if backend == "cuda" and _hid(kind, hp) not in CUDA_HYPER:
        pytest.skip("cuda (simulator): three representative rows only")
    dev, mine, twin = setup(kind, backend)
    opt, params, grads, _ = mine
    snap = snapshot(opt, params, dev)
    good = {k: opt.param_groups[0][k] for k in hp}
    opt.param_groups[0].update(hp)
    with pytest.raises(exc) as ei:
        opt.step(grads[1])
    assert_names(ei, name)
    assert_unchanged(opt, params, dev, snap)
    opt.param_groups[0].update(good)
    assert_goes_on_like_twin(dev, mine, twin)


@pytest.mark.parametrize("kind,hp,exc,name", HYPER_CASES)
def test_bad_hyperparameter_in_add_param_group(kind, hp, exc, name):
    dev, mine, twin = setup(kind, "numpy")
    opt, params, grads, _ = mine
    snap = snapshot(opt, params, dev)
    with pytest.raises(exc) as ei:
        opt.add_param_group(dict(params=[np.zeros(3, np.float32)], **hp))
    assert_names(ei, name)
    assert len(opt.param_groups) == 1
    assert_unchanged(opt, params, dev, snap)
    assert_goes_on_like_twin(dev, mine, twin)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_constructor_only_options(kind):
    params, _, _ = make_arrays(Device("numpy"))
    case = BY_KIND[kind][-1]
    with pytest.raises(TypeError) as ei:
        make(fd, case, params, backend="numpy", skip_nonfinite=1)
    assert_names(ei, "skip_nonfinite")
    with pytest.raises(ValueError) as ei:
        make(fd, case, params, backend="no-such-backend")
    assert_names(ei, "backend")
    for choice in ("numpy", "c", "numba", "cuda"):
        assert repr(choice) in str(ei.value), f"the message does not list {choice!r}"


# ------------------------------------------------------------------------------ gradients
def _g(fn, exc, name, host_only=False):
    return (fn, exc, name, host_only)


GRADS = {
    # name: (fn(grads, params, buf, dev) -> bad grads, exception, name in message, host only)
    "wrong_shape": _g(lambda g, p, b, d: [g[0], d.put(np.zeros(5, np.float32)), *g[2:]],
                      ValueError, "grads[1]"),
    "same_size_wrong_shape": _g(lambda g, p, b, d: [d.put(np.zeros((2, 3), np.float32)), *g[1:]],
                                ValueError, "grads[0]"),
    "scalar_vs_size1": _g(lambda g, p, b, d: [*g[:2], d.put(np.zeros(1, np.float32)), g[3]],
                          ValueError, "grads[2]"),
    "float16": _g(lambda g, p, b, d: [g[0], d.put(np.zeros(4, np.float16)), *g[2:]],
                  TypeError, "grads[1]"),
    "int64": _g(lambda g, p, b, d: [g[0], d.put(np.zeros(4, np.int64)), *g[2:]],
                TypeError, "grads[1]"),
    "float64_for_float32": _g(lambda g, p, b, d: [*g[:3], d.put(np.zeros((2, 2), np.float64))],
                              TypeError, "grads[3]"),
    "too_few": _g(lambda g, p, b, d: g[:3], ValueError, "grads"),
    "too_many": _g(lambda g, p, b, d: [*g, g[0]], ValueError, "grads"),
    "empty_list": _g(lambda g, p, b, d: [], ValueError, "grads"),
    "not_an_array": _g(lambda g, p, b, d: [g[0], [0.0, 0.0, 0.0, 0.0], *g[2:]], TypeError, "grads[1]"),
    "non_contiguous": _g(lambda g, p, b, d: [np.zeros((3, 4), np.float32)[:, ::2], *g[1:]],
                         ValueError, "grads[0]", host_only=True),
    "fortran_order": _g(lambda g, p, b, d: [*g[:3], np.asfortranarray(np.zeros((2, 2), np.float32))],
                        ValueError, "grads[3]", host_only=True),
    "aliases_its_param": _g(lambda g, p, b, d: [g[0], p[1], *g[2:]], ValueError, "grads[1]"),
    "overlaps_its_param": _g(lambda g, p, b, d: [b[5:11].reshape(3, 2), *g[1:]], ValueError,
                             "grads[0]", host_only=True),
    "host_grad_for_device_param": _g(lambda g, p, b, d: [np.zeros((3, 2), np.float32), *g[1:]],
                                     ValueError, "grads[0]"),
}


#: grads cases that exercise device-array inspection (the rest is the same Python code)
CUDA_GRADS = {"wrong_shape", "float64_for_float32", "too_few", "aliases_its_param",
              "host_grad_for_device_param"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", list(GRADS))
def test_bad_grads(backend, what, kind):
    thin(backend, kind)
    if backend == "cuda" and what not in CUDA_GRADS:
        pytest.skip("cuda (simulator): device-array inspection cases only")
    fn, exc, name, host_only = GRADS[what]
    if host_only and backend == "cuda":
        pytest.skip("host-array layout case")
    if what == "host_grad_for_device_param" and backend != "cuda":
        pytest.skip("device backends only")
    dev, mine, twin = setup(kind, backend)
    opt, params, grads, buf = mine
    snap = snapshot(opt, params, dev)
    with pytest.raises(exc) as ei:
        opt.step(fn(grads[1], params, buf, dev))
    assert_names(ei, name)
    assert_unchanged(opt, params, dev, snap)
    assert_goes_on_like_twin(dev, mine, twin)


def test_step_without_grads_needs_an_arena():
    dev, mine, _ = setup("adam", "numpy")
    opt, params, _, _ = mine
    snap = snapshot(opt, params, dev)
    with pytest.raises(TypeError) as ei:
        opt.step()
    assert_names(ei, "grads")
    assert_unchanged(opt, params, dev, snap)


@pytest.mark.parametrize("what", ["aliases_its_param", "wrong_shape"])
def test_bad_grads_after_cached_grads(what):
    """A training loop that reuses its grad arrays gets them validated once; a DIFFERENT bad list
    later is still validated."""
    fn, exc, name, _ = GRADS[what]
    dev, mine, twin = setup("adam", "numpy")
    opt, params, grads, buf = mine
    opt.step(grads[0])
    twin[0].step(twin[2][0])
    snap = snapshot(opt, params, dev)
    with pytest.raises(exc) as ei:
        opt.step(fn(grads[0], params, buf, dev))
    assert_names(ei, name)
    assert_unchanged(opt, params, dev, snap)
    assert_goes_on_like_twin(dev, mine, twin)


# ------------------------------------------------------------------------------ parameters
def _complex64(dev):
    return [dev.put(np.zeros(3, np.float32)), dev.put(np.zeros(3, np.complex64))]


def _int(dev):
    return [dev.put(np.zeros(3, np.float32)), dev.put(np.zeros(3, np.int32))]


def _noncontiguous(dev):
    return [np.zeros(3, np.float32), np.zeros((4, 6), np.float32)[:, ::3]]


def _transposed(dev):
    return [np.zeros(3, np.float32), np.zeros((4, 6), np.float32).T]


def _readonly(dev):
    a = np.zeros(3, np.float32)
    a.flags.writeable = False
    return [np.zeros(2, np.float32), a]


def _duplicate(dev):
    a = dev.put(np.zeros(3, np.float32))
    return [a, dev.put(np.zeros(2, np.float32)), a]


def _overlapping(dev):
    buf = np.zeros(10, np.float32)
    return [buf[:6], np.zeros(2, np.float32), buf[4:]]


def _same_memory_other_view(dev):
    buf = np.zeros(6, np.float32)
    return [buf.reshape(2, 3), buf.reshape(3, 2)]


def _overlap_hidden_by_empty(dev):
    """params[0] and params[2] overlap; an EMPTY array whose address lies between them must not hide
    that (a sweep over address-sorted neighbours only would miss it)."""
    buf = np.zeros(10, np.float32)
    empty = np.ndarray((0,), dtype=np.float32, buffer=buf, offset=8)
    return [buf[0:6], empty, buf[4:8]]


def _not_arrays(dev):
    return [[0.0, 1.0]]


def _mixed_host_device(dev):
    return [dev.put(np.zeros(3, np.float32)), np.zeros(3, np.float32)]


PARAMS = {
    # name: (fn(dev) -> params list, exception, name in message, host only)
    "complex64": (_complex64, TypeError, "params[1]", False),
    "int32": (_int, TypeError, "params[1]", False),
    "non_contiguous": (_noncontiguous, ValueError, "params[1]", True),
    "transposed": (_transposed, ValueError, "params[1]", True),
    "read_only": (_readonly, ValueError, "params[1]", True),
    "duplicate": (_duplicate, ValueError, "params[2]", False),
    "overlapping_views": (_overlapping, ValueError, "params[2]", True),
    "same_memory_other_view": (_same_memory_other_view, ValueError, "params[1]", True),
    "overlap_hidden_by_empty": (_overlap_hidden_by_empty, ValueError, "params[2]", True),
    "not_arrays": (_not_arrays, TypeError, "params[0]", False),
    "mixed_host_device": (_mixed_host_device, ValueError, "params[1]", False),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", list(PARAMS))
def test_bad_params_in_constructor(backend, what, kind):
    thin(backend, kind)
    fn, exc, name, host_only = PARAMS[what]
    if host_only and backend == "cuda":
        pytest.skip("host-array layout case")
    if what == "mixed_host_device" and backend != "cuda":
        pytest.skip("device backends only")
    dev = Device(backend)
    params = fn(dev)
    before = [dev.get(p) if hasattr(p, "shape") else None for p in params]
    with pytest.raises(exc) as ei:
        make(fd, BY_KIND[kind][-1], params, backend=backend)
    assert_names(ei, name)
    for p, b in zip(params, before):
        if b is not None:
            np.testing.assert_array_equal(dev.get(p), b)


@pytest.mark.parametrize("what", list(PARAMS))
def test_bad_params_in_add_param_group(backend, what):
    """The same checks in add_param_group (indices continue after the existing params); a failed
    add leaves the optimizer as it was."""
    fn, exc, name, host_only = PARAMS[what]
    if host_only and backend == "cuda":
        pytest.skip("host-array layout case")
    if what == "mixed_host_device" and backend != "cuda":
        pytest.skip("device backends only")
    dev, mine, twin = setup("adam", backend)
    opt, params, grads, _ = mine
    snap = snapshot(opt, params, dev)
    shifted = f"params[{int(name[7:-1]) + len(params)}]"
    with pytest.raises(exc) as ei:
        opt.add_param_group({"params": fn(dev)})
    assert_names(ei, shifted)
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == len(params)
    assert_unchanged(opt, params, dev, snap)
    assert_goes_on_like_twin(dev, mine, twin)


def test_add_param_group_rejects_a_param_already_present(backend):
    dev, mine, twin = setup("sgd", backend)
    opt, params, grads, _ = mine
    snap = snapshot(opt, params, dev)
    with pytest.raises(ValueError) as ei:
        opt.add_param_group({"params": [params[1]]})
    assert_names(ei, f"params[{len(params)}]")
    assert_unchanged(opt, params, dev, snap)
    assert_goes_on_like_twin(dev, mine, twin)


@pytest.mark.parametrize("params,exc,name", [
    pytest.param([], ValueError, "params", id="empty_list"),
    pytest.param([{"params": []}], ValueError, "params", id="empty_group"),
    pytest.param([{"lr": 0.1}], ValueError, "params", id="group_without_params"),
    pytest.param(np.zeros(3, np.float32), TypeError, "params", id="bare_array"),
    pytest.param(["not a group"], TypeError, "params[0]", id="list_of_strings"),
])
def test_bad_param_containers(params, exc, name):
    with pytest.raises(exc) as ei:
        fd.SGD(params, lr=0.1, backend="numpy")
    assert_names(ei, name)


def test_host_backend_named_for_device_arrays_and_vice_versa():
    from conftest import require_backend
    require_backend("cuda")
    dev = Device("cuda")
    with pytest.raises(ValueError) as ei:
        fd.SGD([dev.put(np.zeros(3, np.float32))], lr=0.1, backend="numpy")
    assert_names(ei, "backend")
    with pytest.raises(ValueError) as ei:
        fd.SGD([np.zeros(3, np.float32)], lr=0.1, backend="cuda")
    assert_names(ei, "backend")


# ------------------------------------------------------------------------------ functional API
def functional_setup(kind, backend, dtype=np.float32):
    """Arrays for one functional call of ``kind`` with every optional state list present."""
    dev = Device(backend)
    rng = np.random.default_rng(3)
    mk = lambda: [dev.put(rng.standard_normal(s).astype(dtype)) for s in SHAPES]  # noqa: E731
    sq = lambda: [dev.put(np.abs(rng.standard_normal(s)).astype(dtype)) for s in SHAPES]  # noqa: E731
    params, grads = mk(), mk()
    if kind == "sgd":
        state = dict(momentum_buffers=mk())
        hp = dict(lr=0.1, momentum=0.9)
    elif kind in ("adam", "adamw"):
        state = dict(exp_avgs=mk(), exp_avg_sqs=sq(), max_exp_avg_sqs=sq())
        hp = dict(lr=0.1, amsgrad=True, step=3)
    elif kind == "rmsprop":
        state = dict(square_avgs=sq(), grad_avgs=mk(), momentum_buffers=mk())
        hp = dict(lr=0.1, centered=True, momentum=0.5)
    elif kind == "lion":
        state = dict(exp_avgs=mk())
        hp = dict(lr=0.1, weight_decay=0.1)
    elif kind == "lamb":
        state = dict(exp_avgs=mk(), exp_avg_sqs=sq())
        hp = dict(lr=0.1, weight_decay=0.1, step=3)
    elif kind == "rprop":
        state = dict(prevs=mk(), step_sizes=sq())
        hp = dict(maximize=True)
    elif kind == "adamax":
        state = dict(exp_avgs=mk(), exp_infs=sq())
        hp = dict(lr=0.1, step=3)
    elif kind == "adadelta":
        state = dict(square_avgs=sq(), acc_deltas=sq())
        hp = dict(lr=0.5)
    elif kind == "nadam":
        state = dict(exp_avgs=mk(), exp_avg_sqs=sq())
        hp = dict(lr=0.1, step=3, mu_product=0.1, decoupled_weight_decay=True, weight_decay=0.1)
    elif kind == "radam":
        state = dict(exp_avgs=mk(), exp_avg_sqs=sq())
        hp = dict(lr=0.1, step=7, weight_decay=0.1)
    else:
        state = dict(state_sums=sq())
        hp = dict(lr=0.1, step=3)
    return dev, params, grads, state, hp


def fcall(kind, backend, params, grads, state, hp):
    getattr(F, kind)(params, grads, backend=backend, **state, **hp)


def fsnapshot(dev, params, state):
    return [dev.get(p) for p in params], {k: [dev.get(a) for a in v] for k, v in state.items()}


def assert_f_unchanged(dev, params, state, snap):
    ps, st = snap
    for j, (p, b) in enumerate(zip(params, ps)):
        np.testing.assert_array_equal(dev.get(p), b, err_msg=f"params[{j}] changed")
    for k, arrs in state.items():
        for j, (a, b) in enumerate(zip(arrs, st[k])):
            np.testing.assert_array_equal(dev.get(a), b, err_msg=f"{k}[{j}] changed")


#: the functional API takes Rprop's etas and step_sizes as torch's functional rprop does
#: (etaminus, etaplus, step_size_min, step_size_max: tests/test_rprop.py) and no lr
F_HYPER = [pytest.param(k, hp, exc, name, id=_hid(k, hp))
           for kinds, hp, exc, name in HYPER
           for k in (KINDS if kinds == "all" else kinds.split())
           if "initial_accumulator_value" not in hp and not set(hp) & NOT_ALL.get(k, set())
           and not (k == "rprop" and set(hp) & {"etas", "step_sizes", "lr"})]


@pytest.mark.parametrize("kind,bad,exc,name", F_HYPER)
def test_functional_bad_hyperparameter(backend, kind, bad, exc, name):
    thin(backend, kind)
    dev, params, grads, state, hp = functional_setup(kind, backend)
    snap = fsnapshot(dev, params, state)
    with pytest.raises(exc) as ei:
        fcall(kind, backend, params, grads, state, {**hp, **bad})
    assert_names(ei, name)
    assert_f_unchanged(dev, params, state, snap)


F_ARRAYS = {
    # name: (kinds, column ("S0": the first state list), fn(column, params, dev) -> array put at
    #        index j, exception, name in message, host only, j)
    "state_wrong_shape": ("all", "S0", lambda lst, p, d: d.put(np.zeros(5, np.float32)), ValueError,
                          "S0[1]", False, 1),
    "state_wrong_dtype": ("all", "S0", lambda lst, p, d: d.put(np.zeros((2, 2), np.float64)), TypeError,
                          "S0[3]", False, 3),
    "grad_float16": ("all", "grads", lambda lst, p, d: d.put(np.zeros(4, np.float16)), TypeError,
                     "grads[1]", False, 1),
    "param_float16": ("all", "params", lambda lst, p, d: d.put(np.zeros(4, np.float16)), TypeError,
                      "params[1]", False, 1),
    "param_int": ("all", "params", lambda lst, p, d: d.put(np.zeros(4, np.int32)), TypeError,
                  "params[1]", False, 1),
    "grad_wrong_shape": ("all", "grads", lambda lst, p, d: d.put(np.zeros(3, np.float32)), ValueError,
                         "grads[1]", False, 1),
    "param_read_only": ("all", "params", lambda lst, p, d: _ro(lst[0]), ValueError, "params[0]", True, 0),
    "state_read_only": ("all", "S0", lambda lst, p, d: _ro(lst[0]), ValueError, "S0[0]", True, 0),
    "state_non_contiguous": ("all", "S0", lambda lst, p, d: np.zeros((3, 4), np.float32)[:, ::2],
                             ValueError, "S0[0]", True, 0),
    "param_non_contiguous": ("all", "params", lambda lst, p, d: np.zeros((3, 4), np.float32)[:, ::2],
                             ValueError, "params[0]", True, 0),
    "grad_aliases_param": ("all", "grads", lambda lst, p, d: p[2], ValueError, "grads[2]", False, 2),
    "state_aliases_param": ("all", "S0", lambda lst, p, d: p[3], ValueError, "S0[3]", False, 3),
    "state_aliases_other_param": ("all", "S0", lambda lst, p, d: p[0].reshape(-1)[:4] if not d.is_device
                                  else p[0], ValueError, "S0[1]", True, 1),
}


def _ro(a):
    b = a.copy()
    b.flags.writeable = False
    return b


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", list(F_ARRAYS))
def test_functional_bad_arrays(backend, kind, what):
    thin(backend, kind)
    kinds, col, fn, exc, name, host_only, _ = F_ARRAYS[what]
    if host_only and backend == "cuda":
        pytest.skip("host-array layout case")
    dev, params, grads, state, hp = functional_setup(kind, backend)
    first_state = next(iter(state))
    col = first_state if col == "S0" else col
    name = name.replace("S0", first_state)
    lists = {"params": params, "grads": grads, **state}
    lst = list(lists[col])
    j = F_ARRAYS[what][-1]
    try:
        lst[j] = fn(lists[col], params, dev)
    except ValueError:
        pytest.skip("cannot build this layout here")
    snap = fsnapshot(dev, params, state)
    args = dict(params=params, grads=grads, state=dict(state))
    if col in ("params", "grads"):
        args[col] = lst
    else:
        args["state"][col] = lst
    with pytest.raises(exc) as ei:
        fcall(kind, backend, args["params"], args["grads"], args["state"], hp)
    assert_names_loosely(ei, name)
    assert_f_unchanged(dev, params, state, snap)


@pytest.mark.parametrize("kind", KINDS)
def test_functional_wrong_list_lengths_and_missing_state(backend, kind):
    thin(backend, kind)
    dev, params, grads, state, hp = functional_setup(kind, backend)
    snap = fsnapshot(dev, params, state)
    with pytest.raises(ValueError) as ei:
        fcall(kind, backend, params, grads[:-1], state, hp)
    assert_names_loosely(ei, "grads")
    for k in state:
        with pytest.raises(ValueError) as ei:
            fcall(kind, backend, params, grads, {**state, k: state[k][:2]}, hp)
        assert_names_loosely(ei, k)
        if kind != "adagrad" and k not in ("exp_avgs", "exp_avg_sqs", "square_avgs"):
            with pytest.raises(ValueError) as ei:
                fcall(kind, backend, params, grads, {**state, k: None}, hp)
            assert_names_loosely(ei, k)
    with pytest.raises(ValueError) as ei:
        fcall(kind, backend, [], [], {k: [] for k in state}, hp)
    assert_names_loosely(ei, "params")
    assert_f_unchanged(dev, params, state, snap)


def test_functional_overlap_hidden_by_empty():
    """Written arrays that overlap are rejected even when an empty array sits between them."""
    params = _overlap_hidden_by_empty(Device("numpy"))
    before = [p.copy() for p in params]
    grads = [np.ones_like(p) for p in params]
    with pytest.raises(ValueError) as ei:
        F.sgd(params, grads, lr=0.1, backend="numpy")
    assert_names_loosely(ei, "params[2]")
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


@pytest.mark.parametrize("step", [0, -1, 1.5, True, None, "2"])
@pytest.mark.parametrize("kind", ["adam", "adamw", "adagrad", "nadam", "radam", "lamb"])
def test_functional_bad_step(kind, step):
    dev, params, grads, state, hp = functional_setup(kind, "numpy")
    snap = fsnapshot(dev, params, state)
    with pytest.raises((ValueError, TypeError)) as ei:
        fcall(kind, "numpy", params, grads, state, {**hp, "step": step})
    assert_names(ei, "step")
    assert_f_unchanged(dev, params, state, snap)


def test_functional_unknown_backend():
    dev, params, grads, state, hp = functional_setup("sgd", "numpy")
    with pytest.raises(ValueError) as ei:
        fcall("sgd", "no-such-backend", params, grads, state, hp)
    assert_names(ei, "backend")
    for choice in ("numpy", "c", "numba", "cuda"):
        assert repr(choice) in str(ei.value)


@pytest.mark.parametrize("bad,exc,name", [
    (dict(max_norm=-1.0), ValueError, "max_norm"),
    (dict(max_norm=NAN), ValueError, "max_norm"),
    (dict(max_norm="1"), TypeError, "max_norm"),
    (dict(norm_type=0.0), ValueError, "norm_type"),
    (dict(norm_type=-2.0), ValueError, "norm_type"),
    (dict(norm_type=NAN), ValueError, "norm_type"),
])
def test_clip_bad_arguments(backend, bad, exc, name):
    dev = Device(backend)
    grads = [dev.put(np.full(s, 3.0, np.float32)) for s in SHAPES]
    before = [dev.get(g) for g in grads]
    with pytest.raises(exc) as ei:
        fd.clip_grad_norm_(grads, **{"max_norm": 1.0, **bad}, backend=backend)
    assert_names(ei, name)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(dev.get(g), b)


def test_clip_read_only_grad():
    g = np.ones(3, np.float32)
    g.flags.writeable = False
    with pytest.raises(ValueError) as ei:
        fd.clip_grad_norm_([np.ones(2, np.float32), g], 0.1, backend="numpy")
    assert_names_loosely(ei, "grads[1]")


@pytest.mark.parametrize("kind", KINDS)
def test_functional_messages_name_the_argument(kind):
    """The functional API's messages name the caller's ARGUMENT (``exp_avgs[1]``, ``state_sums``),
    as the optimizer classes do (``grads[1]``), not the internal table column (``exp_avg[1]``)."""
    dev, params, grads, state, hp = functional_setup(kind, "numpy")
    lists = {"params": params, "grads": grads, **state}
    bad = []
    for arg, arrays in lists.items():
        wrong = list(arrays)
        wrong[1] = np.zeros(5, np.float32)  # wrong shape at index 1
        args = dict(lists, **{arg: wrong})
        try:
            fcall(kind, "numpy", args.pop("params"), args.pop("grads"), args, hp)
        except ValueError as exc:
            if not _named(str(exc), f"{arg}[1]"):
                bad.append(f"{arg}: {exc}")
        short = dict(lists, **{arg: arrays[:2]})  # wrong length
        try:
            fcall(kind, "numpy", short.pop("params"), short.pop("grads"), short, hp)
        except ValueError as exc:
            if arg != "params" and not _named(str(exc), arg):
                bad.append(f"{arg} (length): {exc}")
    assert not bad, "messages that do not name the argument:\n" + "\n".join(bad)
