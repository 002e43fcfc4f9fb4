"""Batched dense-layer matmul, forward and backward (CUDA). Mirrors csrc/fd_matmul.c and
backends/numpy_ref/matmul.py.

Shapes (C-contiguous device arrays, one dtype): x (B, M, K), w (Bw, K, N) with Bw in {1, B},
b (Bw, N) or None, y / dy (B, M, N); dx like x, dw like w, db like b. Item i uses weight j = 0 if
Bw == 1, else i.

    matmul_fwd    y[i]   = x[i] @ w[j] (+ b[j])                 (overwrites y)
    matmul_bwd_x  dx[i] += dy[i] @ w[j].T                       (accumulates)
    matmul_bwd_w  dw[j] += sum of x[i].T @ dy[i] over i -> j    (accumulates; db likewise, if given)

Kernels
-------
Classic shared-memory tiling: a block of TILE x TILE threads owns a TILE x TILE tile of the output,
one element per thread, and walks the reduction in TILE-wide steps, staging one tile of each operand
in shared memory (loads coalesced along the unit-stride axis; the transposed operand of bwd_x is
stored transposed into a padded tile). Grids are (column tiles, row tiles, items) and every axis
grid-strides, so any shape fits the launch limits. Accumulation is in the element type, in a fixed
order (k ascending), as in cuBLAS.

Determinism without atomics: every output element is written by exactly one thread. The weight
gradient of a shared weight (Bw == 1) reduces over all B*M rows; long reductions are cut into fixed
chunks of ``ROWS_PER_CHUNK`` rows (a shape-only constant): stage 1 writes one partial per chunk
(the bias-gradient column sums ride along in the blocks of the first row of tiles), stage 2 adds the
partials in chunk order. Results are bitwise reproducible run to run for a given device.

The kernels are built once per dtype (float32, float64) by :func:`_kernels` (the shared tiles need
the element type at compile time) and compiled lazily on first launch. Under Numba's CUDA simulator
the tiles are 4 x 4 (each simulated thread is a Python thread); on a GPU 16 x 16.

Arguments are checked before any launch by the checks every backend shares
(``backends/_dense_checks``, reading ``__cuda_array_interface__``, never copying to the host): the
c backend's exception types for device arrays that do not fit, are not C-contiguous, are read-only
outputs, misaligned, or have Bw not in (1, B); host arrays are refused.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import cuda

from .._dense_checks import check
from ._device import SIM

__all__ = ["matmul_fwd", "matmul_bwd_x", "matmul_bwd_w", "TILE", "ROWS_PER_CHUNK"]

#: threads per block side and tile side (a compile-time constant of the kernels)
TILE = 4 if SIM else 16
#: rows of the Bw == 1 weight-gradient reduction per stage-1 block (a multiple of TILE)
ROWS_PER_CHUNK = 4 * TILE if SIM else 64 * TILE
_GRID_MAX = 65535  # launch limit of gridDim.y and gridDim.z (x allows 2**31 - 1)


def _build(nbt):
    T = TILE

    @cuda.jit
    def fwd(y, x, w, b, has_b, w_batched):
        B = x.shape[0]
        M = x.shape[1]
        K = x.shape[2]
        N = y.shape[2]
        sx = cuda.shared.array((T, T), nbt)
        sw = cuda.shared.array((T, T), nbt)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        ntm = (M + T - 1) // T
        ntn = (N + T - 1) // T
        for i in range(cuda.blockIdx.z, B, cuda.gridDim.z):
            j = i if w_batched else 0
            for tm in range(cuda.blockIdx.y, ntm, cuda.gridDim.y):
                row = tm * T + ty
                for tn in range(cuda.blockIdx.x, ntn, cuda.gridDim.x):
                    col = tn * T + tx
                    acc = nbt(0)
                    for k0 in range(0, K, T):
                        k = k0 + tx
                        if row < M and k < K:
                            sx[ty, tx] = x[i, row, k]
                        else:
                            sx[ty, tx] = 0
                        k = k0 + ty
                        if k < K and col < N:
                            sw[ty, tx] = w[j, k, col]
                        else:
                            sw[ty, tx] = 0
                        cuda.syncthreads()
                        for q in range(T):
                            acc += sx[ty, q] * sw[q, tx]
                        cuda.syncthreads()
                    if row < M and col < N:
                        if has_b:
                            acc += b[j, col]
                        y[i, row, col] = acc

    @cuda.jit
    def bwd_x(dx, dy, w, w_batched):
        B = dy.shape[0]
        M = dy.shape[1]
        N = dy.shape[2]
        K = dx.shape[2]
        sa = cuda.shared.array((T, T), nbt)  # dy[i, row0 + r, n0 + q] at [r, q]
        sb = cuda.shared.array((T, T + 1), nbt)  # w[j, col0 + c, n0 + q] at [q, c] (padded)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        ntm = (M + T - 1) // T
        ntk = (K + T - 1) // T
        for i in range(cuda.blockIdx.z, B, cuda.gridDim.z):
            j = i if w_batched else 0
            for tm in range(cuda.blockIdx.y, ntm, cuda.gridDim.y):
                row = tm * T + ty
                for tk in range(cuda.blockIdx.x, ntk, cuda.gridDim.x):
                    col = tk * T + tx
                    wrow = tk * T + ty
                    acc = nbt(0)
                    for n0 in range(0, N, T):
                        n = n0 + tx
                        if row < M and n < N:
                            sa[ty, tx] = dy[i, row, n]
                        else:
                            sa[ty, tx] = 0
                        if wrow < K and n < N:  # coalesced along n, stored transposed
                            sb[tx, ty] = w[j, wrow, n]
                        else:
                            sb[tx, ty] = 0
                        cuda.syncthreads()
                        for q in range(T):
                            acc += sa[ty, q] * sb[q, tx]
                        cuda.syncthreads()
                    if row < M and col < K:
                        dx[i, row, col] += acc

    @cuda.jit
    def bwd_w(dst, dstb, x, dy, w_batched, rows_per_chunk, accumulate, has_b):
        # dst (Z, K, N), dstb (Z, N): the gradients themselves (accumulate=1; Z = Bw) or the
        # per-chunk partials of a Bw == 1 reduction (accumulate=0; Z = number of chunks).
        B = x.shape[0]
        M = x.shape[1]
        K = x.shape[2]
        N = dy.shape[2]
        sa = cuda.shared.array((T, T), nbt)  # x[., r0 + r, k0 + c] at [r, c]
        sb = cuda.shared.array((T, T), nbt)  # dy[., r0 + r, n0 + c] at [r, c]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        ntk = max((K + T - 1) // T, 1)  # one row of tiles even for K == 0: it carries db
        ntn = (N + T - 1) // T
        R = B * M
        for z in range(cuda.blockIdx.z, dst.shape[0], cuda.gridDim.z):
            if w_batched:
                r_lo = 0
                r_hi = M
            else:
                r_lo = z * rows_per_chunk
                r_hi = min(R, r_lo + rows_per_chunk)
            for tk in range(cuda.blockIdx.y, ntk, cuda.gridDim.y):
                kout = tk * T + ty
                for tn in range(cuda.blockIdx.x, ntn, cuda.gridDim.x):
                    nout = tn * T + tx
                    acc = nbt(0)
                    bacc = nbt(0)
                    for r0 in range(r_lo, r_hi, T):
                        r = r0 + ty
                        if r < r_hi:
                            if w_batched:
                                i = z
                                m = r
                            else:
                                i = r // M
                                m = r - i * M
                            k = tk * T + tx
                            if k < K:
                                sa[ty, tx] = x[i, m, k]
                            else:
                                sa[ty, tx] = 0
                            if nout < N:
                                sb[ty, tx] = dy[i, m, nout]
                            else:
                                sb[ty, tx] = 0
                        else:
                            sa[ty, tx] = 0
                            sb[ty, tx] = 0
                        cuda.syncthreads()
                        for q in range(T):
                            acc += sa[q, ty] * sb[q, tx]
                        if has_b and tk == 0 and ty == 0:
                            for q in range(T):
                                bacc += sb[q, tx]
                        cuda.syncthreads()
                    if kout < K and nout < N:
                        if accumulate:
                            dst[z, kout, nout] += acc
                        else:
                            dst[z, kout, nout] = acc
                    if has_b and tk == 0 and ty == 0 and nout < N:
                        if accumulate:
                            dstb[z, nout] += bacc
                        else:
                            dstb[z, nout] = bacc

    @cuda.jit
    def sum_partials(dw, db, pw, pb, nchunks, has_b):
        # dw[0] += sum over chunks of pw (chunk order), db[0] likewise: one thread per element
        K = dw.shape[1]
        N = dw.shape[2]
        for t in range(cuda.grid(1), K * N, cuda.gridsize(1)):
            k = t // N
            n = t - k * N
            s = nbt(0)
            for c in range(nchunks):
                s += pw[c, k, n]
            dw[0, k, n] += s
        if has_b:
            for n in range(cuda.grid(1), N, cuda.gridsize(1)):
                s = nbt(0)
                for c in range(nchunks):
                    s += pb[c, n]
                db[0, n] += s

    return fwd, bwd_x, bwd_w, sum_partials


_lock = threading.Lock()
_built = {}
_scratch = {}  # (device id, dtype) -> flat device buffer reused by the stage-1 partials


def _kernels(dtype):
    dtype = np.dtype(dtype)
    with _lock:
        if dtype not in _built:
            _built[dtype] = _build(numba.from_dtype(dtype))
        return _built[dtype]


def _device_id():
    if SIM:
        return 0
    return cuda.get_current_device().id


def _buffer(dtype, n):
    """A flat device buffer of at least n elements of dtype (grown on demand, then reused: every
    launch goes to the default stream, so consecutive calls cannot overlap)."""
    key = (_device_id(), np.dtype(dtype))
    with _lock:
        buf = _scratch.get(key)
        if buf is None or buf.shape[0] < n:
            buf = cuda.device_array(max(n, 1), dtype=dtype)
            _scratch[key] = buf
        return buf


def _dummy(dtype):
    """A (1, 1) device array standing for an absent bias / bias gradient (never read or written)."""
    return _buffer(dtype, 1)[:1].reshape((1, 1))


def _dtype(a):
    """Element dtype of a device array (Numba, CuPy, torch...), from __cuda_array_interface__."""
    cai = getattr(a, "__cuda_array_interface__", None)
    return np.dtype(cai["typestr"] if cai is not None else a.dtype)


def _cdiv(a, b):
    return -(-a // b)


def _grid(nx, ny, nz):
    return (max(1, nx), max(1, min(ny, _GRID_MAX)), max(1, min(nz, _GRID_MAX)))


def _dims(kernel, args):
    """(B, M, K, Bw, N) of valid device arrays (the shared checks; see the module docstring)."""
    d = check(kernel, args, device=True)[0]
    return d["B"], d["M"], d["K"], d["W"], d["N"]


def matmul_fwd(y, x, w, b):
    B, M, K, Bw, N = _dims("matmul_fwd", (y, x, w, b))
    if B * M * N == 0:
        return
    dtype = _dtype(x)
    fwd = _kernels(dtype)[0]
    has_b = b is not None
    fwd[_grid(_cdiv(N, TILE), _cdiv(M, TILE), B), (TILE, TILE)](
        y, x, w, b if has_b else _dummy(dtype), has_b, Bw != 1)


def matmul_bwd_x(dx, dy, w):
    B, M, K, Bw, N = _dims("matmul_bwd_x", (dx, dy, w))
    if B * M * K == 0 or N == 0:
        return
    bwd_x = _kernels(_dtype(dx))[1]
    bwd_x[_grid(_cdiv(K, TILE), _cdiv(M, TILE), B), (TILE, TILE)](dx, dy, w, Bw != 1)


def matmul_bwd_w(dw, db, x, dy):
    B, M, K, Bw, N = _dims("matmul_bwd_w", (dw, db, x, dy))
    if B * M * N == 0:
        return
    dtype = _dtype(x)
    _, _, bwd_w, sum_partials = _kernels(dtype)
    has_b = db is not None
    ntk, ntn = max(_cdiv(K, TILE), 1), _cdiv(N, TILE)
    R = B * M
    if Bw == 1 and R > ROWS_PER_CHUNK:  # long shared reduction: per-chunk partials, then their sum
        nch = _cdiv(R, ROWS_PER_CHUNK)
        buf = _buffer(dtype, nch * (K * N + N))
        pw = buf[:nch * K * N].reshape((nch, K, N))
        pb = buf[nch * K * N:nch * (K * N + N)].reshape((nch, N))
        bwd_w[_grid(ntn, ntk, nch), (TILE, TILE)](pw, pb, x, dy, False, ROWS_PER_CHUNK, False, has_b)
        threads = 128 if not SIM else 32
        blocks = max(1, min(_cdiv(K * N, threads), 4096))
        sum_partials[blocks, threads](dw, db if has_b else _dummy(dtype), pw, pb, nch, has_b)
    else:
        bwd_w[_grid(ntn, ntk, Bw), (TILE, TILE)](dw, db if has_b else _dummy(dtype), x, dy, Bw != 1,
                                                 max(R, 1), True, has_b)
