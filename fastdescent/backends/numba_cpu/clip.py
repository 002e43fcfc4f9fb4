"""Gradient-norm reduction, scaling and the finiteness check (Numba). Mirrors csrc/fd_clip.c and
backends/numpy_ref/clip.py.

Shapes: the ``grad`` column holds ``n`` tensors with the table's sizes.

Reductions are deterministic: each chunk of the table (a fixed number of elements, independent of the
thread count) is summed in float64 by a helper compiled with ``reassoc`` only (LLVM keeps vector
partial sums in an order fixed by the compiled code; no nnan/ninf, so NaN and Inf propagate), and the
per-chunk partials are combined in chunk order after the parallel loop. The serial and parallel
variants, with any number of threads, therefore return the same bits on a given machine. ``max |g|``
propagates NaN (a NaN gradient gives a NaN norm, which clip_grad_norm_ reports instead of using).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._config import jit, jit_inline, jit_reduce, jit_variants
from ._ptr import like, segment

_SQUARE, _ABS, _MAX, _POW = 0, 1, 2, 3


@jit_reduce
def _sum_sq(x):
    s = 0.0
    for i in range(x.shape[0]):
        a = np.float64(x[i])
        s += a * a
    return s


@jit_reduce
def _sum_abs(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += abs(np.float64(x[i]))
    return s


@jit_reduce
def _sum_pow(x, power):
    s = 0.0
    for i in range(x.shape[0]):
        s += abs(np.float64(x[i])) ** power
    return s


@jit
def _nanmax(m, a):
    # once NaN, stays NaN; otherwise the larger
    if a > m or a != a:
        return a
    return m


@jit_inline
def _abs_max(x):
    n = x.shape[0]
    n4 = n - n % 4
    m0 = m1 = m2 = m3 = 0.0
    for i in range(0, n4, 4):
        m0 = _nanmax(m0, abs(np.float64(x[i])))
        m1 = _nanmax(m1, abs(np.float64(x[i + 1])))
        m2 = _nanmax(m2, abs(np.float64(x[i + 2])))
        m3 = _nanmax(m3, abs(np.float64(x[i + 3])))
    for i in range(n4, n):
        m0 = _nanmax(m0, abs(np.float64(x[i])))
    return _nanmax(_nanmax(m0, m1), _nanmax(m2, m3))


def _norm_body(pieces, starts, g_a, proto, mode, power):
    nch = starts.shape[0] - 1
    partials = np.zeros(nch, dtype=np.float64)
    for c in prange(nch):
        acc = 0.0
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            x = segment(g_a[t], lo, k, proto)
            if mode == _SQUARE:
                acc += _sum_sq(x)
            elif mode == _ABS:
                acc += _sum_abs(x)
            elif mode == _MAX:
                acc = _nanmax(acc, _abs_max(x))
            else:
                acc += _sum_pow(x, power)
        partials[c] = acc
    out = 0.0
    if mode == _MAX:
        for c in range(nch):
            out = _nanmax(out, partials[c])
    else:
        for c in range(nch):
            out += partials[c]
    return out


@jit_inline
def _count_nonfinite(x, inf):
    bad = 0
    for i in range(x.shape[0]):
        bad += 0 if abs(x[i]) < inf else 1
    return bad


def _finite_body(pieces, starts, g_a, proto):
    nch = starts.shape[0] - 1
    bad = np.zeros(nch, dtype=np.int64)
    inf = like(np.inf, proto)
    for c in prange(nch):
        cnt = 0
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            cnt += _count_nonfinite(segment(g_a[t], lo, k, proto), inf)
        bad[c] = cnt
    for c in range(nch):
        if bad[c] != 0:
            return False
    return True


@jit_inline
def _scale_loop(x, f):
    for i in range(x.shape[0]):
        x[i] = x[i] * f


def _scale_body(pieces, starts, g_a, proto, factor):
    f = like(factor, proto)
    for c in prange(starts.shape[0] - 1):
        for q in range(starts[c], starts[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            _scale_loop(segment(g_a[t], lo, k, proto), f)


_norm_serial, _norm_parallel = jit_variants(_norm_body)
_finite_serial, _finite_parallel = jit_variants(_finite_body)
_scale_serial, _scale_parallel = jit_variants(_scale_body)


def norm_pow_sum(tab, *, norm_type):
    grad = tab.require("norm_pow_sum")["grad"]
    p = float(norm_type)
    if math.isinf(p):
        mode = _MAX
    elif p == 2.0:
        mode = _SQUARE
    elif p == 1.0:
        mode = _ABS
    else:
        mode = _POW
    return float((_norm_parallel if tab.parallel else _norm_serial)(
        tab.pieces, tab.piece_starts, grad, tab.proto, mode, p))


def scale(tab, *, factor):
    grad = tab.require("scale")["grad"]
    (_scale_parallel if tab.parallel else _scale_serial)(
        tab.pieces, tab.piece_starts, grad, tab.proto, float(factor))


def all_finite(tab):
    grad = tab.require("all_finite")["grad"]
    return bool((_finite_parallel if tab.parallel else _finite_serial)(
        tab.pieces, tab.piece_starts, grad, tab.proto))
