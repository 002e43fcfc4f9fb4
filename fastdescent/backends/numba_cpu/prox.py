"""Proximal L1 step (Numba). Mirrors csrc/fd_prox.c and backends/numpy_ref/prox.py.

Shapes: ``param`` holds ``n`` tensors with the table's sizes. Per element, in the table's dtype:
``a = |p| - thr; p = 0 if a <= 0 else copysign(a, p)`` (a thresholded element is +0.0; NaN and
+-inf pass through).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import jit_inline, jit_variants
from ._ptr import chunk_segment, like, segment


@jit_inline
def _prox_loop(p, thr, zero):
    for i in range(p.shape[0]):
        pi = p[i]
        a = abs(pi) - thr
        p[i] = zero if a <= zero else np.copysign(a, pi)


def _prox_body(offsets, first, chunk, p_a, proto, threshold):
    thr = like(threshold, proto)
    zero = like(0.0, proto)
    total = offsets[offsets.shape[0] - 1]
    for c in prange(first.shape[0]):
        pos = c * chunk
        end = min(pos + chunk, total)
        t = first[c]
        while pos < end:
            lo, hi, nxt = chunk_segment(offsets, t, pos, end)
            if hi > lo:
                _prox_loop(segment(p_a[t], lo, hi - lo, proto), thr, zero)
            pos = nxt
            t += 1


_prox_serial, _prox_parallel = jit_variants(_prox_body)


def prox(tab, *, threshold):
    k = tab.require("prox")
    (_prox_parallel if tab.parallel else _prox_serial)(
        tab.offsets, tab.chunk_first, tab.chunk, k["param"], tab.proto, float(threshold))
