"""The c backend's build and ABI facts: the header is a valid cffi cdef and matches the compiled
library, status codes and their texts, KernelError, thread and code-path settings, the pointer
tables, the roofline stream, and what happens when the extension is missing.
"""

from __future__ import annotations

import gc
import os
import re
import runpy
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastdescent as fd
from fastdescent._contract import KERNELS as ROWS
from fastdescent.backends._table import TensorTable
from fastdescent.errors import BackendUnavailableError, FastDescentError, KernelError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "csrc", "fastdescent.h")
BUILD_SCRIPT = os.path.join(ROOT, "csrc", "cffi_build.py")
MY_STEMS = ("sgd", "adam", "rmsprop", "adagrad", "nadam", "radam", "adamax", "adadelta", "rprop",
            "clip")


def _cdef_text():
    if not os.path.exists(BUILD_SCRIPT) or not os.path.exists(HEADER):
        pytest.skip("source tree (csrc/, csrc/cffi_build.py) not present")
    return runpy.run_path(BUILD_SCRIPT, run_name="fd_build_test")["read_cdef"](HEADER)


# ------------------------------------------------------------------------------ header / build
def test_header_is_a_cffi_cdef():
    from cffi import FFI

    text = _cdef_text()
    assert "#" not in "".join(line.split("/*")[0] for line in text.splitlines())
    ffi = FFI()
    ffi.cdef(text)  # raises on anything cffi cannot parse
    for row in ROWS.values():
        if row.stem in MY_STEMS:
            for sfx in ("f32", "f64"):
                assert re.search(rf"\bfd_{row.name}_{sfx}\s*\(", text), f"fd_{row.name}_{sfx} missing"
    for name in ("fd_strerror", "fd_version", "fd_build_info", "fd_get_num_threads",
                 "fd_set_num_threads", "fd_cpu_features", "fd_get_simd_path", "fd_set_simd_path",
                 "fd_openmp_version", "fd_set_parallel_grain", "fd_get_parallel_grain",
                 "fd_stream_f32", "fd_stream_f64"):
        assert re.search(rf"\b{name}\s*\(", text), name
    assert "FD_OK" in text and "fd_status" in text


def test_header_marks_the_dense_layer_section_last():
    if not os.path.exists(HEADER):
        pytest.skip("csrc/ not present")
    with open(HEADER) as f:
        text = f.read()
    marker = "/* ---- dense layers (fd_matmul.c, fd_activation.c, fd_loss.c): maintained separately ---- */"
    assert text.count(marker) == 1
    # the optimizer/clipping/stream kernels are all declared before the marker
    tail = re.sub(r"/\*.*?\*/", "", text[text.index(marker):], flags=re.S)
    declared_after = set(re.findall(r"\b(fd_\w+)\s*\(", tail))
    for row in ROWS.values():
        if row.stem in MY_STEMS:
            assert not {f"fd_{row.name}_f32", f"fd_{row.name}_f64"} & declared_after, row.name
    assert not {"fd_stream_f32", "fd_stream_f64"} & declared_after


def test_build_script_does_not_import_the_package():
    if not os.path.exists(BUILD_SCRIPT):
        pytest.skip("source tree not present")
    code = textwrap.dedent(f"""
        import runpy, sys
        g = runpy.run_path({BUILD_SCRIPT!r}, run_name="x")
        assert not any(m == "fastdescent" or m.startswith("fastdescent.") for m in sys.modules), \\
            sorted(m for m in sys.modules if m.startswith("fastdescent"))
        kw = g["ffibuilder"]._assigned_source[3]
        assert kw["optional"] is True
        assert all(s.replace("\\\\", "/").split("/")[-1].startswith("fd_") for s in kw["sources"])
        assert "-O3" in kw["extra_compile_args"] or "/O2" in kw["extra_compile_args"]
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_compiled_library_has_every_header_function(C):
    text = re.sub(r"/\*.*?\*/", "", _cdef_text(), flags=re.S)
    names = set(re.findall(r"\b(fd_\w+)\s*\(", text))
    missing = sorted(n for n in names if not hasattr(C.lib, n))
    assert not missing, f"declared in fastdescent.h but not in the extension: {missing}"


def test_kernels_cover_the_contract_rows(C):
    for row in ROWS.values():
        if row.stem in MY_STEMS:
            assert row.name in C.KERNELS, row.name


# ------------------------------------------------------------------------------ status and errors
def test_strerror_texts(C):
    lib, ffi = C.lib, C.ffi
    texts = {code: ffi.string(lib.fd_strerror(code)).decode() for code in range(0, 6)}
    assert texts[0] == "success"
    assert len(set(texts.values())) == 6
    assert ffi.string(lib.fd_strerror(12345)).decode() == "unknown fastdescent status"
    assert lib.FD_OK == 0 and lib.FD_ERR_NULL == 1 and lib.FD_ERR_SIZE == 2 and lib.FD_ERR_ARG == 3


def test_nonzero_status_raises_kernel_error(C):
    g = [np.ones(5, np.float32)]
    tab = C.Table.from_columns(np.float32, {"grad": g})
    with pytest.raises(KernelError) as ei:
        C.KERNELS["norm_pow_sum"](tab, norm_type=-1.0)
    err = ei.value
    assert err.code == C.lib.FD_ERR_ARG and err.kernel == "norm_pow_sum"
    assert "outside its domain" in str(err)
    assert isinstance(err, FastDescentError) and isinstance(err, RuntimeError)

    # amsgrad without its column: refused before the C call, as on every backend (TensorTable.require;
    # the C library's own FD_ERR_NULL for it is tested in csrc/tests); nothing written
    p = [np.ones(4, np.float64)]
    tab = C.Table.from_columns(np.float64, {"param": p, "grad": [np.ones(4)], "exp_avg": [np.zeros(4)],
                                            "exp_avg_sq": [np.zeros(4)], "max_exp_avg_sq": None})
    with pytest.raises(ValueError, match="adam: the column 'max_exp_avg_sq' is required"):
        C.KERNELS["adam"](tab, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay=1.0,
                          step_size=1e-3, bias_correction2_sqrt=1.0, amsgrad=1, maximize=0)
    assert np.all(p[0] == 1.0)


def test_raw_error_codes(C):
    lib, ffi = C.lib, C.ffi
    sizes = ffi.new("int64_t[]", [-1])
    assert lib.fd_scale_f32(1, sizes, ffi.NULL, 2.0) in (lib.FD_ERR_SIZE, lib.FD_ERR_NULL)
    assert lib.fd_scale_f32(-1, ffi.NULL, ffi.NULL, 2.0) == lib.FD_ERR_SIZE
    assert lib.fd_scale_f32(0, ffi.NULL, ffi.NULL, 2.0) == lib.FD_OK
    out = ffi.new("double *")
    assert lib.fd_norm_pow_sum_f64(0, ffi.NULL, ffi.NULL, float("nan"), out) == lib.FD_ERR_ARG
    assert lib.fd_stream_f32(-1, 0, ffi.NULL, 0, ffi.NULL) == lib.FD_ERR_SIZE


# ------------------------------------------------------------------------------ settings
def test_thread_count_get_set(C, c_settings):
    default = C.get_num_threads()
    assert default >= 1
    C.set_num_threads(1)
    assert C.get_num_threads() == 1
    C.set_num_threads(3)
    assert C.get_num_threads() == (3 if C.describe()["openmp"] else 1)
    C.set_num_threads(0)
    assert C.get_num_threads() == default
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError):
            C.set_num_threads(bad)
    assert C.lib.fd_set_num_threads(-2) == C.lib.FD_ERR_ARG


def test_parallel_grain_get_set(C, c_settings):
    assert C.get_parallel_grain() == 0
    C.set_parallel_grain(4096)
    assert C.get_parallel_grain() == 4096
    C.set_parallel_grain(0)
    assert C.get_parallel_grain() == 0
    with pytest.raises(ValueError):
        C.set_parallel_grain(-5)
    assert C.lib.fd_set_parallel_grain(-1) == C.lib.FD_ERR_ARG


def test_simd_path_switch(C, c_settings):
    best = C.get_simd_path()
    C.set_simd_path("generic")
    assert C.get_simd_path() == "generic"
    C.set_simd_path("auto")
    assert C.get_simd_path() == best
    if best == "generic":
        with pytest.raises(KernelError):
            C.set_simd_path("avx2-fma")
    with pytest.raises(ValueError):
        C.set_simd_path("sse9")


def test_describe_and_info(C):
    d = C.describe()
    for key in ("version", "build", "threads", "parallel_grain", "openmp", "cpu_features",
                "simd_path", "avx2"):
        assert key in d
    assert d["version"] == fd.__version__
    assert d["simd_path"] in ("generic", "avx2-fma")
    if d["avx2"]:
        assert {"avx2", "fma"} <= set(d["cpu_features"])
    info = fd.info()["backends"]["c"]
    assert info["available"] and info["reason"] is None and info["version"] == d["version"]


# ------------------------------------------------------------------------------ tables
def test_table_packs_addresses_and_keeps_them_alive(C):
    arrays = [np.arange(n, dtype=np.float32) for n in (3, 0, 7)]
    tab = C.Table(np.float32, [a.size for a in arrays])
    tab.set("grad", arrays)  # addresses computed by the table
    addrs = np.array([a.__array_interface__["data"][0] for a in arrays], dtype=np.int64)
    tab.set("param", arrays, addrs.copy())  # addresses given by the caller, copy dropped at once
    gc.collect()
    for name in ("grad", "param"):
        got = [int(C.ffi.cast("intptr_t", tab.packed[name][i])) for i in range(3)]
        assert got == addrs.tolist()
    assert list(tab.c_sizes) == [3, 0, 7]
    tab.set("exp_avg", None)
    assert tab.packed["exp_avg"] is None
    with pytest.raises(TypeError):
        C.Table(np.int32, [1])


def test_foreign_table_is_adopted(C):
    g = [np.array([3.0, -4.0]), np.array([12.0])]
    tab = TensorTable.from_columns(np.float64, {"grad": g})
    assert C.KERNELS["norm_pow_sum"](tab, norm_type=2.0) == 169.0
    C.KERNELS["scale"](tab, factor=0.5)
    assert g[0].tolist() == [1.5, -2.0]


def test_kernels_release_nothing_on_empty_tables(C):
    tab = C.Table(np.float32, [])
    for name in ("param", "grad", "exp_avg", "exp_avg_sq"):
        tab.set(name, [])
    tab.set("max_exp_avg_sq", None)
    C.KERNELS["adam"](tab, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay=1.0,
                      step_size=1e-3, bias_correction2_sqrt=1.0, amsgrad=0, maximize=0)
    assert C.KERNELS["norm_pow_sum"](tab, norm_type=float("inf")) == 0.0
    assert C.KERNELS["all_finite"](tab) is True


# ------------------------------------------------------------------------------ roofline stream
def test_stream_helper(C):
    from fastdescent.backends.c_cffi.stream import prepare_stream, stream

    n = 100_003
    p = np.arange(n, dtype=np.float32)
    g = np.ones(n, np.float32)
    m = np.full(n, 2.0, np.float32)
    v = np.full(n, 3.0, np.float32)
    stream([p, m, v], [p, g, m, v])  # in place, Adam's traffic
    want = np.arange(n, dtype=np.float32) + 6.0
    for a in (p, m, v):
        np.testing.assert_array_equal(a, want)
    run = prepare_stream([m], [g])
    run()
    np.testing.assert_array_equal(m, g)
    d = np.zeros(5)
    stream([d], [np.arange(5.0), np.arange(5.0)])
    assert d.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    with pytest.raises(ValueError):
        stream([np.zeros(3, np.float32)], [np.zeros(4, np.float32)])
    with pytest.raises(TypeError):
        stream([np.zeros(3, np.int32)], [])
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        stream([ro], [np.zeros(3, np.float32)])


# ------------------------------------------------------------------------------ missing extension
def test_missing_extension_leaves_c_unavailable_with_its_cause():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "fastdescent._fastdescent_c":
                    raise ImportError("simulated: extension not built")
        sys.meta_path.insert(0, Block())
        import numpy as np
        import fastdescent as fd
        from fastdescent import backends
        reason = backends.backend_status()["c"]
        assert reason is not None and "simulated: extension not built" in reason, reason
        try:
            fd.get_backend("c")
        except fd.BackendUnavailableError as exc:
            assert isinstance(exc.__cause__, ImportError)
        else:
            raise AssertionError("c loaded without its extension")
        assert "c" not in fd.available_backends()
        assert fd.info()["backends"]["c"]["available"] is False
        w = np.ones(3)
        fd.SGD([w], lr=0.5, backend="numpy").step([np.ones(3)])
        assert w.tolist() == [0.5, 0.5, 0.5]
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "FASTDESCENT_BACKEND": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_backend_unavailable_error_type():
    assert issubclass(BackendUnavailableError, FastDescentError)
