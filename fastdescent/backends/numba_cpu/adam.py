"""Adam / AdamW (Numba). Mirrors csrc/fd_adam.c and backends/numpy_ref/adam.py.

Shapes: every column holds ``n`` tensors with the table's sizes; ``max_exp_avg_sq`` only if amsgrad.
Element arithmetic in the table's dtype, in the NumPy backend's order:
``p *= decay; g += wd*p; m = m*b1 + (1-b1)*g; v = v*b2 + ((1-b2)*g)*g; vv = max(vmax, v) or v;
p -= step_size * (m / (sqrt(vv)/bc2_sqrt + eps))``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import jit, jit_inline, jit_variants
from ._ptr import EMPTY_ADDRS, like, segment


@jit
def _moments(pi, gi, mi, vi, neg, use_decay, decay, use_wd, wd, b1, c1, b2, c2):
    """Adam's moments of one element (shared by Adam, NAdam and RAdam): returns the decayed
    parameter, the new m and v, and the gradient after maximize and coupled weight decay."""
    if neg:
        gi = -gi
    if use_decay:
        pi = pi * decay
    if use_wd:
        gi = gi + wd * pi
    mi = mi * b1
    mi = mi + c1 * gi
    vi = vi * b2
    vi = vi + c2 * gi * gi
    return pi, mi, vi, gi


@jit_inline
def _adam_loop(p, g, m, v, neg, use_decay, decay, use_wd, wd, b1, c1, b2, c2, eps, ss, bc):
    for i in range(p.shape[0]):
        pi, mi, vi, _ = _moments(p[i], g[i], m[i], v[i], neg, use_decay, decay, use_wd, wd, b1,
                                 c1, b2, c2)
        m[i] = mi
        v[i] = vi
        denom = (np.sqrt(vi) / bc) + eps
        p[i] = pi - ss * (mi / denom)


@jit_inline
def _amsgrad_loop(p, g, m, v, w, neg, use_decay, decay, use_wd, wd, b1, c1, b2, c2, eps, ss, bc):
    for i in range(p.shape[0]):
        pi, mi, vi, _ = _moments(p[i], g[i], m[i], v[i], neg, use_decay, decay, use_wd, wd, b1,
                                 c1, b2, c2)
        m[i] = mi
        v[i] = vi
        wi = w[i]
        if wi == wi and not (vi <= wi):  # np.maximum: a NaN in either operand propagates
            wi = vi
        w[i] = wi
        denom = (np.sqrt(wi) / bc) + eps
        p[i] = pi - ss * (mi / denom)


@jit
def _adam_consts(proto, beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt,
                 amsgrad, maximize):
    """The per-step scalars in the dtype of ``proto`` (rounded once) and the flags, in the order
    :func:`_adam_seg` takes them after its arrays (shared with the mixed-precision step)."""
    return (amsgrad != 0, maximize != 0, decay != 1.0, like(decay, proto), weight_decay != 0.0,
            like(weight_decay, proto), like(beta1, proto), like(1.0 - beta1, proto),
            like(beta2, proto), like(1.0 - beta2, proto), like(eps, proto), like(step_size, proto),
            like(bias_correction2_sqrt, proto))


@jit_inline
def _adam_seg(p, g, m, v, w, ams, neg, use_decay, decay, use_wd, wd, b1, c1, b2, c2, eps, ss, bc):
    """One segment (equal-length arrays; ``w`` is only touched with amsgrad)."""
    if ams:
        _amsgrad_loop(p, g, m, v, w, neg, use_decay, decay, use_wd, wd, b1, c1, b2, c2, eps, ss, bc)
    else:
        _adam_loop(p, g, m, v, neg, use_decay, decay, use_wd, wd, b1, c1, b2, c2, eps, ss, bc)


def _adam_body(pieces, starts, p_a, g_a, m_a, v_a, w_a, proto, beta1, beta2, eps,
               weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad, maximize):
    ams, neg, use_decay, dc, use_wd, wd, b1, c1, b2, c2, ep, ss, bc = _adam_consts(
        proto, beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad,
        maximize)
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            p = segment(p_a[t], lo, k, proto)
            g = segment(g_a[t], lo, k, proto)
            m = segment(m_a[t], lo, k, proto)
            v = segment(v_a[t], lo, k, proto)
            w = segment(w_a[t], lo, k, proto) if ams else v
            _adam_seg(p, g, m, v, w, ams, neg, use_decay, dc, use_wd, wd, b1, c1, b2, c2, ep, ss,
                      bc)


_adam_serial, _adam_parallel = jit_variants(_adam_body)


def adam(tab, *, beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad,
         maximize):
    k = tab.require("adam", amsgrad and "max_exp_avg_sq")
    w = k.get("max_exp_avg_sq") if amsgrad else None
    (_adam_parallel if tab.parallel else _adam_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["exp_avg"],
        k["exp_avg_sq"], EMPTY_ADDRS if w is None else w, tab.proto, float(beta1),
        float(beta2), float(eps), float(weight_decay), float(decay), float(step_size),
        float(bias_correction2_sqrt), int(amsgrad), int(maximize))
