"""One MNIST-shaped epoch (784-128-10, 60,000 synthetic rows, batch 128) of fastdescent and of torch,
built exactly as ``fastdescent bench --ops mnist`` builds them (``fastdescent.bench.mlp.build``), timed
interleaved in one process at one thread count: the ratio the bench target speaks of, without the
bench's other contenders (under load, torch's own spinning threads can take a 2-thread run's second
core for seconds; one thread is the steadier comparison on a shared machine).

    python benchmarks/mnist_vs_torch.py --threads 1 --optimizer adam --rounds 5

``--flush-denormal fastdescent`` turns on fastdescent's opt-in flush of subnormal floats
(``fd.set_flush_denormal(True)``; the Adam state of this synthetic problem goes subnormal after the
first epoch); ``both`` also calls ``torch.set_flush_denormal(True)`` (which sets the calling thread's
floating-point mode for good, so it applies to everything on that thread, fastdescent included).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="threads of both (default 1)")
    ap.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    ap.add_argument("--backend", choices=("c", "numba", "numpy"), default="c")
    ap.add_argument("--rounds", type=int, default=5, help="epochs each (median; default 5)")
    ap.add_argument("--flush-denormal", choices=("off", "fastdescent", "both"), default="off",
                    help="flush subnormal floats: in fastdescent's c kernels, or in both (default off)")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        ap.error("--threads and --rounds must be >= 1")

    import torch

    import fastdescent as fd
    from fastdescent.bench import cases as C
    from fastdescent.bench.mlp import build

    fd.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    if args.flush_denormal != "off" and not fd.set_flush_denormal(True):
        ap.error("--flush-denormal: fastdescent cannot flush subnormals here")
    if args.flush_denormal == "both" and not torch.set_flush_denormal(True):
        ap.error("--flush-denormal both: torch cannot flush subnormals here")
    cases = [c for c in C.mnist_cases((args.backend, "torch")) if c.optimizer == args.optimizer]
    insts = {c.impl: build(c) for c in cases}
    for inst in insts.values():  # warm-up epoch
        inst.step()
    times = {k: [] for k in insts}
    order = list(insts.items())
    for r in range(args.rounds):
        for k, inst in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            inst.step()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{args.optimizer}, {args.threads} thread(s), flush {args.flush_denormal}: "
          + "  ".join(f"{k} {v:.3f} s" for k, v in med.items())
          + f"  {args.backend}/torch {med[args.backend] / med['torch']:.2f}  load {os.getloadavg()[0]:.2f}")
    return med


if __name__ == "__main__":
    main()
