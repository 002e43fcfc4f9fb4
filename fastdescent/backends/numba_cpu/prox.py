"""Proximal L1 step (Numba). Mirrors csrc/fd_prox.c and backends/numpy_ref/prox.py.

Shapes: ``param`` holds ``n`` tensors with the table's sizes. Per element, in the table's dtype:
``a = |p| - thr; p = 0 if a <= 0 else copysign(a, p)`` (a thresholded element is +0.0; NaN and
+-inf pass through).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import jit_inline, jit_variants
from ._ptr import like, segment


@jit_inline
def _prox_loop(p, thr, zero):
    for i in range(p.shape[0]):
        pi = p[i]
        a = abs(pi) - thr
        p[i] = zero if a <= zero else np.copysign(a, pi)


def _prox_body(pieces, starts, p_a, proto, threshold):
    thr = like(threshold, proto)
    zero = like(0.0, proto)
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _prox_loop(segment(p_a[t], lo, k, proto), thr, zero)


_prox_serial, _prox_parallel = jit_variants(_prox_body)


def prox(tab, *, threshold):
    k = tab.require("prox")
    (_prox_parallel if tab.parallel else _prox_serial)(
        tab.pieces, tab.piece_starts, k["param"], tab.proto, float(threshold))
