"""Epoch time of ``fd.fit`` at several thread counts, quiet or with one core kept busy.

The thread counts are interleaved epoch by epoch in one process (alternating order), so each sees the
same machine; the medians are printed with the load average and, on the ``c`` backend, the dense-layer
GEMMs' busy-machine back-off counters (``fastdescent.backends.c_cffi.gemm_backoff()``). ``--busy``
starts ``python -c "while True: pass"`` for the run (and stops it afterwards), which is how the
"one core busy" figures in benchmarks/RESULTS.md were taken.

    python benchmarks/threads_busy.py mnist --rows 8000 --rounds 11            # 784-128-10, batch 128
    python benchmarks/threads_busy.py mnist --rows 8000 --rounds 11 --busy
    python benchmarks/threads_busy.py digits --rounds 21 --busy               # 64-256-10, batch 64

The model keeps training from epoch to epoch (as in a real run): later epochs are the converged
regime, where small gradients make subnormal floats in the optimizer state (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def _parse_threads(text):
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        out = []
    if not out or any(t < 1 for t in out):
        raise argparse.ArgumentTypeError(
            f"--threads must be a comma-separated list of ints >= 1, got {text!r}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", choices=("mnist", "digits"))
    ap.add_argument("--rows", type=int, default=8000, help="training rows of the mnist case (default 8000)")
    ap.add_argument("--rounds", type=int, default=11, help="epochs per thread count (median; default 11)")
    ap.add_argument("--threads", type=_parse_threads, default=[1, 2], help="thread counts, e.g. 1,2")
    ap.add_argument("--backend", choices=("c", "numba"), default="c")
    ap.add_argument("--busy", action="store_true", help="keep one core busy with another process")
    ap.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                    help="Adam, or momentum SGD (default adam)")
    args = ap.parse_args(argv)
    if args.rows < 1 or args.rounds < 1:
        ap.error("--rows and --rounds must be >= 1")

    import fastdescent as fd
    from fastdescent import nn
    from fastdescent.bench import cases as C
    from fastdescent.bench.mlp import fd_model

    if args.case == "mnist":
        X, y, _, _ = C.mlp_data("mnist-shaped", C.SEED)
        X, y = X[:args.rows], y[:args.rows]
        sizes, batch = C.MNIST_SIZES, C.MNIST_BATCH
    else:
        X, y, _, _ = C.mlp_data("digits", C.SEED)
        sizes, batch = (64, 256, 10), C.MLP_BATCH
    model, opt = fd_model(args.backend, sizes, C.SEED, args.optimizer)

    def epoch(seed):
        nn.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=1, batch_size=batch, seed=seed,
               progress=False)

    busy = None
    if args.busy:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        times = {n: [] for n in args.threads}
        for n in args.threads:  # warm-up (compilation on numba)
            fd.set_num_threads(n)
            epoch(0)
        for r in range(args.rounds):
            for n in (args.threads if r % 2 == 0 else args.threads[::-1]):
                fd.set_num_threads(n)
                t0 = time.perf_counter()
                epoch(r + 1)
                times[n].append(time.perf_counter() - t0)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        fd.set_num_threads(0)
    med = {n: float(np.median(v)) for n, v in times.items()}
    line = (f"{args.case} rows={len(X)} {args.backend}{' busy' if args.busy else ''}: "
            + "  ".join(f"{n}t {med[n] * 1e3:.2f} ms" for n in args.threads))
    if len(args.threads) > 1:
        first, last = args.threads[0], args.threads[-1]
        line += f"  ({last}t/{first}t {med[last] / med[first]:.2f})"
    line += f"  load {os.getloadavg()[0]:.2f}"
    if args.backend == "c":
        from fastdescent.backends import c_cffi

        if hasattr(c_cffi, "gemm_backoff"):  # (absent from builds before the back-off)
            line += f"  back-off {c_cffi.gemm_backoff()}"
    print(line)
    return med


if __name__ == "__main__":
    main()
