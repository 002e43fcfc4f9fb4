"""Training quality in low precision: the digits MLP (64-128-10, scikit-learn's digits, 1400 train /
397 test samples) trained by ``fd.fit`` with Adam (lr 2e-3, batch 32, the same seeds and schedule)
in float32 and in each low-precision configuration; prints the test accuracy, the final training
loss and the time per epoch, as a markdown table.

    python benchmarks/digits_lowp.py [--epochs 20 50] [--backend c]

Configurations: float32 parameters with int8 moments; bfloat16 parameters with stochastic rounding
(float32, bfloat16 or int8 moments); bfloat16 and float16 parameters with float32 master weights;
bfloat16 parameters rounded to nearest without a master copy (what plain bf16 training does: the
small updates are lost, the reason for the other two).
"""

from __future__ import annotations

import argparse
import time

import ml_dtypes
import numpy as np

import fastdescent as fd

BF16 = np.dtype(ml_dtypes.bfloat16)

CONFIGS = [
    ("float32", np.float32, {}),
    ("float32, int8 moments", np.float32, dict(state_dtype="int8")),
    ("bf16 + SR", BF16, dict(stochastic_rounding=True)),
    ("bf16 + SR, bf16 moments", BF16, dict(stochastic_rounding=True, state_dtype="bfloat16")),
    ("bf16 + SR, int8 moments", BF16, dict(stochastic_rounding=True, state_dtype="int8")),
    ("bf16 + fp32 master", BF16, dict(master_weights=True)),
    ("fp16 + fp32 master", np.float16, dict(master_weights=True)),
    ("bf16, round to nearest", BF16, {}),
]


def run(dtype, epochs, backend, **kw):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    idx = np.random.default_rng(0).permutation(len(X))
    X, y = X[idx], y[idx]
    model = fd.nn.MLP([64, 128, 10], seed=1, dtype=dtype, backend=backend)
    opt = fd.Adam(model.parameters(), lr=2e-3, backend=backend, **kw)
    t = time.perf_counter()
    hist = fd.fit(model, X[:1400], y[:1400], optimizer=opt, epochs=epochs, batch_size=32,
                  progress=False, seed=2)
    per_epoch = (time.perf_counter() - t) / epochs
    return model.score(X[1400:], y[1400:]), hist.loss[-1], per_epoch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--backend", default=None, help="fastdescent backend (default: the default)")
    args = ap.parse_args(argv)
    head = "| configuration | " + " | ".join(
        f"{e} epochs: test acc / loss" for e in args.epochs) + " | ms/epoch |"
    print(head)
    print("|" + "---|" * (len(args.epochs) + 2))
    for name, dt, kw in CONFIGS:
        cells, ms = [], None
        for e in args.epochs:
            acc, loss, per = run(dt, e, args.backend, **kw)
            cells.append(f"{100 * acc:.2f}% / {loss:.4f}")
            ms = per * 1e3
        print(f"| {name} | " + " | ".join(cells) + f" | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
