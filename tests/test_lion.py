"""Lion: what the generic tests (parity against the oracle, state_dict, errors, functional...) do not
cover. torch.optim has no Lion, so besides the oracle (tests/reference.py) the trajectories are checked
against a literal NumPy transcription of SEMANTICS.md written here, and against optax.lion when optax
is importable (it is not a dependency: that test skips without it)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastdescent as fd
from conftest import Device, require_backend
from fastdescent import functional as F
from reference import assert_close

SHAPES = [(4, 3), (), (1,), (0,), (7,)]
CUDA_SHAPES = [(3,), (), (2, 2)]


def data(seed, shapes, dtype, steps=6):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return init, grads


def literal_lion(p, g, m, *, lr, betas, weight_decay, maximize):
    """SEMANTICS.md's Lion, one line each, in NumPy (whole arrays in the element type T; per-step
    scalars in float64 rounded once to T): returns the new (p, m)."""
    T = p.dtype.type
    b1, b2 = betas
    if maximize:
        g = -g
    c = T(b1) * m + T(1 - b1) * g
    p = p * T(1 - lr * weight_decay)  # decoupled, as AdamW
    p = p - T(lr) * np.sign(c)  # sign(0) = 0, sign(NaN) = NaN
    m = T(b2) * m + T(1 - b2) * g
    return p, m


HP = [dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
      dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.1, maximize=True)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hp", HP, ids=["defaults", "options"])
def test_matches_literal_numpy_transcription(backend, hp, dtype):
    if backend == "cuda" and dtype == "float64":
        pytest.skip("cuda (simulator): float32 only")
    dev = Device(backend)
    shapes = CUDA_SHAPES if backend == "cuda" else SHAPES
    init, grads = data(1, shapes, np.dtype(dtype))
    params = [dev.put(a) for a in init]
    opt = fd.Lion(params, backend=backend, **hp)
    ps, ms = [a.copy() for a in init], [np.zeros_like(a) for a in init]
    for k, gs in enumerate(grads):
        opt.step([dev.put(g) for g in gs])
        for i, g in enumerate(gs):
            ps[i], ms[i] = literal_lion(ps[i], g, ms[i], **hp)
        for i in range(len(init)):
            assert_close(dev.get(params[i]), ps[i], what=f"step {k + 1}: params[{i}]")
            assert_close(dev.get(opt.state[i]["exp_avg"]), ms[i], what=f"step {k + 1}: exp_avg[{i}]")


@pytest.fixture
def optax_x64():
    """optax and jax with float64 enabled (restored afterwards); skips when optax is not
    importable (it is not a dependency of fastdescent, and CI does not install it)."""
    optax = pytest.importorskip("optax")
    import jax

    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield optax
    jax.config.update("jax_enable_x64", old)


@pytest.mark.parametrize("hp", HP, ids=["defaults", "options"])
def test_matches_optax_lion(host_backend, optax_x64, hp):
    """optax.lion (its weight decay is the same decoupled decay: -lr*(sign(c) + wd*p)), float64,
    several tensors, 8 steps. optax has no maximize: it gets the negated gradients instead."""
    optax = optax_x64
    import jax.numpy as jnp

    sign = -1.0 if hp["maximize"] else 1.0
    init, grads = data(2, [(5, 3), (4,), (1,)], np.float64, steps=8)
    params = [a.copy() for a in init]
    opt = fd.Lion(params, backend=host_backend, **hp)
    tx = optax.lion(learning_rate=hp["lr"], b1=hp["betas"][0], b2=hp["betas"][1],
                    weight_decay=hp["weight_decay"])
    jp = [jnp.asarray(a) for a in init]
    state = tx.init(jp)
    for k, gs in enumerate(grads):
        opt.step(gs)
        updates, state = tx.update([jnp.asarray(sign * g) for g in gs], state, jp)
        jp = optax.apply_updates(jp, updates)
        for i, (a, b) in enumerate(zip(params, jp)):
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-12, atol=1e-14,
                                       err_msg=f"step {k + 1}: params[{i}]")


def test_every_element_moves_by_lr(backend):
    """Without weight decay every element moves by exactly +-lr per step (or 0 where c == 0)."""
    dev = Device(backend)
    rng = np.random.default_rng(3)
    p0 = rng.integers(-16, 16, 12) / 8.0  # multiples of 1/8: p -+ 0.125 is exact
    g = rng.standard_normal(12).astype(np.float64)
    g[5] = 0.0  # c = 0 on the first step: the element does not move
    p = dev.put(p0)
    opt = fd.Lion([p], lr=0.125, backend=backend)
    opt.step([dev.put(g)])
    moved = dev.get(p) - p0
    np.testing.assert_array_equal(moved, np.where(g > 0, -0.125, np.where(g < 0, 0.125, 0.0)))


def test_decoupled_decay_alone(backend):
    """With a zero gradient and zero momentum (c = 0) only the decay acts: p <- p*(1 - lr*wd)."""
    dev = Device(backend)
    p0 = np.array([1.0, -2.0, 0.5], np.float32)
    p = dev.put(p0)
    opt = fd.Lion([p], lr=0.1, weight_decay=0.5, backend=backend)
    opt.step([dev.put(np.zeros(3, np.float32))])
    np.testing.assert_array_equal(dev.get(p), p0 * np.float32(1 - 0.1 * 0.5))
    np.testing.assert_array_equal(dev.get(opt.state[0]["exp_avg"]), np.zeros(3, np.float32))


def test_nan_gradient_propagates_or_skips(host_backend):
    """IEEE by default (sign(NaN) = NaN: the element and its momentum become NaN, the others are
    unaffected); with skip_nonfinite the step changes nothing."""
    g = np.array([1.0, np.nan, -1.0])
    p = np.ones(3)
    opt = fd.Lion([p], lr=0.1, backend=host_backend)
    opt.step([g])
    assert np.isnan(p[1]) and np.isnan(opt.state[0]["exp_avg"][1])
    np.testing.assert_array_equal(p[[0, 2]], [0.9, 1.1])
    q = np.ones(3)
    opt = fd.Lion([q], lr=0.1, backend=host_backend, skip_nonfinite=True)
    assert opt.step([g]) is False
    np.testing.assert_array_equal(q, np.ones(3))
    assert opt.state == {} and opt.skipped_steps == 1


def test_grad_aliasing_state_is_refused(host_backend):
    """A gradient that is the optimizer's own momentum buffer is refused before anything changes."""
    p = np.ones(4)
    opt = fd.Lion([p], lr=0.1, backend=host_backend)
    opt.step([np.full(4, 0.5)])
    m = opt.state[0]["exp_avg"]
    before_p, before_m = p.copy(), m.copy()
    with pytest.raises(ValueError, match=r"grads\[0\].*exp_avg"):
        opt.step([m])
    np.testing.assert_array_equal(p, before_p)
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], before_m)
    # functional: a state list entry that is a parameter
    with pytest.raises(ValueError, match=r"exp_avgs\[0\]"):
        F.lion([p], [np.ones(4)], [p], lr=0.1, backend=host_backend)
    np.testing.assert_array_equal(p, before_p)


@pytest.mark.parametrize("bad,exc,name", [
    (dict(lr=-1e-4), ValueError, "lr"),
    (dict(betas=(0.9, 1.0)), ValueError, "betas[1]"),
    (dict(weight_decay=math.nan), ValueError, "weight_decay"),
    (dict(l1=-1.0), ValueError, "l1"),
    (dict(maximize=0), TypeError, "maximize"),
])
def test_bad_hyperparameters_leave_everything_untouched(bad, exc, name):
    p = np.ones(3)
    opt = fd.Lion([p], lr=0.1, backend="numpy")
    opt.step([np.ones(3)])
    before = (p.copy(), opt.state_dict())
    opt.param_groups[0].update(bad)
    with pytest.raises(exc, match=name.replace("[", r"\[").replace("]", r"\]")):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, before[0])
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], before[1]["state"][0]["exp_avg"])
    assert opt.state[0]["step"] == 1
    with pytest.raises(exc):
        fd.Lion([np.ones(3)], **{**dict(lr=0.1), **bad}, backend="numpy")


def test_defaults_and_state_names():
    opt = fd.Lion([np.zeros(2)], backend="numpy")
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"], g["maximize"], g["l1"]) == \
        (1e-4, (0.9, 0.99), 0.0, False, 0.0)
    opt.step([np.ones(2)])
    assert set(opt.state[0]) == {"step", "exp_avg"}


def test_state_dict_round_trip_across_backends():
    """A state_dict written on one backend continues identically on another (float64)."""
    init, grads = data(4, SHAPES, np.float64, steps=6)
    runs = {}
    for a, b in (("numpy", "numpy"), ("c", "numba"), ("numba", "c")):
        require_backend(a)
        require_backend(b)
        params = [x.copy() for x in init]
        opt = fd.Lion(params, lr=0.02, weight_decay=0.1, backend=a)
        for gs in grads[:3]:
            opt.step(gs)
        sd = opt.state_dict()
        params2 = [x.copy() for x in params]
        opt2 = fd.Lion(params2, lr=0.02, weight_decay=0.1, backend=b)
        opt2.load_state_dict(sd)
        for gs in grads[3:]:
            opt2.step(gs)
        runs[a, b] = params2
    for key, ps in runs.items():
        for x, y in zip(ps, runs["numpy", "numpy"]):
            np.testing.assert_array_equal(x, y, err_msg=str(key))
