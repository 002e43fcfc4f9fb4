"""The ``cuda`` backend's kernels compile for real hardware (PTX through NVVM), without a GPU.

The simulator (tests/test_cuda_backend.py) runs the kernels' Python source; it never types or lowers
them. This test does, in a subprocess with the simulator off: every kernel of the backend is
compiled to PTX for sm_80 in float32 and float64, and the PTX is checked for what the design relies
on (global loads/stores through the pointer tables, IEEE sqrt, no float64 arithmetic in float32
element-wise kernels, device functions inlined). It needs NVVM from a CUDA toolkit (CUDA_HOME, a
system or conda toolkit, e.g. ``pip install nvidia-cuda-nvcc-cu12`` and CUDA_HOME pointing at its
``nvidia/cuda_nvcc`` folder); without one it skips.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import fastdescent

SCRIPT = textwrap.dedent(r'''
    import inspect, re, sys
    from numba import cuda, types
    from numba.cuda.cudadrv import nvvm
    if not nvvm.is_available():
        sys.exit(77)
    if not cuda.is_available():
        # numba compiles device functions for the current device's compute capability: none here
        import numba.cuda.dispatcher as _dispatcher

        class _Device:
            compute_capability = (8, 0)

        _dispatcher.get_current_device = lambda: _Device()

    def _probe(a):
        a[0] = 1.0

    try:  # a trivial kernel: if this does not compile, the toolchain (not fastdescent) is missing
        cuda.compile_ptx(_probe, (types.float32[::1],), cc=(8, 0))
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}"[:500])
        sys.exit(77)
    from fastdescent.backends.numba_cuda import (_device, adadelta, adagrad, adam, adamax, clip, nadam,
                                                 radam, rmsprop, rprop, sgd)

    A64, A32, F64A = types.int64[::1], types.int32[::1], types.float64[::1]
    INTS = {"n", "nchunks", "chunk", "mode", "nparts", "amsgrad", "maximize", "use_decay", "use_wd",
            "use_mom", "nesterov", "first_step", "centered", "dst", "src", "addr", "rectify",
            "from_grad"}

    def signature(kernel, T, multi):
        sig = []
        for name in inspect.signature(kernel.py_func).parameters:
            if name in ("sizes", "coffs"):
                sig.append(A64)
            elif name == "ctens":
                sig.append(A32)
            elif name in ("partials", "out"):
                sig.append(F64A)
            elif name == "power":
                sig.append(types.float64)
            elif name in INTS:
                sig.append(types.int64)
            elif re.fullmatch(r"a[a-z]+", name) and name != "alpha":  # column addresses
                sig.append(A64 if multi else types.int64)
            else:
                sig.append(T)
        return tuple(sig)

    kernels = {
        "sgd": (sgd._sgd_flat, sgd._sgd_multi), "adam": (adam._adam_flat, adam._adam_multi),
        "rmsprop": (rmsprop._rmsprop_flat, rmsprop._rmsprop_multi),
        "adagrad": (adagrad._adagrad_flat, adagrad._adagrad_multi),
        "rprop": (rprop._rprop_flat, rprop._rprop_multi),
        "nadam": (nadam._nadam_flat, nadam._nadam_multi), "radam": (radam._radam_flat, radam._radam_multi),
        "adamax": (adamax._adamax_flat, adamax._adamax_multi),
        "adadelta": (adadelta._adadelta_flat, adadelta._adadelta_multi),
        "scale": (clip._scale_flat, clip._scale_multi), "reduce": (clip._reduce_flat, clip._reduce_multi),
        "fill": (_device._fill_flat, None), "copy": (_device._copy_flat, None),
    }
    failures = []
    for T, suffix in ((types.float32, "f32"), (types.float64, "f64")):
        for name, pair in kernels.items():
            for multi, kernel in enumerate(pair):
                if kernel is None:
                    continue
                what = f"{name}_{'multi' if multi else 'flat'}_{suffix}"
                ptx, _ = cuda.compile_ptx(kernel.py_func, signature(kernel, T, multi), cc=(8, 0))
                body = ptx[ptx.find(".entry"):]
                stored = "f64" if name == "reduce" else suffix  # reductions store float64 partials
                if not re.search(r"st\.global\." + stored, body):
                    failures.append(f"{what}: no st.global.{stored}")
                if name not in ("fill",) and not re.search(r"ld\.global\." + suffix, body):
                    failures.append(f"{what}: no ld.global.{suffix}")
                if name != "reduce":
                    if re.search(r"\bcall", body):
                        failures.append(f"{what}: a device function was not inlined")
                    if suffix == "f32" and re.search(r"\.f64\b", body):
                        failures.append(f"{what}: float64 arithmetic in a float32 kernel")
                if name in ("adam", "rmsprop", "adagrad", "nadam", "radam", "adadelta") \
                        and "sqrt.rn." + suffix not in body:
                    failures.append(f"{what}: no IEEE sqrt.rn.{suffix}")
                print(what, "ok")
    ptx, _ = cuda.compile_ptx(clip._reduce_final.py_func, (F64A, types.int64, types.int64, F64A),
                              cc=(8, 0))
    print("reduce_final ok")
    if failures:
        print("\n".join(failures))
        sys.exit(1)
''')


def test_kernels_compile_to_ptx_for_sm80():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastdescent.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode == 77:
        pytest.skip("no usable CUDA compiler toolchain (NVVM/NVRTC) here: cannot compile the cuda "
                    f"kernels to PTX ({proc.stdout.strip()[-300:] or 'NVVM not found'})")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
