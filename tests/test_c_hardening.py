"""Hardening of the c backend and its C library: scalars outside the kernels' domain, size
overflow, misaligned arrays reaching C, the thread-count bound, fork after a multi-threaded step,
the compiler's error text when the extension fails to build, and the build script not shipped.

Every test here fails on the code before the fix (see the comments).
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastdescent as fd
from fastdescent.errors import KernelError

from _subproc import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FD_ERR_NULL, FD_ERR_SIZE, FD_ERR_ARG, FD_ERR_ALIGN = 1, 2, 3, 6


def _table(C, dtype, **cols):
    return C.Table.from_columns(np.dtype(dtype), {k: [v] for k, v in cols.items()})


def _adam_arrays(dtype, n=5):
    rng = np.random.default_rng(0)
    return dict(param=rng.standard_normal(n).astype(dtype), exp_avg=np.zeros(n, dtype),
                exp_avg_sq=np.zeros(n, dtype), grad=rng.standard_normal(n).astype(dtype))


ADAM_OK = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay=1.0, step_size=1e-2,
               bias_correction2_sqrt=0.0316, amsgrad=0, maximize=0)


# ------------------------------------------------------------------------------ scalar domains
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [
    dict(beta1=1.5), dict(beta1=1.0), dict(beta1=-0.1), dict(beta2=1.0), dict(beta2=math.nan),
    dict(eps=-1e-8), dict(eps=math.inf), dict(weight_decay=-0.1), dict(decay=1.5),
    dict(decay=math.nan), dict(step_size=-1e-3), dict(step_size=math.inf),
    dict(bias_correction2_sqrt=0.0), dict(bias_correction2_sqrt=2.0),
])
def test_adam_kernel_rejects_out_of_domain_scalars(C, dtype, bad):
    # before: FD_OK (e.g. beta1=1.5) and the parameters were updated with garbage
    a = _adam_arrays(dtype)
    before = {k: v.copy() for k, v in a.items()}
    with pytest.raises(KernelError) as ei:
        C.KERNELS["adam"](_table(C, dtype, **a), **{**ADAM_OK, **bad})
    assert ei.value.code == FD_ERR_ARG
    for k in a:
        np.testing.assert_array_equal(a[k], before[k])


@pytest.mark.parametrize("kernel,cols,good,bad", [
    ("sgd", ("param", "momentum_buffer", "grad"),
     dict(lr=0.1, momentum=0.9, dampening=-1.0, weight_decay=0.0, nesterov=0, maximize=0,
          first_step=0),
     [dict(lr=-0.1), dict(lr=math.nan), dict(momentum=-0.5), dict(dampening=math.inf),
      dict(weight_decay=-1.0), dict(nesterov=1)]),
    ("rmsprop", ("param", "square_avg", "grad_avg", "momentum_buffer", "grad"),
     dict(lr=0.01, alpha=1.5, eps=0.0, weight_decay=0.0, momentum=0.5, centered=1, maximize=0),
     [dict(lr=-0.01), dict(alpha=-0.1), dict(alpha=math.inf), dict(eps=-1.0), dict(momentum=-0.5),
      dict(weight_decay=math.nan)]),
    ("adagrad", ("param", "sum", "grad"),
     dict(clr=0.01, eps=0.0, weight_decay=0.1, maximize=0),
     [dict(clr=-0.01), dict(clr=math.inf), dict(eps=-1e-10), dict(weight_decay=-0.1)]),
    ("rprop", ("param", "prev", "step_size", "grad"),
     dict(etaminus=1e-300, etaplus=1e300, step_size_min=0.0, step_size_max=0.0, maximize=1),
     [dict(etaminus=0.0), dict(etaminus=1.0), dict(etaplus=1.0), dict(etaplus=math.inf),
      dict(step_size_min=-1e-6), dict(step_size_min=1.0), dict(step_size_max=math.nan)]),
    ("adamax", ("param", "exp_avg", "exp_inf", "grad"),
     dict(lerp_weight=-0.5, lerp_from_grad=1, beta2=0.0, eps=0.0, weight_decay=0.0, clr=0.0,
          maximize=0),
     [dict(lerp_weight=0.1), dict(lerp_weight=-0.6), dict(lerp_weight=math.nan),
      dict(lerp_weight=0.5, lerp_from_grad=0), dict(beta2=1.0), dict(eps=-1e-8),
      dict(weight_decay=math.inf), dict(clr=-0.1)]),
    ("adadelta", ("param", "square_avg", "acc_delta", "grad"),
     dict(lr=0.0, rho=1.0, one_minus_rho=0.0, eps=0.0, weight_decay=0.0, maximize=0),
     [dict(lr=-1.0), dict(rho=1.5), dict(rho=math.nan), dict(one_minus_rho=-0.1),
      dict(eps=math.inf), dict(weight_decay=-0.1)]),
    ("scale", ("grad",), dict(factor=-2.0), [dict(factor=math.nan), dict(factor=math.inf)]),
])
def test_update_kernels_reject_out_of_domain_scalars(C, kernel, cols, good, bad):
    rng = np.random.default_rng(1)
    arrays = {c: rng.random(4) for c in cols}
    C.KERNELS[kernel](_table(C, np.float64, **arrays), **good)  # the boundary values are accepted
    for b in bad:
        arrays = {c: rng.random(4) for c in cols}
        before = {c: v.copy() for c, v in arrays.items()}
        with pytest.raises(KernelError) as ei:
            C.KERNELS[kernel](_table(C, np.float64, **arrays), **{**good, **b})
        assert ei.value.code == FD_ERR_ARG, b
        for c in cols:
            np.testing.assert_array_equal(arrays[c], before[c])


def test_loss_kernels_reject_nonfinite_scale(C):
    g, p, t = np.zeros(4), np.ones(4), np.zeros(4)
    for scale in (math.nan, math.inf):
        with pytest.raises(KernelError) as ei:
            C.KERNELS["mse_fwd_bwd"](g, p, t, scale=scale)
        assert ei.value.code == FD_ERR_ARG
    assert not g.any()


def test_optimizers_still_accept_their_whole_domain(C):
    """The C domain is the Python optimizers' one: their edge values still run on the c backend."""
    p = [np.ones(4, np.float32)]
    g = [np.full(4, 0.5, np.float32)]
    fd.SGD(p, lr=0.0, momentum=0.0, dampening=-3.0, backend="c").step(g)
    fd.Adam(p, lr=0.0, betas=(0.0, 0.0), eps=0.0, backend="c").step(g)
    fd.AdamW(p, lr=2.0, weight_decay=1.0, backend="c").step(g)  # decay = 1 - lr*wd = -1
    fd.RMSprop(p, lr=0.01, alpha=1.5, eps=0.0, momentum=0.0, backend="c").step(g)
    fd.Adagrad(p, lr=0.0, eps=0.0, backend="c").step(g)
    # (etaplus = 1e300 overflows float32: a float64 parameter)
    fd.Rprop([np.ones(4)], lr=0.0, etas=(1e-300, 1e300), step_sizes=(0.0, 0.0),
             backend="c").step([np.full(4, 0.5)])
    fd.Adamax(p, lr=0.0, betas=(0.0, 0.0), eps=0.0, backend="c").step(g)
    fd.Adamax(p, lr=1e-3, betas=(0.5, 0.999), backend="c").step(g)  # lerp weight -0.5
    fd.Adadelta(p, lr=0.0, rho=1.0, eps=0.0, backend="c").step(g)
    fd.Adadelta(p, lr=1.0, rho=0.0, backend="c").step(g)


# ------------------------------------------------------------------------------ sizes
def test_size_sum_overflow_is_a_size_error(C):
    # before: the sum overflowed int64 (UBSan: signed integer overflow) and the NULL columns were
    # reported instead (or, with real pointers, the kernel ran over a wrapped total)
    ffi, lib = C.ffi, C.lib
    sizes = ffi.new("int64_t[]", [2**62, 2**62])
    col = ffi.new("float *[]", [ffi.NULL, ffi.NULL])
    assert lib.fd_scale_f32(2, sizes, col, 0.5) == FD_ERR_SIZE
    big = 2**32  # 2**96 elements: wraps to 0 in int64
    assert lib.fd_matmul_fwd_f32(1, 1, big, big, big, ffi.NULL, ffi.NULL, ffi.NULL,
                                 ffi.NULL) == FD_ERR_SIZE


# ------------------------------------------------------------------------------ alignment
def _misaligned(n, dtype):
    """An n-element array of dtype one byte off its alignment (what np.frombuffer(offset=1) gives)."""
    itemsize = np.dtype(dtype).itemsize
    a = np.frombuffer(bytearray(n * itemsize + 1), dtype=dtype, count=n, offset=1)
    assert not a.flags.aligned
    return a


@pytest.mark.parametrize("dtype,ct,sfx", [(np.float32, "float", "f32"), (np.float64, "double", "f64")])
def test_misaligned_arrays_get_an_error_from_c(C, dtype, ct, sfx):
    # before: FD_OK, and UBSan reported misaligned loads/stores in every kernel
    ffi, lib = C.ffi, C.lib
    n = 8
    mis = _misaligned(n, dtype)
    ok = np.ones(n, dtype)
    ptr = lambda a: ffi.cast(ct + " *", a.ctypes.data)  # noqa: E731
    sizes = ffi.new("int64_t[]", [n])
    out = ffi.new("double *")
    assert lib.fd_strerror(FD_ERR_ALIGN) != lib.fd_strerror(999)
    assert b"align" in ffi.string(lib.fd_strerror(FD_ERR_ALIGN))
    f = getattr(lib, f"fd_scale_{sfx}")
    assert f(1, sizes, ffi.new(ct + " *[]", [ptr(mis)]), 0.5) == FD_ERR_ALIGN
    f = getattr(lib, f"fd_norm_pow_sum_{sfx}")
    assert f(1, sizes, ffi.new(ct + " *[]", [ptr(mis)]), 2.0, out) == FD_ERR_ALIGN
    f = getattr(lib, f"fd_adam_{sfx}")
    cols = [ffi.new(ct + " *[]", [ptr(a)]) for a in (ok, mis, ok)]
    assert f(1, sizes, *cols, ffi.NULL, ffi.new(ct + " *[]", [ptr(ok)]), 0.9, 0.999, 1e-8, 0.0, 1.0,
             1e-3, 1.0, 0, 0) == FD_ERR_ALIGN
    f = getattr(lib, f"fd_matmul_fwd_{sfx}")
    assert f(1, 1, 2, 2, 2, ptr(ok), ptr(mis), ptr(ok), ffi.NULL) == FD_ERR_ALIGN
    f = getattr(lib, f"fd_act_fwd_{sfx}")
    assert f(n, ptr(mis), ptr(ok), 1) == FD_ERR_ALIGN
    np.testing.assert_array_equal(ok, 1)
    assert not mis.any()


# ------------------------------------------------------------------------------ threads
def test_set_num_threads_is_bounded(C, c_settings):
    # before: accepted, and a large enough n made libgomp end the process ("Thread creation failed")
    assert C.max_threads() == 1024
    with pytest.raises(ValueError, match="1000000"):
        C.set_num_threads(1_000_000)
    with pytest.raises(ValueError, match="1025"):
        C.set_num_threads(1025)
    assert C.lib.fd_set_num_threads(1025) == FD_ERR_ARG
    C.set_num_threads(2)
    assert C.get_num_threads() == (2 if C.describe()["openmp"] else 1)


# ------------------------------------------------------------------------------ fork
_FORK_SCRIPT = textwrap.dedent(r"""
    import sys
    import numpy as np
    import fastdescent as fd
    from _subproc import run_child

    C = fd.get_backend("c")
    N = 1 << 17

    def step(p, m, v, g):
        tab = C.Table.from_columns(np.dtype(np.float32), {"param": [p], "exp_avg": [m],
                                                        "exp_avg_sq": [v], "grad": [g]})
        C.KERNELS["adam"](tab, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay=1.0,
                          step_size=1e-3, bias_correction2_sqrt=0.0316, amsgrad=0, maximize=0)

    rng = np.random.default_rng(0)
    g = rng.standard_normal(N).astype(np.float32)
    p0 = rng.standard_normal(N).astype(np.float32)

    def two_steps():
        p, m, v = p0.copy(), np.zeros(N, np.float32), np.zeros(N, np.float32)
        step(p, m, v, g)
        step(p, m, v, g)
        return p

    def child_work():
        assert np.array_equal(two_steps(), expected)
        assert C.get_num_threads() == 1 or how == "spawn"
        # the GEMM engine too
        x = np.ones((64, 64), np.float32)
        y = np.empty((1, 64, 64), np.float32)
        C.KERNELS["matmul_fwd"](y, x.reshape(1, 64, 64), x.reshape(1, 64, 64), None)
        assert (y == 64).all()

    def mp_child():
        global expected, how
        how = sys.argv[1]
        expected = np.load(sys.argv[2])
        child_work()

    if __name__ == "__main__":
        how, path = sys.argv[1], sys.argv[2]
        C.set_num_threads(1)
        expected = two_steps()
        np.save(path, expected)
        C.set_num_threads(4)
        C.set_parallel_grain(1)  # every kernel uses the OpenMP team
        assert np.array_equal(two_steps(), expected)  # the parent runs threaded steps first
        assert run_child(how, child_work if how == "os.fork" else mp_child, timeout=60) == 0
        assert np.array_equal(two_steps(), expected)  # the parent still works, threaded
        assert C.get_num_threads() == 4 or not C.describe()["openmp"]
        print("FORK-OK")
""")


@pytest.mark.parametrize("how", ["os.fork", "fork", "spawn"])
def test_kernels_after_fork_finish_with_correct_results(C, tmp_path, how):
    # before: with "os.fork" and "fork" the child hung forever in libgomp (killed by the timeout)
    if how != "spawn" and not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(
        os.path.dirname(fd.__file__)), os.environ.get("PYTHONPATH")]))}
    out = run_script(tmp_path, _FORK_SCRIPT, how, tmp_path / "expected.npy", env=env, timeout=90,
                     name="fork_check.py", what=f"{how}: the script (a kernel in the child hung?)")
    assert "FORK-OK" in out, out


# ------------------------------------------------------------------------------ build
def test_build_script_is_not_in_the_package():
    # before: fastdescent/_cffi_build.py shipped, and importing it raised FileNotFoundError
    assert importlib.util.find_spec("fastdescent._cffi_build") is None
    assert not os.path.exists(os.path.join(os.path.dirname(fd.__file__), "_cffi_build.py"))
    if os.path.isdir(os.path.join(ROOT, "csrc")):
        assert os.path.exists(os.path.join(ROOT, "csrc", "cffi_build.py"))


def test_build_error_text_is_shown_by_info(tmp_path):
    """A package whose extension did not build, with the build's error file: fd.info() shows it."""
    # before: the reason was only "No module named 'fastdescent._fastdescent_c'"
    pkg = tmp_path / "fastdescent"
    shutil.copytree(os.path.dirname(fd.__file__), pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "_fastdescent_c*"))
    (pkg / "_c_build_error.txt").write_text(
        "building fastdescent._fastdescent_c failed\n"
        "csrc/fd_adam.c:12:3: error: unknown type name 'flaot'\n")
    # (None in sys.modules: the extension is missing whatever finders an editable install added)
    code = ("import sys, warnings; sys.modules['fastdescent._fastdescent_c'] = None; "
            "import numpy as np, fastdescent as fd; "
            "assert fd.__file__.startswith(sys.argv[1]), fd.__file__\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    o = fd.SGD([np.zeros(2)], lr=0.1); o = fd.SGD([np.zeros(2)], lr=0.1)\n"
            "n = sum('failed to compile' in str(x.message) for x in w)\n"
            "assert n == 1 and o.backend == 'numba', (n, o.backend)  # warned once: 'auto' fell back\n"
            "r = fd.info()['backends']['c']['reason']; print(r)\n"
            "assert 'flaot' in r and 'fd_adam.c:12:3' in r, r")
    env = {k: v for k, v in os.environ.items() if k != "FASTDESCENT_C_EXTENSION"}
    env.update(PYTHONPATH=str(tmp_path), FASTDESCENT_REQUIRE_BACKENDS="")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_extension_override_env_var(C, tmp_path):
    """FASTDESCENT_C_EXTENSION names the extension file to load (the sanitizer stage's hook)."""
    import fastdescent._fastdescent_c as ext

    env = {**os.environ, "FASTDESCENT_C_EXTENSION": ext.__file__}
    code = ("import fastdescent as fd, fastdescent.backends.c_cffi._lib as L, sys; "
            "assert L.IMPORT_ERROR is None, L.IMPORT_ERROR; "
            "assert sys.modules['fastdescent._fastdescent_c'].__file__ == sys.argv[1]; print('ok')")
    r = subprocess.run([sys.executable, "-c", code, ext.__file__], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    env["FASTDESCENT_C_EXTENSION"] = str(tmp_path / "missing.so")
    code = ("import fastdescent as fd; r = fd.info()['backends']['c']['reason']; "
            "assert 'missing.so' in r, r")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**env, "FASTDESCENT_REQUIRE_BACKENDS": ""}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
