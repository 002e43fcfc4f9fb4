"""Adadelta (Numba). Mirrors csrc/fd_adadelta.c and backends/numpy_ref/adadelta.py.

Shapes: ``param``, ``grad``, ``square_avg``, ``acc_delta`` hold ``n`` tensors with the table's sizes.
Scalars are rounded once to the table's dtype by :func:`fastdescent._contract.kernel_scalars`; element
arithmetic in that dtype, in the NumPy backend's order:
``g = -g (maximize); g = g + wd*p; v = v*rho + (omr*g)*g; d = sqrt(a + eps)/sqrt(v + eps)*g;
a = a*rho + (omr*d)*d; p = p - lr*d``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..._contract import kernel_scalars
from ._config import jit_inline, jit_variants
from ._ptr import segment


@jit_inline
def _adadelta_loop(p, g, v, a, neg, use_wd, lr, rho, omr, eps, wd):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = g[i]
        if neg:
            gi = -gi
        if use_wd:
            gi = gi + wd * pi
        vi = v[i] * rho + (omr * gi) * gi
        ai = a[i]
        di = np.sqrt(ai + eps) / np.sqrt(vi + eps) * gi
        v[i] = vi
        a[i] = ai * rho + (omr * di) * di
        p[i] = pi - lr * di


def _adadelta_body(pieces, starts, p_a, g_a, v_a, a_a, proto, lr, rho, omr, eps, wd, neg,
                   use_wd):
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _adadelta_loop(segment(p_a[t], lo, k, proto), segment(g_a[t], lo, k, proto),
                           segment(v_a[t], lo, k, proto), segment(a_a[t], lo, k, proto),
                           neg, use_wd, lr, rho, omr, eps, wd)


_adadelta_serial, _adadelta_parallel = jit_variants(_adadelta_body)


def adadelta(tab, *, lr, rho, one_minus_rho, eps, weight_decay, maximize):
    k = tab.require("adadelta")
    lr_, rho_, omr, ep, wd, neg = kernel_scalars(
        "adadelta", dict(lr=lr, rho=rho, one_minus_rho=one_minus_rho, eps=eps,
                         weight_decay=weight_decay, maximize=maximize), tab.dtype)
    (_adadelta_parallel if tab.parallel else _adadelta_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["square_avg"],
        k["acc_delta"], tab.proto, lr_, rho_, omr, ep, wd, neg != 0, weight_decay != 0)
