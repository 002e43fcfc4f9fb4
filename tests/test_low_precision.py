"""Low-precision training through the optimizers: bfloat16/float16 parameters with master weights or
stochastic rounding, bfloat16 and 8-bit state, grad_scale and fd.amp.GradScaler, state_dict
conversions, and the errors (``docs/low-precision.md``)."""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd
from fastdescent import precision as P

from conftest import HOST_BACKENDS, require_backend

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)


def _params(dtype, seed=0, shapes=((300, 7), (5,), (0,), (256,))):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 0.5).astype(np.float32).astype(dtype) for s in shapes]


def _grads(params, seed, dtype=None):
    rng = np.random.default_rng(1000 + seed)
    return [(rng.standard_normal(p.shape) * 0.1).astype(np.float32).astype(dtype or p.dtype)
            for p in params]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _same_state(a, b):
    assert a.keys() == b.keys()
    for i in a:
        assert a[i].keys() == b[i].keys(), (i, a[i].keys(), b[i].keys())
        for k, v in a[i].items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(_bits(v), _bits(b[i][k]), err_msg=f"{i} {k}")
            else:
                assert v == b[i][k]


OPTS = [
    ("Adam", dict(lr=1e-2, stochastic_rounding=True, state_dtype="int8", seed=3)),
    ("AdamW", dict(lr=1e-2, master_weights=True, amsgrad=True)),
    ("SGD", dict(lr=5e-2, momentum=0.9, nesterov=True, state_dtype="bfloat16",
                 stochastic_rounding=True)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True, state_dtype="int8")),
]


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@pytest.mark.parametrize("name,kw", OPTS, ids=[o[0] for o in OPTS])
def test_backends_agree_through_the_optimizer(backend, name, kw):
    require_backend(backend)
    runs = {}
    for b in ("numpy", backend):
        ps = _params(BF16)
        opt = getattr(fd, name)(ps, backend=b, **kw)
        for t in range(3):
            opt.step(_grads(ps, t, np.float32 if t % 2 else None))
        runs[b] = (ps, opt.state_dict()["state"])
    for pa, pb in zip(runs["numpy"][0], runs[backend][0]):
        np.testing.assert_array_equal(_bits(pa), _bits(pb))
    _same_state(runs["numpy"][1], runs[backend][1])


def test_master_weights_follow_fp32_adam_exactly():
    ps = _params(BF16)
    ref = [p.astype(np.float32) for p in ps]
    opt = fd.AdamW(ps, lr=3e-3, master_weights=True, backend="numpy")
    ref_opt = fd.AdamW(ref, lr=3e-3, backend="numpy")
    for t in range(5):
        g = _grads(ps, t)
        opt.step(g)
        ref_opt.step([x.astype(np.float32) for x in g])
    for i, (p, r) in enumerate(zip(ps, ref)):
        np.testing.assert_array_equal(opt.state[i]["master_param"], r)
        np.testing.assert_array_equal(_bits(p), _bits(r.astype(BF16)))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_stochastic_rounding_accumulates_small_updates(backend):
    """A bf16 parameter at 1.0 receiving 1000 updates of -1e-4: ~0.9 with stochastic rounding, stays
    1.0 with round-to-nearest (the update is 1/78 of bf16's spacing at 1.0)."""
    require_backend(backend)
    n = 2048
    for sr in (True, False):
        p = np.ones(n, dtype=BF16)
        g = np.full(n, 1e-4, np.float32)
        opt = fd.SGD([p], lr=1.0, stochastic_rounding=sr, seed=5, backend=backend)
        for _ in range(1000):
            opt.step([g])
        m = float(p.astype(np.float32).mean())
        if sr:
            assert abs(m - 0.9) < 0.009, m
        else:
            assert m == 1.0


def test_state_dict_round_trip_is_exact_and_continues_identically():
    for name, kw in OPTS:
        ps = _params(BF16)
        opt = getattr(fd, name)(ps, backend="numpy", **kw)
        for t in range(2):
            opt.step(_grads(ps, t))
        sd = opt.state_dict()
        ps2 = [p.copy() for p in ps]
        opt2 = getattr(fd, name)(ps2, backend="numpy", **kw)
        opt2.load_state_dict(sd)
        _same_state(sd["state"], opt2.state_dict()["state"])
        for t in range(2, 4):
            opt.step(_grads(ps, t))
            opt2.step(_grads(ps2, t))
        for a, b in zip(ps, ps2):
            np.testing.assert_array_equal(_bits(a), _bits(b))
        _same_state(opt.state_dict()["state"], opt2.state_dict()["state"])


def test_fp32_state_loads_into_int8_and_back():
    ps = _params(np.float32)
    opt = fd.Adam(ps, lr=1e-2, backend="numpy")
    opt.step(_grads(ps, 0))
    sd = opt.state_dict()
    q = fd.Adam([p.copy() for p in ps], lr=1e-2, state_dtype="int8", backend="numpy")
    sd_q = {"state": sd["state"], "param_groups": [dict(g, state_dtype="int8")
                                                   for g in sd["param_groups"]]}
    q.load_state_dict(sd_q)
    q.step(_grads(ps, 1))
    st = q.state[0]
    assert st["exp_avg"].dtype == np.uint8 and st["exp_avg_scale"].shape == (P.nblocks(2100),)
    # and the int8 state read back into a float32 optimizer: the dequantized values
    back = fd.Adam([p.copy() for p in ps], lr=1e-2, backend="numpy")
    sd2 = q.state_dict()
    back.load_state_dict({"state": sd2["state"],
                          "param_groups": [{k: v for k, v in g.items() if k != "state_dtype"}
                                           for g in sd2["param_groups"]]})
    deq = P.q8_dequantize(sd2["state"][0]["exp_avg"], sd2["state"][0]["exp_avg_scale"], P.Q8S)
    np.testing.assert_array_equal(back.state[0]["exp_avg"].reshape(-1), deq)
    assert "exp_avg_scale" not in back.state[0]


def test_load_refuses_codes_without_scales_and_leaves_state():
    ps = _params(BF16)
    opt = fd.Adam(ps, lr=1e-2, state_dtype="int8", backend="numpy")
    opt.step(_grads(ps, 0))
    sd = opt.state_dict()
    before = opt.state_dict()
    bad = {"state": {k: dict(v) for k, v in sd["state"].items()},
           "param_groups": sd["param_groups"]}
    del bad["state"][0]["exp_avg_scale"]
    with pytest.raises(ValueError, match="exp_avg_scale"):
        opt.load_state_dict(bad)
    bad["state"][0]["exp_avg_scale"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    _same_state(before["state"], opt.state_dict()["state"])


@pytest.mark.parametrize("kw,match", [
    (dict(master_weights=True, stochastic_rounding=True), "choose one"),
    (dict(state_dtype="int4"), "state_dtype"),
    (dict(master_weights="yes"), "master_weights"),
    (dict(seed=-1), "seed"),
    (dict(state_dtype="int8", l1=0.1), "l1"),
])
def test_bad_options_name_the_option(kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        fd.Adam(_params(BF16), backend="numpy", **kw)


def test_unsupported_combinations_are_clear_errors():
    with pytest.raises(TypeError, match="Adam, AdamW and RMSprop"):
        fd.Lion(_params(BF16), backend="numpy")
    with pytest.raises(ValueError, match="SGD, Adam, AdamW and RMSprop"):
        fd.Lion([{"params": _params(np.float32), "state_dtype": "int8"}], backend="numpy")
    ps = _params(np.float16)
    with pytest.raises(ValueError, match="master_weights"):  # refused at once, not at the step
        fd.Adam(ps, stochastic_rounding=True, backend="numpy")
    opt = fd.Adam(ps, backend="numpy")
    opt.param_groups[0]["stochastic_rounding"] = True  # (set between steps: refused by the step)
    with pytest.raises(ValueError, match="master_weights"):
        opt.step(_grads(ps, 0))
    ps64 = _params(np.float64)
    opt = fd.Adam(ps64, backend="numpy")
    before = [p.copy() for p in ps64]
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step(_grads(ps64, 0), grad_scale=128.0)
    for a, b in zip(ps64, before):
        np.testing.assert_array_equal(a, b)
    assert opt.state == {}
    opt = fd.Adam(_params(np.float32), backend="numpy")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="grad_scale"):
            opt.step(_grads(_params(np.float32), 0), grad_scale=bad)


def test_gradient_dtype_rules():
    ps = _params(BF16)
    opt = fd.Adam(ps, backend="numpy")
    g = _grads(ps, 0)
    g[1] = g[1].astype(np.float16)  # neither float32 nor the parameter's dtype
    before = [p.copy() for p in ps]
    with pytest.raises(TypeError, match=r"grads\[1\]"):
        opt.step(g)
    for a, b in zip(ps, before):
        np.testing.assert_array_equal(_bits(a), _bits(b))
    # float32 gradients for a float16 parameter are fine; float16 ones for float32 are not
    p16 = _params(np.float16)
    fd.Adam(p16, master_weights=True, backend="numpy").step(_grads(p16, 0, np.float32))
    p32 = _params(np.float32)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        fd.Adam(p32, backend="numpy").step(_grads(p32, 0, np.float16))


def test_changing_state_dtype_between_steps_converts_the_state():
    ps = _params(np.float32)
    opt = fd.Adam(ps, lr=1e-2, backend="numpy")
    opt.step(_grads(ps, 0))
    m = opt.state[0]["exp_avg"].copy()
    opt.param_groups[0]["state_dtype"] = "bfloat16"
    opt.step(_grads(ps, 1))
    assert opt.state[0]["exp_avg"].dtype == BF16
    opt.param_groups[0]["state_dtype"] = "int8"
    opt.step(_grads(ps, 2))
    assert opt.state[0]["exp_avg"].dtype == np.uint8
    opt.param_groups[0]["state_dtype"] = None
    opt.step(_grads(ps, 3))
    assert opt.state[0]["exp_avg"].dtype == np.float32 and "exp_avg_scale" not in opt.state[0]
    assert not np.array_equal(opt.state[0]["exp_avg"], m)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_grad_scaler_retry_pattern(backend):
    """float16 params with master weights: an overflowing scaled gradient skips the step (nothing
    written) and halves the scale; recomputing into the same buffers steps; the result equals an
    unscaled run."""
    require_backend(backend)
    ps = _params(np.float16, shapes=((64, 8), (8,)))
    ref = [p.copy() for p in ps]
    opt = fd.Adam(ps, lr=1e-3, master_weights=True, backend=backend)
    ref_opt = fd.Adam(ref, lr=1e-3, master_weights=True, backend=backend)
    scaler = fd.amp.GradScaler(init_scale=2.0 ** 10, growth_interval=2)
    bufs = [np.empty(p.shape, np.float16) for p in ps]
    for t in range(4):
        g = _grads(ps, t, np.float32)
        ref_opt.step([x.astype(np.float16) for x in g])
        for attempt in range(3):
            s = scaler.get_scale()
            for b, x in zip(bufs, g):
                b[...] = (x * s).astype(np.float16)
            if t == 1 and attempt == 0:
                bufs[0][3, 3] = np.inf  # the overflow
            snap = [p.copy() for p in ps]
            took = scaler.step(opt, bufs)
            scaler.update()
            if took:
                break
            for a, b in zip(ps, snap):
                np.testing.assert_array_equal(a, b)
            assert scaler.get_scale() == s / 2
        assert took
    assert scaler.skipped_steps == 1
    assert scaler.get_scale() == 2.0 ** 10  # halved once, doubled after 2 good steps
    for a, b in zip(ps, ref):
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=0, atol=2e-3)


def test_grad_scaler_state_and_errors():
    s = fd.amp.GradScaler()
    with pytest.raises(RuntimeError):
        s.update()
    with pytest.raises(ValueError, match="growth_factor"):
        fd.amp.GradScaler(growth_factor=0.5)
    with pytest.raises(ValueError, match="scale"):
        s.load_state_dict({"scale": -1.0})
    s2 = fd.amp.GradScaler(init_scale=8.0)
    s2.load_state_dict(s.state_dict())
    assert s2.get_scale() == s.get_scale()
    off = fd.amp.GradScaler(enabled=False)
    ps = _params(np.float32)
    assert off.step(fd.SGD(ps, lr=0.1, backend="numpy"), _grads(ps, 0))
    assert off.get_scale() == 1.0


def test_skip_nonfinite_sees_bf16_and_fp16_gradients():
    for dt in (BF16, np.float16):
        ps = _params(dt)
        opt = fd.SGD(ps, lr=0.1, momentum=0.9, master_weights=True, skip_nonfinite=True,
                     backend="numpy")
        g = _grads(ps, 0)
        g[3][7] = np.nan
        before = [p.copy() for p in ps]
        assert opt.step(g) is False
        for a, b in zip(ps, before):
            np.testing.assert_array_equal(_bits(a), _bits(b))
        assert opt.state == {}
        assert opt.step(_grads(ps, 1)) is True



def _digits_run(dtype, epochs, **kw):
    """A 64-128-10 MLP of parameter dtype ``dtype`` on scikit-learn's digits, trained by fd.fit
    with Adam (``kw``: its low-precision options); returns (test accuracy, final training loss)."""
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    idx = np.random.default_rng(0).permutation(len(X))
    X, y = X[idx], y[idx]
    model = fd.nn.MLP([64, 128, 10], seed=1, dtype=dtype)
    assert model.params[0].dtype == dtype and model.arena.grads[0].dtype == np.float32
    opt = fd.Adam(model.parameters(), lr=2e-3, **kw)
    hist = fd.fit(model, X[:1400], y[:1400], optimizer=opt, epochs=epochs, batch_size=32,
                  progress=False, seed=2)
    return model.score(X[1400:], y[1400:]), hist.loss[-1]


def test_digits_quality_matches_fp32():
    """int8 moments, bf16 parameters with stochastic rounding (with and without int8 moments) or
    master weights reach the fp32 run's test accuracy within 0.5 points under the same seed and
    schedule; a 50-epoch run stays finite and as accurate."""
    ref, _ = _digits_run(np.float32, 20)
    for dt, kw in [(np.float32, dict(state_dtype="int8")), (BF16, dict(stochastic_rounding=True)),
                   (BF16, dict(stochastic_rounding=True, state_dtype="int8")),
                   (BF16, dict(master_weights=True)), (np.float16, dict(master_weights=True))]:
        acc, _ = _digits_run(dt, 20, **kw)
        assert acc >= ref - 0.005, (dt, kw, acc, ref)
    for dt, kw in [(np.float32, dict(state_dtype="int8")),
                   (BF16, dict(stochastic_rounding=True, state_dtype="int8"))]:
        acc, loss = _digits_run(dt, 50, **kw)
        assert np.isfinite(loss) and loss < 0.05 and acc >= ref - 0.005, (kw, acc, loss)


def test_bf16_model_weights_follow_the_stored_parameters():
    """The float32 copy the kernels read is refreshed from the stored bfloat16 parameters before
    every pass: a manual step (loss_and_grad, opt.step) shows up in predict; state_dict holds the
    stored dtype; load_state_dict rounds, refuses what overflows float16, and changes nothing then."""
    model = fd.nn.MLP([4, 8, 3], seed=0, dtype=BF16, backend="numpy")
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    y = np.arange(16) % 3
    before = model.predict(x)
    opt = fd.SGD(model.parameters(), lr=0.5, stochastic_rounding=True, backend="numpy")
    _, grads = model.loss_and_grad(x, y)
    opt.step(grads)
    after = model.predict(x)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(model.layers[0].weight, model.params[0].astype(np.float32))
    sd = model.state_dict()
    assert all(v.dtype == BF16 for v in sd.values())
    m16 = fd.nn.MLP([4, 8, 3], seed=1, dtype=np.float16, backend="numpy")
    keep = m16.state_dict()
    bad = dict(sd)
    bad["0.weight"] = np.full((4, 8), 1e5, np.float32)
    with pytest.raises(ValueError, match="overflow"):
        m16.load_state_dict(bad)
    for k, v in m16.state_dict().items():
        np.testing.assert_array_equal(v, keep[k])
    m16.load_state_dict(sd)
    np.testing.assert_array_equal(m16.params[0], sd["0.weight"].astype(np.float16))


def test_fused_training_step_yields_to_a_low_precision_option():
    """A model's fused training step (one kernel for forward, backward and the update) stops using
    its coalesced bucket once a group switches to 8-bit state: the next steps go through the
    mixed-precision step and the state becomes 8-bit."""
    model = fd.nn.MLP([8, 16, 3], seed=0)
    opt = fd.Adam(model.parameters(), lr=1e-2)
    step = model.make_train_step(opt)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 8)).astype(np.float32)
    y = np.arange(32) % 3
    for _ in range(2):
        step(x, y)
    opt.param_groups[0]["state_dtype"] = "int8"
    for _ in range(2):
        step(x, y)
    assert opt.state[0]["exp_avg"].dtype == np.uint8
    assert opt.state[0]["step"] == 4
