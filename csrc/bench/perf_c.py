"""Performance check of the c backend against torch.optim and the memory roofline (a script, not a
test: timings are noisy on a shared machine; every figure is a median over interleaved rounds, so
ratios are measured side by side).

    python csrc/bench/perf_c.py [--rounds N] [--quick] [--paths] [--threads N] [--only a,b]

Cases (fp32):
  adam-2^25      Adam, one 2^25-element tensor: fd vs torch.optim.Adam(fused=True) vs fd_stream moving
                 the same 28 B/param (read p, g, m, v; write p, m, v in place)
  adamw-2^25     AdamW, same
  rmsprop-2^25   RMSprop: fd vs torch.optim.RMSprop(foreach=True), roofline 20 B/param
  adam-1000x64   1000 tensors of 64 elements, fd.Adam(params, backend="c") with a persistent grad list
  adam-400       200 tensors of 256x256 + 200 of 256
--paths also times the generic (baseline ISA) kernel path against the AVX2+FMA one.
--threads N sets both fastdescent's and torch's thread counts (default: each library's default).
The many-tensor cases also report the calling thread's CPU time per step (time.thread_time), which
on a busy machine estimates the quiet wall time of a step that runs on one thread.
fd and torch share one OpenMP runtime (libgomp); with the default wait policy its threads spin after
each parallel region, which slows whatever runs next on a busy machine: there, run with
OMP_WAIT_POLICY=passive (see csrc/README.md).
"""

import argparse
import os
import statistics
import time

import numpy as np

import fastdescent as fd
from fastdescent.backends import c_cffi
from fastdescent.backends.c_cffi.stream import prepare_stream

try:
    import torch
except ImportError:  # torch is optional: the roofline figures still come out
    torch = None


def timeit(fns, rounds, inner=1, clock=time.perf_counter):
    """Median seconds per call of each fn, rounds interleaved (fn0, fn1, ..., fn0, fn1, ...)."""
    times = [[] for _ in fns]
    for f in fns:  # warm-up
        for _ in range(inner):
            f()
    for _ in range(rounds):
        for k, f in enumerate(fns):
            t0 = clock()
            for _ in range(inner):
                f()
            times[k].append((clock() - t0) / inner)
    return [statistics.median(t) for t in times]


def make(shapes, seed=0):
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    gs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    return ps, gs


def torch_opt(kind, shapes, ps, gs, **kw):
    tp = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ps]
    for t, g in zip(tp, gs):
        t.grad = torch.from_numpy(g.copy())
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[kind]
    opt = cls(tp, **kw)
    return opt.step


def check_against_numpy(cls, shapes, kw):
    """Before timing: 3 steps of the c backend agree with the numpy backend."""
    out = {}
    for backend in ("c", "numpy"):
        ps, gs = make(shapes, seed=1)
        opt = cls(ps, backend=backend, **kw)
        for _ in range(3):
            opt.step(gs)
        out[backend] = ps
    for a, b in zip(out["c"], out["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def big_case(name, kind, rounds, n, paths):
    shapes = [(n,)]
    cls, kw, tkw, bytes_per = {
        "adam": (fd.Adam, dict(lr=1e-3), dict(lr=1e-3, fused=True), 28),
        "adamw": (fd.AdamW, dict(lr=1e-3), dict(lr=1e-3, fused=True), 28),
        "rmsprop": (fd.RMSprop, dict(lr=1e-2), dict(lr=1e-2, foreach=True), 20),
    }[kind]
    check_against_numpy(cls, [(1 << 16,)], kw)
    ps, gs = make(shapes)
    opt = cls(ps, backend="c", **kw)
    opt.step(gs)  # state allocated
    st = opt.state[0]
    p, g = ps[0], gs[0]
    if kind == "rmsprop":
        roof = prepare_stream([p, st["square_avg"]], [p, g, st["square_avg"]])
    else:
        roof = prepare_stream([p, st["exp_avg"], st["exp_avg_sq"]],
                              [p, g, st["exp_avg"], st["exp_avg_sq"]])
    fns = [lambda: opt.step(gs), roof]
    labels = ["fd c", "fd_stream"]
    if torch is not None:
        fns.append(torch_opt(kind, shapes, ps, gs, **tkw))
        labels.append("torch " + ("fused" if "fused" in tkw else "foreach"))
    t = timeit(fns, rounds)
    res = dict(zip(labels, t))
    line = f"{name:14s} fd {t[0]*1e3:8.2f} ms  {n*bytes_per/t[0]/1e9:6.2f} GB/s  " \
           f"stream {t[1]*1e3:7.2f} ms ({n*bytes_per/t[1]/1e9:5.2f} GB/s)  roofline {t[1]/t[0]*100:5.1f}%"
    if torch is not None:
        line += f"  torch {t[2]*1e3:8.2f} ms  fd/torch {t[0]/t[2]:5.3f}  torch/fd {t[2]/t[0]:5.2f}x"
    print(line, flush=True)
    if paths:
        c_cffi.set_simd_path("generic")
        tg = timeit([lambda: opt.step(gs)], rounds)[0]
        c_cffi.set_simd_path("auto")
        ta = timeit([lambda: opt.step(gs)], rounds)[0]
        print(f"{'':14s} path generic {tg*1e3:8.2f} ms  avx2-fma {ta*1e3:8.2f} ms  "
              f"generic/avx2 {tg/ta:5.2f}", flush=True)
    return res


def many_case(name, shapes, rounds, inner, paths):
    check_against_numpy(fd.Adam, shapes, dict(lr=1e-3))
    ps, gs = make(shapes)
    opt = fd.Adam(ps, backend="c", lr=1e-3)
    opt.step(gs)
    fns = [lambda: opt.step(gs)]
    if torch is not None:
        fns.append(torch_opt("adam", shapes, ps, gs, lr=1e-3, fused=True))
    t = timeit(fns, rounds, inner)
    cpu = timeit(fns[:1], rounds, inner, clock=time.thread_time)[0]
    line = f"{name:14s} fd {t[0]*1e3:8.3f} ms/step (thread CPU {cpu*1e3:.3f} ms)"
    if torch is not None:
        line += f"  torch fused {t[1]*1e3:8.3f} ms/step  fd/torch {t[0]/t[1]:5.3f}  torch/fd {t[1]/t[0]:5.1f}x"
    print(line, flush=True)
    if paths:
        c_cffi.set_simd_path("generic")
        tg = timeit([lambda: opt.step(gs)], rounds, inner)[0]
        c_cffi.set_simd_path("auto")
        ta = timeit([lambda: opt.step(gs)], rounds, inner)[0]
        print(f"{'':14s} path generic {tg*1e3:8.3f} ms  avx2-fma {ta*1e3:8.3f} ms  "
              f"generic/avx2 {tg/ta:5.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="2^22 elements instead of 2^25")
    ap.add_argument("--paths", action="store_true", help="also time generic vs avx2-fma paths")
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--threads", type=int, default=0, help="threads for fd and torch (0: defaults)")
    a = ap.parse_args()
    if a.threads:
        c_cffi.set_num_threads(a.threads)
        if torch is not None:
            torch.set_num_threads(a.threads)
    info = c_cffi.describe()
    print(f"c backend: {info['build']}; threads {c_cffi.get_num_threads()}; path {info['simd_path']}; "
          f"torch {torch.__version__ if torch else 'absent'} threads "
          f"{torch.get_num_threads() if torch else '-'}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    n = 1 << (22 if a.quick else 25)
    only = set(a.only.split(",")) if a.only else None
    cases = [
        ("adam-2^25", lambda: big_case("adam-2^25", "adam", a.rounds, n, a.paths)),
        ("adamw-2^25", lambda: big_case("adamw-2^25", "adamw", a.rounds, n, a.paths)),
        ("rmsprop-2^25", lambda: big_case("rmsprop-2^25", "rmsprop", a.rounds, n, a.paths)),
        ("adam-1000x64", lambda: many_case("adam-1000x64", [(64,)] * 1000, a.rounds, 50, a.paths)),
        ("adam-400", lambda: many_case("adam-400", [(256, 256)] * 200 + [(256,)] * 200, a.rounds, 1,
                                       a.paths)),
    ]
    for name, run in cases:
        if only is None or name in only:
            run()


if __name__ == "__main__":
    main()
