"""The ``cuda`` backend: parity with the NumPy backend, multi-tensor launches, device state, selection.

Without a GPU these run in Numba's CUDA simulator: ``NUMBA_ENABLE_CUDASIM=1`` must be set before
numba is first imported, which tests/conftest.py and the guard below do (unless
``FASTDESCENT_TEST_GPU=1``, which runs these tests on a real GPU). Under the simulator every CUDA
thread is a Python thread, so the arrays are tiny and the launch shapes small (see
``fastdescent/backends/numba_cuda/_device.py``). The simulator does the same IEEE operations in the
same order as the NumPy backend, so there results must agree bitwise; on a GPU (fused multiply-add)
the documented tolerances apply.
"""

import os
import sys

# (tests/conftest.py does the same; FASTDESCENT_TEST_GPU=1 runs on a real GPU instead)
if "numba.cuda" not in sys.modules and os.environ.get("FASTDESCENT_TEST_GPU", "").strip() != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    if "numba" in sys.modules:  # numba was imported (by another test) before the variable was set
        from numba.core import config as _numba_config

        _numba_config.reload_config()

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastdescent as fd  # noqa: E402
from fastdescent import backends  # noqa: E402
from fastdescent import functional as F  # noqa: E402
from fastdescent.errors import BackendUnavailableError  # noqa: E402

try:
    cu = backends.get_backend("cuda")
except BackendUnavailableError as _exc:
    pytest.skip(f"cuda backend unavailable: {_exc}", allow_module_level=True)

from numba import cuda  # noqa: E402

from fastdescent.backends.numba_cuda import _device  # noqa: E402

SIM = _device.SIM
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
STEPS = 7


@pytest.fixture(scope="module", autouse=True)
def fast_simulator_switching():
    """The simulator's block manager polls its Python threads; a shorter GIL switch interval than
    the default 5 ms roughly halves the time of kernels that synchronise (the reductions)."""
    old = sys.getswitchinterval()
    if SIM:
        sys.setswitchinterval(0.001)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(autouse=True)
def small_launches():
    """Small launch shapes so that a few dozen elements already span several blocks and chunks."""
    old = cu.set_launch_config(threads=8, chunk=48, max_blocks=2, reduce_blocks=3)
    yield
    cu.set_launch_config(**old.__dict__)


def close(actual, expected, dtype, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, what
    assert actual.shape == expected.shape, what
    if SIM:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual, expected, err_msg=what, **TOL[dtype])


def host(a):
    return cu.to_host(a)


def dev(h):
    return cuda.to_device(np.require(h, requirements="C"))


class ForeignDeviceArray:
    """A device array that is not a Numba type: only ``__cuda_array_interface__`` (like CuPy/torch)."""

    def __init__(self, base):
        self._base = base  # keeps the memory alive

    @property
    def __cuda_array_interface__(self):
        return self._base.__cuda_array_interface__


# Shapes of the multi-tensor layout: a 0-d tensor, an empty one, tensors over the 48-element chunk.
SHAPES = [(3, 5), (), (70,), (0,), (2, 33), (1,)]


def randn(rng, shape, dtype, scale=1.0):
    return np.asarray(scale * rng.standard_normal(shape), dtype=dtype)  # 0-d arrays, not scalars


def grads_for(rng, shapes, dtype, step):
    # magnitudes vary from step to step so that amsgrad's max is exercised
    scale = 1.0 if step % 3 else 0.1
    return [randn(rng, s, dtype, scale) for s in shapes]


OPTIMIZERS = {
    "sgd": (fd.SGD, [
        dict(lr=0.1),
        dict(lr=0.1, momentum=0.9),
        dict(lr=0.1, momentum=0.9, dampening=0.3),
        dict(lr=0.1, momentum=0.9, nesterov=True),
        dict(lr=0.1, weight_decay=0.1),
        dict(lr=0.1, maximize=True),
        dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True),
    ]),
    "adam": (fd.Adam, [
        dict(lr=0.05),
        dict(lr=0.05, amsgrad=True),
        dict(lr=0.05, weight_decay=0.1),
        dict(lr=0.05, maximize=True),
        dict(lr=0.05, betas=(0.8, 0.9), eps=1e-6, amsgrad=True, weight_decay=0.1, maximize=True),
    ]),
    "adamw": (fd.AdamW, [
        dict(lr=0.05),
        dict(lr=0.05, amsgrad=True),
        dict(lr=0.05, weight_decay=0.3, maximize=True),
    ]),
    "rmsprop": (fd.RMSprop, [
        dict(lr=0.01),
        dict(lr=0.01, centered=True),
        dict(lr=0.01, momentum=0.9),
        dict(lr=0.01, centered=True, momentum=0.5),
        dict(lr=0.01, weight_decay=0.1),
        dict(lr=0.01, maximize=True),
        dict(lr=0.01, alpha=0.9, eps=1e-6, centered=True, momentum=0.9, weight_decay=0.1,
             maximize=True),
    ]),
    "adagrad": (fd.Adagrad, [
        dict(lr=0.1),
        dict(lr=0.1, lr_decay=0.1),
        dict(lr=0.1, weight_decay=0.1),
        dict(lr=0.1, initial_accumulator_value=0.5),
        dict(lr=0.1, maximize=True),
        dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.1, eps=1e-6,
             maximize=True),
    ]),
    "rprop": (fd.Rprop, [
        dict(lr=0.02),
        dict(lr=0.02, maximize=True),
        dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-3, 0.03), maximize=True),
    ]),
    "nadam": (fd.NAdam, [
        dict(lr=0.05),
        dict(lr=0.05, betas=(0.8, 0.9), eps=1e-6, momentum_decay=0.1, weight_decay=0.1,
             decoupled_weight_decay=True, maximize=True),
    ]),
    # (7 steps: the last two are rectified)
    "radam": (fd.RAdam, [
        dict(lr=0.05, weight_decay=0.1),
        dict(lr=0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True,
             maximize=True),
    ]),
    "adamax": (fd.Adamax, [
        dict(lr=0.05),
        dict(lr=0.05, betas=(0.3, 0.9), weight_decay=0.1),  # torch's other lerp branch
        dict(lr=0.05, betas=(0.0, 0.99), eps=1e-4, maximize=True),
    ]),
    "adadelta": (fd.Adadelta, [
        dict(lr=1.0),
        dict(lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.1),
        dict(lr=0.1, rho=1.0, maximize=True),
    ]),
}
CASES = [pytest.param(name, i, id=f"{name}-{i}") for name, (_, opts) in OPTIMIZERS.items()
         for i in range(len(opts))]


def assert_same_state(opt_dev, opt_ref, dtype):
    sd_dev, sd_ref = opt_dev.state_dict(), opt_ref.state_dict()
    assert sd_dev["state"].keys() == sd_ref["state"].keys()
    for k, st in sd_ref["state"].items():
        assert sd_dev["state"][k].keys() == st.keys()
        for name, val in st.items():
            got = sd_dev["state"][k][name]
            if name == "step":
                assert got == val
            elif isinstance(val, float):  # scalar state (NAdam's mu_product): host float64
                assert got == val
            else:
                assert isinstance(got, np.ndarray)  # state comes back as host arrays
                close(got, val, dtype, f"state[{k}][{name!r}]")


def device_arena(shapes, dtype, values):
    """Parameter views of one device block (what a ParamArena gives on the host)."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    flat = np.concatenate([v.reshape(-1) for v in values]).astype(dtype) if values else None
    block = dev(flat)
    views, off = [], 0
    for s, n in zip(shapes, sizes):
        views.append(block[off:off + n].reshape(s))
        off += n
    return block, views


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,case", CASES)
def test_optimizer_parity_multi_tensor(name, case, dtype):
    """Separate device arrays (one multi-tensor launch per step) vs the numpy backend, 7 steps."""
    cls, options = OPTIMIZERS[name]
    opts = options[case]
    rng = np.random.default_rng(case)
    init = [randn(rng, s, dtype) for s in SHAPES]
    ref_params = [p.copy() for p in init]
    dev_params = [dev(p) for p in init]
    ref = cls(ref_params, backend="numpy", **opts)
    opt = cls(dev_params, **opts)  # auto picks cuda for device arrays
    assert opt.backend == "cuda"
    for step in range(STEPS):
        gs = grads_for(rng, SHAPES, dtype, step)
        ref.step(gs)
        opt.step([dev(g) for g in gs])
    for i, (d, r) in enumerate(zip(dev_params, ref_params)):
        close(host(d), r, dtype, f"params[{i}]")
    assert_same_state(opt, ref, dtype)


ARENA_SHAPES = [(4, 6), (50,), (), (3,)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_parity_flat_bucket(name, dtype):
    """Parameters and gradients that are adjacent views of one device block: one flat tensor per
    bucket (the single-tensor fast path), with the optimizer's most complete option set."""
    cls, options = OPTIMIZERS[name]
    opts = options[-1]
    rng = np.random.default_rng(7)
    init = [randn(rng, s, dtype) for s in ARENA_SHAPES]
    ref_params = [p.copy() for p in init]
    pblock, dev_params = device_arena(ARENA_SHAPES, dtype, init)
    gblock, dev_grads = device_arena(ARENA_SHAPES, dtype, [np.zeros(s, dtype) for s in ARENA_SHAPES])
    ref = cls(ref_params, backend="numpy", **opts)
    opt = cls(dev_params, backend="cuda", **opts)
    for step in range(STEPS):
        gs = grads_for(rng, ARENA_SHAPES, dtype, step)
        gblock.copy_to_device(np.concatenate([g.reshape(-1) for g in gs]))
        ref.step(gs)
        opt.step(dev_grads)
        assert all(b.tab is b.tab_flat for b in opt._buckets), "bucket was not coalesced"
        assert opt._buckets[0].tab.n == 1
    for i, (d, r) in enumerate(zip(dev_params, ref_params)):
        close(host(d), r, dtype, f"params[{i}]")
    assert_same_state(opt, ref, dtype)


def test_backend_module_attributes():
    assert cu.NAME == "cuda" and cu.DEVICE is True
    assert cu.Table.device is True
    cu.check_available()
    info = cu.describe()
    assert info["simulator"] == SIM
    from fastdescent._contract import KERNELS as ROWS

    multi_rows = {n for n, r in ROWS.items() if r.kind == "multi"}
    assert multi_rows <= set(cu.KERNELS)
    assert "cuda" in fd.available_backends()
    assert fd.info()["backends"]["cuda"]["available"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_many_tensors_span_chunks_and_blocks(dtype):
    """One launch over 41 tensors whose sizes straddle the chunk size and the block size, on a grid
    far smaller than the number of chunks (blocks grid-stride over chunks)."""
    cu.set_launch_config(chunk=40, max_blocks=3)
    rng = np.random.default_rng(3)
    sizes = [0, 1, 31, 32, 33, 39, 40, 41, 79, 80, 81, 100] + list(rng.integers(0, 90, 29))
    shapes = [(int(n),) for n in sizes]
    p = [randn(rng, s, dtype) for s in shapes]
    m = [randn(rng, s, dtype) for s in shapes]
    v = [rng.random(s).astype(dtype) for s in shapes]
    vmax = [x + rng.random(x.shape).astype(dtype) * (rng.random() < 0.5) for x in v]
    dp, dm, dv, dvm = ([dev(x) for x in xs] for xs in (p, m, v, vmax))
    tab = cu.Table(np.dtype(dtype), sizes)
    assert _device.elementwise_chunk(tab.total) == 40  # the launch walks chunks of 40 elements
    _, nchunks = tab.plan(40)
    assert nchunks > 3 * 3  # more chunks than the grid covers in one pass
    for step in range(1, 3):
        g = [randn(rng, s, dtype) for s in shapes]
        kw = dict(step=step, lr=0.1, weight_decay=0.01, amsgrad=True, backend=None)
        F.adam(p, g, m, v, vmax, **{**kw, "backend": "numpy"})
        F.adam(dp, [dev(x) for x in g], dm, dv, dvm, **kw)
    for name, ref, got in (("param", p, dp), ("exp_avg", m, dm), ("exp_avg_sq", v, dv),
                           ("max_exp_avg_sq", vmax, dvm)):
        for i in range(len(sizes)):
            close(host(got[i]), ref[i], dtype, f"{name}[{i}] (size {sizes[i]})")


def test_foreign_cuda_array_interface_objects_are_updated_in_place():
    """Objects that only expose __cuda_array_interface__ (CuPy arrays, torch CUDA tensors) work."""
    rng = np.random.default_rng(5)
    init = [rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (5,)]]
    bases = [dev(x) for x in init]
    params = [ForeignDeviceArray(b) for b in bases]
    gs = [rng.standard_normal(x.shape).astype(np.float32) for x in init]
    opt = fd.SGD(params, lr=0.5, momentum=0.9)
    assert opt.backend == "cuda"
    opt.step([ForeignDeviceArray(dev(g)) for g in gs])
    ref = [x.copy() for x in init]
    fd.SGD(ref, lr=0.5, momentum=0.9, backend="numpy").step(gs)
    for b, r in zip(bases, ref):
        close(host(b), r, np.float32)
    assert isinstance(cu.to_host(params[1]), np.ndarray)


@pytest.mark.parametrize("sizes", [[0, 5, 100, 47, 48, 96, 0], [1], [1000], [10 ** 7]])
def test_chunk_plan_covers_every_element_once(sizes):
    """A plan's chunks (as ``_chunk`` reads them) tile each tensor in order, none longer than the
    chunk size; a one-tensor plan lists no chunks, whatever the tensor's size."""
    tab = cu.Table(np.dtype(np.float32), sizes)
    plan, nchunks = tab.plan(48)
    host_plan = plan.copy_to_host()
    # the device function's Python source on a GPU (a device function cannot be called from the host
    # there); the simulator's device function is plain Python already
    chunk = getattr(_device._chunk, "py_func", _device._chunk)
    if len(sizes) == 1:
        assert host_plan.size == 4
    seen = [[] for _ in sizes]
    for c in range(nchunks):
        t, start, end = chunk(host_plan, c)
        assert 0 < end - start <= 48
        seen[t].append((start, end))
    for t, n in enumerate(sizes):
        assert [x for r in seen[t] for x in r] == [x for s in range(0, n, 48) for x in (s, min(s + 48, n))]
    assert tab.plan(48)[0] is plan  # built once per table and chunk size


def test_elementwise_chunks_fill_the_grid():
    """A large flat tensor is cut into chunks of ``chunk``; a mid-size one into chunks small enough
    for every block of the grid to have one (as many as a grid-stride loop would keep busy)."""
    cu.set_launch_config(threads=256, chunk=8192, max_blocks=32 * 132)
    assert _device.elementwise_chunk(2 ** 25) == 8192  # 4096 chunks
    assert _device.elementwise_chunk(2 ** 20) == 256  # 4096 chunks rather than 128 of 8192
    assert _device.elementwise_chunk(3 * 10 ** 6) == 768  # 3907 chunks
    assert _device.elementwise_chunk(10) == 256
    assert _device.elementwise_chunk(10 ** 9) == 8192


def _tree_sum(values):
    """The shared-memory tree of ``clip._block_reduce`` (sum) over one block's values."""
    sm = list(values)
    s = len(sm) // 2
    while s > 0:
        for tid in range(s):
            sm[tid] = sm[tid] + sm[tid + s]
        s //= 2
    return sm[0]


def _sum_sq_in_kernel_order(arrays, one_tensor):
    """sum of g*g in float64 in the documented order of the two-stage reduction: one tensor, a
    grid-stride loop (thread k of the grid sums elements k, k + grid*threads, ...); several, blocks
    striding over chunks of ``chunk`` elements and threads within a chunk."""
    cfg, nt = _device.config(), _device.REDUCE_THREADS
    if one_tensor:
        (g,) = arrays
        grid = max(1, min(cfg.reduce_blocks, -(-g.size // nt)))
        accs = [[0.0] * nt for _ in range(grid)]
        for k in range(grid * nt):
            for j in range(k, g.size, grid * nt):
                accs[k // nt][k % nt] += float(g[j]) * float(g[j])
    else:
        chunks = [(t, s) for t, g in enumerate(arrays) for s in range(0, g.size, cfg.chunk)]
        grid = max(1, min(cfg.reduce_blocks, len(chunks)))
        accs = [[0.0] * nt for _ in range(grid)]
        for c, (t, start) in enumerate(chunks):
            end = min(start + cfg.chunk, arrays[t].size)
            for tid in range(nt):
                for j in range(start + tid, end, nt):
                    accs[c % grid][tid] += float(arrays[t][j]) * float(arrays[t][j])
    partials = [_tree_sum(a) for a in accs]
    return _tree_sum([sum(partials[k::nt], 0.0) if k < len(partials) else 0.0 for k in range(nt)])


@pytest.mark.parametrize("one_tensor", [True, False])
def test_norm_reduction_has_a_fixed_summation_order(one_tensor):
    """The reduction's rounding is that of its documented order, to the bit (not only close to the
    exact sum), on values whose sum rounds differently in other orders."""
    rng = np.random.default_rng(25)
    sizes = [230] if one_tensor else [0, 5, 100, 47, 48, 49, 130]
    gs = [rng.uniform(0.5, 2.0, n) for n in sizes]
    tab = cu.Table(np.dtype(np.float64), sizes).set("grad", [dev(g) for g in gs])
    got = cu.KERNELS["norm_pow_sum"](tab, norm_type=2.0)
    want = _sum_sq_in_kernel_order(gs, one_tensor)
    assert got == want, (got, want)
    # the data tells the order from element order and (one tensor) from the many-tensor chunking
    assert want != sum(float(x) * float(x) for g in gs for x in g)
    assert not one_tensor or want != _sum_sq_in_kernel_order(gs, one_tensor=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_norms_scale_and_all_finite(dtype):
    rng = np.random.default_rng(11)
    shapes = [(21,), (0,), (), (60,), (45,)]  # (numpy_ref norm_pow_sum uses np.dot: 1-D only)
    gs = [randn(rng, s, dtype, 3.0) for s in shapes]
    for norm_type in (2.0, 1.0, 3.5, math.inf):
        ref = [g.copy() for g in gs]
        dg = [dev(g) for g in gs]
        total_ref = F.clip_grad_norm_(ref, 1.0, norm_type, backend="numpy")
        total = F.clip_grad_norm_(dg, 1.0, norm_type)
        assert total == pytest.approx(total_ref, rel=1e-12), norm_type
        for i, (d, r) in enumerate(zip(dg, ref)):
            np.testing.assert_allclose(host(d), r, rtol=TOL[dtype]["rtol"] * 10,
                                       atol=TOL[dtype]["atol"], err_msg=f"{norm_type} grads[{i}]")
    # one flat tensor (single-tensor reduction path) and the deterministic two-stage reduction
    flat = dev(gs[3])
    tab = cu.Table(np.dtype(dtype), [60]).set("grad", [flat])
    s1 = cu.KERNELS["norm_pow_sum"](tab, norm_type=2.0)
    assert s1 == pytest.approx(float(np.dot(gs[3].astype(np.float64), gs[3].astype(np.float64))),
                               rel=1e-12)
    assert cu.KERNELS["norm_pow_sum"](tab, norm_type=2.0) == s1  # bitwise reproducible
    cu.KERNELS["scale"](tab, factor=0.5)
    close(host(flat), gs[3] * dtype(0.5), dtype)
    assert cu.KERNELS["all_finite"](tab)
    assert cu.KERNELS["norm_pow_sum"](cu.Table(np.dtype(dtype), [0]).set("grad", [dev(np.zeros(0, dtype))]),
                                      norm_type=2.0) == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_nonfinite_anywhere(bad):
    rng = np.random.default_rng(2)
    gs = [rng.standard_normal(s).astype(np.float32) for s in [(10,), (70,), (5,)]]
    assert F.all_finite([dev(g) for g in gs])
    gs[1][57] = bad  # the second chunk of the middle tensor
    assert not F.all_finite([dev(g) for g in gs])
    assert not F.all_finite([dev(gs[1])])  # single-tensor path
    tab = cu.Table(np.dtype(np.float32), [g.size for g in gs]).set("grad", [dev(g) for g in gs])
    inf_norm = cu.KERNELS["norm_pow_sum"](tab, norm_type=math.inf)
    if bad != bad:
        assert math.isnan(inf_norm)  # NaN propagates through the max
    else:
        assert inf_norm == math.inf


def test_state_dict_round_trip_host_arrays_and_device_state():
    rng = np.random.default_rng(9)
    shapes = [(4, 5), (7,), ()]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    p1 = [dev(x) for x in init]
    opt1 = fd.Adam(p1, lr=0.05, amsgrad=True)
    for step in range(3):
        opt1.step([dev(g) for g in grads_for(rng, shapes, np.float32, step)])
    sd = opt1.state_dict()
    for st in sd["state"].values():
        assert isinstance(st["step"], int) and st["step"] == 3
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert isinstance(st[name], np.ndarray)
    # load into a fresh optimizer over copies of the parameters: its state lives on the device
    p2 = [dev(host(p)) for p in p1]
    opt2 = fd.Adam(p2, lr=0.05, amsgrad=True)
    opt2.load_state_dict(sd)
    gs = grads_for(rng, shapes, np.float32, 5)
    opt1.step([dev(g) for g in gs])
    opt2.step([dev(g) for g in gs])
    for st in opt2.state.values():
        assert not isinstance(st["exp_avg"], np.ndarray)
        assert hasattr(st["exp_avg"], "__cuda_array_interface__")
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(host(a), host(b))
    sd1, sd2 = opt1.state_dict(), opt2.state_dict()
    for k in sd1["state"]:
        for name, val in sd1["state"][k].items():
            np.testing.assert_array_equal(sd2["state"][k][name], val)
    # and a state saved by the numpy backend continues identically on the device
    ref = fd.Adam([host(p) for p in p1], lr=0.05, amsgrad=True, backend="numpy")
    ref.load_state_dict(sd1)
    gs = grads_for(rng, shapes, np.float32, 6)
    ref.step(gs)
    opt1.step([dev(g) for g in gs])
    for a, r in zip(p1, ref.param_groups[0]["params"]):
        close(host(a), r, np.float32)


def test_skip_nonfinite_on_device():
    p = [dev(np.ones(5, np.float32)), dev(np.ones(3, np.float32))]
    opt = fd.SGD(p, lr=0.1, momentum=0.9, skip_nonfinite=True)
    g = [np.ones(5, np.float32), np.array([1, np.nan, 1], np.float32)]
    assert opt.step([dev(x) for x in g]) is False
    assert opt.last_step_skipped and opt.skipped_steps == 1
    np.testing.assert_array_equal(host(p[0]), np.ones(5, np.float32))
    g[1][1] = 1.0
    assert opt.step([dev(x) for x in g]) is True
    np.testing.assert_allclose(host(p[0]), np.full(5, 0.9, np.float32))


def test_auto_selection_and_explicit_backend_errors():
    d = [dev(np.ones(3, np.float32))]
    h = [np.ones(3, np.float32)]
    assert fd.SGD(d, lr=0.1).backend == "cuda"
    with fd.use_backend("auto"):
        assert fd.Adam(d).backend == "cuda"
        assert fd.Adam(h).backend != "cuda"
    assert backends.resolve("auto", device=True) is cu
    with pytest.raises(ValueError, match=r"works on host \(NumPy\) arrays, but the parameters are device"):
        fd.SGD(d, lr=0.1, backend="numpy")
    with pytest.raises(ValueError, match="works on device arrays"):
        fd.SGD(h, lr=0.1, backend="cuda")
    F.sgd(d, [dev(np.ones(3, np.float32))], lr=0.5)  # functional auto-selects cuda too
    np.testing.assert_array_equal(host(d[0]), np.full(3, 0.5, np.float32))


def test_mixing_host_and_device_arrays_raises():
    d, h = dev(np.ones(3, np.float32)), np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"params\[1\]: mixing host \(NumPy\) and device arrays"):
        fd.Adam([d, h])
    with pytest.raises(ValueError, match=r"params\[1\]: mixing host \(NumPy\) and device arrays"):
        fd.Adam([h, d])
    opt = fd.Adam([d])
    with pytest.raises(ValueError, match=r"grads\[0\] is a host array but params\[0\] is a device"):
        opt.step([np.ones(3, np.float32)])
    with pytest.raises(ValueError, match="mixing host and device arrays"):
        F.sgd([d], [np.ones(3, np.float32)], lr=0.1)
    with pytest.raises(TypeError, match="device arrays, got a host numpy.ndarray"):
        cu.Table(np.dtype(np.float32), [3, 4]).set("param", [d, h])


def test_device_helpers_ask_for_nvvm_level_inlining():
    """numba-cuda reads inline=True as Numba-IR inlining (a front end ~6x slower on the
    mixed-precision kernel) and has forceinline=True for what Numba's own numba.cuda does with
    inline=True; the backend picks by the jit's signature."""
    def numba_cuda_jit(func_or_sig=None, device=False, inline="never", forceinline=False, **kws):
        pass

    def numba_jit(func_or_sig=None, device=False, inline=False, link=None, **kws):
        pass

    assert _device._inline_kwargs(numba_cuda_jit) == {"forceinline": True}
    assert _device._inline_kwargs(numba_jit) == {"inline": True}
    assert _device.INLINE == _device._inline_kwargs(cuda.jit)
