"""LAMB (Numba). Mirrors csrc/fd_lamb.c and backends/numpy_ref/lamb.py.

Shapes: ``param``, ``grad``, ``exp_avg``, ``exp_avg_sq`` hold ``n`` tensors with the table's sizes.
Element arithmetic in the table's dtype, in the NumPy backend's order:
``g = -g (maximize); m = m*b1 + (1-b1)*g; v = v*b2 + ((1-b2)*g)*g;
r = (m*ibc1) / (sqrt(v*ibc2) + eps) (+ wd*p); p = p - step*r``, with, per tensor,
``step = lr * (||p||/||r|| if both > 0 else 1)`` in float64, rounded once to the dtype.

Passes (as csrc/fd_lamb.c): pass 1 updates m and v and writes r into a per-chunk scratch buffer (a
loop without reductions, so it vectorises); a helper compiled with ``reassoc`` only
(``_config.REDUCE_FASTMATH``, as the gradient norm) sums p*p and r*r in float64. A tensor that lies
within one chunk of the table's fixed chunk plan is finished there from the scratch r (pass 2 in
cache). Pieces of a tensor that spans chunks leave their partials per chunk (the chunk's first piece
when it continues a tensor, its last piece when that begins one); after the parallel loop they are
combined in chunk order, and a second parallel loop applies pass 2 to those pieces, rebuilding r
from the updated m, v and p with the same code (the same bits). Chunks depend only on the table and
the order of the partial sums only on the compiled code, so results do not depend on the thread
count (serial and parallel variants give the same bits).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._config import jit, jit_inline, jit_reduce, jit_variants
from ._ptr import like, segment


@jit
def _lamb_step(lr, pn2, rn2):
    """lr * trust ratio, float64: 1 unless both norms are > 0 (so also when one is NaN)."""
    pn = math.sqrt(pn2)
    rn = math.sqrt(rn2)
    if pn > 0.0 and rn > 0.0:
        return lr * (pn / rn)
    return lr * 1.0


@jit_inline
def _moments(p, g, m, v, r, use_wd, b1, c1, b2, c2, ibc1, ibc2, eps, wd):
    """Pass 1 without the sums: update m, v; r = the update direction."""
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] * b1 + c1 * gi
        vi = v[i] * b2 + (c2 * gi) * gi
        m[i] = mi
        v[i] = vi
        ri = (mi * ibc1) / (np.sqrt(vi * ibc2) + eps)
        if use_wd:
            ri = ri + wd * p[i]
        r[i] = ri


@jit_reduce
def _sq_sums(p, r):
    """(sum p*p, sum r*r) in float64."""
    s = 0.0
    q = 0.0
    for i in range(p.shape[0]):
        a = np.float64(p[i])
        b = np.float64(r[i])
        s += a * a
        q += b * b
    return s, q


@jit_inline
def _apply(p, r, step):
    for i in range(p.shape[0]):
        p[i] = p[i] - step * r[i]


@jit_inline
def _pass2(p, m, v, use_wd, ibc1, ibc2, eps, wd, step):
    """Pass 2 of a piece of a tensor that spans chunks: r rebuilt from the updated m, v and p."""
    for i in range(p.shape[0]):
        pi = p[i]
        ri = (m[i] * ibc1) / (np.sqrt(v[i] * ibc2) + eps)
        if use_wd:
            ri = ri + wd * pi
        p[i] = pi - step * ri


def _lamb_body(pieces, starts, offsets, first, chunk, p_a, g_a, m_a, v_a, proto, lr, beta1,
               one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, inv_bias_correction1,
               inv_bias_correction2, maximize):
    b1 = like(beta1, proto)
    c1 = like(one_minus_beta1, proto)
    b2 = like(beta2, proto)
    c2 = like(one_minus_beta2, proto)
    ep = like(eps, proto)
    wd = like(weight_decay, proto)
    ibc1 = like(inv_bias_correction1, proto)
    ibc2 = like(inv_bias_correction2, proto)
    use_wd = weight_decay != 0.0
    if maximize != 0:  # folded into c1: (-c1) * g == c1 * (-g); (c2 * -g) * -g == (c2 * g) * g
        c1 = -c1
    nch = first.shape[0]
    total = offsets[offsets.shape[0] - 1]
    # per chunk: partials of its first piece (continuing a tensor) and its last piece (beginning a
    # tensor that goes on), and the tensor of that last piece (-1: none). (np.empty, set in the
    # loops: np.zeros / np.full would each be one more parallel region in the threaded variant,
    # and every region start waits for all the threads, which costs milliseconds on a busy machine.)
    part = np.empty((nch, 4), dtype=np.float64)
    last = np.empty(nch, dtype=np.int64)
    for c in prange(nch):
        pos = c * chunk
        end = min(pos + chunk, total)
        for k in range(4):
            part[c, k] = 0.0
        last[c] = -1
        rbuf = np.empty(end - pos, dtype=proto.dtype)  # r of the chunk's pieces, one at a time
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            hi = lo + k
            p = segment(p_a[t], lo, k, proto)
            r = rbuf[:k]
            _moments(p, segment(g_a[t], lo, k, proto), segment(m_a[t], lo, k, proto),
                     segment(v_a[t], lo, k, proto), r, use_wd, b1, c1, b2, c2, ibc1, ibc2, ep,
                     wd)
            pn2, rn2 = _sq_sums(p, r)
            if lo == 0 and hi == offsets[t + 1] - offsets[t]:
                _apply(p, r, like(_lamb_step(lr, pn2, rn2), proto))
            elif lo == 0:
                part[c, 2] = pn2
                part[c, 3] = rn2
                last[c] = t
            else:
                part[c, 0] = pn2
                part[c, 1] = rn2
    # the tensors that span chunks: partials added in chunk order -> the rounded lr*trust of each
    # chunk's continuing first piece (step_first) and beginning last piece (step_last)
    step_first = np.empty(nch, dtype=proto.dtype)
    step_last = np.empty(nch, dtype=proto.dtype)
    spans = False
    opened = -1
    sp = 0.0
    sq = 0.0
    for c in range(nch):
        step_first[c] = step_last[c] = like(0.0, proto)  # (read only where set below)
        pos = c * chunk
        end = min(pos + chunk, total)
        t = first[c]
        if offsets[t] < pos:
            sp += part[c, 0]
            sq += part[c, 1]
            if offsets[t + 1] <= end:
                s = like(_lamb_step(lr, sp, sq), proto)
                step_last[opened] = s
                for k in range(opened + 1, c + 1):
                    step_first[k] = s
                spans = True
        if last[c] >= 0:
            opened = c
            sp = part[c, 2]
            sq = part[c, 3]
    if not spans:
        return
    for c in prange(nch):
        pos = c * chunk
        end = min(pos + chunk, total)
        t = first[c]
        if offsets[t] < pos:
            lo = pos - offsets[t]
            k = min(end, offsets[t + 1]) - offsets[t] - lo
            _pass2(segment(p_a[t], lo, k, proto), segment(m_a[t], lo, k, proto),
                   segment(v_a[t], lo, k, proto), use_wd, ibc1, ibc2, ep, wd, step_first[c])
        t = last[c]
        if t >= 0:
            k = end - offsets[t]
            _pass2(segment(p_a[t], 0, k, proto), segment(m_a[t], 0, k, proto),
                   segment(v_a[t], 0, k, proto), use_wd, ibc1, ibc2, ep, wd, step_last[c])


_lamb_serial, _lamb_parallel = jit_variants(_lamb_body)


def lamb(tab, *, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
         inv_bias_correction1, inv_bias_correction2, maximize):
    k = tab.require("lamb")
    (_lamb_parallel if tab.parallel else _lamb_serial)(
        tab.pieces, tab.piece_starts, tab.offsets, tab.chunk_first, tab.chunk, k["param"], k["grad"],
        k["exp_avg"], k["exp_avg_sq"], tab.proto, float(lr), float(beta1), float(one_minus_beta1),
        float(beta2),
        float(one_minus_beta2), float(eps), float(weight_decay), float(inv_bias_correction1),
        float(inv_bias_correction2), int(maximize))
