"""What the caller's MXCSR flags cost a step: float32 Adam and momentum SGD on the `c` backend over
tables of many small clean tensors, called with the denormal (DE) flag clear and set in the calling
thread's MXCSR (set as it is after any NumPy operation or step that met a subnormal: NumPy clears
the other flags before its ufuncs, not DE). The subnormal routes (csrc/fd_subnormal.h) read DE/UE
after each plain stretch; a flag set on entry must not make every tensor segment pay for it.

    python benchmarks/sn_caller_flags.py [--rounds 7] [--threads 1]

Prints the median per-call time (rounds of 100 calls, interleaved clean/DE) and the ratio. x86-64
with glibc only (MXCSR is reached through fegetenv/fesetenv).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import platform
import time

import numpy as np

import fastdescent as fd


class Mxcsr:
    """The calling thread's MXCSR through glibc's fenv_t (its last word on x86-64)."""

    def __init__(self):
        self.libm = ctypes.CDLL(ctypes.util.find_library("m"))
        self.env = (ctypes.c_ubyte * 32)()

    def get(self):
        self.libm.fegetenv(self.env)
        return int.from_bytes(bytes(self.env[28:32]), "little")

    def set(self, x):
        self.libm.fegetenv(self.env)
        self.env[28:32] = list(int(x).to_bytes(4, "little"))
        self.libm.fesetenv(self.env)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if platform.machine() not in ("x86_64", "AMD64") or platform.libc_ver()[0] != "glibc":
        raise SystemExit("x86-64 with glibc only")
    C = fd.get_backend("c")
    ffi, lib = C.ffi, C.lib
    fd.set_num_threads(args.threads)
    csr = Mxcsr()
    base = csr.get() & ~0x3F
    for ntens, size in [(10000, 8), (2000, 100)]:
        cols = {k: np.full(ntens * size, x, np.float32)
                for k, x in dict(p=1.0, m=1e-3, v=1e-6, g=1e-3).items()}
        sizes = ffi.new("int64_t[]", [size] * ntens)
        ptr = {k: ffi.new("float *[]", [ffi.cast("float *", a[i * size:].ctypes.data)
                                        for i in range(ntens)]) for k, a in cols.items()}
        g = ffi.cast("const float *const *", ptr["g"])
        head = (ntens, sizes, ptr["p"], ptr["m"])
        calls = {
            "adam": lambda a=head, v=ptr["v"], g=g: lib.fd_adam_f32(
                *a, v, ffi.NULL, g, 0.9, 0.999, 1e-8, 0.0, 1.0, 1e-3, 1.0, 0, 0),
            "sgd": lambda a=head, g=g: lib.fd_sgd_f32(*a, g, 1e-3, 0.9, 0.0, 0.0, 0, 0, 0),
        }
        for name, call in calls.items():
            call()
            t = {0: [], 2: []}
            for _ in range(args.rounds):
                for flag in (0, 2):  # DE is bit 1
                    csr.set(base | flag)
                    t0 = time.perf_counter()
                    for _ in range(100):
                        call()
                    t[flag].append((time.perf_counter() - t0) / 100)
            csr.set(base)
            clean, de = np.median(t[0]) * 1e6, np.median(t[2]) * 1e6
            print(f"{name} {ntens} x {size}, {args.threads} thread(s): DE clear {clean:.0f} us, "
                  f"DE set {de:.0f} us ({de / clean:.2f}x)")


if __name__ == "__main__":
    main()
