"""The GEMMs of one 784-128-10 training step (batch 128) on the ``c`` backend, each next to torch's
equivalent in the same process: per call, median of 7 rounds of 200 calls.

    python benchmarks/mnist_gemms.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _time(f, calls=200, rounds=7):
    f()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            f()
        out.append((time.perf_counter() - t0) / calls * 1e6)
    return float(np.median(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="threads of both (default 1)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")

    from fastdescent.backends import c_cffi
    from fastdescent.backends.c_cffi import matmul as M

    # (the backend's own setter: fd.set_num_threads reaches backends loaded through the registry,
    # and importing the module directly does not register it)
    c_cffi.set_num_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    R = 128
    x = rng.random((1, R, 784), dtype=np.float32)
    w1 = (rng.standard_normal((1, 784, 128)) * 0.05).astype(np.float32)
    b1 = np.zeros((1, 128), np.float32)
    y1 = np.empty((1, R, 128), np.float32)
    dy1 = rng.standard_normal((1, R, 128)).astype(np.float32)
    dw1, db1 = np.zeros_like(w1), np.zeros_like(b1)
    w2 = rng.standard_normal((1, 128, 10)).astype(np.float32)
    b2 = np.zeros((1, 10), np.float32)
    y2 = np.empty((1, R, 10), np.float32)
    dy2 = rng.standard_normal((1, R, 10)).astype(np.float32)
    dw2, db2, dx2 = np.zeros_like(w2), np.zeros_like(b2), np.zeros((1, R, 128), np.float32)
    peer = {}
    if torch is not None:
        tx, tw1, tdy1, tb1 = (torch.from_numpy(a[0]) for a in (x, w1, dy1, b1))
        peer = {"fwd1": lambda: torch.addmm(tb1, tx, tw1), "bwd_w1": lambda: (tx.t() @ tdy1, tdy1.sum(0))}
    cases = {
        "fwd1": ("x . W1 + b1, 128x784x128", lambda: M.matmul_fwd(y1, x, w1, b1)),
        "bwd_w1": ("dW1 = x^T . dy (+ db1), 784x128x128", lambda: M.matmul_bwd_w(dw1, db1, x, dy1)),
        "fwd2": ("h . W2 + b2, 128x128x10", lambda: M.matmul_fwd(y2, y1, w2, b2)),
        "bwd_w2": ("dW2 = h^T . dy2, 128x10x128", lambda: M.matmul_bwd_w(dw2, db2, y1, dy2)),
        "bwd_x2": ("dh = dy2 . W2^T, 128x128x10", lambda: M.matmul_bwd_x(dx2, dy2, w2)),
    }
    out = {}
    for key, (what, f) in cases.items():
        ours = _time(f)
        line = f"{what:38s} c {ours:8.1f} us"
        if key in peer:
            theirs = _time(peer[key])
            line += f"  torch {theirs:8.1f} us  c/torch {ours / theirs:.2f}"
            out[key] = (ours, theirs)
        else:
            out[key] = (ours, None)
        print(line)
    if hasattr(c_cffi, "gemm_backoff"):
        print(f"threads {args.threads}, back-off {c_cffi.gemm_backoff()}")
    c_cffi.set_num_threads(0)
    return out


if __name__ == "__main__":
    main()
