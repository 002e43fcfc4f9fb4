"""GFLOP/s of the ``c`` backend's dense-layer kernels (fwd, bwd_x, bwd_w) on the shapes of the dense
tables in RESULTS.md, f32, at one thread count: a quick before/after check of the GEMM engine (each
kernel's median of 7 rounds of about 50 ms). ``fastdescent bench --ops matmul`` is the full,
peer-compared measurement.

    python benchmarks/gemm_shapes.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SHAPES = [(1, 1, 1024, 1024, 1024), (64, 64, 128, 128, 128), (4096, 4096, 16, 16, 16),
          (1, 1, 4096, 64, 256), (1, 1, 512, 512, 512)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")

    from fastdescent.backends import c_cffi
    from fastdescent.backends.c_cffi import matmul as M

    # (the backend's own setter: fd.set_num_threads reaches backends loaded through the registry,
    # and importing the module directly does not register it)
    c_cffi.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out = {}
    for (B, Bw, m, k, n) in SHAPES:
        x = rng.random((B, m, k), dtype=np.float32)
        w = rng.random((Bw, k, n), dtype=np.float32)
        b = rng.random((Bw, n), dtype=np.float32)
        y = np.empty((B, m, n), np.float32)
        dy = rng.random((B, m, n), dtype=np.float32)
        dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
        kernels = {"fwd": (M.matmul_fwd, (y, x, w, b)), "bwd_x": (M.matmul_bwd_x, (dx, dy, w)),
                   "bwd_w": (M.matmul_bwd_w, (dw, db, x, dy))}
        res = {}
        for name, (f, fargs) in kernels.items():
            f(*fargs)
            t0 = time.perf_counter()
            f(*fargs)
            reps = max(3, int(0.05 / max(time.perf_counter() - t0, 1e-6)))
            ts = []
            for _ in range(7):
                t0 = time.perf_counter()
                for _ in range(reps):
                    f(*fargs)
                ts.append((time.perf_counter() - t0) / reps)
            res[name] = 2 * B * m * k * n / float(np.median(ts)) / 1e9
        out[(B, Bw, m, k, n)] = res
        print(f"{B}x{Bw}x{m}x{k}x{n}: " + "  ".join(f"{k_} {v:6.1f}" for k_, v in res.items()) + " GFLOP/s")
    c_cffi.set_num_threads(0)
    return out


if __name__ == "__main__":
    main()
