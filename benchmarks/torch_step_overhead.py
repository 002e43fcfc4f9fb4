"""CPU time of one ``fastdescent.torch`` step next to the NumPy-facing class's on the same tensors, in
the step's own thread: what the torch adapter costs, measured so that other processes on the machine
change it little (``time.thread_time``, minimum over rounds; one kernel thread, so the kernel's work
is in this thread too).

Two measurements per model (the shapes of ``fastdescent.bench.torch_dropin``):

- ``no-op kernels``: every kernel of the C backend replaced by a function that only checks its table,
  so the step is the adapter's Python and torch calls alone (warm caches);
- ``real kernels``: the step as it runs, the adapter's checks then reading tensor objects that the
  kernel's streaming has pushed out of the caches.

``adapter`` is fdt-static minus fd-raw: the same tensors, one persistent set of gradients each
(fdt-fresh: new ``.grad`` tensors from two sets by turns before each step, the assignment included).

Run: ``python benchmarks/torch_step_overhead.py [--models linear50,resnet50] [--op Adam]``.
"""

from __future__ import annotations

import argparse
import time

import torch

import fastdescent as fd
import fastdescent.torch as fdt
from fastdescent.backends import get_backend
from fastdescent.bench.torch_dropin import MODELS


def _min_time(fns, n, rounds):
    """Per call, in us: the minimum over ``rounds`` of the mean thread CPU time of ``n`` calls,
    the functions interleaved."""
    best = {k: float("inf") for k in fns}
    for f in fns.values():
        for _ in range(3):
            f()
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.thread_time()
            for _ in range(n):
                f()
            best[k] = min(best[k], (time.thread_time() - t0) / n * 1e6)
    return best


def _cases(model, op):
    shapes = MODELS[model]()
    gen = torch.Generator().manual_seed(0)
    sets = [[torch.rand(s, generator=gen) for s in shapes] for _ in range(2)]

    def params():
        return [torch.nn.Parameter(torch.rand(s, generator=gen) - 0.5) for s in shapes]

    ps = params()
    static = getattr(fdt, op)(ps, backend="c")
    for p, g in zip(ps, sets[0]):
        p.grad = g
    qs = params()
    fresh = getattr(fdt, op)(qs, backend="c")
    turn = [0]

    def fresh_step():
        gs = sets[turn[0] & 1]
        turn[0] += 1
        for q, g in zip(qs, gs):
            q.grad = None
            q.grad = g
        fresh.step()

    views = [p.detach().numpy() for p in params()]
    raw = getattr(fd, op)(views, backend="c")
    grads = [g.numpy() for g in sets[0]]
    return {"fdt-static": static.step, "fdt-fresh": fresh_step, "fd-raw": lambda: raw.step(grads)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="linear50,resnet50")
    ap.add_argument("--op", default="Adam")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)
    backend = get_backend("c")
    backend.set_num_threads(1)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one thread; {args.op}; thread CPU time per step, "
          f"minimum over {args.rounds} rounds")
    for model in args.models.split(","):
        n = 200 if len(MODELS[model]()) <= 100 and model != "gpt2" else 3
        for label in ("real kernels", "no-op kernels"):
            saved = dict(backend.KERNELS)
            if label == "no-op kernels":
                for name in saved:
                    backend.KERNELS[name] = lambda tab, _name=name, **kw: tab.require(_name)
            try:
                fns = _cases(model, args.op)
                for f in fns.values():  # (a first step builds the plans)
                    f()
                t = _min_time(fns, n if label == "real kernels" else max(n, 200), args.rounds)
            finally:
                backend.KERNELS.clear()
                backend.KERNELS.update(saved)
            print(f"{model:9s} {label:13s}  " + "  ".join(f"{k} {v:9.1f} us" for k, v in t.items())
                  + f"  adapter {t['fdt-static'] - t['fd-raw']:8.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
