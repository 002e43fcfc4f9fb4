"""The one-pass check of a new gradient list (``Optimizer._check_grads_fast``): a loop that hands the
optimizer new gradient arrays every step (autograd libraries, JAX arrays viewed as NumPy) is checked in
one C pass over the list instead of ~4 us an array. It must accept exactly what is plainly fine and
leave everything else to the per-array checks, which name the problem: aliasing of a parameter or of
optimizer state (whole or partial), non-contiguous, misaligned, wrong dtype or shape, subclasses,
None entries, read-only arrays, dtype objects that are equal but not the same object.
"""

import numpy as np
import pytest

import fastdescent as fd
from conftest import require_backend
from fastdescent import _prints

pytestmark = pytest.mark.skipif(not _prints.available(),
                                reason="no one-call array fingerprints here (no c extension)")

SHAPES = [(7, 5), (64,), (3, 1, 4), (0,), ()]


def _params(rng, dt=np.float32):
    return [rng.standard_normal(s).astype(dt) for s in SHAPES]


def _grads(rng, ps):
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in ps]


@pytest.fixture
def opt_and_grads():
    rng = np.random.default_rng(0)
    ps = _params(rng)
    opt = fd.Adam(ps, lr=1e-2, backend="numpy")
    opt.step(_grads(rng, ps))  # state exists: the write set holds it
    return opt, ps, rng


def test_fresh_lists_take_the_one_pass_and_step_exactly():
    """New gradient arrays every step: the fast check accepts them, and the trajectory is bit for
    bit the one with the per-array checks (same values, one list reused)."""
    require_backend("c")
    rng = np.random.default_rng(1)
    ps = _params(rng)
    ref = [p.copy() for p in ps]
    steps = [_grads(rng, ps) for _ in range(5)]
    opt, oref = fd.Adam(ps, lr=1e-2, backend="c"), fd.Adam(ref, lr=1e-2, backend="c")
    keep = [np.empty_like(p) for p in ref]
    for gs in steps:
        fresh = [g.copy() for g in gs]
        if opt._state:
            assert opt._check_grads_fast(fresh) is not None
        opt.step(fresh)
        for k, g in zip(keep, gs):
            k[...] = g
        oref.step(keep)
    for a, b in zip(ps, ref):
        np.testing.assert_array_equal(a, b)


def test_read_only_gradients_pass(opt_and_grads):
    opt, ps, rng = opt_and_grads
    gs = _grads(rng, ps)
    for g in gs:
        g.flags.writeable = False
    infos = opt._check_grads_fast(gs)
    assert infos is not None and not any(i.writeable for i in infos)
    opt.step(gs)


def _bad_cases(opt, ps, rng):
    gs = _grads(rng, ps)
    live = opt._state[1]  # the 64-element parameter's state buffers (views of the bucket's blocks)
    name = "exp_avg"
    big = rng.standard_normal(200).astype(np.float32)
    buf = np.zeros(7 * 5 * 4 + 4, np.uint8)
    cases = {
        "alias of its parameter": (0, ps[0], ValueError, "shares memory with params"),
        "alias of another parameter": (2, ps[0].reshape(-1)[:12].reshape(3, 1, 4),
                                       ValueError, "shares memory with params"),
        "alias of optimizer state": (1, live[name], ValueError, "shares memory with"),
        "not contiguous": (1, big[::2][:64], ValueError, "not C-contiguous"),
        "misaligned": (0, np.frombuffer(buf, np.float32, count=35, offset=1).reshape(7, 5),
                       ValueError, "not aligned"),
        "wrong dtype": (0, gs[0].astype(np.float64), TypeError, "dtype float64"),
        "wrong shape": (0, gs[0].reshape(5, 7), ValueError, "shape"),
    }
    return gs, cases


@pytest.mark.parametrize("case", ["alias of its parameter", "alias of another parameter",
                                  "alias of optimizer state", "not contiguous", "misaligned",
                                  "wrong dtype", "wrong shape"])
def test_every_bad_list_falls_back_and_gets_the_named_error(opt_and_grads, case):
    opt, ps, rng = opt_and_grads
    gs, cases = _bad_cases(opt, ps, rng)
    i, bad, exc, msg = cases[case]
    gs[i] = bad
    before = [p.copy() for p in ps]
    assert opt._check_grads_fast(gs) is None
    with pytest.raises(exc, match=msg):
        opt.step(gs)
    for a, b in zip(ps, before):
        np.testing.assert_array_equal(a, b)


def test_partial_overlaps_at_either_end_are_found():
    """Gradients that overlap a parameter partly, starting inside it or ending inside it (the fast
    check's interval search looks at the last write range starting before a gradient's end)."""
    rng = np.random.default_rng(2)
    buf = rng.standard_normal(300).astype(np.float32)
    ps = [buf[0:100], buf[200:300]]
    opt = fd.Adam(ps, lr=1e-2, backend="numpy")
    opt.step([rng.standard_normal(100).astype(np.float32) for _ in ps])
    before = buf.copy()
    for gs, which in (([buf[50:150], np.zeros(100, np.float32)], "grads\\[0\\]"),
                      ([np.zeros(100, np.float32), buf[150:250]], "grads\\[1\\]")):
        assert opt._check_grads_fast(gs) is None
        with pytest.raises(ValueError, match=which + " shares memory with params"):
            opt.step(gs)
    np.testing.assert_array_equal(buf, before)
    assert opt._check_grads_fast([buf[100:200], np.zeros(100, np.float32)]) is not None  # the gap


def test_equal_dtype_objects_that_are_not_the_same_take_the_slow_path_and_step():
    rng = np.random.default_rng(3)
    ps = [rng.standard_normal(16).astype(np.float32)]
    ref = [ps[0].copy()]
    opt, oref = fd.Adam(ps, lr=1e-2, backend="numpy"), fd.Adam(ref, lr=1e-2, backend="numpy")
    g = rng.standard_normal(16).astype(np.float32)
    odd = g.view(np.dtype(np.float32, metadata={"why": "a distinct descr"}))
    assert odd.dtype == np.float32 and odd.dtype is not g.dtype
    opt.step([g.copy()])
    oref.step([g.copy()])
    assert opt._check_grads_fast([odd]) is None
    opt.step([odd])
    oref.step([g.copy()])
    np.testing.assert_array_equal(ps[0], ref[0])


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_subclasses_and_none_entries_take_the_slow_path(opt_and_grads):
    opt, ps, rng = opt_and_grads
    gs = _grads(rng, ps)
    sub = [np.asmatrix(g) if g.ndim == 2 else g for g in gs]
    assert opt._check_grads_fast(sub) is None
    opt.step(sub)
    with_none = list(gs)
    with_none[1] = None
    assert opt._check_grads_fast(with_none) is None
    opt.step(with_none)


def _mutate_dtype(g):
    g.dtype = np.int32  # same bytes, now integers (0x3f800000 for 1.0)
    return TypeError, "grads\\[1\\] has dtype int32"


def _mutate_shape(g):
    g.shape = (8, 8)
    return ValueError, "grads\\[1\\] has shape \\(8, 8\\)"


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("mutate", [_mutate_dtype, _mutate_shape])
@pytest.mark.parametrize("with_none", [False, True])
def test_a_reused_list_whose_array_changed_in_place_is_checked_again(backend, mutate, with_none):
    """The same list of the same array objects skips the checks, but an array can change in place
    between steps (``g.dtype = ...``, ``g.shape = ...``): that is a new gradient and gets the
    per-array check's error, with nothing written (before: the c kernel read int32 bits as float32,
    the numpy one read the integers, and a (8, 8) gradient passed for a (64,) parameter)."""
    require_backend(backend)
    ps = [np.ones(3, np.float32), np.ones(64, np.float32)]
    opt = fd.SGD(ps, lr=1.0, momentum=0.9, backend=backend)
    gs = [None if with_none else np.ones(3, np.float32), np.ones(64, np.float32)]
    opt.step(gs)
    before = [p.copy() for p in ps]
    state = opt.state[1]["momentum_buffer"].copy()
    exc, msg = mutate(gs[1])
    with pytest.raises(exc, match=msg):
        opt.step(gs)
    for a, b in zip(ps, before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(opt.state[1]["momentum_buffer"], state)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_a_reused_gradient_resized_in_place_is_read_at_its_new_address(backend):
    """``g.resize(..., refcheck=False)`` frees the array's memory and moves it: a step with the same
    list must read the new memory (before: the kernel tables kept the freed address)."""
    require_backend(backend)
    p, ref = np.ones(64, np.float32), np.ones(64, np.float32)
    opt, oref = fd.SGD([p], lr=1.0, backend=backend), fd.SGD([ref], lr=1.0, backend="numpy")
    g = np.ones(64, np.float32)
    gs = [g]
    opt.step(gs)
    oref.step([np.ones(64, np.float32)])
    old = g.__array_interface__["data"][0]
    g.resize((1 << 20,), refcheck=False)  # past malloc's mmap threshold: new memory
    g[:] = 2.0
    g.resize((64,), refcheck=False)
    assert g.__array_interface__["data"][0] != old
    opt.step(gs)
    oref.step([np.full(64, 2.0, np.float32)])
    np.testing.assert_array_equal(p, ref)


def test_functional_cache_is_not_fooled_by_a_dtype_reallocated_at_the_same_address():
    """The functional API's cached tables are reused while the one-pass prints are equal, and a
    print holds the dtype object's address: a gradient's dtype replaced in place (freeing the old
    dtype object) by a new int32 dtype object that CPython allocates at the freed address printed
    the same (before: the cached float32 table read the int32 gradient; the first try reuses the
    address here). Every try must take the per-array check's TypeError."""
    from fastdescent import functional as F

    for trial in range(20):
        F.clear_cache()
        p, m, v = np.ones(16, np.float32), np.zeros(16, np.float32), np.zeros(16, np.float32)
        g = np.ones(16, np.float32)
        g.dtype = np.dtype(np.float32, metadata={"trial": trial})  # g is its only owner
        F.adam([p], [g], [m], [v], step=1, lr=0.1)
        g.dtype = np.dtype(np.float32, metadata={"other": trial})  # frees the first dtype object
        g.dtype = np.dtype("<i4", metadata={"x": trial})  # may be allocated where it was
        before = p.copy()
        with pytest.raises(TypeError, match="dtype int32"):
            F.adam([p], [g], [m], [v], step=2, lr=0.1)
        np.testing.assert_array_equal(p, before)
    F.clear_cache()
