"""Reports of a benchmark run: terminal tables (rich), JSON, Markdown, and a PNG plot.

All of them are made from the same *rows* (see :mod:`fastdescent.bench.runner`) and the same target
list (:data:`TARGETS`, the performance goals), so the terminal, the JSON and RESULTS.md always agree.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap
from dataclasses import dataclass

__all__ = ["TARGETS", "evaluate_targets", "load_warning", "write_json", "to_markdown", "write_markdown",
           "plot", "print_report", "fmt_time", "IMPL_ORDER"]

IMPL_ORDER = ("numpy", "c", "numba", "cuda", "torch-forloop", "torch-foreach", "torch-fused",
              "numpy-textbook", "np.matmul", "torch.bmm", "torch-autograd", "torch", "sklearn",
              "torchao-bf16-sr", "torchao-8bit", "bnb-8bit", "roofline")
SECTION_TITLES = {
    "headline": "Headline cases",
    "size": "One tensor, sweep over its size",
    "count": "Many small tensors (64 elements each), sweep over their number",
    "layout": "Model-like layout",
    "matmul": "Dense-layer kernels (batched matmul)",
    "mlp": "Digits MLP, one training epoch",
    "mnist": "MNIST-shaped MLP (784-128-10, 60,000 synthetic rows, batch 128), one training epoch",
    "lowp": "Low-precision Adam step",
    "functional": "The functional API next to the class API (100 tensors of 64 elements)",
}


# ============================================================================ formatting
def fmt_time(s):
    if s is None or not math.isfinite(s):
        return "-"
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def _num(x, digits=3):
    return "-" if x is None else f"{x:.{digits}g}"


def _order(impls):
    known = [i for i in IMPL_ORDER if i in impls]
    return known + sorted(i for i in impls if i not in IMPL_ORDER)


def _cell(row, sep=" "):
    """The text of one result cell: time, then throughput (and roofline fraction)."""
    st = row["status"]
    if st == "skipped":
        return "n/a"
    if st == "check-failed":
        return "WRONG"
    if st == "error":
        return "error"
    parts = [fmt_time(row["time_s"])]
    if "gflops" in row:
        parts.append(f"{row['gflops']:.3g} GFLOP/s")
    elif "gbps" in row:
        parts.append(f"{row['gbps']:.3g} GB/s")
        if "roofline_fraction" in row:
            parts.append(f"{100 * row['roofline_fraction']:.0f}% roof")
        elif "disturbed" in row.get("roofline_note", ""):
            parts.append("probe disturbed")
    elif "steps_per_s" in row:
        parts.append(f"{row['steps_per_s']:.4g} steps/s")
        if "test_accuracy" in row:
            parts.append(f"acc {row['test_accuracy']:.3f}")
    return sep.join(parts)


def _tables(rows):
    """Rows grouped into tables: [(title, row_keys, impls, {(key, impl): row})]."""
    out = []
    by_table = {}
    for r in rows:
        if r["section"] == "lowp":  # (its own tables: _lowp_tables)
            continue
        if r["section"] in ("headline", "size", "count", "layout"):
            tkey = (r["section"], r["op"])
            title = f"{SECTION_TITLES.get(r['section'], r['section'])}: {r['op']}"
        elif r["section"] in ("matmul", "functional"):
            tkey = (r["section"], r["op"])
            title = f"{SECTION_TITLES[r['section']]}: {r['op']}"
        else:
            tkey = (r["section"], r["op"])
            title = SECTION_TITLES.get(r["op"], SECTION_TITLES.get(r["section"], r["section"]))
        if tkey not in by_table:
            by_table[tkey] = (title, [], set(), {})
            out.append(by_table[tkey])
        _, keys, impls, cells = by_table[tkey]
        key = r.get("layout", r["group"])
        if key not in keys:
            keys.append(key)
        impls.add(r["impl"])
        cells[(key, r["impl"])] = r
    return [(t, k, _order(i), c) for (t, k, i, c) in out]


_LOWP_HEADER = ("config", "impl", "params / grads / state", "B/param", "median", "GB/s",
                "roofline", "vs torch fused")


def _lowp_formats(r):
    state = r.get("state", "?") + (" + fp32 master" if r.get("master") else "")
    return f"{r.get('params', '?')} / {r.get('grads', '?')} / {state}"


def _lowp_tables(rows):
    """The lowp rows as one table per layout: [(title, [[cell, ...], ...])], rows in configuration
    order (fastdescent's backends, then the peers, the roofline probe last). Cells: median time,
    bytes per parameter, GB/s, fraction of the roofline (achieved GB/s / the float32 streaming
    probe's best-round GB/s) and time / torch fused float32 Adam's time (same run)."""
    out, by = [], {}
    for r in rows:
        if r["section"] != "lowp":
            continue
        lay = r.get("layout", r["group"])
        if lay not in by:
            by[lay] = []
            out.append((lay, by[lay]))
        by[lay].append(r)
    tables = []
    for lay, rs in out:
        configs = list(dict.fromkeys(r["op"] for r in rs if r["impl"] != "roofline"))
        order = {i: k for k, i in enumerate(IMPL_ORDER)}
        ranked = sorted(rs, key=lambda r: (r["impl"] == "roofline", configs.index(r["op"])
                                           if r["op"] in configs else 0, order.get(r["impl"], 99)))
        body = []
        for r in ranked:
            bpp = r.get("bytes_per_param")
            cells = [r["op"] if r["impl"] != "roofline" else "(stream probe)", r["impl"],
                     _lowp_formats(r), "-" if bpp is None else f"{bpp:.4g}"]
            if r["status"] != "ok":
                cells += [_cell(r), "", "", ""]
            else:
                if "roofline_fraction" in r:
                    roof = f"{100 * r['roofline_fraction']:.0f}%"
                elif r["impl"] == "roofline":
                    roof = "(100%)"
                elif "disturbed" in r.get("roofline_note", ""):
                    roof = "probe disturbed"
                else:
                    roof = "-"
                vs = r.get("time_vs_baseline")
                cells += [fmt_time(r["time_s"]), f"{r['gbps']:.3g}" if "gbps" in r else "-", roof,
                          "-" if vs is None or r["impl"] == "roofline" else f"{vs:.3g}×"]
            body.append(cells)
        n = next((r.get("n_tensors") for r in rs), None)
        el = next((r.get("elements") for r in rs), None)
        title = f"{SECTION_TITLES['lowp']}: {lay}" + (
            f" ({n} tensor{'s' if n != 1 else ''}, {el:,} parameters)" if n and el else "")
        tables.append((title, body))
    return tables


LOWP_EXPLAINED = (
    "Adam, lr=1e-3, float32 gradients (torchao-bf16-sr: bfloat16, as torch requires). `B/param`: "
    "bytes the step must move per parameter, from the formats (parameter read + written, written "
    "only with a master copy, which is read + written; gradient read; both moments read + written, "
    "8-bit ones with their float32 block scales); `GB/s` = those bytes / median time. `roofline`: "
    "achieved GB/s / the float32 Adam streaming probe's best-round GB/s on the same element count, "
    "measured in the same run. `vs torch fused`: time / torch.optim.Adam(fused=True) float32's time "
    "in the same run (< 1: faster). fastdescent's rows are checked bit for bit against the NumPy "
    "backend before timing; the torchao/bitsandbytes peers (timed apart, few rounds) must move the "
    "parameters like float32 Adam in the mean.")


def _problems(rows):
    """Unique (impl, status, reason) of every row that did not produce a figure."""
    seen = {}
    for r in rows:
        if r["status"] != "ok":
            key = (r["impl"], r["status"], r.get("reason") or "")
            seen.setdefault(key, []).append(r.get("layout", r["group"]))
    return seen


# ============================================================================ performance targets
@dataclass(frozen=True)
class Target:
    """One performance goal. ``metric``: ``ratio`` = time(impl)/time(peer) (lower is better),
    ``speedup`` = time(peer)/time(impl), ``roofline`` = fraction of roofline, ``ms`` = ms per step."""

    what: str
    op: str
    layout: str
    impl: str
    metric: str
    goal: float
    peer: str | None = None
    #: the peer's op where it is another one (lowp: torch fused runs the adam-fp32 configuration)
    peer_op: str | None = None
    #: evaluated only when the run has rows of this section (lowp: 24 targets of their own)
    section: str | None = None

    @property
    def goal_text(self):
        peer = self.peer if self.peer_op in (None, self.op) else f"{self.peer} ({self.peer_op})"
        return {"ratio": f"≤ {self.goal:g}× {peer}",
                "speedup": f"≥ {self.goal:g}× faster than {peer}",
                "roofline": f"≥ {100 * self.goal:.0f}% of roofline",
                "ms": f"≤ {self.goal:g} ms/step"}[self.metric]


def _targets():
    t = []
    for op, name in (("adam", "Adam"), ("adamw", "AdamW")):
        t.append(Target(f"{name} 2^25", op, "1x2^25", "c", "ratio", 1.0, "torch-fused"))
        t.append(Target(f"{name} 2^25", op, "1x2^25", "c", "roofline", 0.90))
        t.append(Target(f"{name} 2^25", op, "1x2^25", "numba", "ratio", 1.15, "torch-fused"))
    for impl in ("c", "numba"):
        t.append(Target("RMSprop 2^25", "rmsprop", "1x2^25", impl, "speedup", 4.0, "torch-foreach"))
    for impl in ("c", "numba"):
        t.append(Target("Adam 1000 x 64", "adam", "1000x64", impl, "ms", 0.3))
        t.append(Target("Adam 1000 x 64", "adam", "1000x64", impl, "speedup", 20.0, "torch-fused"))
    for impl in ("c", "numba"):
        t.append(Target("Adam 400 tensors", "adam", "400 tensors", impl, "ratio", 1.0, "torch-fused"))
    for impl in ("c", "numba"):
        for peer in ("torch", "sklearn"):
            t.append(Target("digits MLP epoch", "mlp", "digits 64-256-10", impl, "ratio", 0.1, peer))
        for opt in ("adam", "sgd"):
            t.append(Target(f"784-128-10 epoch ({opt})", "mnist", f"mnist-shaped 784-128-10 {opt}",
                            impl, "ratio", 0.7, "torch"))
    # the functional API costs at most 2x the class API's step (same backend, same arrays)
    for op in ("sgd_momentum", "adam", "rmsprop"):
        for impl in ("c", "numba"):
            t.append(Target(f"functional {op} 100 x 64", op, "100x64", f"{impl}-functional",
                            "ratio", 2.0, impl, section="functional"))
    # issue 11: the low-precision step against torch's fused float32 Adam (same run), and the
    # 8-bit peers on the same formats
    lowp = (("adam-bf16-sr", "bf16+SR", 0.85), ("adam-bf16-sr-bf16", "bf16+SR, bf16 state", 0.6),
            ("adam-int8", "fp32, int8 state", 0.7), ("adam-bf16-sr-int8", "bf16+SR, int8 state", 0.45))
    for layout, lname in (("1x2^25", "2^25"), ("resnet50", "ResNet-50")):
        for impl in ("c", "numba"):
            for op, what, goal in lowp:
                t.append(Target(f"Adam {what} {lname}", op, layout, impl, "ratio", goal, "torch-fused",
                                peer_op="adam-fp32", section="lowp"))
            for peer in ("torchao-8bit", "bnb-8bit"):
                t.append(Target(f"Adam fp32, int8 state {lname}", "adam-int8", layout, impl,
                                "speedup", 50.0, peer, section="lowp"))
    return tuple(t)


TARGETS = _targets()


def _find(rows, op, layout, impl):
    best = None
    for r in rows:
        if r["op"] == op and r.get("layout") == layout and r["impl"] == impl:
            if best is None or (best["status"] != "ok" and r["status"] == "ok") or (
                    r["status"] == "ok" and r["section"] == "headline"):
                best = r
    return best


def evaluate_targets(rows):
    """One dict per target: measured value (None if a needed case did not run), met (bool/None)."""
    out = []
    sections = {r.get("section") for r in rows}
    for t in TARGETS:
        if t.section is not None and t.section not in sections:
            continue
        r = _find(rows, t.op, t.layout, t.impl)
        p = _find(rows, t.peer_op or t.op, t.layout, t.peer) if t.peer else None
        d = {"what": t.what, "impl": t.impl, "metric": t.metric, "goal": t.goal, "peer": t.peer,
             "goal_text": t.goal_text, "measured": None, "met": None, "why_missing": None}
        if r is None or r["status"] != "ok":
            d["why_missing"] = (f"{t.impl}: " + (r.get("reason") or r["status"])) if r else \
                f"{t.impl} {t.op} {t.layout} was not run"
        elif t.peer and (p is None or p["status"] != "ok"):
            d["why_missing"] = (f"{t.peer}: " + (p.get("reason") or p["status"])) if p else \
                f"{t.peer} {t.peer_op or t.op} {t.layout} was not run"
        elif t.metric == "roofline" and "roofline_fraction" not in r:
            d["why_missing"] = "the roofline probe did not run"
        else:
            if t.metric == "ratio":
                m = r["time_s"] / p["time_s"]
                met = m <= t.goal
            elif t.metric == "speedup":
                m = p["time_s"] / r["time_s"]
                met = m >= t.goal
            elif t.metric == "roofline":
                m = r["roofline_fraction"]
                met = m >= t.goal
            else:
                m = r["time_s"] * 1e3
                met = m <= t.goal
            d["measured"], d["met"] = m, bool(met)
            d["time_s"] = r["time_s"]
            if p is not None:
                d["peer_time_s"] = p["time_s"]
        out.append(d)
    return out


def _measured_text(d):
    m = d["measured"]
    if m is None:
        return "not measured"
    if d["metric"] == "ratio":
        return f"{m:.2f}×"
    if d["metric"] == "speedup":
        return f"{m:.1f}× faster"
    if d["metric"] == "roofline":
        return f"{100 * m:.0f}%"
    return f"{m:.3g} ms"


def _met_text(d):
    return "—" if d["met"] is None else ("yes" if d["met"] else "**NO**")


# ============================================================================ JSON
def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _jsonable(x.item())
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def write_json(path, report):
    with open(path, "w") as f:
        json.dump(_jsonable(report), f, indent=1, allow_nan=False)
        f.write("\n")


# ============================================================================ Markdown
def _md_table(header, body):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines)


def targets_markdown(targets):
    body = []
    for d in targets:
        body.append([d["what"], d["impl"], d["goal_text"], _measured_text(d),
                     _met_text(d) if d["measured"] is not None else f"— ({d['why_missing']})"])
    return _md_table(["case", "backend", "target", "measured", "met"], body)


def load_warning(report):
    """A sentence when the machine was busy during the run (load average above the core count)."""
    m = report.get("machine", {})
    cores = m.get("logical_cores") or 0
    loads = [x for x in (m.get("loadavg_start") or [])[:1] + (report.get("loadavg_end") or [])[:1]]
    if cores and loads and max(loads) > cores:
        return (f"the machine was busy during this run (1-minute load average up to {max(loads):.1f} "
                f"on {cores} logical cores): absolute figures are unreliable, threaded ones most; "
                "ratios come from interleaved rounds but are affected too")
    return None


def to_markdown(report, *, title="fastdescent benchmark results"):
    rows, m = report["results"], report.get("machine", {})
    out = [f"# {title}", ""]
    warn = load_warning(report)
    if warn:
        out += [f"> **Warning:** {warn}.", ""]
    if m:
        v = m.get("versions", {})
        out += [f"- date (UTC): {m.get('date_utc')}",
                f"- command: `{report.get('command', '')}`",
                f"- CPU: {m.get('cpu_model')} ({m.get('logical_cores')} logical cores; "
                f"features {', '.join(m.get('cpu_features') or [])})",
                f"- load average at start / end: {m.get('loadavg_start')} / {report.get('loadavg_end')}",
                "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
                f"- torch threads: {m.get('torch_threads', '-')}; fastdescent backends: "
                + ", ".join(f"{n} ({'yes' if e['available'] else 'no'})"
                            for n, e in m.get("fastdescent_info", {}).get("backends", {}).items()),
                f"- settings: {report.get('settings')}", ""]
    if any(d["measured"] is not None for d in report.get("targets") or []):
        out += ["## Performance targets (measured in this run)", "", targets_markdown(report["targets"]), ""]
    tables = _tables(rows)
    if tables or not any(r["section"] == "lowp" for r in rows):
        out += ["## Results", "",
                "Cells: median time per step (per call for matmul, per epoch for the MLP), then "
                "throughput; for optimizers `GB/s` counts the bytes the update must move and the "
                "percentage is the fraction of the memory roofline (streaming-probe time / kernel time; "
                "the roofline column is the probe's best round, an upper bound). "
                "`n/a`: not available here (reasons below); `WRONG`: failed the correctness check "
                "against the NumPy reference (not timed). No roofline percentage where the probe takes "
                "under 50 µs (call overhead, not memory traffic, dominates there), nor where a kernel "
                "beat the probe's best round (`probe disturbed`: machine load).", ""]
    for title, keys, impls, cells in tables:
        body = [[k] + [_cell(cells[(k, i)], "<br>") if (k, i) in cells else "" for i in impls]
                for k in keys]
        out += [f"### {title}", "", _md_table(["case"] + impls, body), ""]
    lowp = _lowp_tables(rows)
    if lowp:
        out += ["## Low-precision Adam step", "", LOWP_EXPLAINED, ""]
        for title, body in lowp:
            out += [f"### {title}", "", _md_table(list(_LOWP_HEADER), body), ""]
    probs = _problems(rows)
    if probs:
        out += ["## Not measured", ""]
        for (impl, status, reason), where in probs.items():
            n = len(where)
            out.append(f"- **{impl}** ({status}, {n} case{'s' if n != 1 else ''}): {reason}")
        out.append("")
    return "\n".join(out)


def write_markdown(path, report, **kw):
    with open(path, "w") as f:
        f.write(to_markdown(report, **kw))


# ============================================================================ terminal
def _isatty(f):
    try:
        return f.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def _console():
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console()


def print_report(report, file=None):
    """Tables on a terminal: rich when installed; the Markdown text otherwise, and whenever stdout
    is not a terminal (a pipe or a file: rich would cut the tables to 80 columns there)."""
    file = file or sys.stdout
    con = _console()
    if con is None or file is not sys.stdout or not _isatty(file):
        print(to_markdown(report), file=file)
        return
    from rich.table import Table

    for title, keys, impls, cells in _tables(report["results"]):
        tab = Table(title=title, title_justify="left", show_lines=False)
        tab.add_column("case", style="bold")
        for i in impls:
            tab.add_column(i, justify="right", style="cyan" if i in ("c", "numba", "numpy", "cuda")
                           else ("dim" if i == "roofline" else None))
        for k in keys:
            tab.add_row(k, *[_cell(cells[(k, i)], "\n") if (k, i) in cells else "" for i in impls])
        con.print(tab)
    for title, body in _lowp_tables(report["results"]):
        tab = Table(title=title, title_justify="left")
        for k, col in enumerate(_LOWP_HEADER):
            tab.add_column(col, justify="left" if k < 3 else "right",
                           style="bold" if k == 0 else None)
        for cells in body:
            tab.add_row(*cells, style="cyan" if cells[1] in ("c", "numba", "numpy", "cuda") else
                        ("dim" if cells[1] == "roofline" else None))
        con.print(tab)
    if any(d["measured"] is not None for d in report.get("targets") or []):
        tab = Table(title="Performance targets (measured in this run)", title_justify="left")
        for col in ("case", "backend", "target", "measured", "met"):
            tab.add_column(col)
        for d in report["targets"]:
            met = "—" if d["met"] is None else ("[green]yes[/]" if d["met"] else "[red bold]NO[/]")
            tab.add_row(d["what"], d["impl"], d["goal_text"],
                        _measured_text(d) if d["measured"] is not None else f"({d['why_missing']})", met)
        con.print(tab)
    warn = load_warning(report)
    if warn:
        con.print(f"[yellow bold]warning:[/] {warn}", highlight=False)
    probs = _problems(report["results"])
    if probs:
        con.print("[bold]Not measured:[/]")
        for (impl, status, reason), where in probs.items():
            style = "red" if status in ("check-failed", "error") else "yellow"
            con.print(f"  [{style}]{impl}[/] ({status}, {len(where)} case{'s' if len(where) != 1 else ''}): "
                      f"{reason}", highlight=False, markup=True, soft_wrap=True)


# ============================================================================ plot
def plot(path, report):
    """PNG: throughput vs size per implementation for each optimizer (roofline drawn), the tensor-count
    sweep, matmul GFLOP/s, and the lowp step's time relative to torch fused per layout. Returns the
    path, or raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["status"] == "ok"]
    size_rows = [r for r in rows if r["section"] in ("size", "headline") and r.get("n_tensors") == 1]
    count_rows = [r for r in rows if r["section"] == "count"]
    mm_rows = [r for r in rows if r["section"] == "matmul"]
    ops = []
    for r in size_rows:
        if r["op"] not in ops:
            ops.append(r["op"])
    panels = [("size", op) for op in ops]
    if count_rows:
        first = "adam" if any(r["op"] == "adam" for r in count_rows) else count_rows[0]["op"]
        panels.append(("count", first))
    if mm_rows:
        panels.append(("matmul", None))
    lowp_rows = [r for r in rows if r["section"] == "lowp" and "time_vs_baseline" in r]
    for r in lowp_rows:
        if ("lowp", r["layout"]) not in panels:
            panels.append(("lowp", r["layout"]))
    if not panels:
        panels = [("empty", None)]
    ncol = min(3, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.9 * nrow), squeeze=False)
    colors = {}
    cmap = plt.get_cmap("tab10")

    def color(impl):
        if impl == "roofline":
            return "black"
        if impl not in colors:
            colors[impl] = cmap(len(colors) % 10)
        return colors[impl]

    for ax, (kind, op) in zip(axes.flat, panels):
        if kind == "size":
            sel = [r for r in size_rows if r["op"] == op]
            for impl in _order({r["impl"] for r in sel}):
                pts = sorted((r["elements"], r["gbps"]) for r in sel if r["impl"] == impl)
                xs, ys = zip(*pts)
                if impl == "roofline":
                    ax.plot(xs, ys, "--", lw=2.2, color="black", label="roofline (stream probe)")
                else:
                    ax.plot(xs, ys, "o-", ms=3, lw=1.4, color=color(impl), label=impl)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("elements (one tensor)")
            ax.set_ylabel("GB/s moved by the update")
            ax.set_title(f"{op}: throughput vs size")
        elif kind == "count":
            sel = [r for r in count_rows if r["op"] == op]
            for impl in _order({r["impl"] for r in sel}):
                pts = sorted((r["n_tensors"], r["time_s"] * 1e6) for r in sel if r["impl"] == impl)
                xs, ys = zip(*pts)
                if impl == "roofline":
                    ax.plot(xs, ys, "--", lw=2.2, color="black", label="roofline (stream probe)")
                else:
                    ax.plot(xs, ys, "o-", ms=3, lw=1.4, color=color(impl), label=impl)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("number of 64-element tensors")
            ax.set_ylabel("µs per step")
            ax.set_title(f"{op}: step time vs tensor count")
        elif kind == "matmul":
            groups = []
            for r in mm_rows:
                if r["group"] not in groups:
                    groups.append(r["group"])
            impls = _order({r["impl"] for r in mm_rows})
            width = 0.8 / max(1, len(impls))
            for j, impl in enumerate(impls):
                xs, ys = [], []
                for gi, g in enumerate(groups):
                    for r in mm_rows:
                        if r["group"] == g and r["impl"] == impl:
                            xs.append(gi + j * width)
                            ys.append(r["gflops"])
                ax.bar(xs, ys, width=width, color=color(impl), label=impl)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
            ax.set_xticklabels([g.replace("matmul_", "") for g in groups], fontsize=6, rotation=60,
                               ha="right")
            ax.set_yscale("log")
            ax.set_ylabel("GFLOP/s")
            ax.set_title("dense-layer kernels (batch x (M x K x N))")
        elif kind == "lowp":  # op: the layout
            sel = [r for r in lowp_rows if r["layout"] == op]
            configs = list(dict.fromkeys(r["op"] for r in sel))
            impls = _order({r["impl"] for r in sel})
            width = 0.8 / max(1, len(impls))
            for j, impl in enumerate(impls):
                pts = [(configs.index(r["op"]) + j * width, r["time_vs_baseline"]) for r in sel
                       if r["impl"] == impl]
                ax.bar([x for x, _ in pts], [y for _, y in pts], width=width, color=color(impl),
                       label=impl)
            ax.axhline(1.0, color="black", lw=1, ls="--")
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(configs))])
            ax.set_xticklabels([c.replace("adam-", "") for c in configs], fontsize=7, rotation=30,
                               ha="right")
            ax.set_yscale("log")
            ax.set_ylabel("time / torch fused fp32 Adam")
            ax.set_title(f"low-precision Adam step: {op}")
        else:
            ax.text(0.5, 0.5, "no results", ha="center", va="center")
        ax.grid(True, which="both", alpha=0.25)
        if kind != "empty":
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    m = report.get("machine", {})
    title = (f"fastdescent bench — {m.get('cpu_model', '?')}, {m.get('logical_cores', '?')} cores, "
             f"{m.get('date_utc', '')}")
    warn = load_warning(report)
    if warn:
        title += "\nWARNING: " + textwrap.shorten(warn, 160, placeholder="…")
    fig.suptitle(title, fontsize=10, color="firebrick" if warn else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
