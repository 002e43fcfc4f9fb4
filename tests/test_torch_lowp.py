"""fastdescent.torch on bfloat16/float16 parameters: the core's mixed-precision step on torch tensors.

- bit for bit the same parameters and state as ``fastdescent.SGD/Adam/AdamW/RMSprop`` on the same
  bfloat16/float16 NumPy arrays with the same options (every option, a None gradient on some steps,
  an option changed between steps), on every host backend that has a mixed-precision step;
- torch.optim's default semantics: bfloat16 state rounded to nearest, step 1 bitwise equal to
  ``torch.optim.Adam(fused=True)``, state_dicts interchange with torch.optim both ways;
- the extra state of the options (master copies, 8-bit codes and scales) survives
  state_dict/torch.save round trips, and loads convert between storages;
- the refusals: other optimizers, combinations without a kernel, CUDA tensors.
"""

from __future__ import annotations

import copy
import importlib
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastdescent as fd  # noqa: E402
import fastdescent.torch as fdt  # noqa: E402
from fastdescent import precision as P  # noqa: E402
from fastdescent.backends import resolve  # noqa: E402
from torch.multiprocessing.reductions import StorageWeakRef  # noqa: E402
from conftest import HOST_BACKENDS, require_backend  # noqa: E402

BF16, F16, F32 = torch.bfloat16, torch.float16, torch.float32


def mixed_backend(name):
    """Backend ``name`` if it has a mixed-precision step (``backends/<b>/mixed.py``), else skip."""
    mod = require_backend(name)
    try:
        importlib.import_module(mod.__name__ + ".mixed")
    except ModuleNotFoundError:
        pytest.skip(f"backend {name!r} has no mixed-precision step yet")
    return name


def one_backend():
    """The default backend if it has a mixed-precision step, else the first host one that has."""
    for name in [resolve(None, device=False).NAME] + HOST_BACKENDS:
        try:
            return mixed_backend(name)
        except pytest.skip.Exception:
            continue
    pytest.skip("no backend with a mixed-precision step")


def bits(t):
    """The bits of a tensor or NumPy array of 1-, 2- or 4-byte elements, as a NumPy int array."""
    if isinstance(t, torch.Tensor):
        t = t.detach()
        if t.dtype in (BF16, F16):
            return t.view(torch.int16).numpy().copy()
        if t.dtype == torch.uint8:
            return t.numpy().copy()
        return t.view(torch.int32).numpy().copy()
    t = np.ascontiguousarray(t)
    return t.view({1: np.uint8, 2: np.int16, 4: np.int32}[t.dtype.itemsize]).copy()


def np_of(t):
    """A NumPy copy of a bfloat16/float16/float32 tensor (bfloat16 as ml_dtypes.bfloat16)."""
    t = t.detach()
    if t.dtype == BF16:
        return t.view(torch.int16).numpy().view(P.bfloat16()).copy()
    return t.numpy().copy()


def make_params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(37, 20), (20,), (300,), (3, 5)]
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def make_grads(params, steps, seed=1, none=None):
    """Per step, one gradient per parameter (the parameter's dtype); ``none``: {step: [index]} of
    gradients that are None."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        gs = [(0.5 * torch.randn(p.shape, generator=g)).to(p.dtype) for p in params]
        for i in (none or {}).get(t, ()):
            gs[i] = None
        out.append(gs)
    return out


#: (class, parameter dtype, options); the core is given ``state_dtype="bfloat16"`` where the drop-in
#: keeps bfloat16 state by default (bfloat16 parameters without a state_dtype)
CORE_CASES = [
    ("Adam", BF16, dict(lr=1e-2)),
    ("AdamW", BF16, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("Adam", BF16, dict(lr=1e-2, stochastic_rounding=True, seed=7, maximize=True)),
    ("AdamW", BF16, dict(lr=1e-2, master_weights=True, state_dtype="float32")),
    ("Adam", BF16, dict(lr=1e-2, state_dtype="int8", weight_decay=0.1)),
    ("SGD", BF16, dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("SGD", BF16, dict(lr=1e-2, momentum=0.9, dampening=0.1, stochastic_rounding=True, seed=3)),
    ("RMSprop", BF16, dict(lr=1e-3, centered=True, momentum=0.5)),
    ("RMSprop", BF16, dict(lr=1e-3, state_dtype="int8", stochastic_rounding=True)),
    ("Adam", F16, dict(lr=1e-2)),
    ("Adam", F16, dict(lr=1e-2, master_weights=True, state_dtype="bfloat16")),
    ("SGD", F16, dict(lr=1e-2, momentum=0.9, master_weights=True, state_dtype="int8")),
    ("Adam", F32, dict(lr=1e-2, state_dtype="int8")),
]


def _case_id(c):
    name, dt, hp = c
    return f"{name}-{str(dt)[6:]}-" + "-".join(f"{k}={v}" for k, v in hp.items())


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("case", CORE_CASES, ids=_case_id)
def test_bitwise_equal_to_the_core(case, backend):
    """Parameters and every state entry bit for bit those of fastdescent's own optimizer, with a
    None gradient on some steps (state and step counts of that parameter unchanged) and a group
    option changed between steps (the state converted to the new storage)."""
    mixed_backend(backend)
    name, dtype, hp = case
    core_extra = {"state_dtype": "bfloat16"} if dtype == BF16 and "state_dtype" not in hp else {}
    ps = make_params(dtype)
    arrays = [np_of(p) for p in ps]
    opt = getattr(fdt, name)(ps, backend=backend, **hp)
    core = getattr(fd, name)(arrays, backend=backend, **hp, **core_extra)
    steps = make_grads(ps, 6, none={1: [2], 2: [0, 2]})
    for t, grads in enumerate(steps):
        if t == 4:  # options changed between steps: both convert their state (drop the master)
            for o in (opt, core):
                o.param_groups[0]["state_dtype"] = "float32" if dtype == F16 or hp.get(
                    "state_dtype") == "int8" else "int8"
                if hp.get("master_weights"):
                    o.param_groups[0]["master_weights"] = False
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
        core.step([None if g is None else np_of(g) for g in grads])
        for i, (p, a) in enumerate(zip(ps, arrays)):
            assert p.dtype == dtype
            np.testing.assert_array_equal(bits(p), bits(a), err_msg=f"step {t + 1} params[{i}]")
    for i, p in enumerate(ps):
        st, cst = opt.state[p], core.state[i]
        mine = {k for k in st if k != "step"}
        assert mine == {k for k in cst if k != "step"}, (i, sorted(st), sorted(cst))
        for k in mine:
            assert st[k].shape == (cst[k].shape if k.endswith("_scale") else p.shape), (i, k)
            np.testing.assert_array_equal(bits(st[k]), bits(cst[k]), err_msg=f"state[{i}][{k!r}]")
        if name != "SGD":  # (torch's SGD keeps no step; its count is checked by the SR cases)
            assert float(st["step"]) == float(cst["step"]) == 6 - (i == 2) * 2 - (i == 0)


def test_bfloat16_defaults_are_torchs():
    """No option: bfloat16 state rounded to nearest, the group and state_dict keys torch's, and step
    1 bitwise equal to torch.optim.Adam(fused=True) (one rounding of the float32 update); later
    steps stay within a bfloat16 ulp or two of it."""
    be = one_backend()
    for name, hp in (("Adam", dict(lr=1e-2)), ("AdamW", dict(lr=1e-2, weight_decay=0.1))):
        ps, qs = make_params(BF16), make_params(BF16)
        opt = getattr(fdt, name)(ps, backend=be, **hp)
        topt = getattr(torch.optim, name)(qs, fused=True, **hp)
        g0, g1 = opt.param_groups[0], topt.param_groups[0]
        assert {k: v for k, v in g0.items() if k not in ("params", "fused")} == \
            {k: v for k, v in g1.items() if k not in ("params", "fused")}
        for t, grads in enumerate(make_grads(ps, 10)):
            for p, q, g in zip(ps, qs, grads):
                p.grad, q.grad = g.clone(), g.clone()
            opt.step()
            topt.step()
            if t == 0:
                for p, q in zip(ps, qs):
                    assert torch.equal(p, q)
                    for k in ("exp_avg", "exp_avg_sq"):
                        assert opt.state[p][k].dtype == BF16
                        assert torch.equal(opt.state[p][k], topt.state[q][k]), k
        for p, q in zip(ps, qs):
            torch.testing.assert_close(p, q, rtol=2 ** -7, atol=1e-3)
        sd, tsd = opt.state_dict(), topt.state_dict()
        assert sd["state"][0].keys() == tsd["state"][0].keys()


def test_state_dict_interchanges_with_torch_optim():
    """torch.optim.Adam's bfloat16 state loads here and ours into it, mid-run: the next step is the
    same on both sides as on an uninterrupted torch run (bitwise, step 1 semantics hold for any
    state: one rounding per stored value)."""
    be = one_backend()
    ps, qs = make_params(BF16), make_params(BF16)
    grads = make_grads(ps, 4)
    topt = torch.optim.Adam(qs, lr=1e-2, fused=True)
    for gs in grads[:3]:
        for q, g in zip(qs, gs):
            q.grad = g.clone()
        topt.step()
    for p, q in zip(ps, qs):
        p.data.copy_(q.detach())
    opt = fdt.Adam(ps, lr=1e-2, backend=be)
    opt.load_state_dict(copy.deepcopy(topt.state_dict()))
    assert all(opt.state[p]["exp_avg"].dtype == BF16 for p in ps)
    back = torch.optim.Adam([torch.nn.Parameter(q.detach().clone()) for q in qs], lr=1e-2,
                            fused=True)
    back.load_state_dict(copy.deepcopy(opt.state_dict()))  # (torch.optim keeps what it loads)
    for o, params in ((opt, ps), (topt, qs), (back, back.param_groups[0]["params"])):
        for p, g in zip(params, grads[3]):
            p.grad = g.clone()
        o.step()
    for p, q, r in zip(ps, qs, back.param_groups[0]["params"]):
        assert torch.equal(p, q) and torch.equal(r, q)
        assert torch.equal(opt.state[p]["exp_avg_sq"], topt.state[q]["exp_avg_sq"])


@pytest.mark.parametrize("hp", [dict(master_weights=True), dict(state_dtype="int8"),
                                dict(stochastic_rounding=True, state_dtype="int8", seed=5),
                                dict(state_dtype="float32")],
                         ids=["master", "int8", "sr-int8", "f32-state"])
def test_extra_state_round_trips(hp):
    """master_param / 8-bit codes and <name>_scale / float32 state: in the state dict with their
    dtypes; a state_dict (through torch.save and torch.load(weights_only=True)) loaded into a new
    optimizer continues bit for bit like the uninterrupted one."""
    be = one_backend()
    ps, qs = make_params(BF16), make_params(BF16)
    grads = make_grads(ps, 5)
    opt = fdt.Adam(ps, lr=1e-2, amsgrad=True, backend=be, **hp)
    for gs in grads[:3]:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    st = opt.state[ps[2]]
    if hp.get("master_weights"):
        assert st["master_param"].dtype == F32
        assert torch.equal(st["master_param"].to(BF16), ps[2])
    if hp.get("state_dtype") == "int8":
        assert st["exp_avg"].dtype == torch.uint8 and st["max_exp_avg_sq"].dtype == torch.uint8
        assert st["exp_avg_sq_scale"].shape == (P.nblocks(300),)
        assert st["exp_avg_sq_scale"].dtype == F32
    if hp.get("state_dtype") == "float32":
        assert st["exp_avg"].dtype == F32
    buf = io.BytesIO()
    torch.save({"model": [p.detach() for p in ps], "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    for q, t in zip(qs, ck["model"]):
        q.data.copy_(t)
    opt2 = fdt.Adam(qs, lr=1e-2, amsgrad=True, backend=be, **hp)
    opt2.load_state_dict(ck["opt"])
    for gs in grads[3:]:
        for o, params in ((opt, ps), (opt2, qs)):
            for p, g in zip(params, gs):
                p.grad = g.clone()
            o.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
        a, b = opt.state[p], opt2.state[q]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_loads_convert_between_storages():
    """A state_dict of another storage is converted into the group's: float32 state into bfloat16
    (rounded to nearest), into 8-bit codes (the core's quantizer), 8-bit codes back into float32;
    a master copy is kept, or dropped by a group without master weights."""
    be = one_backend()
    ps = make_params(BF16)
    src = fdt.Adam(ps, lr=1e-2, backend=be, state_dtype="float32", master_weights=True)
    for p, g in zip(ps, make_grads(ps, 1)[0]):
        p.grad = g
    src.step()
    sd = copy.deepcopy(src.state_dict())
    for g in sd["param_groups"]:  # (a load takes the saved group options: these go)
        del g["state_dtype"], g["master_weights"]
    m = sd["state"][0]["exp_avg"]
    # default: bfloat16 state; the master copy dropped (no master weights here)
    dst = fdt.Adam(make_params(BF16), lr=1e-2, backend=be)
    dst.load_state_dict(sd)
    p0 = dst.param_groups[0]["params"][0]
    assert dst.state[p0]["exp_avg"].dtype == BF16
    assert torch.equal(dst.state[p0]["exp_avg"], m.to(BF16))
    assert "master_param" not in dst.state[p0]
    # int8: codes and scales as the core's quantizer makes them
    q8 = fdt.Adam(make_params(BF16), lr=1e-2, backend=be, state_dtype="int8",
                  master_weights=True)
    q8.load_state_dict(sd)
    st = q8.state[q8.param_groups[0]["params"][0]]
    codes, scales = P.q8_quantize(m.numpy().reshape(-1), P.Q8S)
    np.testing.assert_array_equal(st["exp_avg"].numpy().reshape(-1), codes)
    np.testing.assert_array_equal(st["exp_avg_scale"].numpy(), scales)
    assert torch.equal(st["master_param"], sd["state"][0]["master_param"])
    # and back: 8-bit codes read into a float32-state group
    back = fdt.Adam(make_params(BF16), lr=1e-2, backend=be, state_dtype="float32")
    sd8 = copy.deepcopy(q8.state_dict())
    for g in sd8["param_groups"]:
        del g["state_dtype"], g["master_weights"]
    back.load_state_dict(sd8)
    st2 = back.state[back.param_groups[0]["params"][0]]
    assert "exp_avg_scale" not in st2 and st2["exp_avg"].dtype == F32
    np.testing.assert_array_equal(st2["exp_avg"].numpy().reshape(-1),
                                  P.q8_dequantize(codes, scales, P.Q8S))
    # bad 8-bit entries are refused whole, naming the entry
    bad = copy.deepcopy(sd8)
    del bad["state"][1]["exp_avg_scale"]
    with pytest.raises(ValueError, match=r"state\[1\]\['exp_avg'\] holds 8-bit codes .* no "
                                         "'exp_avg_scale'"):
        back.load_state_dict(bad)
    bad = copy.deepcopy(sd8)
    bad["state"][1]["exp_avg_scale"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"exp_avg_scale'\] has shape \(5,\), expected \(1,\)"):
        back.load_state_dict(bad)
    assert torch.equal(back.state[back.param_groups[0]["params"][0]]["exp_avg"], st2["exp_avg"])


def test_float16_parameters():
    """float16: float32 state by default (torch.optim keeps float16; fastdescent has none), master
    weights on request; stochastic rounding (to bfloat16) refused when the optimizer is built."""
    be = one_backend()
    ps = make_params(F16)
    opt = fdt.Adam(ps, lr=1e-2, backend=be)
    for p, g in zip(ps, make_grads(ps, 1)[0]):
        p.grad = g
    opt.step()
    assert all(p.dtype == F16 for p in ps)
    assert opt.state[ps[0]]["exp_avg"].dtype == F32
    # its state_dict loads into torch.optim.Adam on float16 parameters (cast to float16 there)
    t = torch.optim.Adam([torch.nn.Parameter(p.detach().clone()) for p in ps], lr=1e-2)
    t.load_state_dict(opt.state_dict())
    assert t.state[t.param_groups[0]["params"][0]]["exp_avg"].dtype == F16
    with pytest.raises(ValueError, match=r"param_groups\[0\] \(torch.float16 parameters\): "
                                         "stochastic_rounding rounds to bfloat16"):
        fdt.SGD(make_params(F16), lr=0.1, stochastic_rounding=True, backend=be)


def test_layouts_and_gradient_release():
    """A parameter with other strides (a transposed tensor of its own) is updated like a contiguous
    one; no reference to a gradient outlives the step; the parameters' version counters move."""
    be = one_backend()
    base = make_params(BF16)[0]
    a = torch.nn.Parameter(base.detach().clone())
    b = torch.nn.Parameter(base.detach().t().contiguous().t())  # same values, column-major
    assert not b.is_contiguous()
    oa, ob = fdt.Adam([a], lr=1e-2, backend=be), fdt.Adam([b], lr=1e-2, backend=be)
    for g in make_grads([a], 3):
        a.grad = g[0].clone()
        b.grad = g[0].clone()  # row-major gradient for a column-major parameter: copied
        v = b._version
        oa.step()
        ob.step()
        assert b._version > v
    assert torch.equal(a, b)
    assert ob.state[b]["exp_avg"].stride() == b.stride()
    assert torch.equal(oa.state[a]["exp_avg"], ob.state[b]["exp_avg"])
    g = torch.ones_like(a)
    ref = StorageWeakRef(g.untyped_storage())  # (the plan reads the gradient through views)
    a.grad = g
    del g
    oa.step()
    a.grad = None
    assert ref.expired()


def test_refused_step_leaves_everything_untouched():
    """A step refused after a state conversion was planned writes nothing: the parameters, the
    state entries and their storage stay as they were."""
    be = one_backend()
    ps = make_params(BF16)
    opt = fdt.Adam(ps, lr=1e-2, backend=be)
    for p, g in zip(ps, make_grads(ps, 1)[0]):
        p.grad = g
    opt.step()
    snap = ([p.detach().clone() for p in ps],
            [{k: v.clone() for k, v in opt.state[p].items()} for p in ps])
    opt.param_groups[0]["state_dtype"] = "int8"  # a conversion at the next step ...
    opt.param_groups[0]["lr"] = -1.0  # ... which is refused
    with pytest.raises(ValueError, match=r"param_groups\[0\].*lr"):
        opt.step()
    for p, p0, s0 in zip(ps, *snap):
        assert torch.equal(p, p0)
        assert opt.state[p].keys() == s0.keys()
        for k, v in s0.items():
            assert opt.state[p][k].dtype == v.dtype and torch.equal(opt.state[p][k], v)
    opt.param_groups[0]["lr"] = 1e-2
    opt.step()
    assert opt.state[ps[0]]["exp_avg"].dtype == torch.uint8


def test_refusals_name_the_dtype_or_option():
    w = torch.nn.Parameter(torch.zeros(3, dtype=BF16))
    for cls in ("Adagrad", "NAdam", "Lion"):
        with pytest.raises(TypeError, match=rf"params\[0\]: torch.bfloat16 parameters are not "
                                            rf"supported by fastdescent.torch.{cls}.*SGD, Adam, "
                                            "AdamW and RMSprop"):
            getattr(fdt, cls)([w])
    opt = fdt.Adagrad([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(TypeError, match="float16 parameters are not supported"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=F16))]})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match=r"param_groups\[1\]: master_weights, stochastic_rounding "
                                         "and state_dtype='bfloat16'/'int8' are supported by SGD"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))],
                             "state_dtype": "int8"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'master_weights'"):
        fdt.Adagrad([w.float()], master_weights=True)
    with pytest.raises(ValueError, match="state_dtype must be None, 'float32', 'bfloat16' or "
                                         "'int8', got 'float16'"):
        fdt.Adam([w], state_dtype="float16")
    with pytest.raises(ValueError, match="master_weights and stochastic_rounding"):
        fdt.Adam([w], master_weights=True, stochastic_rounding=True)
    with pytest.raises(ValueError, match=r"torch.float64 parameters\): float64 parameters keep "
                                         "float64 state"):
        fdt.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], state_dtype="int8")

