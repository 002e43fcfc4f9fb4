"""Lion (Numba). Mirrors csrc/fd_lion.c and backends/numpy_ref/lion.py.

Shapes: ``param``, ``grad``, ``exp_avg`` hold ``n`` tensors with the table's sizes. Element arithmetic
in the table's dtype, in the NumPy backend's order:
``g = -g (maximize); c = m*b1 + (1-b1)*g; p = p*decay; p = p - lr*sign(c); m = m*b2 + (1-b2)*g``
with sign(+-0) = +0 and sign(NaN) = NaN (``np.sign``); lr*sign(c) is formed as in csrc/fd_lion.c (the
same value, bit for bit).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import jit_inline, jit_variants
from ._ptr import like, segment


@jit_inline
def _lion_loop(p, g, m, use_decay, decay, lr, b1, c1, b2, c2, zero):
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i]
        ci = mi * b1 + c1 * gi
        # u = lr * sign(c), the same value bit for bit (lr >= 0): lr with c's sign where c != 0,
        # +0 where c == +-0, NaN where c is NaN; selects only, so the loop vectorises
        u = np.copysign(lr, ci) if ci != zero else zero
        if ci != ci:
            u = ci
        pi = p[i]
        if use_decay:
            pi = pi * decay
        p[i] = pi - u
        m[i] = mi * b2 + c2 * gi


def _lion_body(pieces, starts, p_a, g_a, m_a, proto, lr, beta1, one_minus_beta1, beta2,
               one_minus_beta2, decay, maximize):
    lr_ = like(lr, proto)
    b1 = like(beta1, proto)
    c1 = like(one_minus_beta1, proto)
    b2 = like(beta2, proto)
    c2 = like(one_minus_beta2, proto)
    dc = like(decay, proto)
    zero = like(0.0, proto)
    if maximize != 0:  # folded into the gradient's coefficients: (-c1) * g == c1 * (-g), exactly
        c1 = -c1
        c2 = -c2
    use_decay = decay != 1.0
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _lion_loop(segment(p_a[t], lo, k, proto), segment(g_a[t], lo, k, proto),
                       segment(m_a[t], lo, k, proto), use_decay, dc, lr_, b1, c1, b2, c2, zero)


_lion_serial, _lion_parallel = jit_variants(_lion_body)


def lion(tab, *, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, maximize):
    k = tab.require("lion")
    (_lion_parallel if tab.parallel else _lion_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["exp_avg"], tab.proto,
        float(lr), float(beta1), float(one_minus_beta1), float(beta2), float(one_minus_beta2),
        float(decay), int(maximize))
