"""Fused loss forward + backward (CUDA). Mirrors csrc/fd_loss.c and backends/numpy_ref/loss.py.

    mse_fwd_bwd   d = pred - target;  dpred += (2*scale) * d;  loss = scale * sum(d*d)  (float64)
    xent_fwd_bwd  logits (R, C), labels (R,) int64. Per row: m = max (NaN propagates),
                  s = sum exp(l - m) in float64, loss_r = (m - l[label]) + log(s);
                  dl = (dl + exp(l - m) * (scale / s)) - (scale at the label).
                  loss = scale * sum_r loss_r.

Element work in the element type, sums in float64. Deterministic, no atomics: mse is a two-stage
reduction (a fixed number of blocks, each thread summing a fixed strided subset in order, a fixed
shared-memory tree per block, then one block over the block partials); xent gives each row to one
block (a tree reduction for its max and its sum), writes the row losses, and one block sums them.
One synchronisation per call (the loss is read back to the host).

Arguments are checked first by the checks every backend shares (``backends/_dense_checks``, through
``__cuda_array_interface__``, never copying to the host): the c backend's exception types. The
labels' values are checked on the device: :func:`_check_labels` (one block) sets a flag that the row
kernel reads before writing anything, and the flag comes back with the loss (still one
synchronisation); a label outside [0, C) raises ``KernelError`` (``FD_ERR_ARG``) as on the other
backends, with ``dlogits`` untouched.
"""

import math
import threading

import numba
import numpy as np
from numba import cuda, float64

from .._dense_checks import ERR_ARG, check, kernel_error
from ._device import INLINE, SIM, _nanmax, _ptr, address_of, config

__all__ = ["mse_fwd_bwd", "xent_fwd_bwd"]

#: threads per block of every kernel here (a power of two: the shared-memory tree). Under the
#: simulator each thread is a Python thread and each tree level a barrier, so keep it small there.
THREADS = 8 if SIM else 256


@cuda.jit(device=True, **INLINE)
def _block_sum(sm, v):
    """Sum of v over the block by a fixed tree; result in sm[0] (read it, then syncthreads)."""
    tid = cuda.threadIdx.x
    sm[tid] = v
    cuda.syncthreads()
    s = THREADS // 2
    while s > 0:
        if tid < s:
            sm[tid] = sm[tid] + sm[tid + s]
        cuda.syncthreads()
        s //= 2


@cuda.jit(device=True, **INLINE)
def _block_max(sm, v):
    """NaN-propagating max of v over the block; result in sm[0] (read it, then syncthreads)."""
    tid = cuda.threadIdx.x
    sm[tid] = v
    cuda.syncthreads()
    s = THREADS // 2
    while s > 0:
        if tid < s:
            sm[tid] = _nanmax(sm[tid], sm[tid + s])
        cuda.syncthreads()
        s //= 2


@cuda.jit(cache=True)
def _mse(adp, ap, at, n, c2, partials):
    sm = cuda.shared.array(THREADS, float64)
    dp = _ptr(adp, n, c2)
    p = _ptr(ap, n, c2)
    t = _ptr(at, n, c2)
    acc = 0.0
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        d = p[j] - t[j]
        dp[j] += c2 * d
        dd = np.float64(d)
        acc += dd * dd
    _block_sum(sm, acc)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = sm[0]


@cuda.jit(cache=True)
def _sum_final(partials, nparts, out):
    sm = cuda.shared.array(THREADS, float64)
    acc = 0.0
    for k in range(cuda.threadIdx.x, nparts, cuda.blockDim.x):
        acc += partials[k]
    _block_sum(sm, acc)
    if cuda.threadIdx.x == 0:
        out[0] = sm[0]


@cuda.jit(cache=True)
def _check_labels(labels, R, C, flag):
    """flag[0] = 1 if some label is outside [0, C), else 0 (one block: zeroed, then set)."""
    if cuda.threadIdx.x == 0:
        flag[0] = 0.0
    cuda.syncthreads()
    for r in range(cuda.threadIdx.x, R, cuda.blockDim.x):
        lab = labels[r]
        if lab < 0 or lab >= C:
            flag[0] = 1.0


def _build_xent(nbt):
    @cuda.jit
    def xent_rows(dl, lg, labels, scale, rowloss, flag):
        if flag[0] != 0:  # a bad label (see _check_labels): write nothing
            return
        sm = cuda.shared.array(THREADS, float64)
        tid = cuda.threadIdx.x
        R = lg.shape[0]
        C = lg.shape[1]
        scale_t = nbt(scale)
        for r in range(cuda.blockIdx.x, R, cuda.gridDim.x):
            m = lg[r, 0]
            for c in range(tid, C, cuda.blockDim.x):
                v = lg[r, c]
                if v > m or v != v:
                    m = v
            _block_max(sm, np.float64(m))
            mt = nbt(sm[0])
            cuda.syncthreads()
            s = 0.0
            for c in range(tid, C, cuda.blockDim.x):
                s += np.float64(math.exp(lg[r, c] - mt))
            _block_sum(sm, s)
            stot = sm[0]
            cuda.syncthreads()
            coef = nbt(scale / stot)
            lab = labels[r]
            for c in range(tid, C, cuda.blockDim.x):
                g = dl[r, c] + math.exp(lg[r, c] - mt) * coef
                if c == lab:
                    g = g - scale_t
                dl[r, c] = g
            if tid == 0:
                rowloss[r] = (np.float64(mt) - np.float64(lg[r, lab])) + math.log(stot)

    return xent_rows


_lock = threading.Lock()
_xent_kernels = {}
_scratch = {}


def _xent_kernel(dtype):
    dtype = np.dtype(dtype)
    with _lock:
        if dtype not in _xent_kernels:
            _xent_kernels[dtype] = _build_xent(numba.from_dtype(dtype))
        return _xent_kernels[dtype]


def _f64_buffer(n):
    """A float64 device buffer of at least n elements, reused between calls (default stream)."""
    key = 0 if SIM else cuda.get_current_device().id
    with _lock:
        buf = _scratch.get(key)
        if buf is None or buf.shape[0] < n:
            buf = cuda.device_array(max(n, 1), dtype=np.float64)
            _scratch[key] = buf
        return buf


def mse_fwd_bwd(dpred, pred, target, *, scale):
    dims, infos = check("mse_fwd_bwd", (dpred, pred, target), device=True, scale=scale)
    n = dims["*"]
    if n == 0:
        return 0.0
    dtype = infos[0].dtype
    nblocks = max(1, min(config().reduce_blocks, -(-n // THREADS)))
    buf = _f64_buffer(nblocks + 1)
    partials, out = buf[:nblocks], buf[nblocks:nblocks + 1]
    _mse[nblocks, THREADS](address_of(dpred, "dpred"), address_of(pred, "pred"),
                                  address_of(target, "target"), n, dtype.type(2 * scale), partials)
    _sum_final[1, THREADS](partials, nblocks, out)
    return scale * float(out.copy_to_host()[0])


def xent_fwd_bwd(dlogits, logits, labels, *, scale):
    dims, infos = check("xent_fwd_bwd", (dlogits, logits, labels), device=True, scale=scale)
    R, C = dims["R"], dims["C"]
    if R == 0:
        return 0.0
    if C == 0:  # every label is outside [0, 0)
        raise kernel_error("xent_fwd_bwd", ERR_ARG)
    buf = _f64_buffer(R + 2)
    rowloss, out, flag = buf[:R], buf[R:R + 1], buf[R + 1:R + 2]
    _check_labels[1, THREADS](labels, R, C, flag)
    grid = max(1, min(R, 65535 if not SIM else 4))
    _xent_kernel(infos[0].dtype)[grid, THREADS](dlogits, logits, labels, float(scale), rowloss,
                                                flag)
    _sum_final[1, THREADS](rowloss, R, out)
    loss, bad = buf[R:R + 2].copy_to_host()
    if bad:
        raise kernel_error("xent_fwd_bwd", ERR_ARG)
    return scale * float(loss)
