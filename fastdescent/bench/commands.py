"""The ``fastdescent bench`` command: sweep the hot paths, print a table, write JSON/Markdown/PNG."""

from __future__ import annotations

import re
import sys
import time

from . import cases as C

__all__ = ["UsageError", "parse_sizes", "parse_list", "select_backends", "select_ops", "bench_cases",
           "check_output_paths", "run_bench", "Progress"]

#: ops accepted by ``--ops`` besides the optimizer names (``lowp``: the low-precision Adam step,
#: fastdescent/bench/lowp.py)
EXTRA_OPS = ("matmul", "mlp", "mnist", "lowp", "functional")
#: ``--quick``: no group starts after this many seconds (the cases left are reported, not run; a
#: group that started finishes, each case within QUICK_CASE_BUDGET_S of timing), so the whole command
#: stays within about two minutes even on a loaded machine
QUICK_TIME_BUDGET_S = 100.0
QUICK_CASE_BUDGET_S = 1.0


class UsageError(Exception):
    """A bad command-line value: printed as ``fastdescent <cmd>: error: ...`` with exit status 2."""

    status = 2


class EnvironmentProblem(UsageError):
    """Something asked for is not available here (a backend, a peer): exit status 3."""

    status = 3


# ============================================================================ argument parsing
_POW = re.compile(r"^\s*2\s*(\^|\*\*)\s*(\d+)\s*$")


def parse_size(text):
    """``"2^20"``, ``"2**20"``, ``"1048576"``, ``"64k"``/``"1M"`` (binary) -> int > 0."""
    t = text.strip()
    m = _POW.match(t)
    if m:
        n = 2 ** int(m.group(2))
    else:
        mult = 1
        if t[-1:].lower() in ("k", "m", "g"):
            mult = 1024 ** (" kmg".index(t[-1].lower()))
            t = t[:-1]
        try:
            n = int(t) * mult
        except ValueError:
            raise UsageError(f"bad size {text!r}: use an integer, 2^k or a k/M/G suffix") from None
    if n <= 0:
        raise UsageError(f"bad size {text!r}: must be > 0")
    return n


def parse_sizes(text):
    return tuple(parse_size(s) for s in parse_list(text))


def parse_list(text):
    return [s.strip() for s in str(text).split(",") if s.strip()]


def parse_shape(text):
    """``"BxMxKxN"`` (e.g. ``64x128x128x128``) -> MatmulShape."""
    parts = text.lower().split("x")
    try:
        B, M, K, N = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"bad matmul shape {text!r}: use BxMxKxN, e.g. 64x128x128x128") from None
    if min(B, M, K, N) <= 0:
        raise UsageError(f"bad matmul shape {text!r}: dimensions must be > 0")
    return C.MatmulShape(f"{B}x({M}x{K}x{N})" if M != K or K != N else f"{B}x({M}x{N})", B, M, K, N)


def select_backends(text, *, allow_simulator=False):
    """Backends to run: ``None`` -> every host backend available here (and cuda on a real GPU)."""
    from .. import backends as B

    if text is None or text == "all":
        names = [n for n in C.BACKENDS if C.backend_unavailable(n) is None]
        return names
    names = parse_list(text)
    if not names:
        raise UsageError("--backends: give at least one backend")
    unknown = [n for n in names if n not in B.BACKENDS]
    if unknown:
        raise UsageError(f"unknown backend{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; choose from {', '.join(C.BACKENDS)}")
    for n in names:
        reason = C.backend_unavailable(n, allow_simulator=allow_simulator)
        if reason is not None:
            raise EnvironmentProblem(f"backend {n!r} is not available here: {reason}")
    return list(dict.fromkeys(names))


def select_ops(text):
    allowed = C.OPS + EXTRA_OPS
    if text is None or text == "all":
        return list(allowed)
    names = parse_list(text)
    if not names:
        raise UsageError("--ops: give at least one op")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise UsageError(f"unknown op{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(allowed)}")
    return list(dict.fromkeys(names))


# ============================================================================ what to run
def bench_cases(*, backends, ops, sizes, counts, layouts=(), shapes=C.MATMUL_SHAPES, peers=True,
                roofline=True, lowp_layouts=None):
    """The case list of a ``bench`` run (sections: mlp (digits, then MNIST-shaped), size, count,
    layout, matmul, lowp). The training cases come first: under a time budget (``--quick``) they are
    the last thing to be left out. ``lowp_layouts``: the layouts of the lowp cases (default
    :data:`~fastdescent.bench.lowp.LOWP_LAYOUTS`)."""
    from . import lowp as L

    opt_ops = [o for o in ops if o in C.OPTIMIZERS]
    impls = tuple(backends) + (C.OPT_PEERS if peers else ()) + (("roofline",) if roofline else ())
    out = []
    mlp_impls = tuple(b for b in backends if b != "cuda") + (C.MLP_PEERS if peers else ())
    if "mlp" in ops:
        out += C.mlp_cases(mlp_impls)
    if "mnist" in ops:
        out += C.mnist_cases(mlp_impls)
    if opt_ops:
        out += C.optimizer_cases(opt_ops, [C.single(n) for n in sizes], impls, section="size")
        out += C.optimizer_cases(opt_ops, [C.many(n) for n in counts], impls, section="count")
        if layouts:
            out += C.optimizer_cases(opt_ops, list(layouts), impls, section="layout")
    if "matmul" in ops:
        out += C.matmul_cases(C.MATMUL_KERNELS, shapes,
                              tuple(backends) + (C.MATMUL_PEERS if peers else ()))
    if "functional" in ops:
        fops = [o for o in opt_ops if o in C.FUNCTIONAL_OPS] or list(C.FUNCTIONAL_OPS)
        out += C.functional_cases(fops, backends)
    if "lowp" in ops:
        out += L.lowp_cases(L.LOWP_LAYOUTS if lowp_layouts is None else tuple(lowp_layouts),
                            backends, peers=peers, roofline=roofline)
    return out


def lowp_layouts(sizes_text, quick):
    """The lowp layouts of a run: one tensor of each ``--sizes`` size (default 2^25; ``--quick``
    2^22), then ResNet-50's tensors (``--quick``: 50 Linear(64, 64) layers)."""
    from . import lowp as L

    default = L.QUICK_LOWP_LAYOUTS if quick else L.LOWP_LAYOUTS
    if not sizes_text:
        return default
    return tuple(C.single(n) for n in parse_sizes(sizes_text)) + default[1:]


# ============================================================================ progress
class Progress:
    """A progress bar on stderr (rich when installed and stderr is a terminal; else silent)."""

    def __init__(self, total, enabled=True):
        self._bar = None
        self._task = None
        if not enabled or not sys.stderr.isatty():
            return
        try:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RP, TextColumn,
                                       TimeElapsedColumn)
        except ImportError:
            return
        self._bar = RP(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._task = self._bar.add_task("benchmarking", total=total)

    def __enter__(self):
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def advance(self, case, row):
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"{case.group} [{case.impl}]")


# ============================================================================ the command
def _load_report(path):
    import json

    from . import report as R

    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--from-json: cannot read {path}: {exc}") from None
    if not isinstance(report, dict) or report.get("schema") != "fastdescent-bench/1":
        raise UsageError(f"--from-json: {path} is not a fastdescent bench JSON report")
    report["targets"] = R.evaluate_targets(report["results"])
    return report


def check_output_paths(args):
    """Refuse, before anything runs, an output file that could not be written at the end: a missing
    or read-only folder, a path that is a folder, or ``--plot`` without matplotlib. (A sweep takes
    minutes; losing it to a typo in ``--md`` is the failure this prevents.)"""
    import os

    for flag, path in (("--json", args.json), ("--md", args.md), ("--plot", args.plot)):
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise UsageError(f"{flag}: {path} is a directory; give a file name")
        if not os.path.isdir(folder):
            raise UsageError(f"{flag}: cannot write {path}: folder {folder} does not exist")
        existed = os.path.exists(path)
        try:  # the real test (permission bits do not bind root; /proc, read-only mounts)
            with open(path, "a"):
                pass
        except OSError as exc:
            raise UsageError(f"{flag}: cannot write {path}: {exc.strerror or exc}") from None
        if not existed:
            os.remove(path)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise EnvironmentProblem(f"--plot: matplotlib is not installed ({exc}); "
                                     "pip install matplotlib") from None


def write_outputs(report, args):
    """Print the tables and write the files asked for; returns (exit status, written paths)."""
    from . import report as R

    R.print_report(report)
    written = []
    if args.json:
        R.write_json(args.json, report)
        written.append(args.json)
    if args.md:
        R.write_markdown(args.md, report)
        written.append(args.md)
    if args.plot:
        try:
            R.plot(args.plot, report)
            written.append(args.plot)
        except ImportError as exc:
            print(f"fastdescent bench: cannot write the plot: matplotlib is not installed ({exc})",
                  file=sys.stderr)
            return 3, written
    return 0, written


def run_bench(args, argv=None):
    """Implementation of ``fastdescent bench`` (``args`` from the argparse parser). Returns the exit
    status."""
    from . import report as R
    from .machine import loadavg, machine_info
    from .runner import run

    check_output_paths(args)
    if args.from_json:
        status, written = write_outputs(_load_report(args.from_json), args)
        if written:
            print(f"\nwrote {', '.join(written)}")
        return status

    backends = select_backends(args.backends)
    if not backends:
        raise EnvironmentProblem("no fastdescent backend is available here")
    quick = args.quick
    ops = select_ops(args.ops) if args.ops or not quick else list(C.QUICK_OPS)
    sizes = parse_sizes(args.sizes) if args.sizes else (C.QUICK_SIZES if quick else C.SWEEP_SIZES)
    counts = parse_sizes(args.counts) if args.counts else (C.QUICK_COUNTS if quick else C.SWEEP_COUNTS)
    shapes = tuple(parse_shape(s) for s in parse_list(args.shapes)) if args.shapes else C.MATMUL_SHAPES
    layouts = () if quick else (C.MIXED400,)
    rounds = args.rounds if args.rounds is not None else (3 if quick else 5)
    min_time = args.min_time if args.min_time is not None else (0.02 if quick else 0.05)
    if rounds < 1:
        raise UsageError("--rounds must be >= 1")
    if min_time < 0:
        raise UsageError("--min-time must be >= 0")
    time_budget = args.time_budget if args.time_budget is not None else (QUICK_TIME_BUDGET_S
                                                                         if quick else None)
    case_budget = QUICK_CASE_BUDGET_S if quick else None
    peers = not args.no_peers
    if peers and C.torch_unavailable() is not None and not args.quiet:
        print(f"note: torch peers skipped: {C.torch_unavailable()}", file=sys.stderr)
    lowp = lowp_layouts(args.sizes, quick) if "lowp" in ops else ()
    case_list = bench_cases(backends=backends, ops=ops, sizes=sizes, counts=counts, layouts=layouts,
                            shapes=shapes, peers=peers, lowp_layouts=lowp)
    mem = int(args.mem_budget_gib * (1 << 30)) if args.mem_budget_gib is not None else None
    from .._flush import get_flush_denormal, set_flush_denormal

    # the flush is process-wide: set for this run only (main() may be called in-process), and the
    # report says what the kernels did, whoever set it
    flush_before = get_flush_denormal()
    if getattr(args, "flush_denormal", False) and not set_flush_denormal(True):
        raise EnvironmentProblem("--flush-denormal: the c backend cannot flush subnormal floats "
                                 "here (no c extension, or no SSE MXCSR)")
    try:
        flush = get_flush_denormal()
        machine = machine_info()
        t0 = time.perf_counter()
        deadline = None if time_budget is None else t0 + time_budget
        with Progress(len(case_list), enabled=not args.quiet) as prog:
            rows = run(case_list, rounds=rounds, min_time=min_time, mem_budget=mem,
                       on_row=prog.advance, debug=args.debug, budget=case_budget, deadline=deadline)
        elapsed = time.perf_counter() - t0
    finally:
        set_flush_denormal(flush_before)
    report = {
        "schema": "fastdescent-bench/1",
        "command": "fastdescent " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"quick": quick, "backends": backends, "ops": ops, "sizes": list(sizes),
                     "counts": list(counts), "small_tensor": C.SMALL_TENSOR,
                     "matmul_shapes": [s.name for s in shapes] if "matmul" in ops else [],
                     "layouts": [lay.name for lay in layouts],
                     "lowp_layouts": [lay.name for lay in lowp], "rounds": rounds, "min_time_s": min_time,
                     "time_budget_s": time_budget, "case_budget_s": case_budget,
                     "peers": peers, "dtype": str(C.DTYPE), "check_steps": C.CHECK_STEPS,
                     "flush_denormal": flush},
        "machine": machine,
        "elapsed_s": elapsed,
        "loadavg_end": loadavg(),
        "results": rows,
        "targets": R.evaluate_targets(rows),
    }
    status, written = write_outputs(report, args)
    if status:
        return status
    print(f"\n{len(rows)} cases in {elapsed:.1f} s" + (f"; wrote {', '.join(written)}" if written else ""))
    bad = [r for r in rows if r["status"] == "check-failed"
           or (r["status"] == "error" and r["kind"] == "fastdescent")]
    if bad:
        print(f"fastdescent bench: {len(bad)} case(s) failed: "
              + "; ".join(f"{r['id']}: {r['reason']}" for r in bad[:5]), file=sys.stderr)
        return 1
    return 0


