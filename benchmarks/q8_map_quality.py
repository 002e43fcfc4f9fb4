"""How well the 8-bit state maps keep Adam's moments: fastdescent's arithmetic maps (E4M3 signed /
E5M3 unsigned per 256-element block, ``fastdescent.precision``) against the dynamic-tree maps of
bitsandbytes (``bitsandbytes.functional.create_dynamic_map``, what its and torchao's 8-bit Adam use,
blockwise absmax scaling, nearest code), on real moments: those of a float32 Adam training the
digits MLP (64-128-10) for ``--epochs`` epochs.

Reports, per moment: the mean and 99th-percentile relative error of the values read back, the
fraction read back as exactly 0 while nonzero, and the relative error of Adam's update direction
``m / (sqrt(v) + eps)`` computed from both quantized moments.

    python benchmarks/q8_map_quality.py [--epochs 5]

bitsandbytes is optional (a benchmark peer): without it only fastdescent's maps are reported.
"""

from __future__ import annotations

import argparse

import numpy as np

import fastdescent as fd
from fastdescent import precision as P


def moments(epochs):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    model = fd.nn.MLP([64, 128, 10], seed=0)
    opt = fd.Adam(model.parameters(), lr=1e-3)
    fd.fit(model, X, y, optimizer=opt, epochs=epochs, batch_size=32, progress=False)
    m = np.concatenate([opt.state[i]["exp_avg"].reshape(-1) for i in opt.state])
    v = np.concatenate([opt.state[i]["exp_avg_sq"].reshape(-1) for i in opt.state])
    return m, v


def bnb_roundtrip(x, signed):
    """x through bitsandbytes' dynamic map, per 256-block absmax, nearest code."""
    import bitsandbytes.functional as F

    code = np.sort(F.create_dynamic_map(signed=signed).numpy().astype(np.float32))
    n = x.size
    out = np.empty_like(x)
    for s in range(0, n, P.BLOCK):
        blk = x[s:s + P.BLOCK]
        a = np.abs(blk).max()
        if a == 0:
            out[s:s + P.BLOCK] = 0
            continue
        y = blk / a
        k = np.clip(np.searchsorted(code, y), 1, len(code) - 1)
        lo, hi = code[k - 1], code[k]
        q = np.where(np.abs(y - lo) <= np.abs(hi - y), lo, hi)
        out[s:s + P.BLOCK] = q * a
    return out


def fd_roundtrip(x, code):
    c, s = P.q8_quantize(x, code)
    return P.q8_dequantize(c, s, code)


def report(name, x, xq):
    nz = x != 0
    rel = np.abs(xq[nz] - x[nz]) / np.abs(x[nz])
    zero = float(np.mean(xq[nz] == 0))
    return (f"| {name} | {rel.mean():.4f} | {np.percentile(rel, 99):.4f} | {zero:.4f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    m, v = moments(args.epochs)
    rows = ["| map | mean rel. error | p99 rel. error | nonzero read back as 0 |", "|---|---|---|---|"]
    mq, vq = fd_roundtrip(m, P.Q8S), fd_roundtrip(v, P.Q8U)
    rows += [report("fastdescent signed E4M3, exp_avg", m, mq),
             report("fastdescent unsigned E5M3, exp_avg_sq", v, vq)]
    upd = m / (np.sqrt(v) + 1e-8)
    dirs = [("fastdescent", mq / (np.sqrt(vq) + 1e-8))]
    try:
        bm, bv = bnb_roundtrip(m, True), bnb_roundtrip(v, False)
    except ImportError:
        bm = None
    if bm is not None:
        rows += [report("bitsandbytes dynamic (signed), exp_avg", m, bm),
                 report("bitsandbytes dynamic (unsigned), exp_avg_sq", v, bv)]
        dirs.append(("bitsandbytes", bm / (np.sqrt(bv) + 1e-8)))
    print(f"{m.size} moments of a float32 Adam after {args.epochs} digits epochs\n")
    print("\n".join(rows))
    print("\n| maps | mean rel. error of m/(sqrt(v)+eps) | p99 |\n|---|---|---|")
    nz = upd != 0
    for name, d in dirs:
        rel = np.abs(d[nz] - upd[nz]) / np.abs(upd[nz])
        print(f"| {name} | {rel.mean():.4f} | {np.percentile(rel, 99):.4f} |")


if __name__ == "__main__":
    main()
