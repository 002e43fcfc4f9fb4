"""Where the first 8-bit-state Adam step stalls on a GPU, if it does (an H200 run of 2026-12-04 never
returned from it at 2^26 parameters).

Prints the Numba / numba-cuda and NVVM versions, then for growing sizes times the first step (the
kernel's compilation is in the first one) and the synchronisation after it, separately. A stack dump
of every thread is printed every 25 s while it runs, so a stall shows where it is: inside numba's
compilation (NVVM, inlining: a numba-cuda / NVVM version problem, at any size) or in the
synchronisation at the large size only (the kernel). Bound it from outside: ``timeout -k 5 100``.

Run from the repository root on the GPU machine: ``python3 benchmarks/gpu_int8_probe.py``.
"""

from __future__ import annotations

import faulthandler
import sys
import time

import numpy as np


def main():
    faulthandler.dump_traceback_later(25, repeat=True)
    import numba
    from numba import cuda

    print("numba", numba.__version__, "cuda module", cuda.__file__, "runtime",
          cuda.runtime.get_version(), flush=True)
    try:
        from numba.cuda.cudadrv import nvvm

        print("nvvm", nvvm.NVVM().get_version(), flush=True)
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        print("nvvm: unknown:", exc, flush=True)
    import fastdescent as fd
    from fastdescent.backends.numba_cuda import mixed

    for n in (300, 1 << 16, 1 << 20, 1 << 26):
        p = [cuda.to_device(np.ones(n, np.float32))]
        g = [cuda.to_device(np.full(n, 1e-2, np.float32))]
        opt = fd.Adam(p, backend="cuda", lr=1e-3, state_dtype="int8")
        t = time.perf_counter()
        opt.step(g)
        t1 = time.perf_counter()
        cuda.synchronize()
        t2 = time.perf_counter()
        opt.step(g)
        cuda.synchronize()
        t3 = time.perf_counter()
        print(f"n={n}: first step {t1 - t:.3f} s (launch), sync {t2 - t1:.3f} s; second step "
              f"{(t3 - t2) * 1e3:.3f} ms; kernel overloads {len(mixed._mixed_kernel.overloads)}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
