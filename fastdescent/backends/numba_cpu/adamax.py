"""Adamax (Numba). Mirrors csrc/fd_adamax.c and backends/numpy_ref/adamax.py.

Shapes: ``param``, ``grad``, ``exp_avg``, ``exp_inf`` hold ``n`` tensors with the table's sizes.
Scalars are rounded once to the table's dtype by :func:`fastdescent._contract.kernel_scalars`; element
arithmetic in that dtype, in the NumPy backend's order:
``g = -g (maximize); g = g + wd*p; m = (g if from_grad else m) + lw*(g - m);
u = max(u*beta2, |g| + eps) (NaN-propagating); p = p - (clr*m)/u``.
"""

from __future__ import annotations

from numba import prange

from ..._contract import kernel_scalars
from ._config import jit_inline, jit_variants
from ._ptr import segment


@jit_inline
def _adamax_loop(p, g, m, u, neg, use_wd, from_grad, lw, b2, eps, wd, clr):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i]
        if neg:
            gi = -gi
        if use_wd:
            gi = gi + wd * pi
        mi = m[i]
        mi = (gi if from_grad else mi) + lw * (gi - mi)
        ui = u[i] * b2
        ai = abs(gi) + eps
        if not (ui > ai or ui != ui):  # max, a NaN on either side propagates
            ui = ai
        m[i] = mi
        u[i] = ui
        p[i] = pi - (clr * mi) / ui


def _adamax_body(pieces, starts, p_a, g_a, m_a, u_a, proto, lw, from_grad, b2, eps, wd, clr,
                 neg, use_wd):
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _adamax_loop(segment(p_a[t], lo, k, proto), segment(g_a[t], lo, k, proto),
                         segment(m_a[t], lo, k, proto), segment(u_a[t], lo, k, proto),
                         neg, use_wd, from_grad, lw, b2, eps, wd, clr)


_adamax_serial, _adamax_parallel = jit_variants(_adamax_body)


def adamax(tab, *, lerp_weight, lerp_from_grad, beta2, eps, weight_decay, clr, maximize):
    k = tab.require("adamax")
    lw, from_grad, b2, ep, wd, cl, neg = kernel_scalars(
        "adamax", dict(lerp_weight=lerp_weight, lerp_from_grad=lerp_from_grad, beta2=beta2, eps=eps,
                       weight_decay=weight_decay, clr=clr, maximize=maximize), tab.dtype)
    (_adamax_parallel if tab.parallel else _adamax_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["exp_avg"], k["exp_inf"],
        tab.proto, lw, from_grad != 0, b2, ep, wd, cl, neg != 0, weight_decay != 0)
