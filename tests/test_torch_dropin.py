"""fastdescent.torch: the optimizers as torch.optim.Optimizer subclasses, checked against torch.optim.

Trajectories of a real nn.Module (biases, a frozen bias, a layer whose grad is None on some steps, two
param groups with different lr, an lr change mid-run) against torch.optim's for-loop implementation
for every optimizer torch has (Lion and LAMB against fastdescent's NumPy-facing classes); schedulers,
closures, hooks, state_dict both ways mid-run, torch.save round trips, fresh gradients every step, and
the inputs that must be refused with the parameters and the state untouched.
"""

from __future__ import annotations

import copy
import inspect
import io
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdescent as fd  # noqa: E402
import fastdescent.torch as fdt  # noqa: E402
from conftest import require_backend  # noqa: E402

TORCH_CLASSES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax",
                 "Adadelta", "Rprop"]

#: representative options per optimizer (not every combination: each option appears once)
CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, amsgrad=True, betas=(0.8, 0.9))),
    ("RMSprop", dict()),
    ("RMSprop", dict(momentum=0.5, centered=True, weight_decay=0.1, alpha=0.9)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr_decay=0.1, initial_accumulator_value=0.5, weight_decay=0.1, eps=1e-6)),
    ("NAdam", dict()),
    ("NAdam", dict(decoupled_weight_decay=True, weight_decay=0.1, momentum_decay=0.01)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1, betas=(0.9, 0.9))),
    ("Adamax", dict()),
    ("Adamax", dict(weight_decay=0.1, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(rho=0.5, weight_decay=0.1)),
    ("Rprop", dict()),
    ("Rprop", dict(etas=(0.3, 1.5), step_sizes=(1e-4, 1.0), maximize=True)),
]

STEPS = 10
NONE_STEPS = (2, 5)  # steps at which layer 2's weight gets no gradient
LR_CHANGE_AT = 6


def _cfg_id(c):
    return c[0] + "-" + "-".join(f"{k}={v}" for k, v in c[1].items())


def make_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8),
                            torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)
    m[2].bias.requires_grad_(False)  # frozen: its grad is always None
    return m


def groups(model, cls_name, hp):
    lr = hp.get("lr", inspect.signature(getattr(torch.optim, cls_name, None)
                                        or getattr(fdt, cls_name)).parameters["lr"].default)
    ps = list(model.parameters())
    return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.5 * lr}]


def data(dtype, steps=STEPS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 6, generator=g, dtype=dtype), torch.randn(5, 3, generator=g, dtype=dtype))
            for _ in range(steps)]


def train_step(model, opt, x, y, k, set_to_none=True):
    opt.zero_grad(set_to_none=set_to_none)
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    if k in NONE_STEPS:
        model[2].weight.grad = None
    opt.step()
    return loss


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-12)


def assert_params(m1, m2, dtype, what):
    for j, (a, b) in enumerate(zip(m1.parameters(), m2.parameters())):
        torch.testing.assert_close(a, b, **tol(dtype), msg=lambda m, j=j: f"{what}: params[{j}]: {m}")


def assert_state(sd, tsd, dtype, what):
    """Same state entries, names and values; the same param groups."""
    assert sd["state"].keys() == tsd["state"].keys(), what
    for i, tst in tsd["state"].items():
        st = sd["state"][i]
        assert set(st) == set(tst), f"{what}: state[{i}] names {sorted(st)} vs {sorted(tst)}"
        for k, v in tst.items():
            if k == "step":
                assert isinstance(st[k], torch.Tensor) and st[k].dtype == v.dtype, what
                assert float(st[k]) == float(v), f"{what}: state[{i}]['step']"
            elif k == "mu_product":
                assert float(st[k]) == pytest.approx(float(v), rel=1e-6), what
            else:
                torch.testing.assert_close(st[k], v, **tol(dtype),
                                           msg=lambda m, i=i, k=k: f"{what}: state[{i}][{k}]: {m}")
    assert len(sd["param_groups"]) == len(tsd["param_groups"])
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        # (the torch runs here ask for foreach=False)
        assert {k: v for k, v in g.items() if k != "foreach"} == \
            {k: v for k, v in tg.items() if k != "foreach"}, what


def pair(cls_name, hp, dtype=torch.float32, seed=0, **kw):
    m, tm = make_model(dtype, seed), make_model(dtype, seed)
    opt = getattr(fdt, cls_name)(groups(m, cls_name, hp), **hp, **kw)
    topt = getattr(torch.optim, cls_name)(groups(tm, cls_name, hp), **hp, foreach=False)
    return m, opt, tm, topt


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ----------------------------------------------------------------------------- the classes
@pytest.mark.parametrize("name", TORCH_CLASSES)
def test_signature_and_groups_are_torchs(name):
    ours, theirs = getattr(fdt, name), getattr(torch.optim, name)
    assert issubclass(ours, torch.optim.Optimizer)
    lowp = ("master_weights", "stochastic_rounding", "state_dtype", "seed")
    params = list(inspect.signature(ours).parameters.values())
    sp = [p for p in params if p.name != "backend" and p.name not in lowp]
    tp = list(inspect.signature(theirs).parameters.values())
    assert [(p.name, p.kind, p.default) for p in sp] == [(p.name, p.kind, p.default) for p in tp]
    # fastdescent's low-precision options: keyword-only, on the classes with a mixed-precision step
    extra = [(p.name, p.kind, p.default) for p in params if p.name in lowp]
    assert extra == ([(k, inspect.Parameter.KEYWORD_ONLY, d) for k, d in
                      zip(lowp, (False, False, None, 0))]
                     if name in ("SGD", "Adam", "AdamW", "RMSprop") else [])
    w = torch.nn.Parameter(torch.zeros(3))
    g, tg = ours([w]).param_groups[0], theirs([w]).param_groups[0]
    assert {k: v for k, v in g.items() if k != "params"} == \
        {k: v for k, v in tg.items() if k != "params"}


def test_lion_lamb_signatures_are_fastdescents():
    for name in ("Lion", "LAMB"):
        ours = inspect.signature(getattr(fdt, name)).parameters
        theirs = inspect.signature(getattr(fd, name)).parameters
        for k, p in theirs.items():
            if k not in ("backend", "skip_nonfinite", "l1"):
                assert ours[k].default == p.default and ours[k].kind == p.kind, (name, k)


# ----------------------------------------------------------------------------- trajectories
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
def test_trajectory_matches_torch(cfg, dtype):
    cls_name, hp = cfg
    old = torch.get_default_dtype()
    if cls_name == "NAdam" and dtype == torch.float64:
        # torch keeps mu_product in its default dtype; fastdescent in float64 (rules/nadam.py)
        torch.set_default_dtype(torch.float64)
    try:
        m, opt, tm, topt = pair(cls_name, hp, dtype)
        for k, (x, y) in enumerate(data(dtype)):
            train_step(m, opt, x, y, k)
            train_step(tm, topt, x, y, k)
            if k + 1 == LR_CHANGE_AT:
                for o in (opt, topt):
                    for g in o.param_groups:
                        g["lr"] *= 0.5
            assert_params(m, tm, dtype, f"{cfg} step {k + 1}")
        assert_state(opt.state_dict(), topt.state_dict(), dtype, f"{cfg} final")
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_other_backends(backend):
    require_backend(backend)
    m, opt, tm, topt = pair("Adam", dict(lr=0.01, amsgrad=True), backend=backend)
    assert opt.backend == backend
    for k, (x, y) in enumerate(data(torch.float32, steps=4)):
        train_step(m, opt, x, y, k)
        train_step(tm, topt, x, y, k)
    assert_params(m, tm, torch.float32, backend)


@pytest.mark.parametrize("name", ["Lion", "LAMB"])
def test_lion_lamb_match_the_numpy_classes(name):
    """torch has neither: the same steps as fastdescent's NumPy-facing class on the same data."""
    m = make_model()
    ref = [p.detach().numpy().copy() for p in m.parameters()]
    hp = dict(lr=0.01, weight_decay=0.1)
    opt = getattr(fdt, name)(m.parameters(), **hp)
    nopt = getattr(fd, name)(ref, **hp)
    for k, (x, y) in enumerate(data(torch.float32, steps=6)):
        train_step(m, opt, x, y, k)
        grads = [None if p.grad is None else p.grad.numpy().copy() for p in m.parameters()]
        nopt.step(grads)
        for p, r in zip(m.parameters(), ref):
            np.testing.assert_array_equal(p.detach().numpy(), r)
    nsd = nopt.state_dict()["state"]
    for i, st in opt.state_dict()["state"].items():
        assert float(st["step"]) == nsd[i]["step"]
        for k, v in st.items():
            if k != "step":
                np.testing.assert_array_equal(v.numpy(), nsd[i][k])


# ----------------------------------------------------------------------------- torch's machinery
def test_scheduler_onecycle_and_cosine():
    """lr (and OneCycleLR's betas) are read from param_groups at every step."""
    m, opt, tm, topt = pair("AdamW", dict(lr=0.01))
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.05, 0.02], total_steps=STEPS)
    tsch = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=[0.05, 0.02], total_steps=STEPS)
    for k, (x, y) in enumerate(data(torch.float32)):
        train_step(m, opt, x, y, k)
        train_step(tm, topt, x, y, k)
        sch.step()
        tsch.step()
        assert_params(m, tm, torch.float32, f"OneCycleLR step {k + 1}")
    assert opt.param_groups[0]["betas"] == topt.param_groups[0]["betas"]
    m, opt, tm, topt = pair("SGD", dict(lr=0.1, momentum=0.9))
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    tsch = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=4)
    for k, (x, y) in enumerate(data(torch.float32)):
        train_step(m, opt, x, y, k)
        train_step(tm, topt, x, y, k)
        sch.step()
        tsch.step()
        assert_params(m, tm, torch.float32, f"CosineAnnealingLR step {k + 1}")


def test_closure_hooks_and_add_param_group():
    m, opt, tm, topt = pair("RMSprop", dict(momentum=0.5))
    calls = []
    opt.register_step_pre_hook(lambda o, a, kw: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, kw: calls.append("post"))
    extra, textra = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    for k, (x, y) in enumerate(data(torch.float32, steps=6)):
        if k == 3:  # a third group mid-run: its parameter starts at step 1
            opt.add_param_group({"params": [extra], "lr": 0.03})
            topt.add_param_group({"params": [textra], "lr": 0.03})
        losses = []
        for model, o, e in ((m, opt, extra), (tm, topt, textra)):
            def closure(model=model, o=o, e=e, x=x, y=y):
                assert torch.is_grad_enabled()
                o.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y) + (e * e).sum()
                loss.backward()
                return loss
            with torch.no_grad():
                losses.append(o.step(closure))
        assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-5)
        assert_params(m, tm, torch.float32, f"closure step {k + 1}")
        torch.testing.assert_close(extra, textra)
    assert calls == ["pre", "post"] * 6
    assert_state(opt.state_dict(), topt.state_dict(), torch.float32, "final")


def test_step_bumps_the_version_counter():
    """An in-place update, as torch's: autograd refuses a backward through a stale saved tensor."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = fdt.SGD([w], lr=0.1)
    w.grad = torch.ones(3)
    y = (w * w).sum()
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_fresh_grads_are_never_stale():
    """Every step reads the gradients as they are now: new .grad tensors (set_to_none), grads
    edited in place, grads reallocated at the same or another address."""
    w = torch.nn.Parameter(torch.zeros(1000))
    tw = torch.nn.Parameter(torch.zeros(1000))
    opt, topt = fdt.Adam([w], lr=0.1), torch.optim.Adam([tw], lr=0.1, foreach=False)
    g = torch.Generator().manual_seed(3)
    for k in range(8):
        v = torch.randn(1000, generator=g)
        if k % 3 == 0:
            w.grad, tw.grad = v.clone(), v.clone()  # a new tensor
        elif k % 3 == 1:
            w.grad.copy_(v)  # the same tensor, new values
            tw.grad.copy_(v)
        else:
            w.grad = None  # freed; the next one may land at the same address
            w.grad = v.clone()
            tw.grad = v.clone()
        opt.step()
        topt.step()
        torch.testing.assert_close(w, tw, rtol=1e-6, atol=1e-7)
    opt.zero_grad()  # set_to_none: this step skips w, whose step count stays
    opt.step()
    assert float(opt.state[w]["step"]) == 8


def test_state_dict_both_ways_mid_run():
    """torch -> fastdescent -> torch mid-run, for every optimizer, continuing on the same trajectory
    (a deep copy between them: torch's own load_state_dict shares the loaded tensors)."""
    for cls_name in TORCH_CLASSES:
        hp = dict(CONFIGS[[c[0] for c in CONFIGS].index(cls_name) + 1][1])
        dtype = torch.float64
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            m, opt, tm, topt = pair(cls_name, hp, dtype)
            batches = data(dtype, steps=9)
            for k, (x, y) in enumerate(batches[:3]):
                train_step(tm, topt, x, y, k)
            m.load_state_dict(tm.state_dict())
            opt.load_state_dict(copy.deepcopy(topt.state_dict()))
            assert_state(opt.state_dict(), topt.state_dict(), dtype, f"{cls_name} after load")
            for k, (x, y) in enumerate(batches[3:6], 3):
                train_step(m, opt, x, y, k)
                train_step(tm, topt, x, y, k)
                assert_params(m, tm, dtype, f"{cls_name} fd from torch, step {k + 1}")
            tm2 = make_model(dtype)
            tm2.load_state_dict(m.state_dict())
            topt2 = getattr(torch.optim, cls_name)(groups(tm2, cls_name, hp), **hp, foreach=False)
            topt2.load_state_dict(copy.deepcopy(opt.state_dict()))
            for k, (x, y) in enumerate(batches[6:], 6):
                train_step(m, opt, x, y, k)
                train_step(tm2, topt2, x, y, k)
                assert_params(m, tm2, dtype, f"{cls_name} torch from fd, step {k + 1}")
            assert_state(opt.state_dict(), topt2.state_dict(), dtype, f"{cls_name} final")
        finally:
            torch.set_default_dtype(old)


def test_torch_save_round_trip():
    m, opt, tm, topt = pair("Adam", dict(lr=0.01, amsgrad=True))
    batches = data(torch.float32, steps=6)
    for k, (x, y) in enumerate(batches[:3]):
        train_step(m, opt, x, y, k)
        train_step(tm, topt, x, y, k)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    m2, tm2 = make_model(), make_model()
    m2.load_state_dict(ck["model"])
    tm2.load_state_dict(ck["model"])
    opt2 = fdt.Adam(groups(m2, "Adam", {}), lr=0.01, amsgrad=True)
    opt2.load_state_dict(ck["opt"])
    topt2 = torch.optim.Adam(groups(tm2, "Adam", {}), lr=0.01, amsgrad=True, foreach=False)
    topt2.load_state_dict(copy.deepcopy(ck["opt"]))
    for k, (x, y) in enumerate(batches[3:], 3):
        for model, o in ((m, opt), (m2, opt2), (tm, topt), (tm2, topt2)):
            train_step(model, o, x, y, k)
        assert_params(m2, m, torch.float32, f"fd reloaded, step {k + 1}")
        assert_params(tm2, m, torch.float32, f"torch loaded from fd, step {k + 1}")


def test_deepcopy_and_pickle_continue_identically():
    m, opt, _, _ = pair("NAdam", {})
    batches = data(torch.float32, steps=5)
    for k, (x, y) in enumerate(batches[:2]):
        train_step(m, opt, x, y, k)
    m2 = copy.deepcopy(m)
    state = pickle.loads(pickle.dumps(opt.state_dict()))
    opt2 = fdt.NAdam(groups(m2, "NAdam", {}))
    opt2.load_state_dict(state)
    both = copy.deepcopy({"m": m, "opt": opt})
    for k, (x, y) in enumerate(batches[2:], 2):
        for model, o in ((m, opt), (m2, opt2), (both["m"], both["opt"])):
            train_step(model, o, x, y, k)
        assert_params(m2, m, torch.float32, "reloaded")
        assert_params(both["m"], m, torch.float32, "deep copy")


def test_state_replaced_or_parameters_moved_are_followed():
    """A state tensor replaced by user code, and a parameter whose memory moved (p.data = ...),
    are used at the next step, as torch uses them."""
    m, opt, tm, topt = pair("Adam", dict(lr=0.01))
    batches = data(torch.float32, steps=6)
    for k, (x, y) in enumerate(batches):
        if k == 2:
            for o, mm in ((opt, m), (topt, tm)):
                p = mm[0].weight
                o.state[p]["exp_avg"] = torch.zeros_like(p)
                o.state[p]["step"].fill_(1.0)
        if k == 4:
            for mm in (m, tm):
                mm[4].weight.data = mm[4].weight.data.clone()
        train_step(m, opt, x, y, k)
        train_step(tm, topt, x, y, k)
        assert_params(m, tm, torch.float32, f"step {k + 1}")
    assert_state(opt.state_dict(), topt.state_dict(), torch.float32, "final")


def test_non_contiguous_layouts():
    """channels_last conv weights (dense, not contiguous) and a transposed gradient."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    tconv = copy.deepcopy(conv)
    assert not conv.weight.is_contiguous()
    opt, topt = fdt.Adam(conv.parameters(), lr=0.01), torch.optim.Adam(tconv.parameters(), lr=0.01,
                                                                       foreach=False)
    x = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    for _ in range(3):
        for c, o in ((conv, opt), (tconv, topt)):
            o.zero_grad()
            c(x).square().mean().backward()
            o.step()
        torch.testing.assert_close(conv.weight, tconv.weight)
    assert opt.state[conv.weight]["exp_avg"].stride() == conv.weight.stride()
    w, tw = torch.nn.Parameter(torch.zeros(4, 5)), torch.nn.Parameter(torch.zeros(4, 5))
    opt, topt = fdt.SGD([w], lr=0.1, momentum=0.9), torch.optim.SGD([tw], lr=0.1, momentum=0.9)
    for k in range(3):
        g = torch.arange(20.0).reshape(5, 4).t() * (k + 1)  # not contiguous
        w.grad, tw.grad = g, g.clone()
        opt.step()
        topt.step()
        torch.testing.assert_close(w, tw)


# ----------------------------------------------------------------------------- refused inputs
def _snapshot(model, opt):
    return ([p.detach().clone() for p in model.parameters()],
            copy.deepcopy(opt.state_dict()))


def _unchanged(model, opt, snap):
    for p, q in zip(model.parameters(), snap[0]):
        assert torch.equal(p, q)
    sd = opt.state_dict()
    assert sd["state"].keys() == snap[1]["state"].keys()
    for i, st in snap[1]["state"].items():
        assert sd["state"][i].keys() == st.keys()
        for k, v in st.items():
            assert torch.equal(sd["state"][i][k], v), (i, k)


def test_constructor_refusals():
    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="differentiable=True is not supported"):
        fdt.Adam([w], differentiable=True)
    with pytest.raises(TypeError, match="complex parameters"):
        fdt.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))])
    for dt in (torch.bfloat16, torch.float16):  # (SGD/Adam/AdamW/RMSprop: tests/test_torch_lowp.py)
        with pytest.raises(TypeError, match=f"{dt} parameters are not supported by "
                                            "fastdescent.torch.Adagrad.*SGD, Adam, AdamW and RMSprop"):
            fdt.Adagrad([torch.nn.Parameter(torch.zeros(3, dtype=dt))])
    with pytest.raises(TypeError, match="dtype torch.int32 is not supported"):
        fdt.Adam([torch.zeros(3, dtype=torch.int32)])
    with pytest.raises(ValueError, match="device meta"):
        fdt.SGD([torch.nn.Parameter(torch.zeros(3, device="meta"))])
    with pytest.raises(ValueError, match="gaps or overlaps"):
        fdt.SGD([torch.nn.Parameter(torch.zeros(4, 4))[:, :2].detach().requires_grad_()])
    with pytest.raises(ValueError, match="betas"):
        fdt.Adam([w], betas=(1.5, 0.9))
    with pytest.raises(ValueError, match="nesterov"):
        fdt.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="unknown backend"):
        fdt.Adam([w], backend="fortran")
    opt = fdt.SGD([w], lr=0.1)
    with pytest.raises(TypeError, match="complex"):  # a refused group is not added
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))]})
    assert len(opt.param_groups) == 1


def test_bad_inputs_leave_params_and_state_untouched():
    m, opt, _, _ = pair("Adam", dict(lr=0.01, amsgrad=True))
    x, y = data(torch.float32, steps=1)[0]
    train_step(m, opt, x, y, 0)
    snap = _snapshot(m, opt)
    w = m[0].weight
    # a sparse gradient
    opt.zero_grad()
    torch.nn.functional.mse_loss(m(x), y).backward()
    w.grad = w.grad.to_sparse()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    _unchanged(m, opt, snap)
    # an invalid hyperparameter set between steps
    opt.zero_grad()
    torch.nn.functional.mse_loss(m(x), y).backward()
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\].*lr"):
        opt.step()
    _unchanged(m, opt, snap)
    opt.param_groups[1]["lr"] = 0.005
    # a parameter turned to an unsupported dtype after construction: refused at the step
    # (bfloat16/float16: tests/test_torch_lowp.py)
    w.data = w.data.to(torch.float8_e4m3fn)
    w.grad = torch.zeros_like(w)
    with pytest.raises(TypeError, match="dtype torch.float8_e4m3fn is not supported"):
        opt.step()
    w.data = snap[0][0].clone()
    _unchanged(m, opt, snap)
    # a state_dict that does not fit is refused whole
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][1]["exp_avg"] = torch.zeros(7)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    _unchanged(m, opt, snap)
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][0]["momentum_buffer"] = torch.zeros_like(w)
    with pytest.raises(ValueError, match="unknown entry 'momentum_buffer'"):
        opt.load_state_dict(bad)
    _unchanged(m, opt, snap)
    # and the optimizer still steps correctly afterwards
    opt.zero_grad()
    torch.nn.functional.mse_loss(m(x), y).backward()
    opt.step()
    assert float(opt.state[w]["step"]) == 2


def test_adagrad_state_exists_before_the_first_step():
    w = torch.nn.Parameter(torch.zeros(3))
    tw = torch.nn.Parameter(torch.zeros(3))
    sd = fdt.Adagrad([w], initial_accumulator_value=0.25).state_dict()
    tsd = torch.optim.Adagrad([tw], initial_accumulator_value=0.25).state_dict()
    assert_state(sd, tsd, torch.float32, "Adagrad before step 1")


def test_float64_default_dtype_keeps_step_in_float64(float64_default):
    w = torch.nn.Parameter(torch.zeros(3))
    opt = fdt.Adam([w])
    w.grad = torch.ones(3)
    opt.step()
    assert opt.state[w]["step"].dtype == torch.float64


# ----------------------------------------------------------------------------- benchmark cases
def test_bench_models_and_cases():
    """The benchmark's model shapes have the published sizes, and its cases check out."""
    import math

    from fastdescent.bench import torch_dropin as T

    sizes = {m: (len(f()), sum(math.prod(s) for s in f())) for m, f in T.MODELS.items()}
    assert sizes == {"resnet50": (161, 25_557_032), "gpt2": (148, 124_439_808),
                     "linear50": (100, 208_000)}
    for impl in ("fdt", "torch-fused", "fdt-static", "fd-raw", "fd-raw-fresh", "assign"):
        case = T.TorchStepCase("adam", "linear50", impl)
        assert case.unavailable() is None
        inst = case.build()
        try:
            case.check(inst)  # raises CheckError if the parameters differ from torch's for-loop
        finally:
            inst.close()


def test_example_script_runs():
    """examples/torch_drop_in.py: both runs learn the digits and end on the same weights."""
    import importlib.util
    import pathlib

    pytest.importorskip("sklearn")
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "torch_drop_in.py"
    spec = importlib.util.spec_from_file_location("fd_example_torch_drop_in", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--epochs", "4"])
    for name in ("fastdescent.torch.AdamW", "torch.optim.AdamW(fused=True)"):
        assert res[name]["accuracy"] > 0.9, name
    assert res["max_weight_diff"] < 1e-2


# ----------------------------------------------------------------------------- distributed
DDP_SCRIPT = """
import os, socket, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP
import fastdescent.torch as fdt

STEPS, LR = 5, 0.01


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)) for _ in range(STEPS)]


def worker(rank, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    net = DDP(model())
    opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=fdt.Adam, lr=LR)
    assert isinstance(opt.optim, fdt.Adam)
    for x, y in batches():
        opt.zero_grad()
        half = slice(4 * rank, 4 * rank + 4)  # each rank its half of the batch; DDP averages
        torch.nn.functional.mse_loss(net(x[half]), y[half]).backward()
        opt.step()
    opt.consolidate_state_dict(to=0)
    if rank == 0:
        torch.save({"params": [p.detach() for p in net.module.parameters()],
                    "opt": opt.state_dict()}, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp.spawn(worker, args=(port, sys.argv[1]), nprocs=2, join=True)
"""


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # (torch.distributed.optim's)
def test_ddp_and_zero_redundancy_optimizer(tmp_path):
    """2 processes (gloo, 127.0.0.1): DDP + ZeroRedundancyOptimizer(optimizer_class=fdt.Adam) ends
    where a single process running torch.optim.Adam on the full batch does, and the consolidated
    state_dict loads into torch.optim.Adam, which then continues on the same trajectory."""
    from _subproc import run_script

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path / "ddp.pt"
    run_script(tmp_path, DDP_SCRIPT, out, timeout=180, name="ddp_zero.py")
    res = torch.load(out, weights_only=True)
    ns = {}
    exec(compile(DDP_SCRIPT.split("def worker")[0], "ddp", "exec"), ns)
    net = ns["model"]()
    opt = torch.optim.Adam(net.parameters(), lr=ns["LR"], foreach=False)
    for x, y in ns["batches"]():
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    for p, q in zip(net.parameters(), res["params"]):
        torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=1e-6)
    # the consolidated (sharded) state: torch's layout, loadable into torch.optim.Adam
    net2 = ns["model"]()
    with torch.no_grad():
        for p, q in zip(net2.parameters(), res["params"]):
            p.copy_(q)
    opt2 = torch.optim.Adam(net2.parameters(), lr=ns["LR"], foreach=False)
    opt2.load_state_dict(res["opt"])
    assert_state(opt2.state_dict(), opt.state_dict(), torch.float32, "consolidated")
    x, y = ns["batches"]()[0]
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        torch.nn.functional.mse_loss(n(x), y).backward()
        o.step()
    for p, q in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_named_parameters_and_grad_scaler():
    """torch 2.13's named parameter groups (their names go into the state_dict), and AMP's
    GradScaler, which unscales the gradients and then calls step()."""
    m, tm = make_model(), make_model()
    opt = fdt.Adam(m.named_parameters(), lr=0.01)
    topt = torch.optim.Adam(tm.named_parameters(), lr=0.01, foreach=False)
    scaler, tscaler = torch.amp.GradScaler("cpu", init_scale=1024.0), \
        torch.amp.GradScaler("cpu", init_scale=1024.0)
    for k, (x, y) in enumerate(data(torch.float32, steps=4)):
        for model, o, s in ((m, opt, scaler), (tm, topt, tscaler)):
            o.zero_grad()
            s.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            s.step(o)
            s.update()
        assert_params(m, tm, torch.float32, f"GradScaler step {k + 1}")
    assert opt._fd_checked[0] is not None  # the names list does not force a check every step
    assert_state(opt.state_dict(), topt.state_dict(), torch.float32, "named")


@pytest.mark.parametrize("cls_name, hp", [("Adam", dict(lr=0.1)), ("SGD", dict(lr=0.1)),
                                          ("Adagrad", dict(lr=0.1, lr_decay=0.01))])
def test_odd_parameters_and_state_resets(cls_name, hp):
    """float32 and float64 parameters in one group (two buckets), an empty and a 0-d parameter;
    the state cleared, or one parameter's deleted, mid-run; SGD's momentum switched on mid-run:
    all as torch does them."""
    def mk():
        return [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, dtype=torch.float64)),
                torch.nn.Parameter(torch.zeros(0)), torch.nn.Parameter(torch.tensor(2.0))]
    a, b = mk(), mk()
    opt = getattr(fdt, cls_name)(a, **hp)
    topt = getattr(torch.optim, cls_name)(b, foreach=False, **hp)
    g = torch.Generator().manual_seed(0)
    for k in range(7):
        for pa, pb in zip(a, b):
            v = torch.randn(pa.shape, generator=g, dtype=pa.dtype)
            pa.grad, pb.grad = v.clone(), v.clone()
        if k == 2 and cls_name == "SGD":
            for o in (opt, topt):
                o.param_groups[0]["momentum"] = 0.5
        if k == 3:
            opt.state.clear()
            topt.state.clear()
        if k == 5:
            del opt.state[a[0]]
            del topt.state[b[0]]
        opt.step()
        topt.step()
        for j, (pa, pb) in enumerate(zip(a, b)):
            torch.testing.assert_close(pa, pb, msg=lambda m, j=j, k=k: f"step {k + 1} params[{j}]: {m}")
