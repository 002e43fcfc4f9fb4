"""NAdam / NAdamW (Numba). Mirrors csrc/fd_nadam.c and backends/numpy_ref/nadam.py.

Shapes: ``param``, ``grad``, ``exp_avg``, ``exp_avg_sq`` hold ``n`` tensors with the table's sizes.
Scalars are rounded once to the table's dtype on the host (:func:`fastdescent._contract.kernel_scalars`);
element arithmetic in the table's dtype, in the NumPy backend's order:
``g = -g (maximize); p *= decay; g += wd*p; m = m*b1 + c1*g; v = v*b2 + (c2*g)*g;
p -= (sg*g + sm*m) / (sqrt(v) + eps_scaled)``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..._contract import kernel_scalars
from ._config import jit_inline, jit_variants
from ._ptr import segment
from .adam import _moments


@jit_inline
def _nadam_loop(p, g, m, v, neg, use_decay, decay, use_wd, wd, b1, c1, b2, c2, sg, sm, eps):
    for i in range(p.shape[0]):
        pi, mi, vi, gi = _moments(p[i], g[i], m[i], v[i], neg, use_decay, decay, use_wd, wd, b1, c1,
                                  b2, c2)
        m[i] = mi
        v[i] = vi
        p[i] = pi - (sg * gi + sm * mi) / (np.sqrt(vi) + eps)


def _nadam_body(pieces, starts, p_a, g_a, m_a, v_a, proto, b1, c1, b2, c2, wd, dc, sg, sm,
                ep, neg, use_decay, use_wd):
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _nadam_loop(segment(p_a[t], lo, k, proto), segment(g_a[t], lo, k, proto),
                        segment(m_a[t], lo, k, proto), segment(v_a[t], lo, k, proto), neg,
                        use_decay, dc, use_wd, wd, b1, c1, b2, c2, sg, sm, ep)


_nadam_serial, _nadam_parallel = jit_variants(_nadam_body)


def nadam(tab, *, beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay,
          step_size_grad, step_size_exp_avg, eps_scaled, maximize):
    k = tab.require("nadam")
    sc = kernel_scalars("nadam", dict(
        beta1=beta1, one_minus_beta1=one_minus_beta1, beta2=beta2, one_minus_beta2=one_minus_beta2,
        weight_decay=weight_decay, decay=decay, step_size_grad=step_size_grad,
        step_size_exp_avg=step_size_exp_avg, eps_scaled=eps_scaled, maximize=maximize), tab.dtype)
    b1, c1, b2, c2, wd, dc, sg, sm, ep, mx = sc
    (_nadam_parallel if tab.parallel else _nadam_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["exp_avg"],
        k["exp_avg_sq"], tab.proto, b1, c1, b2, c2, wd, dc, sg, sm, ep, mx != 0, decay != 1,
        weight_decay != 0)
