"""The per-step cost of handing an optimizer NEW gradient arrays (as autograd libraries do), next to
reusing one list: Adam over 100 tensors of 64 x 64, eight gradient sets by turns.

    python benchmarks/fresh_grads.py c      # or numba, numpy

Prints the median (7 rounds of 200 calls) of: the gradient-list check alone (``_check_grads``), a step
with the same list every time, a step with one of eight lists by turns.
"""
import sys
import time

import numpy as np

import fastdescent as fd


def main(backend):
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal(64 * 64).astype(np.float32).reshape(64, 64) for _ in range(100)]
    gsets = [[rng.standard_normal(p.shape).astype(np.float32) for p in ps] for _ in range(8)]
    opt = fd.Adam(ps, lr=1e-3, backend=backend)
    opt.step(gsets[0])
    cases = (("check", lambda k: opt._check_grads(gsets[k % 8])),
             ("step, same list", lambda k: opt.step(gsets[0])),
             ("step, 8 lists by turns", lambda k: opt.step(gsets[k % 8])))
    res = {}
    for name, f in cases:
        rounds = []
        for _ in range(7):
            t = time.perf_counter()
            for k in range(200):
                f(k)
            rounds.append((time.perf_counter() - t) / 200)
        res[name] = float(np.median(rounds)) * 1e6
    print(backend, "  ".join(f"{k}: {v:.0f} us" for k, v in res.items()))
    return res


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "c")
