"""Batched dense-layer matmul, forward and backward (Numba). Mirrors csrc/fd_matmul.c and
backends/numpy_ref/matmul.py.

Shapes (C-contiguous, one dtype): x (B, M, K), w (Bw, K, N) with Bw in {1, B}, b (Bw, N) or None,
y / dy (B, M, N); dx like x, dw like w, db like b. Item i uses weight j = 0 if Bw == 1 else i.

    matmul_fwd    y[i]   = x[i] @ w[j] (+ b[j])                 (overwrites y)
    matmul_bwd_x  dx[i] += dy[i] @ w[j].T                       (accumulates)
    matmul_bwd_w  dw[j] += sum of x[i].T @ dy[i] over i -> j    (accumulates; db likewise, if given)

With Bw == 1 the batch folds into the rows (B*M rows for fwd / bwd_x, a reduction of length B*M for
bwd_w), so an MLP layer is one GEMM.

Two GEMM micro-kernels, written so that LLVM's loop vectoriser (Numba runs no SLP vectoriser) does
the SIMD work on the innermost loop:

* :func:`_gemm_nn_panel` (``c += a @ b``, axpy form): the inner loop runs along a row of ``c`` and
  of ``b``; four rows of ``c`` share every load of ``b`` and the reduction is unrolled by four, so a
  vector FMA costs about 1.25 loads and a quarter of a load/store of ``c``. ``a`` is read as scalars,
  with any strides, so ``x.T`` and ``dy.T`` are read in place. Inner loops index from column 0 of
  views built by :func:`_shift_cols` (an offset index would keep Numba's negative-index wraparound
  in the loop and stop vectorisation). :func:`_gemm_nn` adds L2 blocking for big operands.
* :func:`_gemm_nt` (``c += a @ bt.T``, dot-product form): 2 x 4 dot products share one pass over
  their rows, reduced along the unit-stride axis (``reassoc`` lets LLVM keep vector partial sums, in
  an order fixed at compile time).

Which form runs depends on the shape only. Normally the vector axis is N (fwd: axpy; bwd_w: axpy on
x.T; bwd_x: dot products along N, w read in place). When the output rows are short next to a long K
(:func:`_short_rows`: N <= 32, K >= 32, e.g. the 256 -> 10 layer of an MLP), all three switch to
forms whose vector axis is K: fwd takes dot products against a packed w.T, bwd_x runs the axpy form
on a packed w.T, bwd_w computes dw.T = dy.T @ x and adds it transposed. Those packed copies (at most
32 x K elements per slot: one slot when Bw == 1, one per group of items when Bw == B) are the only
per-call allocations.

Determinism: every output element is computed by one task, in an order fixed by the shape (tiles
are multiples of the unroll factors, and the blocking of the reduction is a multiple of four), never
by atomics or racing partial sums: results are identical run to run, serial or threaded, with any
number of threads. Threads: the parallel variant (prange over tiles of the output: row blocks for
fwd / bwd_x, blocks of dw rows or columns for the Bw == 1 reduction, items for Bw == B) runs from
``_PAR_MACS`` multiply-adds up; below, the serial variant of the same body. Arithmetic: element
type, FMA contraction allowed (``fastmath={'contract'}``, never nnan/ninf).

Arguments are checked before any jitted call by the checks every backend shares
(``backends/_dense_checks``): TypeError for a non-float output, ValueError for shapes or dtypes that
do not fit, non-contiguous arrays or a read-only output, KernelError (FD_ERR_SHAPE) for Bw not in
(1, B), KernelError (FD_ERR_ALIGN) for misaligned data.
"""

from __future__ import annotations

import types as _pytypes

import numba
import numpy as np
from numba import carray, prange

from .._dense_checks import check
from ._config import JIT_OPTIONS
from ._ptr import pointer
from . import _threads
from ._threads import Parallel, serial_only

__all__ = ["matmul_fwd", "matmul_bwd_x", "matmul_bwd_w"]

_FM_NN = {"contract"}
_FM_DOT = {"contract", "reassoc"}  # lets the reduction loop of the dot form vectorise

#: blocking of _gemm_nn: a _KC x _NC panel of b (at most 512 KiB in float32) stays in L2 while the
#: rows of a and c stream past.
_KC = 256
_NC = 512
#: rows of bt kept hot in L1 by _gemm_nt while it sweeps the rows of a.
_JB = 16
#: below this many multiply-adds (~150 us of one core) a call runs the serial variant. On a quiet
#: machine a parallel region over less gains little (the digits MLP's 1M-MAC layers: the same epoch
#: time on one thread as on two); on a machine whose other cores are busy every region can wait a
#: scheduler time slice for a descheduled thread (that epoch 2.6x slower with one of two cores kept
#: busy than on one thread). See fastdescent/_threads.py.
_PAR_MACS = 1 << 22


def _jit(fastmath, **extra):
    return numba.njit(fastmath=fastmath, **JIT_OPTIONS, **extra)


def _variants(body, fastmath):
    """(serial, parallel) dispatchers of one body; renamed copies so Numba's cache keeps them apart.
    The parallel one is wrapped in a :class:`._threads.Parallel` (serial code in a forked child, a
    lock under the ``workqueue`` layer)."""
    out = []
    for suffix, par in (("_serial", False), ("_parallel", True)):
        fn = _pytypes.FunctionType(body.__code__, body.__globals__, body.__name__ + suffix,
                                   body.__defaults__, body.__closure__)
        fn.__qualname__ = body.__qualname__ + suffix
        fn.__module__ = body.__module__
        fn.__doc__ = body.__doc__
        out.append(_jit(fastmath, parallel=par)(fn))
    return out[0], Parallel(out[0], out[1])


# ----------------------------------------------------------------------------------- helpers
@_jit(_FM_NN)
def _shift_cols(arr, j0):
    """A C-contiguous 2-D array starting at column j0 of ``arr`` (same shape and row stride).

    Only columns [0, ncols - j0) of the result may be touched. The micro-kernels index rows from
    column 0 so that LLVM can prove the inner index non-negative: Numba's negative-index wraparound
    then folds away and the loop vectorises (an offset inner index, or a strided view, does not).
    """
    if j0 == 0:
        return arr
    return carray(pointer(arr.ctypes.data, j0, arr), arr.shape)


@_jit(_FM_NN)
def _split(n, parts, multiple):
    """Block size, a multiple of ``multiple``, cutting n into about ``parts`` blocks."""
    parts = max(parts, 1)
    blk = (n + parts - 1) // parts
    blk = (blk + multiple - 1) // multiple * multiple
    return max(blk, multiple)


@_jit(_FM_NN)
def _transpose(dst, src):
    """dst = src.T (2-D; dst (n, m) C-contiguous, src (m, n)), in 8 x 8 blocks."""
    m, n = src.shape
    for r0 in range(0, m, 8):
        r1 = min(r0 + 8, m)
        for q0 in range(0, n, 8):
            q1 = min(q0 + 8, n)
            for q in range(q0, q1):
                for r in range(r0, r1):
                    dst[q, r] = src[r, q]


@_jit(_FM_NN)
def _init_rows(y, r0, r1, n, b, has_b, bj):
    """y[r0:r1, :n] = b[bj, :n] if has_b else 0  (y, b column-shifted alike by the caller)."""
    for r in range(r0, r1):
        if has_b:
            for j in range(n):
                y[r, j] = b[bj, j]
        else:
            for j in range(n):
                y[r, j] = 0


@_jit(_FM_NN)
def _zero(a):
    """a[:, :] = 0 (a helper call rather than an array expression, which the parallel variant would
    turn into a nested parallel loop of its own)."""
    for r in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[r, j] = 0


@_jit(_FM_NN)
def _colsum_add(db, bj, dy, r0, r1, n):
    """db[bj, :n] += column sums of dy[r0:r1, :n]: rows added in pairs, pairs in order."""
    r2 = r0 + (r1 - r0) // 2 * 2
    for r in range(r0, r2, 2):
        for j in range(n):
            db[bj, j] += dy[r, j] + dy[r + 1, j]
    for r in range(r2, r1):
        for j in range(n):
            db[bj, j] += dy[r, j]


@_jit(_FM_NN)
def _add_transposed(dw, t, r0, r1):
    """dw[r0:r1, :] += t[:, r0:r1].T  (dw (K, N), t (N, K))."""
    N = dw.shape[1]
    for r in range(r0, r1):
        for j in range(N):
            dw[r, j] += t[j, r]


# ----------------------------------------------------------------------------------- micro-kernels
@_jit(_FM_NN)
def _gemm_nn_panel(c, a, b, i0, i1, kb, ke, n):
    """c[i0:i1, :n] += a[i0:i1, kb:ke] @ b[kb:ke, :n]  (2-D; c, b C-contiguous; a any strides).

    Every c[i, j] goes through the same sequence (k in groups of four from kb, then the rest one by
    one) whichever block of four rows it falls in, so the caller's tiling of rows and columns never
    changes the result.
    """
    k4 = kb + (ke - kb) // 4 * 4
    i4 = i0 + (i1 - i0) // 4 * 4
    for i in range(i0, i4, 4):
        for k in range(kb, k4, 4):
            a00 = a[i, k]
            a01 = a[i, k + 1]
            a02 = a[i, k + 2]
            a03 = a[i, k + 3]
            a10 = a[i + 1, k]
            a11 = a[i + 1, k + 1]
            a12 = a[i + 1, k + 2]
            a13 = a[i + 1, k + 3]
            a20 = a[i + 2, k]
            a21 = a[i + 2, k + 1]
            a22 = a[i + 2, k + 2]
            a23 = a[i + 2, k + 3]
            a30 = a[i + 3, k]
            a31 = a[i + 3, k + 1]
            a32 = a[i + 3, k + 2]
            a33 = a[i + 3, k + 3]
            for j in range(n):
                b0 = b[k, j]
                b1 = b[k + 1, j]
                b2 = b[k + 2, j]
                b3 = b[k + 3, j]
                c[i, j] += a00 * b0 + a01 * b1 + a02 * b2 + a03 * b3
                c[i + 1, j] += a10 * b0 + a11 * b1 + a12 * b2 + a13 * b3
                c[i + 2, j] += a20 * b0 + a21 * b1 + a22 * b2 + a23 * b3
                c[i + 3, j] += a30 * b0 + a31 * b1 + a32 * b2 + a33 * b3
    for i in range(i4, i1):
        for k in range(kb, k4, 4):
            a0 = a[i, k]
            a1 = a[i, k + 1]
            a2 = a[i, k + 2]
            a3 = a[i, k + 3]
            for j in range(n):
                c[i, j] += a0 * b[k, j] + a1 * b[k + 1, j] + a2 * b[k + 2, j] + a3 * b[k + 3, j]
    # the last (ke - kb) % 4 steps of the reduction, one at a time, after the groups of four (the
    # same order for every row, so one loop serves them all)
    for i in range(i0, i1):
        for k in range(k4, ke):
            a0 = a[i, k]
            for j in range(n):
                c[i, j] += a0 * b[k, j]


@_jit(_FM_NN)
def _gemm_nn(c, a, b, i0, i1, K, n):
    """c[i0:i1, :n] += a[i0:i1, :K] @ b[:K, :n], over _KC x _NC panels of b that stay in L2 while
    the rows of a and c go past. _KC is a multiple of 4, so every element sees the same operation
    sequence as without the blocking."""
    if K <= _KC and n <= _NC:
        _gemm_nn_panel(c, a, b, i0, i1, 0, K, n)
    else:
        for jb in range(0, n, _NC):
            cs = _shift_cols(c, jb)
            bs = _shift_cols(b, jb)
            nb = min(_NC, n - jb)
            for kb in range(0, K, _KC):
                _gemm_nn_panel(cs, a, bs, i0, i1, kb, min(kb + _KC, K), nb)


@_jit(_FM_DOT)
def _gemm_nt(c, a, bt, i0, i1, j0, j1):
    """c[i0:i1, j0:j1] += a[i0:i1, :] @ bt[j0:j1, :].T  (2-D; a, bt with unit-stride rows).

    2 x 4 blocks of dot products over the full reduction length. Callers tile rows in multiples of
    2 and columns in multiples of _JB, so an element's summation order depends on the shape only.
    """
    K = a.shape[1]
    z = c.dtype.type(0)
    for jb in range(j0, j1, _JB):
        je = min(jb + _JB, j1)
        j4 = jb + (je - jb) // 4 * 4
        i2 = i0 + (i1 - i0) // 2 * 2
        for i in range(i0, i2, 2):
            for j in range(jb, j4, 4):
                s00 = z
                s01 = z
                s02 = z
                s03 = z
                s10 = z
                s11 = z
                s12 = z
                s13 = z
                for k in range(K):
                    a0 = a[i, k]
                    a1 = a[i + 1, k]
                    b0 = bt[j, k]
                    b1 = bt[j + 1, k]
                    b2 = bt[j + 2, k]
                    b3 = bt[j + 3, k]
                    s00 += a0 * b0
                    s01 += a0 * b1
                    s02 += a0 * b2
                    s03 += a0 * b3
                    s10 += a1 * b0
                    s11 += a1 * b1
                    s12 += a1 * b2
                    s13 += a1 * b3
                c[i, j] += s00
                c[i, j + 1] += s01
                c[i, j + 2] += s02
                c[i, j + 3] += s03
                c[i + 1, j] += s10
                c[i + 1, j + 1] += s11
                c[i + 1, j + 2] += s12
                c[i + 1, j + 3] += s13
            for j in range(j4, je):
                s0 = z
                s1 = z
                for k in range(K):
                    bk = bt[j, k]
                    s0 += a[i, k] * bk
                    s1 += a[i + 1, k] * bk
                c[i, j] += s0
                c[i + 1, j] += s1
        for i in range(i2, i1):
            for j in range(jb, je):
                s0 = z
                for k in range(K):
                    s0 += a[i, k] * bt[j, k]
                c[i, j] += s0


# ----------------------------------------------------------------------------------- kernel bodies
# One prange per body, over tasks = (slot, tile). With a shared weight (Bw == 1) the batch folds into
# one item of B*M rows, cut into row blocks (and column blocks when the rows are too few for the
# threads): slot 0, many tiles. With Bw == B every item is independent: a slot is a group of items,
# each done whole (one slot per item, or per packing scratch slot). ``mode`` selects the GEMM form
# (see _short_rows); ``pack`` is the weight-transpose scratch (slots, N, K), (0, 0, 0) when unused;
# ``tasks`` is the number of tiles to aim for (the thread count; results do not depend on it). An
# absent bias (gradient) arrives as an empty array with has_b = False: one specialisation, not two.
@_jit(_FM_NN)
def _plan(nrows, ncols, shared, nitems, nslot_packed, tasks, row_mult, split_cols):
    """(nslot, rb, nrb, cb, ncb) for the bodies below: slots, then row / column blocks per slot.

    Shared weight: one slot, row blocks (a multiple of row_mult), and column blocks (a multiple of
    _JB) when the row blocks are fewer than the threads. Otherwise one slot per item, or per packing
    slot (nslot_packed > 0), with whole items as tiles.
    """
    if shared:
        rb = _split(nrows, tasks, row_mult)
        nrb = (nrows + rb - 1) // rb
        cb = ncols
        if nrb < tasks and split_cols:
            cb = _split(ncols, tasks, _JB)
        return 1, rb, nrb, cb, (ncols + cb - 1) // cb
    return (nslot_packed if nslot_packed > 0 else nitems), nrows, 1, ncols, 1


def _fwd_body(y, x, w, b, has_b, pack, mode, tasks):
    B, M, K = x.shape
    N = w.shape[2]
    shared = w.shape[0] == 1
    if shared:  # one item of B*M rows
        x3 = x.reshape((1, B * M, K))
        y3 = y.reshape((1, B * M, N))
        if mode == 1:
            _transpose(pack[0], w[0])
    else:
        x3 = x
        y3 = y
    nitems, rows = x3.shape[0], x3.shape[1]
    nslot, rb, nrb, cb, ncb = _plan(rows, N, shared, nitems, pack.shape[0], tasks, 4, True)
    for t in prange(nslot * nrb * ncb):
        s = t // (nrb * ncb)
        r0 = (t % (nrb * ncb)) // ncb * rb
        r1 = min(r0 + rb, rows)
        c0 = (t % ncb) * cb
        c1 = min(c0 + cb, N)
        for i in range(s * nitems // nslot, (s + 1) * nitems // nslot):
            j = 0 if shared else i
            yi = y3[i]
            _init_rows(_shift_cols(yi, c0), r0, r1, c1 - c0, _shift_cols(b, c0), has_b, j)
            if mode == 1:
                if not shared:
                    _transpose(pack[s], w[i])
                _gemm_nt(yi, x3[i], pack[s], r0, r1, c0, c1)
            else:
                _gemm_nn(_shift_cols(yi, c0), x3[i], _shift_cols(w[j], c0), r0, r1, K, c1 - c0)


def _bwd_x_body(dx, dy, w, pack, mode, tasks):
    # mode 0: dot products along N against the rows of w, in place; mode 1: axpy form on w.T packed
    B, M, K = dx.shape
    N = w.shape[2]
    shared = w.shape[0] == 1
    if shared:
        dx3 = dx.reshape((1, B * M, K))
        dy3 = dy.reshape((1, B * M, N))
        if mode == 1:
            _transpose(pack[0], w[0])
    else:
        dx3 = dx
        dy3 = dy
    nitems, rows = dx3.shape[0], dx3.shape[1]
    nslot, rb, nrb, cb, ncb = _plan(rows, K, shared, nitems, pack.shape[0], tasks, 4, True)
    for t in prange(nslot * nrb * ncb):
        s = t // (nrb * ncb)
        r0 = (t % (nrb * ncb)) // ncb * rb
        r1 = min(r0 + rb, rows)
        c0 = (t % ncb) * cb
        c1 = min(c0 + cb, K)
        for i in range(s * nitems // nslot, (s + 1) * nitems // nslot):
            j = 0 if shared else i
            if mode == 1:
                if not shared:
                    _transpose(pack[s], w[i])
                _gemm_nn(_shift_cols(dx3[i], c0), dy3[i], _shift_cols(pack[s], c0), r0, r1, N, c1 - c0)
            else:
                _gemm_nt(dx3[i], dy3[i], w[j], r0, r1, c0, c1)


def _bwd_w_body(dw, db, has_b, x, dy, pack, mode, tasks):
    # mode 0: dw += x.T @ dy in the axpy form (x.T read in place); tiles are blocks of dw rows (k)
    #         and columns (n), each reducing over all the rows of its item;
    # mode 1: t = dy.T @ x into pack (N, K), then dw += t.T; tiles are blocks of t's columns (k)
    B, M, K = x.shape
    N = dy.shape[2]
    shared = dw.shape[0] == 1
    if shared:  # one reduction over all B*M rows
        x3 = x.reshape((1, B * M, K))
        dy3 = dy.reshape((1, B * M, N))
        if mode == 1:
            _zero(pack[0])
    else:
        x3 = x
        dy3 = dy
    nitems, red = x3.shape[0], x3.shape[1]
    # mode 1 tiles are column blocks of t (row blocks of dw), never split along N
    nslot, kb, nkb, cb, ncb = _plan(K, N, shared, nitems, pack.shape[0], tasks,
                                    _JB if mode == 1 else 4, mode == 0)
    for t in prange(nslot * nkb * ncb):
        s = t // (nkb * ncb)
        k0 = (t % (nkb * ncb)) // ncb * kb
        k1 = min(k0 + kb, K)
        c0 = (t % ncb) * cb
        c1 = min(c0 + cb, N)
        for i in range(s * nitems // nslot, (s + 1) * nitems // nslot):
            xi = x3[i]
            dyi = dy3[i]
            dwi = dw[0 if shared else i]
            if mode == 1:
                ti = pack[s]
                if not shared:
                    _zero(ti)
                _gemm_nn(_shift_cols(ti, k0), dyi.T, _shift_cols(xi, k0), 0, N, red, k1 - k0)
                _add_transposed(dwi, ti, k0, k1)
            else:
                _gemm_nn(_shift_cols(dwi, c0), xi.T, _shift_cols(dyi, c0), k0, k1, red, c1 - c0)
            if has_b and k0 == 0:
                _colsum_add(_shift_cols(db, c0), 0 if shared else i, _shift_cols(dyi, c0), 0, red,
                            c1 - c0)


_FWD = _variants(_fwd_body, _FM_NN)
_BWD_X = _variants(_bwd_x_body, _FM_NN)
_BWD_W = _variants(_bwd_w_body, _FM_NN)

_NOPACK = {np.dtype(np.float32): np.empty((0, 0, 0), np.float32),
           np.dtype(np.float64): np.empty((0, 0, 0), np.float64)}
_NOBIAS = {np.dtype(np.float32): np.empty((0, 0), np.float32),
           np.dtype(np.float64): np.empty((0, 0), np.float64)}


def _short_rows(K, N):
    """Output rows too short for the axpy form (N <= 32) next to a long K: every row then switches
    to the form whose vector axis is K (measured crossover on AVX2, float32 and float64 alike)."""
    return N <= 32 and K >= 32


def _pack(dtype, B, Bw, N, K):
    """Scratch for a transposed weight (only for short rows, so at most 32 x K per slot): one slot
    if Bw == 1, else one per group of items."""
    slots = 1 if Bw == 1 else min(B, 4 * _threads.threads())
    return np.empty((slots, N, K), dtype)


def _variant(pair, macs):
    """(kernel, tiles to aim for): the parallel variant over all threads for big calls."""
    if macs >= _PAR_MACS and not serial_only():
        threads = _threads.threads()
        if threads > 1:
            return pair[1], threads
    return pair[0], 1


# ----------------------------------------------------------------------------------- contract rows
def _dims(kernel, args):
    """(B, M, K, Bw, N) of valid arguments (the shared checks: the c backend's exception types)."""
    d = check(kernel, args)[0]
    return d["B"], d["M"], d["K"], d["W"], d["N"]


def matmul_fwd(y, x, w, b):
    """y = x @ w (+ b); see the module docstring for shapes."""
    B, M, K, Bw, N = _dims("matmul_fwd", (y, x, w, b))
    if y.size == 0:
        return
    dt = x.dtype
    if _short_rows(K, N):  # dot products along K, on a packed w.T
        mode, pack = 1, _pack(dt, B, Bw, N, K)
    else:
        mode, pack = 0, _NOPACK[dt]
    has_b = b is not None
    fn, tasks = _variant(_FWD, B * M * K * N)
    fn(y, x, w, b if has_b else _NOBIAS[dt], has_b, pack, mode, tasks)


def matmul_bwd_x(dx, dy, w):
    """dx += dy @ w.T (per item); see the module docstring for shapes."""
    B, M, K, Bw, N = _dims("matmul_bwd_x", (dx, dy, w))
    if dx.size == 0 or N == 0:
        return
    dt = dx.dtype
    if _short_rows(K, N):  # short reduction (N): axpy form along K on a packed w.T
        mode, pack = 1, _pack(dt, B, Bw, N, K)
    else:  # dot products along N, w read in place
        mode, pack = 0, _NOPACK[dt]
    fn, tasks = _variant(_BWD_X, B * M * K * N)
    fn(dx, dy, w, pack, mode, tasks)


def matmul_bwd_w(dw, db, x, dy):
    """dw += x.T @ dy, db += column sums of dy (summed over the batch when Bw == 1)."""
    B, M, K, Bw, N = _dims("matmul_bwd_w", (dw, db, x, dy))
    if dy.size == 0:  # dw += 0 (empty reduction or empty dw), db += 0
        return
    if K == 0:  # dw is empty; only the bias gradient is left
        if db is not None:
            db += dy.sum(axis=(0, 1) if Bw == 1 else 1, dtype=dy.dtype)
        return
    dt = x.dtype
    if _short_rows(K, N):  # dw.T = dy.T @ x along K into a scratch, then added transposed
        mode, pack = 1, _pack(dt, B, Bw, N, K)
    else:
        mode, pack = 0, _NOPACK[dt]
    has_b = db is not None
    fn, tasks = _variant(_BWD_W, B * M * K * N)
    fn(dw, db if has_b else _NOBIAS[dt], has_b, x, dy, pack, mode, tasks)
