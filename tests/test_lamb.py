"""LAMB: what the generic tests (parity against the oracle, state_dict, errors, functional...) do not
cover. torch.optim has no LAMB, so besides the oracle (tests/reference.py) the trajectories are checked
against a literal NumPy transcription of SEMANTICS.md written here, and against optax.lamb when optax
is importable (it is not a dependency: that test skips without it). The trust ratio is per tensor and
computed inside the one multi-tensor kernel call: the tests below check that it is per tensor (also
over a ParamArena, which is never coalesced for LAMB), its edge cases, and that the chunked
reductions of the compiled backends do not depend on the thread count."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import fastdescent as fd
from conftest import Device, require_backend
from fastdescent import functional as F
from reference import assert_close

SHAPES = [(4, 3), (), (1,), (0,), (7,)]
CUDA_SHAPES = [(3,), (), (2, 2)]


def data(seed, shapes, dtype, steps=6, scales=None):
    rng = np.random.default_rng(seed)
    scales = scales or [1.0] * len(shapes)
    init = [np.asarray(rng.standard_normal(s) * c).astype(dtype) for s, c in zip(shapes, scales)]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return init, grads


def literal_lamb(p, g, m, v, t, *, lr, betas, eps, weight_decay, bias_correction, maximize):
    """SEMANTICS.md's LAMB for one tensor, one line each, in NumPy (element type T; per-step scalars
    in float64 rounded once to T; norms in float64): returns the new (p, m, v)."""
    T = p.dtype.type
    b1, b2 = betas
    if maximize:
        g = -g
    m = T(b1) * m + T(1 - b1) * g
    v = T(b2) * v + T(1 - b2) * g * g
    if bias_correction:
        mh, vh = m / T(1 - b1 ** t), v / T(1 - b2 ** t)
    else:
        mh, vh = m, v
    r = mh / (np.sqrt(vh) + T(eps)) + T(weight_decay) * p
    pn = float(np.linalg.norm(p.astype(np.float64).reshape(-1)))
    rn = float(np.linalg.norm(r.astype(np.float64).reshape(-1)))
    trust = pn / rn if pn > 0 and rn > 0 else 1.0
    return p - T(lr * trust) * r, m, v


HP = [dict(lr=0.05, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, bias_correction=True,
           maximize=False),
      dict(lr=0.02, betas=(0.8, 0.95), eps=1e-4, weight_decay=0.1, bias_correction=False,
           maximize=True)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hp", HP, ids=["defaults", "options"])
def test_matches_literal_numpy_transcription(backend, hp, dtype):
    if backend == "cuda" and dtype == "float64":
        pytest.skip("cuda (simulator): float32 only")
    dev = Device(backend)
    shapes = CUDA_SHAPES if backend == "cuda" else SHAPES
    init, grads = data(1, shapes, np.dtype(dtype), scales=[1.0, 3.0, 0.1, 1.0, 10.0][:len(shapes)])
    params = [dev.put(a) for a in init]
    opt = fd.LAMB(params, backend=backend, **hp)
    ps = [a.copy() for a in init]
    ms, vs = [np.zeros_like(a) for a in init], [np.zeros_like(a) for a in init]
    for k, gs in enumerate(grads):
        opt.step([dev.put(g) for g in gs])
        for i, g in enumerate(gs):
            ps[i], ms[i], vs[i] = literal_lamb(ps[i], g, ms[i], vs[i], k + 1, **hp)
        for i in range(len(init)):
            assert_close(dev.get(params[i]), ps[i], what=f"step {k + 1}: params[{i}]")
            assert_close(dev.get(opt.state[i]["exp_avg"]), ms[i], what=f"step {k + 1}: exp_avg[{i}]")
            assert_close(dev.get(opt.state[i]["exp_avg_sq"]), vs[i],
                         what=f"step {k + 1}: exp_avg_sq[{i}]")


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


@pytest.mark.parametrize("hp", [dict(lr=0.05, weight_decay=0.0, maximize=False),
                                dict(lr=0.02, betas=(0.8, 0.95), eps=1e-4, weight_decay=0.1,
                                     maximize=True)], ids=["defaults", "options"])
def test_matches_optax_lamb(host_backend, optax_x64, hp):
    """optax.lamb (scale_by_adam, add_decayed_weights, per-leaf scale_by_trust_ratio, -lr), float64,
    tensors of different scales, 8 steps. optax always bias-corrects and has no maximize: it gets
    the negated gradients instead."""
    optax = optax_x64
    import jax.numpy as jnp

    full = {"betas": (0.9, 0.999), "eps": 1e-6, **hp}
    sign = -1.0 if full["maximize"] else 1.0
    init, grads = data(2, [(5, 3), (4,), (1,), (6,)], np.float64, steps=8,
                       scales=[1.0, 5.0, 0.01, 0.0])
    params = [a.copy() for a in init]
    opt = fd.LAMB(params, backend=host_backend, **full)
    tx = optax.lamb(learning_rate=full["lr"], b1=full["betas"][0], b2=full["betas"][1],
                    eps=full["eps"], weight_decay=full["weight_decay"])
    jp = [jnp.asarray(a) for a in init]
    state = tx.init(jp)
    for k, gs in enumerate(grads):
        opt.step(gs)
        updates, state = tx.update([jnp.asarray(sign * g) for g in gs], state, jp)
        jp = optax.apply_updates(jp, updates)
        for i, (a, b) in enumerate(zip(params, jp)):
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-12, atol=1e-14,
                                       err_msg=f"step {k + 1}: params[{i}]")


def _run(backend, init, grads, **hp):
    params = [a.copy() for a in init]
    opt = fd.LAMB(params, backend=backend, **hp)
    for gs in grads:
        opt.step(gs)
    return params, opt


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trust_ratio_is_per_tensor(host_backend, dtype):
    """One optimizer over tensors of very different scales gives, bit for bit, what one optimizer
    per tensor gives: each tensor's step uses its own ||p|| / ||r||."""
    shapes = [(6, 5), (3,), (), (40,)]
    init, grads = data(5, shapes, np.dtype(dtype), scales=[1.0, 100.0, 0.01, 3.0])
    together, _ = _run(host_backend, init, grads, lr=0.05, weight_decay=0.01)
    for i in range(len(shapes)):
        alone, _ = _run(host_backend, [init[i]], [[gs[i]] for gs in grads], lr=0.05,
                        weight_decay=0.01)
        np.testing.assert_array_equal(together[i], alone[0], err_msg=f"params[{i}]")
    # and the step of each tensor is lr * ||p|| / ||r|| * r: relative moves are all about lr
    moved = [np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(together, init) if b.size > 1]
    assert max(moved) < 0.05 * len(grads) * 1.01


def test_arena_is_not_coalesced_and_a_flat_tensor_differs(host_backend):
    """Over a ParamArena the tensors stay separate (per-tensor norms): the same numbers as separate
    arrays, and not those of LAMB over the one flat tensor (whose single trust ratio differs)."""
    shapes = [(4, 3), (5,), (2, 2, 2)]
    init, grads = data(6, shapes, np.float64, scales=[1.0, 20.0, 0.1])
    arena = fd.ParamArena(shapes, np.float64)
    for dst, src in zip(arena.params, init):
        dst[...] = src
    opt = fd.LAMB(arena, lr=0.05, backend=host_backend)
    for gs in grads:
        for dst, src in zip(arena.grads, gs):
            dst[...] = src
        opt.step()
    assert [b.tab.n for b in opt._buckets] == [len(shapes)]
    separate, _ = _run(host_backend, init, grads, lr=0.05)
    for a, b in zip(arena.params, separate):
        np.testing.assert_array_equal(a, b)
    flat, _ = _run(host_backend, [np.concatenate([a.reshape(-1) for a in init])],
                   [[np.concatenate([g.reshape(-1) for g in gs])] for gs in grads], lr=0.05)
    assert not np.allclose(flat[0], arena.flat_params, rtol=1e-6, atol=0)


def test_zero_norms_give_trust_one(backend):
    """||p|| = 0 or ||r|| = 0: trust 1. A zero parameter moves by -lr*r; a zero gradient (r = 0,
    no weight decay) moves nothing; the others are unaffected."""
    dev = Device(backend)
    p0 = [np.zeros(3), np.array([1.0, -2.0]), np.array([3.0, 4.0])]
    g = [np.array([1.0, -1.0, 2.0]), np.zeros(2), np.array([1.0, -1.0])]
    params = [dev.put(a) for a in p0]
    opt = fd.LAMB(params, lr=0.1, eps=0.0, backend=backend)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():  # 0/0 below, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)  # (the simulator's threads warn too)
        opt.step([dev.put(a) for a in g])
    # step 1: m/bc1 = g, v/bc2 = g*g, so r = sign(g) (eps = 0)
    np.testing.assert_allclose(dev.get(params[0]), -0.1 * np.sign(g[0]), rtol=1e-14)
    # r = 0/0 = NaN with eps = 0 and a zero gradient: IEEE, as SEMANTICS.md's formula says
    assert np.isnan(dev.get(params[1])).all()
    s = 0.1 * 5.0 / math.sqrt(2.0)
    np.testing.assert_allclose(dev.get(params[2]), [3.0 - s, 4.0 + s], rtol=1e-14)
    # with eps > 0 a zero gradient gives r = 0, so ||r|| = 0: trust 1 and p unchanged
    q = [dev.put(np.array([1.0, -2.0]))]
    opt = fd.LAMB(q, lr=0.1, backend=backend)
    opt.step([dev.put(np.zeros(2))])
    np.testing.assert_array_equal(dev.get(q[0]), [1.0, -2.0])


def test_nan_gradient_stays_in_its_tensor(host_backend):
    """IEEE by default: a NaN gradient element makes its tensor's ||r|| NaN (trust 1) and its
    tensor NaN where r is; other tensors step exactly as without it. skip_nonfinite: no change."""
    init, grads = data(7, [(5,), (3,)], np.float64, steps=1)
    bad = [grads[0][0].copy(), grads[0][1]]
    bad[0][2] = np.nan
    params, opt = _run(host_backend, init, [bad], lr=0.1)
    assert np.isnan(params[0][2]) and np.isnan(opt.state[0]["exp_avg"][2])
    alone, _ = _run(host_backend, [init[1]], [[grads[0][1]]], lr=0.1)
    np.testing.assert_array_equal(params[1], alone[0])
    ps, opt = _run(host_backend, init, [bad], lr=0.1, skip_nonfinite=True)
    for a, b in zip(ps, init):
        np.testing.assert_array_equal(a, b)
    assert opt.state == {} and opt.last_step_skipped


#: tensors that span the compiled backends' chunks (c: 16384+ elements, numba: 16384), many tiny
#: ones between them, empty ones: > 2 x 131072 elements, so both go multi-threaded
BIG = [(90001,), (3,), (0,), (70000,)] + [(7,)] * 300 + [(1,), (130000,), (5,)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunked_reduction_does_not_depend_on_threads(dtype):
    """c and numba on a table whose tensors span their chunks: bit-identical with 1 and 2 threads
    (and c's small grain), and equal to the numpy backend within the contract's tolerance."""
    init, grads = data(8, BIG, np.dtype(dtype), steps=2)
    ref, _ = _run("numpy", init, grads, lr=0.01, weight_decay=0.01)
    C = require_backend("c")
    runs = []
    try:
        for threads, grain in ((1, 0), (2, 0), (2, 4096)):
            C.set_num_threads(threads)
            C.set_parallel_grain(grain)
            runs.append(_run("c", init, grads, lr=0.01, weight_decay=0.01)[0])
    finally:
        C.set_num_threads(0)
        C.set_parallel_grain(0)
    require_backend("numba")
    import numba

    nth = numba.get_num_threads()
    try:
        for threads in (1, max(2, nth) if numba.config.NUMBA_NUM_THREADS > 1 else 1):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            runs.append(_run("numba", init, grads, lr=0.01, weight_decay=0.01)[0])
    finally:
        numba.set_num_threads(nth)
    for run in runs[1:3]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(runs[4], runs[3]):
        np.testing.assert_array_equal(a, b)
    for run in (runs[0], runs[3]):
        for j, (a, b) in enumerate(zip(run, ref)):
            assert_close(a, b, what=f"params[{j}]")


def test_cuda_tensors_spanning_chunks():
    """cuda (simulator chunks of 16 elements): tensors over several chunks, a one-tensor table
    and tiny ones agree with the numpy backend; the per-chunk partials are combined per tensor."""
    require_backend("cuda")
    dev = Device("cuda")
    for shapes in ([(150,), (3,), (0,), (70,), ()], [(130,)]):
        init, grads = data(9, shapes, np.float32, steps=2, scales=[1.0, 10.0, 1.0, 0.1, 2.0])
        ref, _ = _run("numpy", init, grads, lr=0.05, weight_decay=0.1, maximize=True)
        params = [dev.put(a) for a in init]
        opt = fd.LAMB(params, lr=0.05, weight_decay=0.1, maximize=True, backend="cuda")
        for gs in grads:
            opt.step([dev.put(g) for g in gs])
        for j, (a, b) in enumerate(zip(params, ref)):
            assert_close(dev.get(a), b, what=f"{shapes}: params[{j}]")


def test_functional_norms_are_per_array(host_backend):
    """fastdescent.functional.lamb: each array of ``params`` is its own tensor (never merged),
    even when the arrays are adjacent views of one buffer; same bits as the class."""
    buf = np.arange(1.0, 13.0)
    views = [buf[:4], buf[4:]]
    init = [v.copy() for v in views]
    grads = [np.linspace(-1, 1, 4), np.linspace(1, 2, 8)]
    m, v = [np.zeros(4), np.zeros(8)], [np.zeros(4), np.zeros(8)]
    F.lamb(views, grads, m, v, step=1, lr=0.1, backend=host_backend)
    cls, _ = _run(host_backend, init, [grads], lr=0.1)
    for a, b in zip(views, cls):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad,exc,name", [
    (dict(lr=-1e-3), ValueError, "lr"),
    (dict(betas=(1.0, 0.999)), ValueError, "betas[0]"),
    (dict(eps=-1.0), ValueError, "eps"),
    (dict(weight_decay=math.inf), ValueError, "weight_decay"),
    (dict(bias_correction="yes"), TypeError, "bias_correction"),
    (dict(l1=math.nan), ValueError, "l1"),
])
def test_bad_hyperparameters_leave_everything_untouched(bad, exc, name):
    p = np.ones(3)
    opt = fd.LAMB([p], lr=0.1, backend="numpy")
    opt.step([np.ones(3)])
    before = (p.copy(), opt.state_dict())
    opt.param_groups[0].update(bad)
    with pytest.raises(exc, match=name.replace("[", r"\[").replace("]", r"\]")):
        opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, before[0])
    for n in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(opt.state[0][n], before[1]["state"][0][n])
    assert opt.state[0]["step"] == 1
    with pytest.raises(exc):
        fd.LAMB([np.ones(3)], **{**dict(lr=0.1), **bad}, backend="numpy")


def test_defaults_and_state_names():
    opt = fd.LAMB([np.zeros(2)], backend="numpy")
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"], g["bias_correction"], g["maximize"],
            g["l1"]) == (1e-3, (0.9, 0.999), 1e-6, 0.0, True, False, 0.0)
    opt.step([np.ones(2)])
    assert set(opt.state[0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert fd.LAMB._coalesce is False and fd.Lion._coalesce is True


def test_bias_correction_uses_each_params_step():
    """Parameters added mid-run start at step 1 (their own bias corrections), in the same call."""
    init, grads = data(10, [(4,), (3,)], np.float64, steps=4)
    params = [init[0].copy()]
    opt = fd.LAMB(params, lr=0.05, backend="numpy")
    for gs in grads[:2]:
        opt.step([gs[0]])
    late = init[1].copy()
    opt.add_param_group(dict(params=[late]))
    for gs in grads[2:]:
        opt.step(gs)
    assert opt.state[0]["step"] == 4 and opt.state[1]["step"] == 2
    alone, _ = _run("numpy", [init[1]], [[gs[1]] for gs in grads[2:]], lr=0.05)
    np.testing.assert_array_equal(late, alone[0])
