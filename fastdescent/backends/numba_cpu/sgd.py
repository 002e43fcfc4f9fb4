"""SGD family (Numba). Mirrors csrc/fd_sgd.c and backends/numpy_ref/sgd.py.

Shapes: ``param``, ``grad`` and (when momentum != 0) ``momentum_buffer`` hold ``n`` tensors with the
table's sizes. Element arithmetic in the table's dtype, in the NumPy backend's order:
``g = -g (maximize); g = g + wd*p; b = g (first step) or b*mu + (1-dampening)*g;
g = g + mu*b (nesterov) or b; p = p - lr*g``.
"""

from __future__ import annotations

from numba import prange

from ._config import jit, jit_inline, jit_variants
from ._ptr import EMPTY_ADDRS, like, segment


@jit
def _grad(gi, pi, neg, use_wd, wd):
    if neg:
        gi = -gi
    if use_wd:
        gi = gi + wd * pi
    return gi


@jit_inline
def _sgd_loop(p, g, neg, use_wd, wd, lr):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = _grad(g[i], pi, neg, use_wd, wd)
        p[i] = pi - lr * gi


@jit_inline
def _momentum_loop(p, g, b, neg, use_wd, wd, lr, mu, c, first, nesterov):
    for i in range(p.shape[0]):
        pi = p[i]
        gi = _grad(g[i], pi, neg, use_wd, wd)
        if first:
            bi = gi
        else:
            bi = b[i] * mu
            bi = bi + c * gi
        b[i] = bi
        if nesterov:
            gi = gi + mu * bi
        else:
            gi = bi
        p[i] = pi - lr * gi


@jit
def _sgd_consts(proto, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    """The per-step scalars in the dtype of ``proto`` (rounded once) and the flags, in the order
    :func:`_sgd_seg` takes them after its arrays (shared with the mixed-precision step)."""
    return (momentum != 0.0, maximize != 0, weight_decay != 0.0, like(weight_decay, proto),
            like(lr, proto), like(momentum, proto), like(1.0 - dampening, proto), first_step != 0,
            nesterov != 0)


@jit_inline
def _sgd_seg(p, g, b, use_mom, neg, use_wd, wd, lr, mu, c, first, nesterov):
    """One segment (equal-length arrays; ``b`` is only touched with momentum)."""
    if use_mom:
        _momentum_loop(p, g, b, neg, use_wd, wd, lr, mu, c, first, nesterov)
    else:
        _sgd_loop(p, g, neg, use_wd, wd, lr)


def _sgd_body(pieces, starts, p_a, g_a, b_a, proto, lr, momentum, dampening,
              weight_decay, nesterov, maximize, first_step):
    use_mom, neg, use_wd, wd, lr_, mu, c, first, nest = _sgd_consts(
        proto, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step)
    for ci in prange(starts.shape[0] - 1):
        for q in range(starts[ci], starts[ci + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            p = segment(p_a[t], lo, k, proto)
            g = segment(g_a[t], lo, k, proto)
            b = segment(b_a[t], lo, k, proto) if use_mom else p
            _sgd_seg(p, g, b, use_mom, neg, use_wd, wd, lr_, mu, c, first, nest)


_sgd_serial, _sgd_parallel = jit_variants(_sgd_body)


def sgd(tab, *, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    k = tab.require("sgd", momentum != 0 and "momentum_buffer")
    b = k.get("momentum_buffer") if momentum != 0 else None
    (_sgd_parallel if tab.parallel else _sgd_serial)(
        tab.pieces, tab.piece_starts, k["param"], k["grad"],
        EMPTY_ADDRS if b is None else b, tab.proto, float(lr), float(momentum),
        float(dampening), float(weight_decay), int(nesterov), int(maximize), int(first_step))
