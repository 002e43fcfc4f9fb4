"""A hostile user against the low-precision features (``docs/low-precision.md``): every refused
call names its argument and leaves parameters and state byte for byte as they were; odd but legal
inputs (block edges, size 0/1, aliasing views, threads, fork, huge step counts, extreme seeds) train
and agree bit for bit across the host backends.

Each test here was first written against a hole it found (see the test's docstring), or guards an
edge that held."""

from __future__ import annotations

import copy
import os
import threading

import numpy as np
import pytest

import fastdescent as fd

from conftest import HOST_BACKENDS, require_backend

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)


def _snap(opt, params):
    """Bytes (and dtypes) of the parameters, the whole state_dict and the groups' options."""
    sd = opt.state_dict()
    state = {i: {k: (v.dtype.str, v.shape, v.tobytes()) if isinstance(v, np.ndarray) else v
                 for k, v in d.items()} for i, d in sd["state"].items()}
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return [(p.dtype.str, p.tobytes()) for p in params], state, repr(groups)


def _ones(params, dtype=F32):
    return [np.ones(p.shape, dtype) for p in params]


def _trained(backend="c", dtype=BF16, n=300, steps=2, **kw):
    ps = [np.linspace(-1, 1, n).astype(np.float32).astype(dtype),
          np.linspace(0, 1, 7).astype(np.float32).astype(dtype)]
    opt = fd.Adam(ps, lr=1e-2, backend=backend, **kw)
    for _ in range(steps):
        opt.step(_ones(ps))
    return ps, opt


# ------------------------------------------------------------------------------- grad_scale
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("scale", [1e-300, 1e-46, 4e38, 1e300, 2 ** 1000])
@pytest.mark.parametrize("dtype", [BF16, F32])
def test_grad_scale_that_is_no_float32_is_refused(backend, scale, dtype):
    """HOLE (fixed): the kernels divide by float32(grad_scale); 1e-300 passed the check (> 0,
    finite) and rounded to 0 (every gradient inf: NaN parameters and state), 1e300 rounded to inf
    (every gradient 0: a silent no-op update)."""
    require_backend(backend)
    ps, opt = _trained(backend, dtype, state_dtype="int8")
    before = _snap(opt, ps)
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step(_ones(ps), grad_scale=scale)
    assert _snap(opt, ps) == before


def test_grad_scaler_stays_within_float32():
    """HOLE (fixed): GradScaler grew its scale while the float64 product was finite, so it reached
    2**128, which the step reads as float32 inf (every gradient divided to 0); and init_scale,
    update(new_scale=) and load_state_dict accepted scales float32 cannot hold."""
    ps = [np.zeros(8, BF16)]
    opt = fd.Adam(ps, lr=1e-3, backend="numpy", master_weights=True)
    sc = fd.amp.GradScaler(init_scale=2.0 ** 126, growth_interval=1)
    for _ in range(4):  # zero gradients never overflow: the scale wants to grow every step
        assert sc.step(opt, [np.zeros(8, np.float32)])
        sc.update()
    assert np.isfinite(np.float32(sc.get_scale()))
    for bad in (1e39, 1e-300):
        with pytest.raises(ValueError, match="init_scale"):
            fd.amp.GradScaler(init_scale=bad)
        with pytest.raises(ValueError, match="new_scale"):
            sc.update(new_scale=bad)
        with pytest.raises(ValueError, match="scale"):
            sc.load_state_dict(dict(sc.state_dict(), scale=bad))
    assert np.isfinite(np.float32(sc.get_scale()))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("dtype", [BF16, F16, F32])
def test_grad_scaler_skips_a_step_whose_unscaled_gradient_overflows(backend, dtype):
    """HOLE (fixed): with a scale below 1 (after back-offs, or init_scale < 1) a finite scaled
    gradient can overflow float32 when the kernel divides it by the scale; the scaler's check read
    only the scaled gradients, so the step wrote NaN/inf into the parameters and the 8-bit state
    instead of being skipped (torch's scaler checks the unscaled gradients)."""
    require_backend(backend)
    kw = dict(master_weights=True) if dtype == F16 else dict(state_dtype="int8")
    ps, opt = _trained(backend, dtype, **kw)
    before = _snap(opt, ps)
    sc = fd.amp.GradScaler(init_scale=2.0 ** -20)
    gdt = F32 if dtype == F32 else dtype
    big = [np.full(p.shape, 1e33 if gdt == F32 else (3e34 if gdt == BF16 else 60000.0), gdt)
           for p in ps]
    if gdt == F16:  # 60000 / 2**-20 fits float32: make the scale small enough to overflow
        sc.update(new_scale=2.0 ** -120)
    assert not sc.step(opt, big)
    assert sc.skipped_steps == 1
    assert _snap(opt, ps) == before
    sc.update()
    # the same optimizer with skip_nonfinite: the unscaled overflow skips the step too
    opt.skip_nonfinite = True
    assert opt.step(big, grad_scale=2.0 ** -120) is False
    assert opt.last_step_skipped
    assert _snap(opt, ps) == before
    # and a representable unscaled gradient still steps
    assert opt.step(_ones(ps, gdt), grad_scale=0.5) is True
    assert _snap(opt, ps) != before
    assert all(np.isfinite(p.astype(np.float32)).all() for p in ps)


def test_device_grad_scale_checks():
    """The same three checks on the cuda backend (simulator, tiny sizes): an unscaled overflow
    of device bfloat16/float32 gradients skips the scaler's step, a grad_scale that is no float32
    and a float32-overflowing lr are refused, and nothing on the device changes."""
    require_backend("cuda")
    from numba import cuda

    for gdt in (BF16, F32):
        dp = cuda.to_device(np.linspace(-1, 1, 9).astype(BF16))
        opt = fd.Adam([dp], lr=1e-2, backend="cuda", state_dtype="int8")
        opt.step([cuda.to_device(np.ones(9, gdt))])
        before = (dp.copy_to_host().tobytes(), repr(opt.state_dict()["state"]))
        sc = fd.amp.GradScaler(init_scale=2.0 ** -120)
        assert sc.step(opt, [cuda.to_device(np.full(9, 3e34, gdt))]) is False
        with pytest.raises(ValueError, match="grad_scale"):
            opt.step([cuda.to_device(np.ones(9, gdt))], grad_scale=1e-300)
        opt.param_groups[0]["lr"] = 1e39
        with pytest.raises(ValueError, match="overflows float32"):
            opt.step([cuda.to_device(np.ones(9, gdt))])
        assert (dp.copy_to_host().tobytes(), repr(opt.state_dict()["state"])) == before


# ------------------------------------------------------------------------------- scalars
@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("dtype,kw", [(BF16, {}), (BF16, dict(state_dtype="int8")),
                                      (F16, dict(master_weights=True)),
                                      (BF16, dict(stochastic_rounding=True))])
@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_low_precision_step_refuses_scalars_that_overflow_float32(backend, dtype, kw, name):
    """HOLE (fixed): the kernel computes in float32 whatever the storage, but a bfloat16/float16
    bucket's per-step scalars were checked against float64 only: lr=1e39 wrote -inf into every
    parameter, where a float32 parameter's step refuses it."""
    require_backend(backend)
    ps = [np.ones(300, dtype)]
    opt = getattr(fd, name)(ps, lr=1e-3, backend=backend, **kw)
    opt.step(_ones(ps))
    before = _snap(opt, ps)[:2]
    opt.param_groups[0]["lr"] = 1e39
    with pytest.raises(ValueError, match="overflows float32"):
        opt.step(_ones(ps))
    assert _snap(opt, ps)[:2] == before
    opt.param_groups[0]["lr"] = 1e-3
    opt.step(_ones(ps))
    assert np.isfinite(ps[0].astype(np.float32)).all()


# ------------------------------------------------------------------------------- groups
@pytest.mark.parametrize("group,match", [
    ({"params": [np.ones(5, F16)], "stochastic_rounding": True}, "stochastic_rounding"),
    ({"params": [np.ones(5)], "state_dtype": "int8"}, "float64"),
    ({"params": [np.ones(5, BF16)], "l1": 0.1}, "l1"),
])
def test_add_param_group_without_a_kernel_is_refused(group, match):
    """HOLE (fixed): add_param_group accepted a group that has no kernel for its parameters'
    dtype (float16 with stochastic rounding, float64 with 8-bit state, bfloat16 with l1); from
    then on every step and every load_state_dict of the whole optimizer raised: it was bricked."""
    ps, opt = _trained("numpy", state_dtype="int8")
    before = _snap(opt, ps)
    with pytest.raises(ValueError, match=match):
        opt.add_param_group(group)
    assert len(opt.param_groups) == 1
    assert _snap(opt, ps) == before
    opt.step(_ones(ps))
    opt.load_state_dict(opt.state_dict())
    # the constructor refuses the same groups at once, not at the first step
    with pytest.raises(ValueError, match=match):
        fd.Adam([dict(group)], backend="numpy")


def test_sgd_noise_with_bfloat16_is_refused_at_construction():
    with pytest.raises(ValueError, match="noise_std"):
        fd.SGD([np.ones(5, BF16)], lr=0.1, noise_std=0.1, backend="numpy")


def test_load_state_dict_with_an_option_no_kernel_has_is_atomic():
    """HOLE (fixed): a state_dict whose group turns on stochastic rounding for float16 parameters
    that have no state yet raised only in the final bucket build, after the groups had been
    replaced: the error named no entry and the optimizer was left bricked."""
    pb, p16 = [np.ones(3, BF16)], [np.ones(3, F16)]
    opt = fd.Adam([{"params": pb}, {"params": p16}], backend="numpy")
    opt.step([np.ones(3, np.float32), None])  # params[1] has no state
    sd = opt.state_dict()
    sd["param_groups"][1]["stochastic_rounding"] = True
    before = _snap(opt, pb + p16)
    with pytest.raises(ValueError, match=r"param_groups'\]\[1\].*stochastic_rounding"):
        opt.load_state_dict(sd)
    assert _snap(opt, pb + p16) == before
    opt.step([np.ones(3, np.float32)] * 2)


# ------------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("entry,value", [
    ("exp_avg_sq_scale", np.array([-1.0, 2.0], np.float32)),
    ("exp_avg_scale", np.array([np.inf, 1.0], np.float32)),
    ("exp_avg_sq_scale", np.array([1.0, -np.inf], np.float32)),
])
def test_load_refuses_negative_or_infinite_block_scales(entry, value):
    """HOLE (fixed): a block scale is >= 0, or NaN for a block that held a non-finite value; a
    negative exp_avg_sq scale made the second moment negative (NaN parameters at the next step)
    and an infinite one made every value of its block inf, silently."""
    ps, opt = _trained("numpy", state_dtype="int8")
    sd = opt.state_dict()
    sd["state"][0][entry] = value
    before = _snap(opt, ps)
    with pytest.raises(ValueError, match=rf"\['state'\]\[0\]\['{entry}'\]"):
        opt.load_state_dict(sd)
    assert _snap(opt, ps) == before
    # a NaN scale (a poisoned block, as the step itself stores it) still round-trips exactly
    sd["state"][0][entry] = np.array([np.nan, 1.0], np.float32)
    opt.load_state_dict(sd)
    np.testing.assert_array_equal(opt.state_dict()["state"][0][entry], sd["state"][0][entry])


def test_load_names_the_entry_of_a_ragged_scale_list():
    """HOLE (fixed): a nested list of unequal lengths as a scale raised NumPy's bare 'setting an
    array element with a sequence', naming no entry."""
    ps, opt = _trained("numpy", state_dtype="int8")
    sd = opt.state_dict()
    sd["state"][0]["exp_avg_scale"] = [[0.1], [0.2, 0.3]]
    before = _snap(opt, ps)
    with pytest.raises(ValueError, match=r"\['exp_avg_scale'\]"):
        opt.load_state_dict(sd)
    assert _snap(opt, ps) == before


@pytest.mark.parametrize("dtype", [F32, np.dtype(np.float64)])
def test_bfloat16_state_loads_into_a_plain_group(dtype):
    """HOLE (fixed): bfloat16 state arrays (as a state_dtype='bfloat16' optimizer saves them) were
    refused by a plain float32/float64 group with 'has dtype bfloat16; state must hold real
    numbers', while 8-bit codes were read back: they are read back exactly now."""
    ps, opt = _trained("numpy", F32, state_dtype="bfloat16")
    sd = opt.state_dict()
    sd["param_groups"][0].pop("state_dtype")
    qs = [np.zeros(p.shape, dtype) for p in ps]
    dst = fd.Adam(qs, lr=1e-2, backend="numpy")
    dst.load_state_dict(sd)
    got = dst.state_dict()["state"][0]
    for name in ("exp_avg", "exp_avg_sq"):
        assert got[name].dtype == dtype
        np.testing.assert_array_equal(got[name], sd["state"][0][name].astype(dtype))
    dst.step(_ones(qs, dtype))


def test_bad_state_dicts_name_the_entry_and_change_nothing():
    """Guards (held): truncated/extra/2-d/bool/str scales, codes without scales, scales without
    codes, codes of the wrong shape, a master copy of the wrong shape, bad options."""
    ps, opt = _trained("c", state_dtype="int8", amsgrad=True)
    sd = opt.state_dict()
    edits = {
        "exp_avg_scale": lambda s: s.__setitem__("exp_avg_scale", s["exp_avg_scale"][:1]),
        "exp_avg_sq_scale": lambda s: s.__setitem__(
            "exp_avg_sq_scale", np.concatenate([s["exp_avg_sq_scale"], [1]]).astype(np.float32)),
        "max_exp_avg_sq_scale": lambda s: s.__setitem__(
            "max_exp_avg_sq_scale", s["max_exp_avg_sq_scale"].reshape(1, -1)),
        "exp_avg'": lambda s: s.pop("exp_avg_scale"),
        "exp_avg_sq'": lambda s: s.__setitem__("exp_avg_sq", s["exp_avg_sq"][:-1]),
        "max_exp_avg_sq_scale'": lambda s: s.pop("max_exp_avg_sq"),
        "foo_scale": lambda s: s.__setitem__("foo_scale", s["exp_avg_scale"]),
    }
    for where, edit in edits.items():
        bad = copy.deepcopy(sd)
        edit(bad["state"][0])
        before = _snap(opt, ps)
        with pytest.raises(ValueError, match=f"{where}"):
            opt.load_state_dict(bad)
        assert _snap(opt, ps) == before, where
    bad = copy.deepcopy(sd)
    bad["param_groups"][0].update(master_weights=True, state_dtype="float32")
    bad["state"][0]["master_param"] = np.zeros(299, np.float32)
    with pytest.raises(ValueError, match="master_param"):
        opt.load_state_dict(bad)
    for key, val in [("state_dtype", "int4"), ("seed", -1), ("seed", 2 ** 64 - 1)]:
        bad = copy.deepcopy(sd)
        bad["param_groups"][0][key] = val
        with pytest.raises(ValueError, match=key):
            opt.load_state_dict(bad)
    assert _snap(opt, ps) == before


# ------------------------------------------------------------------------------- master copies
def test_restore_best_with_master_weights_keeps_the_restored_parameters():
    """HOLE (fixed): fd.fit(restore_best=True) wrote the best weights into the bfloat16
    parameters but left the optimizer's float32 master copies at the last epoch's values, so the
    next step (a later fit, an lr=0 step) silently put the last epoch's weights back."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 10)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = fd.nn.MLP([10, 16, 2], dtype=BF16, backend="c", seed=1)
    opt = fd.Adam(model.parameters(), lr=0.5, master_weights=True)  # worsens after a while
    hist = fd.fit(model, X, y, optimizer=opt, epochs=6, batch_size=256, progress=False,
                  restore_best=True, validation_data=(X, y), monitor="val_loss")
    assert hist.restored_best
    restored = [p.copy() for p in model.params]
    opt.param_groups[0]["lr"] = 0.0
    opt.step([np.zeros(p.shape, np.float32) for p in model.params])
    for p, r in zip(model.params, restored):
        np.testing.assert_array_equal(p.view(np.uint16), r.view(np.uint16))


def test_master_copy_follows_a_model_load_state_dict():
    """(Was a hole.) With master_weights, weights written into the parameters from outside (an
    fd.nn model's load_state_dict, a user's in-place edit) were put back by the next step; now an
    element whose parameter is not its master rounded re-reads the parameter."""
    model = fd.nn.MLP([10, 16, 2], dtype=BF16, backend="c", seed=1)
    opt = fd.SGD(model.parameters(), lr=0.0, master_weights=True)
    opt.step([np.zeros(p.shape, np.float32) for p in model.params])
    other = fd.nn.MLP([10, 16, 2], dtype=BF16, backend="c", seed=2)
    model.load_state_dict(other.state_dict())
    opt.step([np.zeros(p.shape, np.float32) for p in model.params])
    for a, b in zip(model.params, other.params):
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))


# ------------------------------------------------------------------------------- inputs that hold
@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_aliasing_and_layout_errors_change_nothing(backend):
    """Guards (held): a gradient that is the parameter, a view of it, a state buffer, a block
    scale, the master copy or another parameter; misaligned (1-byte offset) float32/bfloat16
    gradients; non-contiguous/read-only/overlapping/misaligned parameters; wrong dtypes/shapes."""
    require_backend(backend)
    for kw in (dict(state_dtype="int8"), dict(master_weights=True, amsgrad=True),
               dict(state_dtype="bfloat16", stochastic_rounding=True)):
        ps, opt = _trained(backend, n=1, **kw)  # size 1: one scale per buffer, like the param
        before = _snap(opt, ps)
        st = opt.state[0]
        bads = [[ps[0], ps[1]], [ps[0].view(np.uint16).view(BF16), ps[1]],
                [np.ones(1, F32), ps[0]], [np.ones(1, F16), ps[1]],
                [np.ones((1, 1), F32), ps[1]], [np.ones(1, np.float64), ps[1]]]
        bads += [[v, ps[1]] for k, v in st.items()
                 if isinstance(v, np.ndarray) and v.dtype in (F32, BF16)]
        raw = bytearray(4 * 7 + 1)
        bads.append([np.ones(1, F32), np.frombuffer(raw, F32, 7, 1)])
        raw16 = bytearray(2 * 7 + 1)
        bads.append([np.ones(1, F32), np.frombuffer(raw16, BF16, 7, 1)])
        for g in bads:
            for gs in (None, 4.0):
                with pytest.raises((TypeError, ValueError), match=r"grads\["):
                    opt.step(g, grad_scale=gs)
        assert _snap(opt, ps) == before
    base = np.zeros(600, BF16)
    with pytest.raises(ValueError, match=r"params\[1\] shares memory"):
        fd.Adam([base[:400], base[200:]], backend=backend, state_dtype="int8")
    with pytest.raises(ValueError, match=r"params\[1\] shares memory"):
        fd.Adam([base, base.view(F16)], backend=backend, master_weights=True)
    with pytest.raises(ValueError, match="C-contiguous"):
        fd.Adam([base[::2]], backend=backend, master_weights=True)
    ro = np.zeros(10, BF16)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fd.Adam([ro], backend=backend, master_weights=True)
    with pytest.raises(ValueError, match="not aligned"):
        fd.Adam([np.frombuffer(bytearray(601), BF16, 300, 1)], backend=backend)
    # disjoint views of one array are fine parameters (and a read-only gradient is fine)
    opt = fd.Adam([base[:300], base[300:]], backend=backend, state_dtype="int8")
    g = np.ones(300, F32)
    g.flags.writeable = False
    opt.step([g, g])


def test_bad_options_and_hyperparameters_change_nothing():
    """Guards (held): NaN/negative/out-of-range hyperparameters and bad option values, set
    between steps, are refused naming them, and the step writes nothing."""
    ps, opt = _trained("c", state_dtype="int8")
    g = opt.param_groups[0]
    for key, val in [("lr", float("nan")), ("betas", (1.0, 0.999)), ("betas", (0.9, float("nan"))),
                     ("eps", -1.0), ("weight_decay", float("inf")), ("state_dtype", "INT8"),
                     ("state_dtype", b"int8"), ("master_weights", 1), ("stochastic_rounding", "y"),
                     ("seed", 2 ** 63), ("seed", 1.0)]:
        before = _snap(opt, ps)
        old = g[key] if key in g else None
        g[key] = val
        with pytest.raises((TypeError, ValueError), match=key.rstrip("s")):
            opt.step(_ones(ps))
        if old is None:
            del g[key]
        else:
            g[key] = old
        assert _snap(opt, ps) == before, key
    g.update(master_weights=True, stochastic_rounding=True)
    before = _snap(opt, ps)
    with pytest.raises(ValueError, match="choose one"):
        opt.step(_ones(ps))
    assert _snap(opt, ps) == before


def test_step_counts_near_two_to_the_32():
    """Guards (held): the mixed step counts steps below 2**32 (its random bits take a 32-bit step):
    the last one runs, the next is refused and changes nothing."""
    ps, opt = _trained("c", stochastic_rounding=True, state_dtype="int8")
    sd = opt.state_dict()
    for i in sd["state"]:
        sd["state"][i]["step"] = 2 ** 32 - 2
    opt.load_state_dict(sd)
    opt.step(_ones(ps))
    assert opt.state[0]["step"] == 2 ** 32 - 1
    before = _snap(opt, ps)
    with pytest.raises(ValueError, match="below 2\\*\\*32"):
        opt.step(_ones(ps))
    assert _snap(opt, ps) == before


def test_switching_storage_options_mid_training_keeps_training():
    """Guards (held): int8 -> bfloat16 -> float32 state, master on/off, stochastic rounding on/off,
    all between steps, keep converging on a quadratic."""
    rng = np.random.default_rng(0)
    target = rng.standard_normal(1000).astype(np.float32)
    p = [np.zeros(1000, BF16)]
    opt = fd.Adam(p, lr=2e-2, backend="c")
    seq = [dict(state_dtype="int8"), dict(state_dtype="bfloat16"), dict(state_dtype="float32"),
           dict(master_weights=True), dict(master_weights=False),
           dict(stochastic_rounding=True, seed=5), dict(stochastic_rounding=False),
           dict(state_dtype="int8", master_weights=True), dict(state_dtype=None, master_weights=False)]
    errs = []
    for opts in seq:
        opt.param_groups[0].update(opts)
        for _ in range(25):
            opt.step([p[0].astype(np.float32) - target])
        errs.append(float(np.abs(p[0].astype(np.float32) - target).mean()))
    assert errs[-1] < 0.05 and errs[-1] < errs[0] / 10, errs
    assert all(np.isfinite(errs))


SIZES = [0, 1, 7, 255, 256, 257, 1025]
CONFIGS = [
    ("Adam", BF16, dict(lr=1e-2, weight_decay=0.1, amsgrad=True, stochastic_rounding=True,
                        state_dtype="int8", seed=2 ** 63 - 1)),
    ("AdamW", F16, dict(lr=1e-2, weight_decay=0.1, amsgrad=True, master_weights=True,
                        state_dtype="bfloat16")),
    ("SGD", BF16, dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True,
                       state_dtype="int8", stochastic_rounding=True, seed=0)),
    ("RMSprop", BF16, dict(lr=1e-3, momentum=0.9, centered=True, weight_decay=0.1, maximize=True,
                           state_dtype="int8", stochastic_rounding=True, seed=7)),
    ("RMSprop", F32, dict(lr=1e-3, centered=True, state_dtype="bfloat16")),
]


def _run_config(backend, name, dtype, kw, steps=6):
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SIZES]
    opt = getattr(fd, name)(ps, backend=backend, **kw)
    for t in range(steps):
        gs = [(rng.standard_normal(s) * 10.0 ** rng.uniform(-6, 2)).astype(np.float32)
              for s in SIZES]
        if t % 3 == 1 and dtype != F32:
            gs = [g.astype(dtype) for g in gs]
        if t == 3:
            gs[3][0] = np.inf  # (one non-finite value per block at most: its block goes NaN)
        opt.step(gs, grad_scale=None if t % 2 else 2.0 ** (t - 2))
    return ps, opt.state_dict()["state"]


@pytest.mark.parametrize("backend", [b for b in HOST_BACKENDS if b != "numpy"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"{c[0]}-{np.dtype(c[1]).name}" for c in CONFIGS])
def test_backends_agree_bit_for_bit_at_block_edges(backend, cfg):
    """Guards (held): sizes 0/1/7/255/256/257/1025, bf16/f16/f32 gradients, grad_scale below and
    above 1, an inf gradient, seeds at the ends of their range; NaN positions included (their
    sign bits: see test_nan_sign_of_a_maximized_nan_gradient)."""
    require_backend(backend)
    ref_p, ref_s = _run_config("numpy", *cfg)
    got_p, got_s = _run_config(backend, *cfg)

    def same(a, b, what):
        ua, ub = (np.ascontiguousarray(x).view(np.uint8).reshape(-1, x.itemsize) for x in (a, b))
        nan = np.isnan(a.astype(np.float32)).reshape(-1) if a.dtype != np.uint8 else None
        assert a.dtype == b.dtype and a.shape == b.shape, what
        if nan is not None:
            np.testing.assert_array_equal(nan, np.isnan(b.astype(np.float32)).reshape(-1), what)
            ua, ub = ua[~nan], ub[~nan]
        np.testing.assert_array_equal(ua, ub, what)

    for i, (a, b) in enumerate(zip(ref_p, got_p)):
        same(a, b, f"params[{i}]")
    assert ref_s.keys() == got_s.keys()
    for i in ref_s:
        for k, v in ref_s[i].items():
            if isinstance(v, np.ndarray):
                same(v, got_s[i][k], f"state[{i}][{k}]")
            else:
                assert v == got_s[i][k]


@pytest.mark.parametrize("backend", [b for b in HOST_BACKENDS if b != "numpy"])
def test_nan_sign_of_a_maximized_nan_gradient(backend):
    """A NaN gradient under maximize, weight decay and amsgrad: NaN on every backend. Its sign bit
    is not part of the contract (docs/low-precision.md): LLVM may fold ``-g + wd*p`` into
    ``wd*p - g`` on numba, and where two NaNs meet x86 keeps the first operand's."""
    require_backend(backend)
    out = {}
    for be in ("numpy", backend):
        ps = [np.linspace(-1, 1, 8).astype(np.float32)]
        opt = fd.Adam(ps, lr=1e-2, maximize=True, weight_decay=0.1, amsgrad=True, state_dtype="int8",
                      backend=be)
        g = np.ones(8, np.float32)
        g[0] = np.nan
        opt.step([g])
        opt.step([np.ones(8, np.float32)])
        out[be] = ps[0].copy()
    np.testing.assert_array_equal(np.isnan(out[backend]), np.isnan(out["numpy"]))
    assert np.isnan(out[backend][0])
    np.testing.assert_array_equal(out[backend][1:].view(np.uint32), out["numpy"][1:].view(np.uint32))


# ------------------------------------------------------------------------------- concurrency
def _make(seed, backend="c"):
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(5000).astype(BF16), rng.standard_normal(257).astype(BF16)]
    opt = fd.AdamW(ps, lr=1e-2, backend=backend, stochastic_rounding=True, state_dtype="int8",
                   seed=seed)
    gs = [[rng.standard_normal(p.shape).astype(np.float32) for p in ps] for _ in range(8)]
    return ps, opt, gs


def _train(opt, gs):
    for g in gs:
        opt.step(g)


def test_two_threads_two_optimizers_match_serial_runs():
    serial = []
    for s in (1, 2):
        ps, opt, gs = _make(s)
        _train(opt, gs)
        serial.append(b"".join(p.tobytes() for p in ps))
    runs = [_make(1), _make(2)]
    threads = [threading.Thread(target=_train, args=(o, g)) for _, o, g in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [b"".join(p.tobytes() for p in r[0]) for r in runs] == serial


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_steps_like_its_parent():
    ps, opt, gs = _make(4)
    _train(opt, gs[:3])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _train(opt, gs[3:])
            os.write(w, b"".join(p.tobytes() for p in ps)[:4096])
        finally:
            os._exit(0)
    os.close(w)
    child = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        child += chunk
    os.close(r)
    os.waitpid(pid, 0)
    _train(opt, gs[3:])
    assert child == b"".join(p.tobytes() for p in ps)[:4096]


@pytest.mark.parametrize("dtype", [F32, BF16, F16])
def test_device_unscale_check_reads_no_gradient_back(monkeypatch, dtype):
    """The unscaled-overflow check of device gradients is a max-|g| reduction on the device (the
    backend's for float32, the mixed module's for 16-bit ones; only the maximum comes back), not a
    host copy of every gradient."""
    require_backend("cuda")
    be = fd.get_backend("cuda")
    dp = be.from_host(np.linspace(-1, 1, 9).astype(dtype))
    kw = dict(master_weights=True) if dtype != F32 else {}
    opt = fd.Adam([dp], lr=1e-2, backend="cuda", skip_nonfinite=True, **kw)

    def no_copy(a):
        raise AssertionError("a gradient was copied to the host")

    monkeypatch.setattr(opt, "_to_host", no_copy)
    before = be.to_host(dp).tobytes()
    big = 60000.0 if dtype == F16 else 1e33
    assert opt.step([be.from_host(np.full(9, big, dtype))], grad_scale=2.0 ** -120) is False
    assert be.to_host(dp).tobytes() == before
    assert opt.step([be.from_host(np.ones(9, dtype))], grad_scale=0.5) is True
    assert be.to_host(dp).tobytes() != before


def test_device_grads_absmax_is_the_largest_magnitude():
    """The cuda mixed module's max-|g| over a list of float32, bfloat16 and float16 device arrays
    (several blocks, subnormals, signs, inf, NaN) against NumPy."""
    require_backend("cuda")
    from fastdescent.backends._mixed import GradList
    from fastdescent.backends.numba_cuda import mixed

    be = fd.get_backend("cuda")
    rng = np.random.default_rng(3)
    host = [(rng.standard_normal(700) * 10).astype(F32), (rng.standard_normal(300) * -3).astype(BF16),
            np.array([6e-8, -65000.0, 1.0], F16), np.zeros(5, F32)]
    want = max(float(np.max(np.abs(h.astype(np.float64)))) for h in host)
    devs = [be.from_host(h) for h in host]
    assert mixed.grads_absmax(GradList(devs)) == np.float32(want)
    for special in (np.inf, np.nan):
        h = host[1].copy()
        h[17] = special
        got = mixed.grads_absmax(GradList([devs[0], be.from_host(h)]))
        assert (np.isnan(got) if special != special else got == np.inf)
