"""One optimizer step on a GPU: fastdescent's ``cuda`` backend next to torch's CUDA optimizers and the
device's copy bandwidth, measured in the same process.

Rows (each over three layouts: one tensor of 2**26 elements, ResNet-50's 161 parameter tensors and
1000 small tensors of 256-8191 elements):

* float32 rules: SGD with momentum, Adam, AdamW, RMSprop, Adagrad, each against torch's fastest CUDA
  implementation of the same rule (``fused=True`` where torch has it for CUDA, else ``foreach=True``);
* low-precision Adam (the configurations of ``fastdescent.bench.lowp``: bfloat16 parameters with
  stochastic rounding or a float32 master copy, bfloat16 or 8-bit moments), against torch's fused Adam
  on bfloat16 parameters and gradients (bfloat16 state);
* ``roofline``: a device-to-device copy that reads and writes as many bytes as the row's step moves
  (bytes per parameter as in ``fastdescent.bench.lowp.bytes_per_step``; SGD momentum, RMSprop and
  Adagrad fp32 move 20 B/param, Adam 28). A row's roofline fraction is the copy's time over its own.

Timing: after two warm-up steps (JIT compilation, allocation), ``--rounds`` rounds of ``--inner``
steps each, one device synchronisation per round; the per-step time of a round is its wall time over
``--inner``; the median round is reported. Steps are launched back to back as in a training loop, so
the host-side cost of a launch is included where it exceeds the kernel's.

Run on a machine with a GPU: ``python benchmarks/gpu_step.py [--rounds 15] [--json out.json]``.
Exits 2 with a message where no GPU (or Numba's simulator) is found.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time

import numpy as np

LAYOUTS = ("2^26", "resnet50", "1000-small")
FP32_RULES = {
    # name: (fastdescent class, kwargs, torch class, torch kwargs, bytes per parameter)
    "sgd-momentum": ("SGD", dict(lr=1e-2, momentum=0.9), "SGD", dict(lr=1e-2, momentum=0.9), 20),
    "adam": ("Adam", dict(lr=1e-3), "Adam", dict(lr=1e-3), 28),
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), "AdamW", dict(lr=1e-3, weight_decay=1e-2), 28),
    "rmsprop": ("RMSprop", dict(lr=1e-3), "RMSprop", dict(lr=1e-3), 20),
    "adagrad": ("Adagrad", dict(lr=1e-2), "Adagrad", dict(lr=1e-2), 20),
}


def layout_shapes(name):
    if name == "2^26":
        return [(1 << 26,)]
    if name == "resnet50":
        from fastdescent.bench.torch_dropin import resnet50_shapes

        return [tuple(s) for s in resnet50_shapes()]
    if name == "tiny":  # a smoke test of this script (``--simulator --layouts tiny``)
        return [(300,), (17, 5)]
    rng = np.random.default_rng(0)
    return [(int(n),) for n in rng.integers(256, 8192, 1000)]


def time_steps(step, sync, rounds, inner):
    step()
    step()
    sync()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        sync()
        per.append((time.perf_counter() - t0) / inner)
    return statistics.median(per)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--inner", type=int, default=10)
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--rows", default=None,
                    help="comma-separated row names to run (default all: " + ",".join(FP32_RULES)
                    + ", the lowp configurations, adam-bf16-torch)")
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument("--simulator", action="store_true",
                    help="run under Numba's CUDA simulator (a smoke test: the times mean nothing)")
    args = ap.parse_args(argv)

    if args.simulator:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    elif os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("gpu_step: NUMBA_ENABLE_CUDASIM is set: the simulator cannot be timed", file=sys.stderr)
        return 2
    from numba import cuda

    if not cuda.is_available():
        print("gpu_step: no CUDA GPU found", file=sys.stderr)
        return 2
    import fastdescent as fd
    from fastdescent.bench import cases as C

    CU = fd.get_backend("cuda")
    from fastdescent.bench.lowp import LOWP_CONFIGS, bytes_per_step

    try:
        import torch

        have_torch = torch.cuda.is_available()
    except ImportError:
        torch, have_torch = None, False

    def sync():
        cuda.synchronize()
        if have_torch:
            torch.cuda.synchronize()

    name = getattr(cuda.get_current_device(), "name", "?") if hasattr(cuda, "get_current_device") \
        else "simulator"
    print(f"device: {name.decode() if isinstance(name, bytes) else name}; "
          f"torch {torch.__version__ if torch else 'absent'}; numba {__import__('numba').__version__}")
    rows = []

    def add(rule, layout, impl, t, nbytes, note=""):
        rows.append(dict(rule=rule, layout=layout, impl=impl, ms=t * 1e3,
                         gbps=nbytes / t / 1e9 if t else None, bytes=nbytes, note=note))
        print(f"{rule:18s} {layout:10s} {impl:22s} {t * 1e3:9.3f} ms  {nbytes / t / 1e9:8.1f} GB/s {note}",
              flush=True)

    copy_cache = {}

    def roofline(rule, layout, nbytes):
        half = nbytes // 2
        if half not in copy_cache:
            src = cuda.device_array(half, dtype=np.uint8)
            dst = cuda.device_array(half, dtype=np.uint8)
            copy_cache[half] = time_steps(lambda: dst.copy_to_device(src), sync, args.rounds,
                                          args.inner)
            del src, dst
        add(rule, layout, "roofline (d2d copy)", copy_cache[half], nbytes)

    rng = np.random.default_rng(1)
    wanted = set(args.rows.split(",")) if args.rows else None
    # every layout's float32 rows first, then the low-precision ones (a stuck row stalls the rest)
    for lname, part in [(ln, p) for p in ("fp32", "lowp") for ln in args.layouts.split(",")]:
        shapes = layout_shapes(lname)
        n = sum(math.prod(s) for s in shapes)
        host_p = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        host_g = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for s in shapes]
        print(f"\n== {lname} ({part}): {len(shapes)} tensors, {n:,} parameters", flush=True)
        for rule, (fcls, fkw, tcls, tkw, bpp) in FP32_RULES.items():
            if part != "fp32" or (wanted and rule not in wanted):
                continue
            try:
                dp = [cuda.to_device(p) for p in host_p]
                dg = [cuda.to_device(g) for g in host_g]
                opt = getattr(fd, fcls)(dp, backend="cuda", **fkw)
                add(rule, lname, "fastdescent cuda", time_steps(functools.partial(opt.step, dg), sync,
                                                                 args.rounds, args.inner), bpp * n)
                del opt, dp, dg
            except Exception as exc:  # report and go on: one broken row must not hide the rest
                print(f"{rule} {lname} fastdescent: FAILED {type(exc).__name__}: {exc}", flush=True)
            if have_torch:
                tp = [torch.from_numpy(p).cuda().requires_grad_() for p in host_p]
                for p, g in zip(tp, host_g):
                    p.grad = torch.from_numpy(g).cuda()
                for mode in ("fused", "foreach"):
                    try:
                        topt = getattr(torch.optim, tcls)(tp, **tkw, **{mode: True})
                        add(rule, lname, f"torch {mode}", time_steps(topt.step, sync, args.rounds,
                                                                     args.inner), bpp * n)
                        break
                    except (RuntimeError, TypeError, ValueError) as exc:
                        print(f"  (torch {tcls} {mode}=True: {exc})", flush=True)
                try:  # fastdescent.torch on the same CUDA tensors: the drop-in's step, Python included
                    import fastdescent.torch as fdt

                    fopt = getattr(fdt, tcls)(tp, **tkw)
                    add(rule, lname, "fastdescent.torch", time_steps(fopt.step, sync, args.rounds,
                                                                     args.inner), bpp * n)
                    del fopt
                except Exception as exc:
                    print(f"{rule} {lname} fastdescent.torch: FAILED {type(exc).__name__}: {exc}",
                          flush=True)
                del tp
            roofline(rule, lname, bpp * n)
        if part != "lowp":
            continue
        layout = C.Layout(lname, shapes)
        for cname, cfg in LOWP_CONFIGS.items():
            if wanted and cname not in wanted:
                continue
            nbytes = bytes_per_step(layout, cfg.params, "float32", cfg.state, cfg.master_weights)
            try:
                pdt = cfg.param_dtype
                dp = [CU.from_host(p.astype(pdt)) for p in host_p]  # bfloat16: as 16-bit words
                dg = [cuda.to_device(g) for g in host_g]
                opt = fd.Adam(dp, backend="cuda", lr=1e-3, **cfg.kwargs)
                add(cname, lname, "fastdescent cuda", time_steps(functools.partial(opt.step, dg), sync,
                                                                 args.rounds, args.inner), nbytes)
                del opt, dp, dg
            except Exception as exc:
                print(f"{cname} {lname} fastdescent: FAILED {type(exc).__name__}: {exc}", flush=True)
            roofline(cname, lname, nbytes)
        if have_torch and (not wanted or "adam-bf16-torch" in wanted):
            tp = [torch.from_numpy(p).to("cuda", torch.bfloat16).requires_grad_() for p in host_p]
            for p, g in zip(tp, host_g):
                p.grad = torch.from_numpy(g).to("cuda", torch.bfloat16)
            topt = torch.optim.Adam(tp, lr=1e-3, fused=True)
            nbytes = 14 * n  # bf16 p read+write, bf16 g, bf16 m and v read+write
            add("adam-bf16-torch", lname, "torch fused",
                time_steps(topt.step, sync, args.rounds, args.inner), nbytes)
            roofline("adam-bf16-torch", lname, nbytes)
            del tp, topt
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
