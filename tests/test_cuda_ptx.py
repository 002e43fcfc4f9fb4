"""The ``cuda`` backend's kernels compile for real hardware (PTX through NVVM), without a GPU.

The simulator (tests/test_cuda_backend.py) runs the kernels' Python source; it never types or lowers
them. This test does, in a subprocess with the simulator off: every kernel of the backend that walks
a chunk plan (found by its ``plan`` argument) and the helper kernels are compiled to PTX for sm_80
in float32 and float64, and the PTX is checked for what the design relies on (global loads/stores
through the pointer tables, no address or plan load in a walker's element loop, IEEE sqrt, no
float64 arithmetic in float32 element-wise kernels, device functions inlined). It needs NVVM from
a CUDA toolkit (CUDA_HOME, a system or conda toolkit, e.g. ``pip install nvidia-cuda-nvcc-cu12`` and
CUDA_HOME pointing at its ``nvidia/cuda_nvcc`` folder); without one it skips.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import _ptx
import fastdescent

SCRIPT = _ptx.PREAMBLE + textwrap.dedent(r'''
    import inspect
    import importlib, pkgutil
    import fastdescent.backends.numba_cuda as backend
    from fastdescent.backends.numba_cuda import _device, clip, lamb

    A64, F64A = types.int64[::1], types.float64[::1]
    INTS = {"n", "nparts", "ntensors", "mode", "amsgrad", "maximize", "use_decay", "use_wd",
            "use_mom", "nesterov", "first_step", "centered", "dst", "src", "addr", "rectify",
            "from_grad"}

    def signature(kernel, T):
        sig = []
        for name in inspect.signature(kernel.py_func).parameters:
            if name in ("plan", "index", "tfirst", "tcount"):
                sig.append(A64)
            elif name == "partials":  # LAMB's are per chunk and pair, the norm's per block
                sig.append(types.float64[:, ::1] if kernel.py_func.__module__ == lamb.__name__ else F64A)
            elif name == "out":
                sig.append(F64A)
            elif name == "steps":
                sig.append(T[::1])
            elif name == "power" or (name == "lr" and kernel is lamb._lamb_trust):
                sig.append(types.float64)
            elif name in ("s_lo", "s_hi", "t_lo", "t_hi"):
                sig.append(types.uint64)
            elif name in INTS:
                sig.append(types.int64)
            elif re.fullmatch(r"a[a-z]+", name) and name != "alpha":  # column address tables
                sig.append(A64)
            else:
                sig.append(T)
        return tuple(sig)

    # every kernel (not device function) of the backend that walks a chunk plan, found by its
    # ``plan`` argument, and the helpers that do not
    kernels = {}
    for info in pkgutil.iter_modules(backend.__path__):
        mod = importlib.import_module(f"{backend.__name__}.{info.name}")
        for attr, obj in vars(mod).items():
            if getattr(obj, "targetoptions", {}).get("device") is False and \
                    obj.py_func.__module__ == mod.__name__ and \
                    "plan" in inspect.signature(obj.py_func).parameters:
                kernels[attr.strip("_")] = obj
    assert len(kernels) >= 17, sorted(kernels)  # 12 optimizer/element-wise passes, clip's 3, LAMB's 2
    walkers = set(kernels)
    kernels.update(fill_flat=_device._fill_flat, copy_flat=_device._copy_flat,
                   lamb_trust=lamb._lamb_trust)
    F64_MATH = ("reduce_kernel", "noise_kernel", "lamb_moments", "lamb_trust")  # float64 by design
    SQRT = ("adam_kernel", "rmsprop_kernel", "adagrad_kernel", "nadam_kernel", "radam_kernel",
            "adadelta_kernel", "lamb_moments", "lamb_apply")
    failures = []
    for T, suffix in ((types.float32, "f32"), (types.float64, "f64")):
        for name, kernel in kernels.items():
            what = f"{name}_{suffix}"
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature(kernel, T), cc=(8, 0))
            body = ptx[ptx.find(".entry"):]
            stored = "f64" if name == "reduce_kernel" else suffix  # reductions store float64 partials
            if not re.search(r"st\.global\." + stored, body):
                failures.append(f"{what}: no st.global.{stored}")
            if name not in ("fill_flat", "lamb_trust") and not re.search(r"ld\.global\." + suffix, body):
                failures.append(f"{what}: no ld.global.{suffix}")
            if name not in ("reduce_kernel", "noise_kernel") and re.search(r"\bcall", body):
                failures.append(f"{what}: a device function was not inlined")
            if suffix == "f32" and name not in F64_MATH and re.search(r"\.f64\b", body):
                failures.append(f"{what}: float64 arithmetic in a float32 kernel")
            first = re.search(r"ld\.global\." + suffix, body)
            if name in walkers and first and re.search(r"ld\.global\.[us]64", body[first.start():]):
                # the per-chunk loads (plan, address tables) come before the element loop in the
                # PTX's block order; one after the first element load would be inside the loop
                failures.append(f"{what}: a 64-bit (address or plan) load among the element loads")
            if name in SQRT and "sqrt.rn." + suffix not in body:
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
