"""RMSprop (Numba). Mirrors csrc/fd_rmsprop.c and backends/numpy_ref/rmsprop.py.

Shapes: ``param``, ``grad``, ``square_avg``, ``grad_avg`` (centered only) and ``momentum_buffer``
(momentum > 0 only) hold ``n`` tensors with the table's sizes. Element arithmetic in the table's
dtype, in the NumPy backend's order:
``g = -g (maximize); g = g + wd*p; v = v*alpha + ((1-alpha)*g)*g;
avg = sqrt(v - a*a) + eps with a = a*alpha + (1-alpha)*g (centered), else sqrt(v) + eps;
b = b*mu + g/avg; p = p - lr*b (momentum > 0), else p = p - lr*(g/avg)``.

Each combination of the optional columns has its own loop, so a loop only ever touches the arrays
that exist (and the compiler's alias checks only involve those).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._config import jit, jit_inline, jit_variants
from ._ptr import EMPTY_ADDRS, like, segment


@jit
def _grad_sq(gi, pi, vi, neg, use_wd, wd, al, c):
    if neg:
        gi = -gi
    if use_wd:
        gi = gi + wd * pi
    vi = vi * al
    vi = vi + c * gi * gi
    return gi, vi


@jit_inline
def _plain_loop(p, g, v, neg, use_wd, wd, al, c, eps, lr):
    for i in range(p.shape[0]):
        pi = p[i]
        gi, vi = _grad_sq(g[i], pi, v[i], neg, use_wd, wd, al, c)
        v[i] = vi
        avg = np.sqrt(vi) + eps
        p[i] = pi - lr * (gi / avg)


@jit_inline
def _centered_loop(p, g, v, a, neg, use_wd, wd, al, c, eps, lr):
    for i in range(p.shape[0]):
        pi = p[i]
        gi, vi = _grad_sq(g[i], pi, v[i], neg, use_wd, wd, al, c)
        v[i] = vi
        ai = a[i] * al
        ai = ai + c * gi
        a[i] = ai
        avg = np.sqrt(vi - ai * ai) + eps
        p[i] = pi - lr * (gi / avg)


@jit_inline
def _momentum_loop(p, g, v, b, neg, use_wd, wd, al, c, eps, lr, mu):
    for i in range(p.shape[0]):
        pi = p[i]
        gi, vi = _grad_sq(g[i], pi, v[i], neg, use_wd, wd, al, c)
        v[i] = vi
        avg = np.sqrt(vi) + eps
        bi = b[i] * mu
        bi = bi + gi / avg
        b[i] = bi
        p[i] = pi - lr * bi


@jit_inline
def _centered_momentum_loop(p, g, v, a, b, neg, use_wd, wd, al, c, eps, lr, mu):
    for i in range(p.shape[0]):
        pi = p[i]
        gi, vi = _grad_sq(g[i], pi, v[i], neg, use_wd, wd, al, c)
        v[i] = vi
        ai = a[i] * al
        ai = ai + c * gi
        a[i] = ai
        avg = np.sqrt(vi - ai * ai) + eps
        bi = b[i] * mu
        bi = bi + gi / avg
        b[i] = bi
        p[i] = pi - lr * bi


@jit
def _rmsprop_consts(proto, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    """The per-step scalars in the dtype of ``proto`` (rounded once) and the flags, in the order
    :func:`_rmsprop_seg` takes them after its arrays (shared with the mixed-precision step)."""
    return (centered != 0, momentum > 0.0, maximize != 0, weight_decay != 0.0,
            like(weight_decay, proto), like(alpha, proto), like(1.0 - alpha, proto),
            like(eps, proto), like(lr, proto), like(momentum, proto))


@jit_inline
def _rmsprop_seg(p, g, v, a, b, cen, use_mom, neg, use_wd, wd, al, c, eps, lr, mu):
    """One segment (equal-length arrays; ``a`` is only touched when centered, ``b`` with
    momentum)."""
    if cen:
        if use_mom:
            _centered_momentum_loop(p, g, v, a, b, neg, use_wd, wd, al, c, eps, lr, mu)
        else:
            _centered_loop(p, g, v, a, neg, use_wd, wd, al, c, eps, lr)
    elif use_mom:
        _momentum_loop(p, g, v, b, neg, use_wd, wd, al, c, eps, lr, mu)
    else:
        _plain_loop(p, g, v, neg, use_wd, wd, al, c, eps, lr)


def _rmsprop_body(pieces, starts, p_a, g_a, v_a, a_a, b_a, proto, lr, alpha, eps,
                  weight_decay, momentum, centered, maximize):
    cen, use_mom, neg, use_wd, wd, al, c, ep, lr_, mu = _rmsprop_consts(
        proto, lr, alpha, eps, weight_decay, momentum, centered, maximize)
    for ci in prange(starts.shape[0] - 1):
        for q in range(starts[ci], starts[ci + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            p = segment(p_a[t], lo, k, proto)
            g = segment(g_a[t], lo, k, proto)
            v = segment(v_a[t], lo, k, proto)
            a = segment(a_a[t], lo, k, proto) if cen else v
            b = segment(b_a[t], lo, k, proto) if use_mom else v
            _rmsprop_seg(p, g, v, a, b, cen, use_mom, neg, use_wd, wd, al, c, ep, lr_, mu)


_rmsprop_serial, _rmsprop_parallel = jit_variants(_rmsprop_body)


def rmsprop(tab, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    k = tab.require("rmsprop", centered and "grad_avg", momentum > 0 and "momentum_buffer")
    a = k.get("grad_avg") if centered else None
    b = k.get("momentum_buffer") if momentum > 0 else None
    (_rmsprop_parallel if tab.parallel else _rmsprop_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"], k["square_avg"],
        EMPTY_ADDRS if a is None else a, EMPTY_ADDRS if b is None else b, tab.proto, float(lr),
        float(alpha), float(eps), float(weight_decay), float(momentum), int(centered), int(maximize))
