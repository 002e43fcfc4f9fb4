"""Side-by-side timings of the numba backend (run: ``python -m fastdescent.backends.numba_cpu._bench``).

Not imported by the library. Measures, in one process, interleaving the contenders round by round and
quoting medians (the machine may be shared and noisy):

1. Adam fp32 over one tensor of 2^25 elements through ``fd.Adam(..., backend="numba")`` with a
   persistent gradient, against ``torch.optim.Adam(fused=True)`` and against a streaming Numba kernel
   that reads 4 and writes 3 float32 arrays of the same length (28 B/param): the memory roofline.
2. RMSprop fp32 over 2^25 elements against ``torch.optim.RMSprop(foreach=True)`` and a 3-read/2-write
   streaming kernel (20 B/param).
3. Adam fp32 over 1000 tensors of 64 elements through ``fd.Adam`` (one kernel call per step), against
   torch's fused and foreach Adam over the same tensors.

Every fastdescent contender is first checked against the NumPy backend. torch is optional.
Options: ``--log2n 25`` (big tensor size), ``--rounds 11``, ``--tiny 1000x64``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _stream_kernels():
    import numba
    from numba import prange

    from ._config import JIT_OPTIONS

    @numba.njit(parallel=True, **JIT_OPTIONS)
    def stream_4r3w(p, g, m, v, s):
        for i in prange(p.shape[0]):
            gi = g[i] * s
            p[i] = p[i] + gi
            m[i] = m[i] + gi
            v[i] = v[i] + gi

    @numba.njit(parallel=True, **JIT_OPTIONS)
    def stream_3r2w(p, g, v, s):
        for i in prange(p.shape[0]):
            gi = g[i] * s
            p[i] = p[i] + gi
            v[i] = v[i] + gi

    return stream_4r3w, stream_3r2w


def _race(fns, rounds, target_s=0.02, budget_s=15.0):
    """Median seconds per call of each fn, interleaved round by round after warm-up calls.

    Each round times ``reps`` back-to-back calls of a contender, ``reps`` chosen from the warm-up so
    that a round lasts about ``target_s`` (at least one call). A contender that has used ``budget_s``
    seconds sits out the remaining rounds (its median is over the rounds it ran): on an
    oversubscribed machine torch's per-tensor parallel regions can take seconds per step.
    """
    reps = {}
    for k, f in fns.items():
        f()
        t = time.perf_counter()
        f()
        reps[k] = max(1, min(1000, int(target_s / max(time.perf_counter() - t, 1e-7))))
    res = {k: [] for k in fns}
    spent = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for k, f in fns.items():
            if spent[k] > budget_s:
                continue
            n = reps[k]
            t = time.perf_counter()
            for _ in range(n):
                f()
            dt = time.perf_counter() - t
            spent[k] += dt
            res[k].append(dt / n)
    return {k: float(np.median(v)) for k, v in res.items()}


def _check(opt_cls, kw, make, steps=2):
    """One fd optimizer on numba vs numpy over ``steps`` steps: max abs difference of the params."""
    import fastdescent as fd  # noqa: F401

    pa, ga = make()
    pb = [p.copy() for p in pa]
    oa = opt_cls(pa, backend="numba", **kw)
    ob = opt_cls(pb, backend="numpy", **kw)
    for _ in range(steps):
        oa.step(ga)
        ob.step(ga)
    return max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(pa, pb))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2n", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--tiny", default="1000x64")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)

    import numba

    import fastdescent as fd

    try:
        import torch
    except ImportError:
        torch = None
    n = 1 << args.log2n
    rng = np.random.default_rng(0)
    out = {"loadavg_before": os.getloadavg()[0], "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
           "torch": torch.__version__ if torch else None,
           "torch_threads": torch.get_num_threads() if torch else None, "n": n}
    stream_4r3w, stream_3r2w = _stream_kernels()

    # ---------------------------------------------------------------- parity first (small sizes)
    small = lambda: ([rng.standard_normal(s).astype(np.float32) for s in (4097, 3, 64)],  # noqa: E731
                     [rng.standard_normal(s).astype(np.float32) for s in (4097, 3, 64)])
    out["check_max_abs_diff"] = {
        "adam": _check(fd.Adam, dict(lr=1e-3), small),
        "rmsprop": _check(fd.RMSprop, dict(lr=1e-3), small),
    }

    # ---------------------------------------------------------------- 1. Adam 2^n
    p = rng.standard_normal(n, dtype=np.float32)
    g = (rng.standard_normal(n, dtype=np.float32) * 1e-2).astype(np.float32)
    opt = fd.Adam([p], lr=1e-3, backend="numba")
    sp, sg, sm, sv = (np.zeros(n, np.float32) for _ in range(4))
    fns = {"fd_numba_adam": lambda: opt.step([g]),
           "stream_28B": lambda: stream_4r3w(sp, sg, sm, sv, np.float32(1e-9))}
    if torch is not None:
        tp = torch.from_numpy(p.copy())
        tp.grad = torch.from_numpy(g.copy())
        topt = torch.optim.Adam([tp], lr=1e-3, fused=True)
        fns["torch_adam_fused"] = topt.step
    t = _race(fns, args.rounds)
    r = {k: v * 1e3 for k, v in t.items()}
    r = {f"{k}_ms": round(v, 3) for k, v in r.items()}
    r["roofline_fraction"] = round(t["stream_28B"] / t["fd_numba_adam"], 3)
    r["stream_GBps"] = round(28 * n / t["stream_28B"] / 1e9, 2)
    r["fd_numba_adam_GBps"] = round(28 * n / t["fd_numba_adam"] / 1e9, 2)
    if torch is not None:
        r["ratio_numba_over_torch_fused"] = round(t["fd_numba_adam"] / t["torch_adam_fused"], 3)
    out["adam_big"] = r
    del fns, opt, sp, sg, sm, sv
    if torch is not None:
        del tp, topt

    # ---------------------------------------------------------------- 2. RMSprop 2^n
    opt = fd.RMSprop([p], lr=1e-3, backend="numba")
    sp, sg, sv = (np.zeros(n, np.float32) for _ in range(3))
    fns = {"fd_numba_rmsprop": lambda: opt.step([g]),
           "stream_20B": lambda: stream_3r2w(sp, sg, sv, np.float32(1e-9))}
    if torch is not None:
        tp = torch.from_numpy(p.copy())
        tp.grad = torch.from_numpy(g.copy())
        topt = torch.optim.RMSprop([tp], lr=1e-3, foreach=True)
        fns["torch_rmsprop_foreach"] = topt.step
    t = _race(fns, args.rounds)
    r = {f"{k}_ms": round(v * 1e3, 3) for k, v in t.items()}
    r["roofline_fraction"] = round(t["stream_20B"] / t["fd_numba_rmsprop"], 3)
    if torch is not None:
        r["ratio_numba_over_torch_foreach"] = round(t["fd_numba_rmsprop"] / t["torch_rmsprop_foreach"], 3)
    out["rmsprop_big"] = r
    del fns, opt, sp, sg, sv, p, g
    if torch is not None:
        del tp, topt

    # ---------------------------------------------------------------- 3. many tiny tensors
    count, size = (int(x) for x in args.tiny.split("x"))
    ps = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    gs = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    opt = fd.Adam(ps, lr=1e-3, backend="numba")
    kern = opt._backend.KERNELS["adam"]
    fns = {"fd_numba_adam_step": lambda: opt.step(gs)}
    opt.step(gs)
    bucket = opt._buckets[0]
    scal = opt._scalars(opt.param_groups[0], 2, False)
    fns["numba_kernel_only"] = lambda: kern(bucket.tab, **scal)
    if torch is not None:
        for mode in ("fused", "foreach"):
            tps = [torch.from_numpy(a.copy()) for a in ps]
            for tp_, ga in zip(tps, gs):
                tp_.grad = torch.from_numpy(ga.copy())
            fns[f"torch_adam_{mode}"] = torch.optim.Adam(tps, lr=1e-3, **{mode: True}).step
    t = _race(fns, args.rounds)
    r = {f"{k}_ms": round(v * 1e3, 4) for k, v in t.items()}
    r["table_parallel"] = bool(bucket.tab.parallel)
    out[f"adam_{count}x{size}"] = r

    out["loadavg_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return out


if __name__ == "__main__":
    main()
