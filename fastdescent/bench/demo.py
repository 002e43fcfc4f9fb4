"""``fastdescent demo``: the README's main job, in under a minute.

1. Train the digits MLP (64-256-10, ReLU, Adam) for a few epochs on every available CPU backend, with a
   progress bar; print test accuracy and training steps per second for each.
2. Time the Adam kernel on one 2^25-element float32 tensor on every backend, next to torch's fused
   Adam (when torch is installed) and the memory roofline.

Both parts use the benchmark cases of :mod:`fastdescent.bench.cases`, so every figure printed was
checked against the NumPy reference first.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from . import cases as C
from .report import fmt_time

__all__ = ["run_demo"]


def _out(con, text="", **kw):
    if con is None:
        print(text)
    else:
        con.print(text, highlight=False, **kw)


def _console():
    try:
        from rich.console import Console

        return Console()
    except ImportError:
        return None


def _table(con, title, header, rows):
    if con is None:
        print(title)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        print("  " + "  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
        for r in rows:
            print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
        return
    from rich.table import Table

    tab = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        tab.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        tab.add_row(*map(str, r))
    con.print(tab)


def train_part(con, backends, epochs, seed=C.SEED):
    """Train on each backend; returns rows of (backend, accuracy, steps/s, epoch time) or a reason."""
    reason = C._sklearn_unavailable() or C.nn_unavailable()
    if reason is not None:
        return None, reason
    from .mlp import MLP_BATCH, fd_epoch, fd_model

    Xtr, ytr, Xte, yte = C.digits_split(seed)
    steps_per_epoch = -(-len(Xtr) // MLP_BATCH)
    from ..errors import BackendUnavailableError

    rows = []
    for name in backends:
        try:
            # warm-up (JIT compilation, first touch) on a throwaway model: excluded from the timing
            wm, wo = fd_model(name, C.MLP_SIZES, seed)
        except BackendUnavailableError as exc:
            rows.append((name, f"not available: {exc}"))
            continue
        fd_epoch(wm, wo, Xtr[: 4 * MLP_BATCH], ytr[: 4 * MLP_BATCH], seed)
        model, opt = fd_model(name, C.MLP_SIZES, seed)
        _out(con, f"  training on [bold]{name}[/]" if con else f"  training on {name}")
        t0 = time.perf_counter()
        fd_epoch(model, opt, Xtr, ytr, seed, epochs=epochs, progress=True)
        dt = time.perf_counter() - t0
        acc = float(np.mean(model.predict_classes(Xte) == yte))
        rows.append((name, acc, steps_per_epoch * epochs / dt, dt / epochs))
    return rows, None


def kernel_part(backends, size, rounds=3):
    """Adam on one tensor of ``size`` float32 elements: rows from the benchmark runner."""
    from .runner import run_group

    layout = C.single(size)
    impls = list(backends) + ["torch-fused", "roofline"]
    group = [C.OptimizerCase("adam", layout, impl, section="demo") for impl in impls]
    return run_group(group, rounds=rounds, min_time=0.05)


def run_demo(args):
    import fastdescent as fd

    con = _console()
    info = fd.info()
    cpu = info.get("cpu", {})
    _out(con, f"[bold]fastdescent {fd.__version__}[/] demo — {cpu.get('model')}, "
              f"{info.get('cores')} logical cores" if con else
         f"fastdescent {fd.__version__} demo — {cpu.get('model')}, {info.get('cores')} logical cores")
    from .commands import select_backends

    backends = select_backends(args.backends)
    for name, e in info["backends"].items():
        mark = "available" if e["available"] else f"not available: {e['reason']}"
        if e["available"] and name not in backends:
            mark = "available, not used here: " + (C.backend_unavailable(name) or "not selected")
        _out(con, f"  backend {name:6s} {mark}")
    status = 0

    # ------------------------------------------------------------------ 1. training
    hosts = [b for b in backends if b != "cuda"]
    _out(con)
    title = (f"1. Digits MLP {'-'.join(map(str, C.MLP_SIZES))} (ReLU), Adam lr={C.MLP_LR:g}, "
             f"batch {C.MLP_BATCH}, {args.epochs} epochs")
    _out(con, f"[bold]{title}[/]" if con else title)
    t0 = time.perf_counter()
    rows, reason = train_part(con, hosts, args.epochs)
    if rows is None:
        _out(con, f"  training: not available: {reason}")
    else:
        trained = [r for r in rows if len(r) == 4]
        if trained:
            _table(con, f"Digits MLP after {args.epochs} epochs ({time.perf_counter() - t0:.1f} s)",
                   ["backend", "test accuracy", "steps/s", "epoch time"],
                   [(n, f"{a:.3f}", f"{s:,.0f}", fmt_time(t)) for n, a, s, t in trained])
        for r in rows:
            if len(r) == 2:
                _out(con, f"  {r[0]}: training {r[1]}")
        if "cuda" in backends:
            _out(con, "  (cuda: fastdescent.nn trains on host arrays; the cuda backend is timed below)")

    # ------------------------------------------------------------------ 2. the Adam kernel
    size = args.size
    _out(con)
    title = (f"2. Adam kernel, one tensor of {C._size_name(size)} float32 elements "
             f"({C.OPTIMIZERS['adam'].bytes_per_element()} B/param moved)")
    _out(con, f"[bold]{title}[/]" if con else title)
    krows = kernel_part(backends, size)
    fused = next((r for r in krows if r["impl"] == "torch-fused" and r["status"] == "ok"), None)
    table = []
    notes = []
    for r in krows:
        if r["status"] != "ok":
            notes.append(f"  {r['impl']}: {r['status']}: {r['reason']}")
            if r["status"] == "check-failed" or (r["status"] == "error" and r["kind"] == "fastdescent"):
                status = 1
            continue
        vs = f"{r['time_s'] / fused['time_s']:.3g}×" if fused else "-"
        any_roof = any("roofline_fraction" in x for x in krows)
        roof = f"{100 * r['roofline_fraction']:.0f}%" if "roofline_fraction" in r else \
            ("100%" if r["impl"] == "roofline" and any_roof else "-")
        table.append((r["impl"], fmt_time(r["time_s"]), f"{r['gbps']:.1f}", roof, vs))
    _table(con, "median step time (checked against the NumPy reference first)",
           ["implementation", "time/step", "GB/s", "of roofline", "time vs torch fused"], table)
    for n in notes:
        _out(con, n)
    if fused is None:
        _out(con, "  (torch is not installed: no torch fused Adam to compare with; "
                  "pip install torch to see it)" if C.torch_unavailable() else "")
    sys.stdout.flush()
    return status
