"""LAMB (CUDA). Mirrors backends/numpy_ref/lamb.py (expression order) and csrc/fd_lamb.c.

One call, three launches on the default stream and no host synchronisation:

1. ``_lamb_moments``: over the table's chunk plan (``DeviceTable.plan``: every tensor cut into chunks
   of ``chunk`` elements, a tensor's chunks consecutive), each block updates m and v of a chunk and
   reduces the chunk's float64 sums of p*p and r*r (thread-strided in element order, then a fixed
   shared-memory tree) into ``partials[chunk]``;
2. ``_lamb_trust``: one block per tensor adds its chunks' partials (fixed strides and tree) and writes
   ``steps[t]`` = lr * trust ratio, computed in float64 and rounded once to the element type;
3. ``_lamb_apply``: each block rebuilds r of a chunk from the updated m, v and p and applies
   ``p = p - steps[t] * r``.

Every partial is a function of the table and the launch config only, never of which block ran it,
so results are bitwise reproducible for a given config. Tables of one tensor take the same path (a
plan of one tensor). Traffic: 40 bytes per float32 parameter (pass 1 reads p, g, m, v and writes m,
v; pass 3 reads p, m, v, writes p).
"""

import math

import numpy as np
from numba import cuda, float64

from ..._contract import kernel_scalars
from ._device import INLINE, REDUCE_THREADS, _chunk, _ptr, _sqrt, config

_COLUMNS = ("param", "exp_avg", "exp_avg_sq", "grad")


@cuda.jit(device=True, **INLINE)
def _lamb_r(mj, vj, pj, ibc1, ibc2, eps, wd, use_wd):
    rj = (mj * ibc1) / (_sqrt(vj * ibc2) + eps)
    if use_wd:
        rj = rj + wd * pj
    return rj


@cuda.jit(device=True, **INLINE)
def _block_sum2(sa, sb, a, b):
    """Sum a and b over the block by a fixed tree; the results are in sa[0], sb[0] after the call."""
    tid = cuda.threadIdx.x
    sa[tid] = a
    sb[tid] = b
    cuda.syncthreads()
    s = REDUCE_THREADS // 2
    while s > 0:
        if tid < s:
            sa[tid] = sa[tid] + sa[tid + s]
            sb[tid] = sb[tid] + sb[tid + s]
        cuda.syncthreads()
        s //= 2


@cuda.jit(cache=True)
def _lamb_moments(ap, am, av, ag, plan, beta1, omb1, beta2, omb2, eps, weight_decay, ibc1, ibc2,
                  maximize, use_wd, partials):
    sa = cuda.shared.array(REDUCE_THREADS, float64)
    sb = cuda.shared.array(REDUCE_THREADS, float64)
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, beta1)
        m = _ptr(am[t], end, beta1)
        v = _ptr(av[t], end, beta1)
        g = _ptr(ag[t], end, beta1)
        a = 0.0
        b = 0.0
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            pj = p[j]
            gj = g[j]
            if maximize:
                gj = -gj
            mj = m[j] * beta1 + omb1 * gj
            vj = v[j] * beta2 + omb2 * gj * gj
            m[j] = mj
            v[j] = vj
            rj = _lamb_r(mj, vj, pj, ibc1, ibc2, eps, weight_decay, use_wd)
            pd = np.float64(pj)
            rd = np.float64(rj)
            a += pd * pd
            b += rd * rd
        _block_sum2(sa, sb, a, b)
        if cuda.threadIdx.x == 0:
            partials[c, 0] = sa[0]
            partials[c, 1] = sb[0]
        cuda.syncthreads()  # sa/sb are reused by the block's next chunk


@cuda.jit(cache=True)
def _lamb_trust(partials, tfirst, tcount, ntensors, lr, steps):
    sa = cuda.shared.array(REDUCE_THREADS, float64)
    sb = cuda.shared.array(REDUCE_THREADS, float64)
    for t in range(cuda.blockIdx.x, ntensors, cuda.gridDim.x):
        a = 0.0
        b = 0.0
        for k in range(tfirst[t] + cuda.threadIdx.x, tfirst[t] + tcount[t], cuda.blockDim.x):
            a += partials[k, 0]
            b += partials[k, 1]
        _block_sum2(sa, sb, a, b)
        if cuda.threadIdx.x == 0:
            pn = math.sqrt(sa[0])
            rn = math.sqrt(sb[0])
            trust = 1.0
            if pn > 0.0 and rn > 0.0:
                trust = pn / rn
            steps[t] = lr * trust  # rounded once to the element type by the store
        cuda.syncthreads()


@cuda.jit(cache=True)
def _lamb_apply(ap, am, av, plan, eps, weight_decay, ibc1, ibc2, use_wd, steps):
    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)
        p = _ptr(ap[t], end, eps)
        m = _ptr(am[t], end, eps)
        v = _ptr(av[t], end, eps)
        step = steps[t]
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            pj = p[j]
            p[j] = pj - step * _lamb_r(m[j], v[j], pj, ibc1, ibc2, eps, weight_decay, use_wd)


class _Plan:
    """Per-table device buffers of the three launches (built once per table and chunk size)."""

    def __init__(self, tab, chunk):
        self.chunk = chunk
        sizes = tab.sizes
        counts = -(-sizes // chunk)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.tfirst = cuda.to_device(first)
        self.tcount = cuda.to_device(counts.astype(np.int64))
        nchunks = int(counts.sum())
        self.partials = cuda.device_array((max(nchunks, 1), 2), dtype=np.float64)
        self.steps = cuda.device_array(max(tab.n, 1), dtype=tab.dtype)


def lamb(tab, *, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
         inv_bias_correction1, inv_bias_correction2, maximize):
    tab.require("lamb")  # ValueError naming a missing column
    if tab.total == 0:
        return
    cfg = config()
    sc = dict(lr=lr, beta1=beta1, one_minus_beta1=one_minus_beta1, beta2=beta2,
              one_minus_beta2=one_minus_beta2, eps=eps, weight_decay=weight_decay,
              inv_bias_correction1=inv_bias_correction1, inv_bias_correction2=inv_bias_correction2,
              maximize=maximize)
    _, b1, c1, b2, c2, ep, wd, ibc1, ibc2, neg = kernel_scalars("lamb", sc, tab.dtype)
    use_wd = int(weight_decay != 0)
    plan = getattr(tab, "_lamb_plan", None)
    if plan is None or plan.chunk != cfg.chunk:
        plan = tab._lamb_plan = _Plan(tab, cfg.chunk)
    p, m, v, g = (tab.column(c) for c in _COLUMNS)
    chunks, nchunks = tab.plan(cfg.chunk)
    grid = max(1, min(cfg.max_blocks, nchunks))
    _lamb_moments[grid, REDUCE_THREADS](p, m, v, g, chunks, b1, c1, b2, c2, ep, wd, ibc1, ibc2, neg,
                                        use_wd, plan.partials)
    tgrid = max(1, min(cfg.max_blocks, tab.n))
    _lamb_trust[tgrid, REDUCE_THREADS](plan.partials, plan.tfirst, plan.tcount, tab.n, float(lr),
                                       plan.steps)
    _lamb_apply[grid, REDUCE_THREADS](p, m, v, chunks, ep, wd, ibc1, ibc2, use_wd, plan.steps)
