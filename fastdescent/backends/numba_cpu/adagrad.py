"""Adagrad (Numba). Mirrors csrc/fd_adagrad.c and backends/numpy_ref/adagrad.py.

Shapes: ``param``, ``grad``, ``sum`` hold ``n`` tensors with the table's sizes. Element arithmetic in
the table's dtype, in the NumPy backend's order:
``g = -g (maximize); g = g + wd*p; s = s + g*g; p = p - clr * (g / (sqrt(s) + eps))``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import jit_inline, jit_variants
from ._ptr import like, segment


@jit_inline
def _adagrad_loop(p, g, s, neg, use_wd, wd, clr, eps):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i]
        if neg:
            gi = -gi
        if use_wd:
            gi = gi + wd * pi
        si = s[i] + gi * gi
        s[i] = si
        std = np.sqrt(si) + eps
        p[i] = pi - clr * (gi / std)


def _adagrad_body(pieces, starts, p_a, g_a, s_a, proto, clr, eps, weight_decay, maximize):
    clr_ = like(clr, proto)
    ep = like(eps, proto)
    wd = like(weight_decay, proto)
    use_wd = weight_decay != 0.0
    neg = maximize != 0
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _adagrad_loop(segment(p_a[t], lo, k, proto), segment(g_a[t], lo, k, proto),
                          segment(s_a[t], lo, k, proto), neg, use_wd, wd, clr_, ep)


_adagrad_serial, _adagrad_parallel = jit_variants(_adagrad_body)


def adagrad(tab, *, clr, eps, weight_decay, maximize):
    k = tab.require("adagrad")
    (_adagrad_parallel if tab.parallel else _adagrad_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["sum"], tab.proto,
        float(clr), float(eps), float(weight_decay), int(maximize))
