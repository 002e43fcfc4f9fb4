"""The ``cuda`` backend's mixed-precision step (``backends/numba_cuda/mixed.py``): bit for bit the NumPy
reference over rules x parameter dtypes x state storage x master copy x stochastic rounding (tensors
spanning partial 256-element blocks, a zero-size one, several per launch, a grid smaller than the
work), the formats' special values, ``grads_finite``, ``grad_scale``, bad arguments, and the
optimizers on device bfloat16/float16 parameters (device state, master copy, state_dict round trips).

Without a GPU these run in Numba's CUDA simulator (set up as in tests/test_cuda_backend.py), where the
kernel's float32 operations are NumPy's, so results must be bit-identical; the last test compiles the
kernels to PTX (when a CUDA toolkit's NVVM is found) and checks that no multiply-add was fused there.
"""

import os
import sys

if "numba.cuda" not in sys.modules and os.environ.get("FASTDESCENT_TEST_GPU", "").strip() != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    if "numba" in sys.modules:
        from numba.core import config as _numba_config

        _numba_config.reload_config()

import subprocess  # noqa: E402
import textwrap  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastdescent as fd  # noqa: E402
from fastdescent import _arrays  # noqa: E402
from fastdescent import backends  # noqa: E402
from fastdescent import precision as P  # noqa: E402
from fastdescent.backends._mixed import GradList, MixedPlan  # noqa: E402
from fastdescent.backends.numpy_ref import mixed as ref  # noqa: E402
from fastdescent.errors import BackendUnavailableError  # noqa: E402
from fastdescent.rules import get as get_rule  # noqa: E402

try:
    cu = backends.get_backend("cuda")
except BackendUnavailableError as _exc:
    pytest.skip(f"cuda backend unavailable: {_exc}", allow_module_level=True)

from numba import cuda  # noqa: E402

import _ptx  # noqa: E402
from _mixed_plans import columns, same_plans, store  # noqa: E402

from fastdescent.backends.numba_cuda import mixed as cm  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
PDT = {P.F32: np.float32, P.BF16: BF16, P.F16: np.float16}
SIZES = [300, 0, 5, 520]  # partial blocks, a zero-size tensor, 5 blocks in all


@pytest.fixture(scope="module", autouse=True)
def fast_simulator_switching():
    old = sys.getswitchinterval()
    if cu.SIM:
        sys.setswitchinterval(0.001)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(autouse=True)
def small_grid():
    """Two thread blocks for five or more units: the grid-stride loop runs."""
    old = cu.set_launch_config(threads=8, chunk=48, max_blocks=2, reduce_blocks=3)
    yield
    cu.set_launch_config(**old.__dict__)


def _needs_buffer(ary):
    """What Numba's driver does with the host side of a copy (``host_pointer``: a memoryview):
    NumPy refuses a buffer of ml_dtypes' bfloat16 ('cannot include dtype 'E' in a buffer')."""
    if isinstance(ary, np.ndarray):
        memoryview(ary)


@pytest.fixture(autouse=True)
def driver_like_copies(monkeypatch):
    """Host<->device copies in the simulator refuse what a GPU's driver refuses (the simulator copies
    with NumPy and takes bfloat16 host arrays; on an H200 ``cuda.to_device`` of one raised ValueError,
    2026-12-04): every test here goes through the backend's transfers as they run on hardware."""
    if not cu.SIM:
        yield  # the real driver checks
        return
    to_device = cuda.to_device
    fake = type(to_device(np.zeros(1, np.float32)))
    copy_to_device = fake.copy_to_device

    def checked_to_device(ary, *a, **k):
        _needs_buffer(ary)
        return to_device(ary, *a, **k)

    def checked_copy_to_device(self, ary, *a, **k):
        _needs_buffer(ary)
        return copy_to_device(self, ary, *a, **k)

    monkeypatch.setattr(cuda, "to_device", checked_to_device)
    monkeypatch.setattr(fake, "copy_to_device", checked_copy_to_device)
    yield


def test_bfloat16_host_arrays_need_the_backend_transfers():
    """The emulated driver refuses a bfloat16 host array; the backend's ``from_host``/``to_host``/
    ``copy_from_host`` move it as 16-bit words, bit for bit."""
    x = (np.arange(7, dtype=np.float32) / 3 - 1).astype(BF16)
    with pytest.raises(ValueError):
        cuda.to_device(x)
    d = cu.from_host(x)
    assert _arrays.inspect(d, "d").dtype == BF16
    assert cu.to_host(d).dtype == BF16
    np.testing.assert_array_equal(cu.to_host(d).view(np.uint16), x.view(np.uint16))
    y = x[::-1].copy()
    cu.copy_from_host(d, y)
    np.testing.assert_array_equal(cu.to_host(d).view(np.uint16), y.view(np.uint16))
    np.testing.assert_array_equal(_arrays.device_to_host(d).view(np.uint16), y.view(np.uint16))


def host(a):
    return cu.to_host(a) if hasattr(a, "__cuda_array_interface__") else np.asarray(a)


def u8(a):
    return np.ascontiguousarray(host(a)).view(np.uint8)


_store = store
_columns = columns


def _plan(rule, cols, pcode, stochastic, put):
    params, mast, states = cols
    st = {k: ([put(a) for a in arrays], code, None if sc is None else [put(s) for s in sc])
          for k, (arrays, code, sc) in states.items()}
    return MixedPlan(rule, [put(p) for p in params], pcode,
                     None if mast is None else [put(m) for m in mast], st,
                     np.arange(len(params)) * 3 + 1, 99, stochastic)


def _grads(sizes, code, rng, special=False):
    out = []
    for n in sizes:
        g = (rng.standard_normal(n) * np.exp(rng.uniform(-10, 2, n))).astype(np.float32)
        if special and n > 256:
            g[:8] = [np.nan, np.inf, -np.inf, 1e-40, -0.0, 3e38, -3e38, 6e-8]  # block 0: non-finite
            g[256:] = 0.0  # the last block: zero gradients (8-bit state: a scale-0 block at step 1)
        out.append(_store(g, code))
    return out


def _run(rule, hp, pcode, scode, master, sr, gcode, grad_scale, steps=3, special=False, seed=0):
    rng = np.random.default_rng(seed)
    cols = _columns(rule, hp, SIZES, pcode, scode, master, rng)
    want = _plan(rule, cols, pcode, sr, np.copy)
    got = _plan(rule, cols, pcode, sr, cu.from_host)
    r = get_rule(rule)
    for t in range(1, steps + 1):
        gs = _grads(SIZES, gcode, rng, special=special and t == 1)
        want.set_grads(gs)
        got.set_grads([cu.from_host(g) for g in gs])
        sc = r.scalars(hp, t, t == 1)
        ref.mixed_step(want, scalars=sc, step=t, grad_scale=grad_scale)
        cm.mixed_step(got, scalars=sc, step=t, grad_scale=grad_scale)
        same_plans(want, got, u8)
    return cols, got


ADAM = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, amsgrad=True, maximize=False,
            decoupled_weight_decay=True)
ADAM_L2 = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01, amsgrad=False,
               maximize=True, decoupled_weight_decay=False)
SGD = dict(lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=1e-3, nesterov=False, maximize=False)
SGD_NEST = dict(lr=1e-2, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True,
                maximize=True)
RMS = dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2, momentum=0.5, centered=True,
           maximize=False)
RMS_PLAIN = dict(lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 maximize=False)

# (rule, hp, pcode, state code, master, stochastic rounding, gradient code, grad_scale)
CASES = [
    ("adam", ADAM, P.BF16, "int8", False, True, P.BF16, 4.0),
    ("adam", ADAM_L2, P.F16, P.BF16, True, False, P.F32, 1.0),
    ("adam", ADAM, P.BF16, P.F32, True, False, P.BF16, 1.0),
    ("adam", ADAM_L2, P.F32, "int8", False, False, P.F32, 0.25),
    ("sgd", SGD, P.BF16, P.BF16, False, True, P.F32, 1.0),
    ("sgd", SGD_NEST, P.F16, "int8", False, False, P.F16, 8.0),
    ("rmsprop", RMS, P.BF16, "int8", False, True, P.BF16, 1.0),
    ("rmsprop", RMS_PLAIN, P.F16, P.BF16, True, True, P.F32, 2.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-p{c[2]}-s{c[3]}-m{int(c[4])}"
                                                      f"-sr{int(c[5])}-g{c[6]}-gs{c[7]}")
def test_matches_reference_bit_for_bit(case):
    rule, hp, pcode, scode, master, sr, gcode, gscale = case
    cols, got = _run(rule, hp, pcode, scode, master, sr, gcode, gscale)
    # the step moved the parameters (a comparison of two unchanged plans would pass too)
    assert not np.array_equal(u8(cols[0][0]), u8(got.params[0]))


@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[7]], ids=lambda c: c[0])
def test_special_values_match_reference(case):
    """NaN/inf/subnormal/overflowing gradients and an all-zero block through every format: NaN
    blocks of 8-bit state, overflow to inf in bfloat16/float16, subnormal halves, zero-scale blocks."""
    rule, hp, pcode, scode, master, sr, gcode, gscale = case
    _run(rule, hp, pcode, scode, master, sr, gcode, 1.0, steps=2, special=True, seed=3)


def test_stochastic_rounding_depends_on_seed_and_step_only():
    """The random bits come from (seed, param_index, step, stream, element): the same plan run twice
    gives the same bits, another seed other bits (and still the reference's)."""
    rule, hp = "sgd", dict(SGD, momentum=0.0, weight_decay=0.0)
    rng = np.random.default_rng(5)
    cols = _columns(rule, hp, [300], P.BF16, P.F32, False, rng)
    g = _grads([300], P.F32, rng)
    sc = get_rule(rule).scalars(hp, 1, True)
    outs = []
    for seed in (99, 99, 7):
        plan = _plan(rule, cols, P.BF16, True, cu.from_host)
        plan.seed = seed
        plan.set_grads([cu.from_host(g[0])])
        cm.mixed_step(plan, scalars=sc, step=1)
        want = _plan(rule, cols, P.BF16, True, np.copy)
        want.seed = seed
        want.set_grads(g)
        ref.mixed_step(want, scalars=sc, step=1)
        same_plans(want, plan, u8)
        outs.append(u8(plan.params[0]))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


@pytest.mark.parametrize("code", [P.F32, P.BF16, P.F16])
def test_grads_finite(code):
    sizes = [300, 0, 5, 520]
    rng = np.random.default_rng(2)
    gs = [_store(rng.standard_normal(n).astype(np.float32), code) for n in sizes]
    plan = GradList([cu.from_host(g) for g in gs])
    assert cm.grads_finite(plan) is True
    for t, e, v in ((0, 0, np.inf), (2, 4, np.nan), (3, 519, -np.inf), (3, 256, np.nan)):
        bad = [g.copy() for g in gs]
        bad[t][e] = v
        assert cm.grads_finite(GradList([cu.from_host(g) for g in bad])) is False, (t, e, v)
    if code == P.F16:  # finite in float32, not in float16: the check reads the stored bits
        big = [g.copy() for g in gs]
        big[0][1] = np.float16(np.inf)
        assert cm.grads_finite(GradList([cu.from_host(g) for g in big])) is False


def test_arguments_are_checked_before_anything_is_written():
    rule, hp = "adam", ADAM
    rng = np.random.default_rng(4)
    cols = _columns(rule, hp, [20, 3], P.BF16, "int8", False, rng)
    plan = _plan(rule, cols, P.BF16, False, cu.from_host)
    sc = get_rule(rule).scalars(hp, 1, True)
    before = [u8(p) for p in plan.params]
    with pytest.raises(ValueError, match="no gradients"):
        cm.mixed_step(plan, scalars=sc, step=1)
    plan.set_grads([cu.from_host(np.ones(20, np.float32)), cu.from_host(np.ones(3, np.float32))])
    for gs in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="grad_scale"):
            cm.mixed_step(plan, scalars=sc, step=1, grad_scale=gs)
    with pytest.raises(TypeError, match="missing"):
        cm.mixed_step(plan, scalars={k: v for k, v in sc.items() if k != "eps"}, step=1)
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        cols2 = _columns(rule, dict(hp, amsgrad=False), [20, 3], P.BF16, "int8", False, rng)
        p2 = _plan(rule, cols2, P.BF16, False, cu.from_host)
        p2.set_grads(plan.grads)
        cm.mixed_step(p2, scalars=sc, step=1)  # amsgrad=True needs the column
    host_plan = _plan(rule, cols, P.BF16, False, np.copy)  # host arrays: not for the cuda backend
    host_plan.set_grads([np.ones(20, np.float32), np.ones(3, np.float32)])
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        cm.mixed_step(host_plan, scalars=sc, step=1)
    short = _plan(rule, cols, P.BF16, False, cu.from_host)
    short.set_grads([cu.from_host(np.ones(20, np.float32)), cu.from_host(np.ones(4, np.float32))])
    with pytest.raises(ValueError, match=r"grads\[1\] has 4 elements"):
        cm.mixed_step(short, scalars=sc, step=1)
    for a, b in zip(before, plan.params):
        np.testing.assert_array_equal(a, u8(b))


def test_decode_into_and_zeros():
    rng = np.random.default_rng(6)
    for code in (P.BF16, P.F16):
        x = _store((rng.standard_normal(37) * 100).astype(np.float32), code)
        x[:4] = np.array([np.inf, -np.inf, 0.0, -0.0], np.float32).astype(PDT[code])
        dst = cm.zeros(37, np.float32)
        cm.decode_into(dst, cu.from_host(x), code)
        np.testing.assert_array_equal(u8(dst), u8(P.decode(x, code)))
    for dt in (np.uint8, BF16, np.float16, np.float32):
        z = cm.zeros(13, dt)
        assert host(z).dtype == np.dtype(dt) and not u8(z).any()
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        cm.decode_into(cm.zeros(3, np.float32), cu.from_host(np.zeros(3, np.float16)), P.F32)


def test_device_bfloat16_is_the_typestr_V2():
    """A device array whose interface says '<V2' (torch's bfloat16 CUDA tensors, ml_dtypes arrays)
    is bfloat16; a uint16 device array is not, and is refused as a parameter."""
    info = _arrays.inspect(cu.from_host(np.zeros(4, BF16)), "x")
    assert info.device and info.dtype == BF16
    with pytest.raises(TypeError, match="dtype uint16"):
        fd.Adam([cu.from_host(np.zeros(4, np.uint16))], backend="cuda")


def _opt_pair(cls, kw, pdt, sizes, rng):
    ps = [(rng.standard_normal(n) * 0.5).astype(np.float32).astype(pdt) for n in sizes]
    hp = [p.copy() for p in ps]
    dp = [cu.from_host(p) for p in ps]
    return hp, dp, cls(hp, backend="numpy", **kw), cls(dp, backend="cuda", **kw)


def _same_state(sh, sd):
    for i, st in sh["state"].items():
        assert sorted(st) == sorted(sd["state"][i])
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                assert sd["state"][i][k].dtype == v.dtype, k
                np.testing.assert_array_equal(u8(v), u8(sd["state"][i][k]), err_msg=k)
            else:
                assert v == sd["state"][i][k], k


@pytest.mark.parametrize("cls, kw, pdt, gdt", [
    (fd.AdamW, dict(lr=1e-2, master_weights=True, state_dtype="int8"), BF16, BF16),
    (fd.SGD, dict(lr=1e-2, momentum=0.9, stochastic_rounding=True, seed=5), BF16, np.float32),
    (fd.RMSprop, dict(lr=1e-3, centered=True, state_dtype="bfloat16"), np.float16, np.float16),
], ids=["adamw-master-int8", "sgd-sr", "rmsprop-f16-bf16state"])
def test_optimizer_on_device_params_matches_numpy(cls, kw, pdt, gdt):
    sizes = [300, 7]
    rng = np.random.default_rng(8)
    hp, dp, oh, od = _opt_pair(cls, kw, pdt, sizes, rng)
    for _ in range(2):
        gs = [rng.standard_normal(n).astype(np.float32).astype(gdt) for n in sizes]
        oh.step([g.copy() for g in gs])
        od.step([cu.from_host(g) for g in gs])
    for a, b in zip(hp, dp):
        np.testing.assert_array_equal(u8(a), u8(b))
    sd = od.state_dict()
    _same_state(oh.state_dict(), sd)
    # the device state_dict into a fresh device optimizer, and on: still the numpy backend's steps
    dp2 = [cu.from_host(host(p)) for p in dp]
    od2 = cls(dp2, backend="cuda", **kw)
    od2.load_state_dict(sd)
    gs = [rng.standard_normal(n).astype(np.float32).astype(gdt) for n in sizes]
    oh.step([g.copy() for g in gs])
    od2.step([cu.from_host(g) for g in gs])
    for a, b in zip(hp, dp2):
        np.testing.assert_array_equal(u8(a), u8(b))


def test_optimizer_grad_scale_skip_and_state_conversions():
    """GradScaler over device bfloat16 gradients (an inf skips the step on both), then the state
    storage switched float32 -> int8 -> bfloat16 -> float32 between steps, and a host (numpy
    backend) int8 state_dict loaded into a cuda optimizer."""
    sizes = [300, 9]
    rng = np.random.default_rng(9)
    hp, dp, oh, od = _opt_pair(fd.Adam, dict(lr=1e-2), BF16, sizes, rng)
    sh, sd = fd.amp.GradScaler(init_scale=1024.0), fd.amp.GradScaler(init_scale=1024.0)

    def step(bad=False):
        gs = [(rng.standard_normal(n) * 1024).astype(BF16) for n in sizes]
        if bad:
            gs[1][3] = np.inf
        a = sh.step(oh, [g.copy() for g in gs])
        b = sd.step(od, [cu.from_host(g) for g in gs])
        sh.update()
        sd.update()
        assert a == b
        for x, y in zip(hp, dp):
            np.testing.assert_array_equal(u8(x), u8(y))
        return b

    assert step() is not False
    assert step(bad=True) is False and od.last_step_skipped and sd.get_scale() == 512.0
    for sdt in ("int8", "bfloat16", None):
        oh.param_groups[0]["state_dtype"] = od.param_groups[0]["state_dtype"] = sdt
        step()
        _same_state(oh.state_dict(), od.state_dict())
    oh.param_groups[0]["state_dtype"] = "int8"
    step_h = [rng.standard_normal(n).astype(BF16) for n in sizes]
    oh.step(step_h)
    od3 = fd.Adam([cu.from_host(host(p)) for p in hp], lr=1e-2, backend="cuda")
    od3.load_state_dict(oh.state_dict())
    gs = [rng.standard_normal(n).astype(BF16) for n in sizes]
    oh.step([g.copy() for g in gs])
    od3.step([cu.from_host(g) for g in gs])
    for x, y in zip(hp, od3.param_groups[0]["params"]):
        np.testing.assert_array_equal(u8(x), u8(y))
    _same_state(oh.state_dict(), od3.state_dict())


def test_float32_device_params_with_grad_scale():
    """A float32 bucket stepped with grad_scale runs the mixed-precision step on its own float32
    state (``Optimizer._f32_plan``): on device arrays too."""
    sizes = [300, 9]
    rng = np.random.default_rng(10)
    hp, dp, oh, od = _opt_pair(fd.Adam, dict(lr=1e-2, weight_decay=0.1), np.float32, sizes, rng)
    for _ in range(2):
        gs = [(rng.standard_normal(n) * 64).astype(np.float32) for n in sizes]
        oh.step([g.copy() for g in gs], grad_scale=64.0)
        od.step([cu.from_host(g) for g in gs], grad_scale=64.0)
    for a, b in zip(hp, dp):
        np.testing.assert_array_equal(u8(a), u8(b))
    _same_state(oh.state_dict(), od.state_dict())


PTX_SCRIPT = _ptx.PREAMBLE + textwrap.dedent(r'''
    from fastdescent.backends.numba_cuda import mixed as m
    A, I, U, F = types.int64[::1], types.int64, types.uint64, types.float32
    sig = (A,) * 8 + (I,) * 6 + (U, U, U, I, I, F) + (F,) * 9 + (I,)
    ptx, _ = cuda.compile_ptx(m._mixed_kernel.py_func, sig, cc=(8, 0))
    body = ptx[ptx.find(".entry"):]
    bad = [p for p in (r"fma\.", r"\bmul\.f32", r"\badd\.f32", r"\bsub\.f32", r"\.f64\b", r"\bcall",
                       r"\.ftz", r"\.approx") if re.search(p, body)]
    need = [p for p in ("mul.rn.f32", "add.rn.f32", "div.rn.f32", "sqrt.rn.f32", "bar.sync",
                        "st.global.u8", "st.global.u16") if p not in body]
    for kernel, s in ((m._absmax_kernel, (A, A, A, types.int32[::1])),
                      (m._decode_kernel, (I, I, I, I)), (m._zero_kernel, (I, I))):
        cuda.compile_ptx(kernel.py_func, s, cc=(8, 0))
    if bad or need:
        print("forbidden:", bad, "missing:", need)
        sys.exit(1)
    print("ok")
''')


def test_kernels_compile_to_ptx_without_fused_multiply_add(tmp_path):
    """On a GPU the step is exact only if NVVM fuses nothing: compile the kernels for sm_80 (needs
    NVVM from a CUDA toolkit, e.g. CUDA_HOME at pip's nvidia-cuda-nvcc-cu12; skips without) and
    check the PTX: explicit mul.rn/add.rn/sub.rn, IEEE div/sqrt, no fma, no ftz, no float64, no
    calls."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(fd.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", PTX_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    if proc.returncode == 77:
        pytest.skip("no usable CUDA compiler toolchain (NVVM) here: cannot compile the kernels to "
                    f"PTX ({proc.stdout.strip()[-300:] or 'NVVM not found'})")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_master_is_reread_where_the_parameter_was_written_from_outside():
    """Parameters overwritten between steps (a model load, an in-place edit): the master copy of
    those elements is re-read from the parameter, as on the host."""
    rng = np.random.default_rng(3)
    hp, dp, oh, od = _opt_pair(fd.Adam, dict(lr=1e-2, master_weights=True), BF16, [300], rng)
    g = rng.standard_normal(300).astype(np.float32)
    oh.step([g.copy()])
    od.step([cu.from_host(g)])
    new = host(dp[0])
    new[::7] = np.linspace(-2, 2, new[::7].size).astype(BF16)
    hp[0][...] = new
    cu.copy_from_host(dp[0], new)
    oh.step([g.copy()])
    od.step([cu.from_host(g)])
    np.testing.assert_array_equal(u8(hp[0]), u8(dp[0]))
    _same_state(oh.state_dict(), od.state_dict())
