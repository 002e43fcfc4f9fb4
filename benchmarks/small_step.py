"""Per-step time of a NumPy-facing optimizer on many small arrays, the same gradient list every step:
what the per-step Python and checks cost when the kernel is tiny.

Run: ``python benchmarks/small_step.py [--n 100] [--size 64] [--backend c] [--threads 1]``
(best of ``--repeat`` rounds of ``--number`` steps, after a warm-up).
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

import fastdescent as fd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="number of arrays")
    ap.add_argument("--size", type=int, default=64, help="elements per array")
    ap.add_argument("--backend", default="c")
    ap.add_argument("--optimizer", default="Adam")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--number", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    fd.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal(args.size).astype(np.float32) for _ in range(args.n)]
    gs = [rng.standard_normal(args.size).astype(np.float32) for _ in range(args.n)]
    opt = getattr(fd, args.optimizer)(ps, lr=1e-3, backend=args.backend)
    for _ in range(50):
        opt.step(gs)
    best = min(timeit.repeat(lambda: opt.step(gs), number=args.number, repeat=args.repeat))
    print(f"{args.optimizer} {args.backend}, {args.n} arrays of {args.size}, {args.threads} thread(s): "
          f"{best / args.number * 1e6:.1f} us a step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
