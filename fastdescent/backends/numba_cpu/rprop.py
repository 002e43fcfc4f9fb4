"""Rprop (Numba). Mirrors csrc/fd_rprop.c and backends/numpy_ref/rprop.py.

Shapes: ``param``, ``prev``, ``step_size``, ``grad`` hold ``n`` tensors with the table's sizes.
Element arithmetic in the table's dtype, in the NumPy backend's order (torch.optim.Rprop's for-loop
rule): ``g = -g (maximize); s = g*prev; f = etaplus if s > 0, etaminus if s < 0, else 0; f = 1 if
f == 0; ss = clamp(ss*f, ss_min, ss_max); g = 0 if f == etaminus; p = p - sign(g)*ss; prev = g``,
with ``sign(x) = (x > 0) - (x < 0)`` (0 for +-0 and NaN, as torch.sign).
"""

from __future__ import annotations

from numba import prange

from ..._contract import kernel_scalars
from ._config import jit_inline, jit_variants
from ._ptr import like, segment


@jit_inline
def _rprop_loop(p, g, prev, ss, neg, etam, etap, smin, smax, zero, one):
    for i in range(p.shape[0]):
        gi = g[i]
        if neg:
            gi = -gi
        s = gi * prev[i]
        f = etap if s > zero else (etam if s < zero else zero)
        if f == zero:
            f = one
        si = ss[i] * f
        si = smin if si < smin else (smax if si > smax else si)
        ss[i] = si
        if f == etam:
            gi = zero
        sg = (one if gi > zero else zero) - (one if gi < zero else zero)
        p[i] = p[i] - sg * si
        prev[i] = gi


def _rprop_body(pieces, starts, p_a, g_a, prev_a, ss_a, proto, etam, etap, smin, smax, maximize):
    neg = maximize != 0
    zero = like(0.0, proto)
    one = like(1.0, proto)
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _rprop_loop(segment(p_a[t], lo, k, proto), segment(g_a[t], lo, k, proto),
                        segment(prev_a[t], lo, k, proto), segment(ss_a[t], lo, k, proto),
                        neg, etam, etap, smin, smax, zero, one)


_rprop_serial, _rprop_parallel = jit_variants(_rprop_body)


def rprop(tab, *, etaminus, etaplus, step_size_min, step_size_max, maximize):
    k = tab.require("rprop")
    etam, etap, smin, smax, neg = kernel_scalars(
        "rprop", dict(etaminus=etaminus, etaplus=etaplus, step_size_min=step_size_min,
                      step_size_max=step_size_max, maximize=maximize), tab.dtype)
    (_rprop_parallel if tab.parallel else _rprop_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["prev"], k["step_size"], tab.proto,
        etam, etap, smin, smax, neg)
