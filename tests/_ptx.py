"""The start of a script that compiles CUDA kernels to PTX in a child process (tests/test_cuda_ptx.py,
tests/test_cuda_mixed.py): exits 77 (skip) when NVVM is missing or cannot compile a trivial kernel;
without a GPU it tells numba the device is sm_80 (numba compiles device functions for the current
device's compute capability: there is none here)."""

PREAMBLE = r'''
import re, sys
from numba import cuda, types
from numba.cuda.cudadrv import nvvm
if not nvvm.is_available():
    sys.exit(77)
if not cuda.is_available():
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
'''
