"""ParamArena: views of two flat blocks; optimizers over it coalesce each bucket into ONE tensor."""

from __future__ import annotations

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, make
from reference import RefOptimizer, assert_close

SHAPES = [(4, 3), (5,), (), (2, 2, 2), (1,), (9,)]
#: backends whose vectorised path may fuse multiply-adds (csrc/fastdescent.h) while their scalar
#: remainder loop does not: an element's last bit may then depend on where it sits in the table, so
#: coalesced and separate runs agree to the contract's tolerance rather than bit for bit.
FMA_BACKENDS = {"c"}


def filled_arena(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    arena = fd.ParamArena(shapes, dtype)
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    for dst, src in zip(arena.params, init):
        dst[...] = src
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(8)]
    return arena, init, grads


def test_layout():
    arena = fd.ParamArena(SHAPES, np.float64)
    assert len(arena) == len(SHAPES)
    sizes = [int(np.prod(s)) for s in SHAPES]
    assert arena.size == sum(sizes) == arena.flat_params.size == arena.flat_grads.size
    assert arena.flat_params.dtype == arena.flat_grads.dtype == np.float64
    off = 0
    for p, g, s, n in zip(arena.params, arena.grads, SHAPES, sizes):
        assert p.shape == g.shape == s
        assert np.shares_memory(p, arena.flat_params) or n == 0
        assert np.shares_memory(g, arena.flat_grads) or n == 0
        assert p.flags.c_contiguous and p.flags.writeable
        p[...] = off + np.arange(n).reshape(s)
        off += n
    np.testing.assert_array_equal(arena.flat_params, np.arange(arena.size))  # adjacent, in order
    assert f"{len(SHAPES)} tensors" in repr(arena)
    assert fd.ParamArena([3, (2,)]).shapes == [(3,), (2,)]
    assert fd.ParamArena([(2,)]).flat_params.dtype == np.float32  # the default dtype


def test_zero_grad_and_from_arrays():
    arrays = [np.arange(6.0).reshape(2, 3), np.array(7.0)]
    arena = fd.ParamArena.from_arrays(arrays)
    assert arena.dtype == np.float64
    np.testing.assert_array_equal(arena.params[0], arrays[0])
    assert arena.params[1].shape == () and arena.params[1] == 7.0
    arrays[0][...] = -1  # a copy
    assert arena.params[0][0, 0] == 0.0
    arena.flat_grads[...] = 3.0
    arena.zero_grad()
    assert not arena.flat_grads.any()
    assert fd.ParamArena.from_arrays(arrays, dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize("shapes,dtype,exc,match", [
    ([(2,)], np.int16, TypeError, "dtype"),
    ([(2,)], np.int64, TypeError, "dtype"),
    ([], np.float32, ValueError, "shapes"),
    ([(2, -1)], np.float32, ValueError, "shapes"),
])
def test_bad_arena(shapes, dtype, exc, match):
    with pytest.raises(exc, match=match):
        fd.ParamArena(shapes, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(BY_KIND))
@pytest.mark.parametrize("on", ["arena", "arena.params"])
def test_coalesced_into_one_tensor_same_numbers(host_backend, kind, dtype, on):
    """An optimizer over an arena (or its params list) fed the arena's grads makes ONE table entry,
    and gives the same numbers as the same update over separate arrays (and as the oracle). An
    optimizer with per-tensor quantities (``_coalesce = False``: LAMB's trust ratio) keeps one
    entry per tensor instead, with the same numbers."""
    case = BY_KIND[kind][-1]
    coalesce = getattr(fd, case.cls_name)._coalesce
    arena, init, grads = filled_arena(np.dtype(dtype))
    opt = make(fd, case, arena if on == "arena" else arena.params, backend=host_backend)
    separate = [a.copy() for a in init]
    sep = make(fd, case, separate, backend=host_backend)
    ref = RefOptimizer(kind, [dict(case.hp, params=init)])
    for k, gs in enumerate(grads):
        for dst, src in zip(arena.grads, gs):
            dst[...] = src
        if on == "arena":
            assert opt.step() is True
        else:
            assert opt.step(arena.grads) is True
        sep.step(gs)
        ref.step(gs)
        if coalesce:
            assert len(opt._buckets) == 1 and opt._buckets[0].tab.n == 1, "the arena was not coalesced"
        else:
            assert len(opt._buckets) == 1 and opt._buckets[0].tab.n == len(SHAPES), \
                f"{case.cls_name}'s tensors were coalesced"
        assert opt._buckets[0].tab.total == arena.size
        assert sep._buckets[0].tab.n == len(SHAPES)
        for j, (p, q) in enumerate(zip(arena.params, separate)):
            if host_backend in FMA_BACKENDS:
                assert_close(p, q, what=f"step {k + 1}: params[{j}] coalesced vs separate")
            else:
                np.testing.assert_array_equal(p, q,
                                              err_msg=f"step {k + 1}: params[{j}] coalesced != separate")
            assert_close(p, ref.param(j), what=f"step {k + 1}: params[{j}]")
    # per-parameter state stays addressable (views of the flat state), and the step count is right
    st = opt.state
    for j, s in enumerate(SHAPES):
        assert st[j]["step"] == len(grads)
        for name, arr in st[j].items():
            if name != "step" and isinstance(arr, float):  # scalar state (NAdam's mu_product)
                assert arr == sep.state[j][name]
            elif name != "step":
                assert arr.shape == s
                if host_backend in FMA_BACKENDS:
                    assert_close(arr, sep.state[j][name], what=f"state[{j}][{name!r}]")
                else:
                    np.testing.assert_array_equal(arr, sep.state[j][name])


def test_zero_size_param_does_not_break_coalescing(host_backend):
    """An empty tensor (e.g. a zero-width layer's bias) inside an arena adds no bytes; the bucket must
    still coalesce into one flat tensor, with the right numbers."""
    shapes = [(4, 3), (0,), (5,), (0, 2), ()]
    case = BY_KIND["adam"][-1]
    arena, init, grads = filled_arena(np.dtype(np.float32), seed=4, shapes=shapes)
    opt = make(fd, case, arena, backend=host_backend)
    ref = RefOptimizer("adam", [dict(case.hp, params=init)])
    for gs in grads:
        for dst, src in zip(arena.grads, gs):
            dst[...] = src
        opt.step()
        ref.step(gs)
    for j, p in enumerate(arena.params):
        assert_close(p, ref.param(j), what=f"params[{j}]")
    assert opt._buckets[0].tab.n == 1, "an empty tensor in the arena defeated coalescing"


def test_separate_grads_fall_back_to_multi_tensor(host_backend):
    """Params from an arena but grads that are separate arrays: still right (not coalesced)."""
    case = BY_KIND["adam"][-1]
    arena, init, grads = filled_arena(np.dtype(np.float64), seed=1)
    opt = make(fd, case, arena, backend=host_backend)
    ref = RefOptimizer("adam", [dict(case.hp, params=init)])
    for gs in grads:
        opt.step([g.copy() for g in gs])
        ref.step(gs)
        assert opt._buckets[0].tab.n == len(SHAPES)
    for j, p in enumerate(arena.params):
        assert_close(p, ref.param(j))


def test_groups_over_an_arena(host_backend):
    """Param groups over slices of one arena: each group's bucket coalesces on its own."""
    case = BY_KIND["sgd"][-1]
    arena, init, grads = filled_arena(np.dtype(np.float64), seed=2)
    groups = [dict(params=arena.params[:3]), dict(params=arena.params[3:], lr=0.2, momentum=0.0)]
    opt = make(fd, case, groups, backend=host_backend)
    ref = RefOptimizer("sgd", [dict(case.hp, params=init[:3]),
                               dict(case.hp, lr=0.2, momentum=0.0, params=init[3:])])
    for gs in grads:
        for dst, src in zip(arena.grads, gs):
            dst[...] = src
        opt.step(arena.grads)
        ref.step(gs)
    assert sorted(b.tab.n for b in opt._buckets) == [1, 1]
    for j, p in enumerate(arena.params):
        assert_close(p, ref.param(j))


def test_arena_with_a_none_grad(host_backend):
    """A None among the arena's grads skips that param; the rest is still updated correctly."""
    case = BY_KIND["adamw"][-1]
    arena, init, grads = filled_arena(np.dtype(np.float32), seed=3)
    opt = make(fd, case, arena, backend=host_backend)
    ref = RefOptimizer("adamw", [dict(case.hp, params=init)])
    for k, gs in enumerate(grads):
        for dst, src in zip(arena.grads, gs):
            dst[...] = src
        feed = list(arena.grads)
        ref_feed = list(gs)
        if k in (2, 3):
            feed[1] = ref_feed[1] = None
        opt.step(feed)
        ref.step(ref_feed)
    for j, p in enumerate(arena.params):
        assert_close(p, ref.param(j), what=f"params[{j}]")
    assert opt.state[1]["step"] == len(grads) - 2
    assert opt.state[0]["step"] == len(grads)


def test_arena_docstring_example():
    arena = fd.ParamArena([(3, 2), (2,)])
    arena.params[0][...] = 1.0
    opt = fd.SGD(arena, lr=0.5, backend="numpy")
    arena.grads[0][...] = 1.0
    opt.step()
    assert float(arena.flat_params[0]) == 0.5


def test_low_precision_arena_has_float32_grads():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for dt in (ml_dtypes.bfloat16, np.float16):
        arena = fd.ParamArena([(3, 2), (2,)], dt)
        assert arena.flat_params.dtype == np.dtype(dt) and arena.flat_grads.dtype == np.float32
        assert [g.shape for g in arena.grads] == [(3, 2), (2,)]
