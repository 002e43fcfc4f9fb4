"""Fused loss forward + backward (Numba). Mirrors csrc/fd_loss.c and backends/numpy_ref/loss.py.

    mse_fwd_bwd   d = pred - target;  dpred += (2*scale) * d;  loss = scale * sum(d*d)  (float64)
    xent_fwd_bwd  logits (R, C), labels (R,) int64. Per row: m = max (NaN propagates),
                  s = sum exp(l - m) in float64, loss_r = (m - l[label]) + log(s);
                  dl += exp(l - m) * (scale / s);  dl[label] -= scale.  loss = scale * sum_r loss_r.

Element work is in the element type (scale-derived constants rounded once, as NumPy's weak scalars);
sums are float64. Deterministic: the work is cut into chunks that depend only on the shape (elements
for mse, rows for xent), each chunk sums in a fixed order, and the chunk partials are added in chunk
order after the (possibly parallel) loop, so the serial and parallel variants, with any number of
threads, return the same bits.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._dense_checks import check, check_labels
from ._config import CHUNK, PARALLEL_MIN, jit, jit_reduce, jit_variants
from . import _threads
from ._ptr import like

__all__ = ["mse_fwd_bwd", "xent_fwd_bwd"]


@jit_reduce
def _mse_seg(dpred, pred, target, c2):
    # reassoc (jit_reduce) only lets the float64 sum keep vector partials; the update has two
    # operands per operation, so its rounding is unaffected
    s = 0.0
    for i in range(pred.shape[0]):
        d = pred[i] - target[i]
        dpred[i] += c2 * d
        dd = np.float64(d)
        s += dd * dd
    return s


def _mse_body(dpred, pred, target, c2, chunk):
    n = pred.shape[0]
    nch = (n + chunk - 1) // chunk
    partials = np.empty(nch, dtype=np.float64)
    for c in prange(nch):
        lo = c * chunk
        hi = min(lo + chunk, n)
        partials[c] = _mse_seg(dpred[lo:hi], pred[lo:hi], target[lo:hi], c2)
    total = 0.0
    for c in range(nch):
        total += partials[c]
    return total


@jit
def _xent_row(dl, lg, label, scale):
    """One row: accumulate the gradient into dl, return logsumexp(lg) - lg[label] (float64)."""
    C = lg.shape[0]
    m = lg[0]
    for c in range(1, C):
        v = lg[c]
        if v > m or v != v:
            m = v
    s = 0.0
    for c in range(C):
        s += np.float64(math.exp(lg[c] - m))
    coef = like(scale / s, lg)
    for c in range(C):
        dl[c] += math.exp(lg[c] - m) * coef
    dl[label] -= like(scale, lg)
    return (np.float64(m) - np.float64(lg[label])) + math.log(s)


def _xent_body(dlogits, logits, labels, scale, rows_per_chunk):
    R = logits.shape[0]
    nch = (R + rows_per_chunk - 1) // rows_per_chunk
    partials = np.empty(nch, dtype=np.float64)
    for c in prange(nch):
        lo = c * rows_per_chunk
        hi = min(lo + rows_per_chunk, R)
        s = 0.0
        for r in range(lo, hi):
            s += _xent_row(dlogits[r], logits[r], labels[r], scale)
        partials[c] = s
    total = 0.0
    for c in range(nch):
        total += partials[c]
    return total


_MSE = jit_variants(_mse_body)
_XENT = jit_variants(_xent_body)


def _pick(pair, n):
    return pair[1] if n >= PARALLEL_MIN and _threads.threads() > 1 else pair[0]


def mse_fwd_bwd(dpred, pred, target, *, scale):
    n = check("mse_fwd_bwd", (dpred, pred, target), scale=scale)[0]["*"]  # c's exception types
    c2 = pred.dtype.type(2 * scale)
    total = _pick(_MSE, n)(dpred.reshape(-1), pred.reshape(-1), target.reshape(-1), c2, CHUNK)
    return scale * float(total)


def xent_fwd_bwd(dlogits, logits, labels, *, scale):
    d = check("xent_fwd_bwd", (dlogits, logits, labels), scale=scale)[0]
    R, C = d["R"], d["C"]
    if R == 0:
        return 0.0
    labels = check_labels("xent_fwd_bwd", labels, C)  # as C: a bad label, nothing written
    if C == 0:
        return 0.0
    rows = max(1, CHUNK // C)
    total = _pick(_XENT, R * C)(dlogits, logits, labels, float(scale), rows)
    return scale * float(total)
