"""The ``fastdescent`` command (also ``python -m fastdescent``): ``bench``, ``demo`` and ``info``.

Examples
--------
::

    fastdescent info                      # backends available here, and why any is missing
    fastdescent demo                      # train the digits MLP on every backend; Adam vs torch
    fastdescent bench --quick             # a sweep of at most ~2 minutes; tables on the terminal
    fastdescent bench --backends c,numba --ops adam,rmsprop --json out.json --md out.md --plot out.png
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return v


def build_parser():
    from .bench import cases as C

    p = argparse.ArgumentParser(
        prog="fastdescent",
        description="fastdescent: compiled optimizer kernels. Benchmarks, a demo and a system report.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="{bench,demo,info}")

    b = sub.add_parser(
        "bench", help="benchmark the kernels against each other, torch and NumPy",
        description=(
            "Sweep every optimizer kernel over tensor sizes and tensor counts, the dense-layer "
            "matmul kernels over shapes and the digits MLP, on each backend and next to the peers "
            "(torch.optim for-loop/foreach/fused, textbook NumPy, np.matmul, torch.bmm, "
            "scikit-learn) and the memory roofline. Every case is checked against the NumPy "
            "reference before it is timed."),
        epilog=f"ops: {', '.join(C.OPS)}, matmul, mlp, mnist, lowp (the low-precision Adam step: "
               "bf16 parameters with stochastic rounding or master weights, bf16/int8 state), functional "
               "(fastdescent.functional next to the class API on 100 tensors). Sizes accept 2^k, "
               "k/M/G suffixes.")
    b.add_argument("--quick", action="store_true",
                   help="a subset (sgd_momentum, adam, rmsprop, lamb unless --ops; sizes 2^10..2^22; "
                        "1/64/1000 tensors; no 400-tensor layout; 3 rounds; --time-budget 100): "
                        "at most about 2 minutes")
    b.add_argument("--time-budget", type=_positive_float, metavar="S",
                   help="start no case group after S seconds; the rest is reported as not run "
                        "(default: 100 with --quick, none otherwise)")
    b.add_argument("--backends", metavar="LIST",
                   help="comma-separated backends (numpy,c,numba,cuda); default: all available here")
    b.add_argument("--ops", metavar="LIST",
                   help="comma-separated ops: optimizer names, matmul, mlp, mnist, lowp (low-precision "
                        "Adam: bf16+stochastic rounding, bf16/int8 state, master weights, next to "
                        "torch fused fp32 Adam, torchao and bitsandbytes 8-bit; --sizes sets its flat "
                        "tensor, default 2^25, then ResNet-50's tensors), functional (the "
                        "functional API next to the class API, 100 x 64 elements, for the optimizers "
                        "given or sgd_momentum, adam, adamw, rmsprop, adagrad, lion); default: all")
    b.add_argument("--json", metavar="FILE", help="write every figure and the machine description")
    b.add_argument("--md", metavar="FILE", help="write a Markdown report")
    b.add_argument("--plot", metavar="FILE", help="write a PNG plot (needs matplotlib)")
    b.add_argument("--sizes", metavar="LIST", help="override the one-tensor sizes, e.g. 2^10,2^20")
    b.add_argument("--counts", metavar="LIST", help="override the tensor counts, e.g. 1,64,1000")
    b.add_argument("--shapes", metavar="LIST",
                   help="override the matmul shapes, BxMxKxN each, e.g. 64x128x128x128")
    b.add_argument("--rounds", type=int, help="timed rounds per case (median taken); default 5, quick 3")
    b.add_argument("--min-time", type=_positive_float, metavar="S",
                   help="minimum seconds per round (calls per round are calibrated); default 0.05")
    b.add_argument("--no-peers", action="store_true", help="only fastdescent's backends and the roofline")
    b.add_argument("--mem-budget-gib", type=_positive_float, metavar="G",
                   help="memory a group of cases may use to be timed interleaved (default: "
                        "min(6, available/2)); above it they are timed one after the other")
    b.add_argument("--from-json", metavar="FILE",
                   help="run nothing: re-print and re-write the reports of an earlier --json run")
    b.add_argument("--flush-denormal", action="store_true",
                   help="run with the c kernels flushing subnormal floats (fd.set_flush_denormal): "
                        "faster where values go subnormal, not bit-exact there; the report says so")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--debug", action="store_true", help="keep tracebacks of failing cases in the JSON")

    d = sub.add_parser("demo", help="train the digits MLP on every backend; Adam vs torch and roofline",
                       description="Train a small MLP on the digits data with each available backend "
                                   "(progress bar), print test accuracy and steps/s, then the Adam "
                                   "kernel's throughput on 2^25 float32 elements against torch's fused "
                                   "Adam (if installed) and the memory roofline.")
    d.add_argument("--backends", metavar="LIST", help="comma-separated backends; default: all available")
    d.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    d.add_argument("--size", default="2^25", help="elements of the Adam kernel tensor (default 2^25)")

    i = sub.add_parser("info", help="backends available here (and why not), threads, CPU, versions")
    i.add_argument("--json", action="store_true", help="machine-readable output (fastdescent.info())")
    return p


def main(argv=None):
    """Entry point of the ``fastdescent`` console script. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import fastdescent

        print(fastdescent.__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    from .bench.commands import UsageError, parse_size

    try:
        if args.command == "bench":
            from .bench.commands import run_bench

            return run_bench(args, argv)
        if args.command == "demo":
            from .bench.demo import run_demo

            if args.epochs < 1:
                raise UsageError("--epochs must be >= 1")
            args.size = parse_size(args.size)
            return run_demo(args)
        from .bench.infocmd import run_info

        return run_info(args)
    except UsageError as exc:
        print(f"fastdescent {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"fastdescent {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
