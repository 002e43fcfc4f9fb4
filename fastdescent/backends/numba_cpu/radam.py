"""RAdam / RAdamW (Numba). Mirrors csrc/fd_radam.c and backends/numpy_ref/radam.py.

Shapes: ``param``, ``grad``, ``exp_avg``, ``exp_avg_sq`` hold ``n`` tensors with the table's sizes.
Scalars are rounded once to the table's dtype on the host (:func:`fastdescent._contract.kernel_scalars`);
element arithmetic in the table's dtype, in the NumPy backend's order:
``g = -g (maximize); p *= decay; g += wd*p; m = m*b1 + c1*g; v = v*b2 + (c2*g)*g;
p -= step_size * (m / (sqrt(v) + eps))`` if rectify, else ``p -= step_size * m``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..._contract import kernel_scalars
from ._config import jit_inline, jit_variants
from ._ptr import segment
from .adam import _moments


@jit_inline
def _radam_loop(p, g, m, v, neg, use_decay, decay, use_wd, wd, b1, c1, b2, c2, eps, ss, rect):
    for i in range(p.shape[0]):
        pi, mi, vi, _ = _moments(p[i], g[i], m[i], v[i], neg, use_decay, decay, use_wd, wd, b1, c1,
                                  b2, c2)
        m[i] = mi
        v[i] = vi
        if rect:
            p[i] = pi - ss * (mi / (np.sqrt(vi) + eps))
        else:
            p[i] = pi - ss * mi


def _radam_body(pieces, starts, p_a, g_a, m_a, v_a, proto, b1, c1, b2, c2, ep, wd, dc, ss,
                rect, neg, use_decay, use_wd):
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _radam_loop(segment(p_a[t], lo, k, proto), segment(g_a[t], lo, k, proto),
                        segment(m_a[t], lo, k, proto), segment(v_a[t], lo, k, proto), neg,
                        use_decay, dc, use_wd, wd, b1, c1, b2, c2, ep, ss, rect)


_radam_serial, _radam_parallel = jit_variants(_radam_body)


def radam(tab, *, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay,
          step_size, rectify, maximize):
    k = tab.require("radam")
    sc = kernel_scalars("radam", dict(
        beta1=beta1, one_minus_beta1=one_minus_beta1, beta2=beta2, one_minus_beta2=one_minus_beta2,
        eps=eps, weight_decay=weight_decay, decay=decay, step_size=step_size, rectify=rectify,
        maximize=maximize), tab.dtype)
    b1, c1, b2, c2, ep, wd, dc, ss, rect, mx = sc
    (_radam_parallel if tab.parallel else _radam_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["exp_avg"],
        k["exp_avg_sq"], tab.proto, b1, c1, b2, c2, ep, wd, dc, ss, rect != 0, mx != 0,
        decay != 1, weight_decay != 0)
