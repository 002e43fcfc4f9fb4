"""The mixed-precision step (CUDA). Bit for bit the NumPy reference ``backends/numpy_ref/mixed.py``;
the formats are written out in :mod:`fastdescent.precision`, the plan in ``backends/_mixed.py``.

Work split
----------
One kernel launch per bucket. Its work units are the 256-element quantization blocks of every tensor
(:data:`fastdescent.precision.BLOCK`, aligned to each tensor's start: the chunk plan of a
:class:`~._device.DeviceTable` with chunks of ``BLOCK`` elements, walked by ``_chunk``); one thread
block takes one unit at a time (grid-stride over the units), one thread per element (:data:`THREADS`
= 256 on a GPU; under the simulator 8 threads, each striding over 32 elements). Per unit:

1. stochastic rounding's random bits: one Philox4x32-10 call per 8 elements and per stream that
   rounds stochastically (the parameter: stream 0; a bfloat16 state column ``k``: stream 1 + k),
   computed by separate threads into shared memory (at most 4 x 32 calls, once each), then a
   barrier;
2. per element: every column read into float32 (bfloat16/float16 by bit arithmetic, 8-bit codes
   times the unit's old block scale, the master copy or a float32 column as is), the gradient divided
   by ``grad_scale`` when it is not 1, the rule's float32 update, then the stores: master and
   float32 columns as they are, the parameter and bfloat16 state rounded to nearest or
   stochastically, float16 to nearest; the new values of 8-bit columns go to shared memory;
3. 8-bit columns: the block's absmax (of the float32 bits, so NaN > inf > any finite value) by a
   shared-memory tree over the threads' maxima, then each thread quantizes its elements with the new
   scale (thread 0 writes the scale).

The kernels name their chunk plan ``units`` (not ``plan``): tests/test_cuda_ptx.py compiles every
``plan`` walker of the backend with signatures guessed from argument names, which these kernels'
arguments do not follow; tests/test_cuda_mixed.py compiles them to PTX with their own.

Exact float32 arithmetic on a GPU
---------------------------------
The other ``numba_cuda`` kernels use plain ``*``/``+``, which NVVM contracts into fused multiply-adds
(its default, ``-fma=1``, fastmath or not; ``numba.cuda.jit`` has no switch for it): fine for their
documented tolerances, not for a step that must match the reference bit for bit. So the rules'
element arithmetic is written here once more with :func:`_mul`, :func:`_add` and :func:`_sub`: on a
GPU libdevice's ``__nv_fmul_rn``/``__nv_fadd_rn``/``__nv_fsub_rn`` (``mul.rn``/``add.rn``/
``sub.rn``, which are never fused), under the simulator plain float32 NumPy operations. Division and
square root are IEEE (``div.rn``, ``sqrt.rn``: no fastmath), denormals are kept (no ftz). The
expression order is that of ``adam.py``, ``sgd.py`` and ``rmsprop.py`` (and the NumPy reference).
Where a result is NaN, a GPU produces the canonical NaN (0x7FFFFFFF) whatever the operands' payloads,
so float32 columns (master copy, float32 state) may hold other NaN bits than on the host; bfloat16,
float16 and 8-bit storage canonicalise NaN anyway.

Device arrays
-------------
Columns are read through their data addresses (``plan.addr``, uploaded once per plan; the
gradients' once per ``set_grads``). bfloat16 device arrays are those whose
``__cuda_array_interface__`` typestr is ``'<V2'`` (torch's bfloat16 CUDA tensors; Numba device
arrays of ``ml_dtypes.bfloat16``): :mod:`fastdescent._arrays` reads that typestr as bfloat16. A
uint16 device array is not taken for bfloat16. Launches go to the default stream, as every kernel of
the backend.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float32, int32, uint32

from ... import _arrays
from ... import precision as P
from .._mixed import _FLT_MIN, _HALF, _NAN, _ONE, _QCLAMP, _QMAX, _S32, _TWO_23, _TWO_M14, check_call
from .._mixed import _MASK32 as _MASK
from ._device import (INLINE, SIM, DeviceTable, RecentUploads, _chunk, _nanmax, _ptr, _sqrt, address_of,
                      config, flat_grid)
from .noise import _key, _philox

__all__ = ["mixed_step", "grads_finite", "decode_into", "zeros", "THREADS"]

F32, BF16, F16, Q8S, Q8U = P.F32, P.BF16, P.F16, P.Q8S, P.Q8U
BLOCK = P.BLOCK
#: threads per block (a power of two dividing BLOCK): one per element on a GPU
THREADS = 8 if SIM else BLOCK
#: Philox calls (8 elements each) per unit, and streams (parameter + 3 state columns)
GROUPS = BLOCK // 8
STREAMS = 4
WORDS = 4 * GROUPS  # Philox output words per unit and stream
_ABSENT = -1  # storage code of an absent state column
_RULE = {"adam": 0, "sgd": 1, "rmsprop": 2}
_ITEMSIZE = {F32: 4, BF16: 2, F16: 2, Q8S: 1, Q8U: 1}

_F0 = np.float32(0.0)
_U16_0 = np.uint16(0)
_U8_0 = np.uint8(0)
_TAG = np.uint64(P.SR_TAG)


# ---------------------------------------------------------------- float32 bits, exact arithmetic
if SIM:
    def _bits(x):
        """The 32 bits of a float32, as a non-negative int64."""
        return np.int64(np.float32(x).view(np.uint32))

    def _float(u):
        """The float32 whose bits are the low 32 bits of the integer ``u``."""
        return np.uint32(np.int64(u) & 0xFFFFFFFF).view(np.float32)

    def _mul(a, b):
        return np.float32(a) * np.float32(b)

    def _add(a, b):
        return np.float32(a) + np.float32(b)

    def _sub(a, b):
        return np.float32(a) - np.float32(b)

    def _quiet():
        """No floating-point warnings in this (simulated) thread, as the reference's errstate:
        a warning's first registration in a module's globals races the simulator's global swap."""
        np.seterr(all="ignore")

else:
    from numba.cuda import libdevice

    from .._bitcast import as_float as _float
    from .._bitcast import bits as _bits

    @cuda.jit(device=True, **INLINE)
    def _quiet():
        pass

    @cuda.jit(device=True, **INLINE)
    def _mul(a, b):
        return libdevice.fmul_rn(a, b)  # mul.rn.f32: never contracted into an FMA

    @cuda.jit(device=True, **INLINE)
    def _add(a, b):
        return libdevice.fadd_rn(a, b)

    @cuda.jit(device=True, **INLINE)
    def _sub(a, b):
        return libdevice.fsub_rn(a, b)


# ---------------------------------------------------------------- bfloat16 / float16
@cuda.jit(device=True, **INLINE)
def _bf16_rne(u):
    """bfloat16 bits of the float32 with bits ``u``: nearest, ties to even; NaN -> 0x7FC0."""
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return 0x7FC0 if (u & 0x7FFFFFFF) > 0x7F800000 else r


@cuda.jit(device=True, **INLINE)
def _bf16_store(x, sr, r16):
    """bfloat16 bits of float32 ``x``: stochastically with the 16 random bits ``r16`` (finite
    values; ``sr``), else to nearest."""
    u = _bits(x)
    if sr and (u & 0x7F800000) != 0x7F800000:
        return (u + r16) >> 16
    return _bf16_rne(u)


@cuda.jit(device=True, **INLINE)
def _f16_rne(u):
    """float16 bits of the float32 with bits ``u``: nearest, ties to even (subnormals included);
    overflow -> inf; NaN -> 0x7E00."""
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    hn = (a - (112 << 23) + 0xFFF + ((a >> 13) & 1)) >> 13
    # subnormal half (a < 2**-14): adding 0.5 (float32, ties to even) leaves the magnitude rounded
    # to a multiple of 2**-24 in the low mantissa bits
    hs = _bits(_add(_float(a), _HALF)) - 0x3F000000
    h = hs if a < (113 << 23) else hn
    h = 0x7C00 if a >= (143 << 23) else h
    return 0x7E00 if a > 0x7F800000 else (h | sign)


@cuda.jit(device=True, **INLINE)
def _f16_value(h):
    """The float32 value of float16 bits ``h`` (exact)."""
    o = (h & 0x7FFF) << 13
    e = o & 0x0F800000
    normal = o + (112 << 23)
    special = o + (224 << 23)
    sub = _bits(_sub(_float(o + (113 << 23)), _TWO_M14))
    v = special if e == 0x0F800000 else (sub if e == 0 else normal)
    return _float(v | ((h & 0x8000) << 16))


# ---------------------------------------------------------------- 8-bit block maps
@cuda.jit(device=True, **INLINE)
def _q8_value(c, signed, scale):
    """Value of byte ``c`` on the signed/unsigned map times ``scale``."""
    if signed:
        q = c & 0x7F
        bias = 15
        unit = np.float32(2.0 ** -17)
        neg = (c & 0x80) << 24
    else:
        q = c
        bias = 31
        unit = np.float32(2.0 ** -33)
        neg = c & 0
    e = q >> 3
    f = q & 7
    normal = _float(((e + (127 - bias)) << 23) | (f << 20))
    sub = _mul(np.float32(f), unit)
    mag = sub if e == 0 else normal
    return _float(_bits(_mul(mag, scale)) ^ neg)  # negation flips the sign bit (NaN included)


@cuda.jit(device=True, **INLINE)
def _q8_code(x, inv, signed):
    """Byte of float32 ``x`` in a block whose scale has the reciprocal ``inv``."""
    if signed:
        bias = 15
        qmax = 127
        sub_lim = np.float32(2.0 ** -14)
        sub_mul = np.float32(2.0 ** 17)
    else:
        bias = 31
        qmax = 255
        sub_lim = np.float32(2.0 ** -30)
        sub_mul = np.float32(2.0 ** 33)
    ax = abs(x)
    y = _mul(ax, inv)
    y = y if y < _QCLAMP else _QCLAMP
    u = _bits(y)
    qn = ((u + 0x7FFFF + ((u >> 20) & 1)) >> 20) - ((127 - bias) << 3)
    qs = np.int64(_sub(_add(_mul(y, sub_mul), _TWO_23), _TWO_23))  # rounds to nearest even
    q = qs if y < sub_lim else qn
    q = q if q < qmax else qmax
    if signed:
        if x < 0:
            q = q | 0x80
    elif q == 0 and ax > 0:
        q = q | 1
    return q


@cuda.jit(device=True, **INLINE)
def _q8_scale(top):
    """(scale, 1/scale, kind) of a block whose largest |x| has the float32 bits ``top``: kind 0
    codes from the values, 1 all zeros (scale 0), 2 non-finite (scale NaN, codes 0)."""
    if top >= 0x7F800000:
        return _NAN, _F0, 2
    s = _float(top) / _QMAX
    if not s >= _FLT_MIN:
        return _F0, _F0, 1
    return s, _ONE / s, 0


# ---------------------------------------------------------------- columns of one element
@cuda.jit(device=True, **INLINE)
def _load(code, f, h, b, e, scale):
    """float32 value of element ``e`` of a column stored as ``code`` (its float32, 16-bit and byte
    views ``f``, ``h``, ``b``; ``scale``: the element's block scale for 8-bit codes)."""
    if code == F32:
        return f[e]
    if code == BF16:
        return _float(np.int64(h[e]) << 16)
    if code == F16:
        return _f16_value(np.int64(h[e]))
    if code == Q8S or code == Q8U:
        return _q8_value(np.int64(b[e]), code == Q8S, scale)
    return _F0  # absent


@cuda.jit(device=True, **INLINE)
def _store(code, x, f, h, e, sr, rw, s, i):
    """Store float32 ``x`` into element ``e`` of a float32/bfloat16/float16 column (8-bit columns are
    quantized per block, absent ones skipped); bfloat16 with ``sr`` rounds with the random bits of
    stream ``s`` for the unit's element ``i``."""
    if code == F32:
        f[e] = x
    elif code == BF16:
        r16 = np.int64(0)
        if sr:
            r16 = (np.int64(rw[s, 4 * (i >> 3) + ((i & 7) >> 1)]) >> (16 * (i & 1))) & 0xFFFF
        h[e] = np.uint16(_bf16_store(x, sr, r16))
    elif code == F16:
        h[e] = np.uint16(_f16_rne(_bits(x)))


@cuda.jit(device=True, **INLINE)
def _stash(code, x, sx, k, i, top):
    """An 8-bit column's new value into shared memory; the running max of |x|'s bits."""
    if code == Q8S or code == Q8U:
        sx[k, i] = x
        u = _bits(x) & 0x7FFFFFFF
        if u > top:
            top = u
    return top


@cuda.jit(device=True, **INLINE)
def _quantize(code, sx, k, red, cnt, b, sc, blk, start):
    """Quantize the unit's ``cnt`` new values ``sx[k]`` of an 8-bit column (its byte view ``b`` and
    scales ``sc``) with the block absmax bits ``red[k, 0]``."""
    if code == Q8S or code == Q8U:
        s, inv, kind = _q8_scale(np.int64(red[k, 0]))
        tid = cuda.threadIdx.x
        if tid == 0:
            sc[blk] = s
        signed = code == Q8S
        for i in range(tid, cnt, THREADS):
            q = 0
            if kind == 0:
                q = _q8_code(sx[k, i], inv, signed)
            b[start + i] = np.uint8(q)


# ---------------------------------------------------------------- the rules (reference order)
@cuda.jit(device=True, **INLINE)
def _adam_x(pj, gj, m, v, w, b1, c1, b2, c2, eps, wd, decay, ss, bc, flags):
    """flags: 1 amsgrad, 2 maximize, 4 decay != 1, 8 weight_decay != 0."""
    if flags & 2:
        gj = -gj
    if flags & 4:
        pj = _mul(pj, decay)
    if flags & 8:
        gj = _add(gj, _mul(wd, pj))
    m = _add(_mul(m, b1), _mul(c1, gj))
    v = _add(_mul(v, b2), _mul(_mul(c2, gj), gj))
    vv = v
    if flags & 1:
        w = _nanmax(w, v)
        vv = w
    denom = _add(_sqrt(vv) / bc, eps)
    pj = _sub(pj, _mul(ss, m / denom))
    return pj, m, v, w


@cuda.jit(device=True, **INLINE)
def _sgd_x(pj, gj, b, lr, mu, omd, wd, flags):
    """flags: 1 nesterov, 2 maximize, 4 first_step, 8 weight_decay != 0, 16 momentum != 0."""
    if flags & 2:
        gj = -gj
    if flags & 8:
        gj = _add(gj, _mul(wd, pj))
    if flags & 16:
        if flags & 4:
            b = gj
        else:
            b = _add(_mul(b, mu), _mul(omd, gj))
        if flags & 1:
            gj = _add(gj, _mul(mu, b))
        else:
            gj = b
    pj = _sub(pj, _mul(lr, gj))
    return pj, b


@cuda.jit(device=True, **INLINE)
def _rmsprop_x(pj, gj, v, a, b, lr, al, oma, eps, wd, mu, flags):
    """flags: 1 centered, 2 maximize, 8 weight_decay != 0, 16 momentum > 0."""
    if flags & 2:
        gj = -gj
    if flags & 8:
        gj = _add(gj, _mul(wd, pj))
    v = _add(_mul(v, al), _mul(_mul(oma, gj), gj))
    if flags & 1:
        a = _add(_mul(a, al), _mul(oma, gj))
        avg = _sqrt(_sub(v, _mul(a, a)))
    else:
        avg = _sqrt(v)
    avg = _add(avg, eps)
    if flags & 16:
        b = _add(_mul(b, mu), gj / avg)
        pj = _sub(pj, _mul(lr, b))
    else:
        pj = _sub(pj, _mul(lr, gj / avg))
    return pj, v, a, b


# ---------------------------------------------------------------- the kernels
@cuda.jit(cache=True)
def _mixed_kernel(units, p_a, m_a, g_a, gcodes, s_a, s_sc, index, rule, pcode, has_master, c0, c1,
                  c2, s_lo, s_hi, step, sr, unscale, gs, f0, f1, f2, f3, f4, f5, f6, f7, f8, flags):
    rw = cuda.shared.array((STREAMS, WORDS), uint32)
    sx = cuda.shared.array((3, BLOCK), float32)
    red = cuda.shared.array((3, THREADS), int32)
    _quiet()
    tid = cuda.threadIdx.x
    ntens = units[2]
    psr = sr != 0 and pcode == BF16
    sr0 = sr != 0 and c0 == BF16
    sr1 = sr != 0 and c1 == BF16
    sr2 = sr != 0 and c2 == BF16
    any_sr = psr or sr0 or sr1 or sr2
    any_q = c0 >= Q8S or c1 >= Q8S or c2 >= Q8S
    for c in range(cuda.blockIdx.x, units[0], cuda.gridDim.x):
        t, start, end = _chunk(units, c)
        cnt = end - start
        blk = start // BLOCK
        if any_sr:  # the unit's random bits, one Philox call per 8 elements and stream
            k0, k1 = _key(index[t], s_lo, s_hi)
            for idx in range(tid, STREAMS * GROUPS, THREADS):
                s = idx // GROUPS
                jj = idx - s * GROUPS
                need = psr if s == 0 else (sr0 if s == 1 else (sr1 if s == 2 else sr2))
                if need and 8 * jj < cnt:
                    j = np.uint64((start >> 3) + jj)
                    x0, x1, x2, x3 = _philox(j & _MASK, j >> _S32, step, _TAG | np.uint64(s), k0, k1)
                    rw[s, 4 * jj] = x0
                    rw[s, 4 * jj + 1] = x1
                    rw[s, 4 * jj + 2] = x2
                    rw[s, 4 * jj + 3] = x3
            cuda.syncthreads()
        gcode = gcodes[t]
        pf = _ptr(p_a[t], end if pcode == F32 else 0, _F0)
        ph = _ptr(p_a[t], end if pcode != F32 else 0, _U16_0)
        mf = _ptr(m_a[t], end if has_master else 0, _F0)
        gf = _ptr(g_a[t], end if gcode == F32 else 0, _F0)
        gh = _ptr(g_a[t], end if gcode != F32 else 0, _U16_0)
        a0 = s_a[t]
        a1 = s_a[ntens + t]
        a2 = s_a[2 * ntens + t]
        q0 = c0 >= Q8S
        q1 = c1 >= Q8S
        q2 = c2 >= Q8S
        s0f = _ptr(a0, end if c0 == F32 else 0, _F0)
        s1f = _ptr(a1, end if c1 == F32 else 0, _F0)
        s2f = _ptr(a2, end if c2 == F32 else 0, _F0)
        s0h = _ptr(a0, end if c0 == BF16 or c0 == F16 else 0, _U16_0)
        s1h = _ptr(a1, end if c1 == BF16 or c1 == F16 else 0, _U16_0)
        s2h = _ptr(a2, end if c2 == BF16 or c2 == F16 else 0, _U16_0)
        s0b = _ptr(a0, end if q0 else 0, _U8_0)
        s1b = _ptr(a1, end if q1 else 0, _U8_0)
        s2b = _ptr(a2, end if q2 else 0, _U8_0)
        sc0 = _ptr(s_sc[t], blk + 1 if q0 else 0, _F0)
        sc1 = _ptr(s_sc[ntens + t], blk + 1 if q1 else 0, _F0)
        sc2 = _ptr(s_sc[2 * ntens + t], blk + 1 if q2 else 0, _F0)
        old0 = sc0[blk] if q0 else _F0
        old1 = sc1[blk] if q1 else _F0
        old2 = sc2[blk] if q2 else _F0
        top0 = np.int64(0)
        top1 = np.int64(0)
        top2 = np.int64(0)
        for i in range(tid, cnt, THREADS):
            e = start + i
            if has_master:
                pj = mf[e]
                cur = np.int64(ph[e])
                enc = _bf16_rne(_bits(pj)) if pcode == BF16 else _f16_rne(_bits(pj))
                if enc != cur:  # the parameter was written from outside: it wins
                    pj = _load(pcode, pf, ph, ph, e, _F0)
            else:
                pj = _load(pcode, pf, ph, ph, e, _F0)
            gj = _load(gcode, gf, gh, gh, e, _F0)
            if unscale:
                gj = gj / gs
            x0 = _load(c0, s0f, s0h, s0b, e, old0)
            x1 = _load(c1, s1f, s1h, s1b, e, old1)
            x2 = _load(c2, s2f, s2h, s2b, e, old2)
            if rule == 0:
                pj, x0, x1, x2 = _adam_x(pj, gj, x0, x1, x2, f0, f1, f2, f3, f4, f5, f6, f7, f8,
                                         flags)
            elif rule == 1:
                pj, x0 = _sgd_x(pj, gj, x0, f0, f1, f2, f3, flags)
            else:
                pj, x0, x1, x2 = _rmsprop_x(pj, gj, x0, x1, x2, f0, f1, f2, f3, f4, f5, flags)
            if has_master:
                mf[e] = pj
            _store(pcode, pj, pf, ph, e, psr, rw, 0, i)
            _store(c0, x0, s0f, s0h, e, sr0, rw, 1, i)
            _store(c1, x1, s1f, s1h, e, sr1, rw, 2, i)
            _store(c2, x2, s2f, s2h, e, sr2, rw, 3, i)
            top0 = _stash(c0, x0, sx, 0, i, top0)
            top1 = _stash(c1, x1, sx, 1, i, top1)
            top2 = _stash(c2, x2, sx, 2, i, top2)
        if any_q:  # the blocks' absmax by a shared-memory tree, then the codes
            red[0, tid] = top0
            red[1, tid] = top1
            red[2, tid] = top2
            cuda.syncthreads()
            w = THREADS // 2
            while w > 0:
                if tid < w:
                    for k in range(3):
                        if red[k, tid + w] > red[k, tid]:
                            red[k, tid] = red[k, tid + w]
                cuda.syncthreads()
                w //= 2
            _quantize(c0, sx, 0, red, cnt, s0b, sc0, blk, start)
            _quantize(c1, sx, 1, red, cnt, s1b, sc1, blk, start)
            _quantize(c2, sx, 2, red, cnt, s2b, sc2, blk, start)
        cuda.syncthreads()  # the shared arrays are the next unit's


@cuda.jit(cache=True)
def _absmax_kernel(units, g_a, gcodes, top):
    """top[0] = max over every gradient element of its |value|'s float32 bits (the bits of
    non-negative float32 values order as the values; inf and NaN above every finite value)."""
    m = np.int64(0)
    for c in range(cuda.blockIdx.x, units[0], cuda.gridDim.x):
        t, start, end = _chunk(units, c)
        code = gcodes[t]
        if code == F32:
            u = _ptr(g_a[t], end, np.uint32(0))
            for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
                b = np.int64(u[j]) & 0x7FFFFFFF
                if b > m:
                    m = b
        else:
            h = _ptr(g_a[t], end, _U16_0)
            for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
                x = np.int64(h[j]) & 0x7FFF
                b = (x << 16) if code == BF16 else (_bits(_f16_value(x)) & 0x7FFFFFFF)
                if b > m:
                    m = b
    if m > 0:
        cuda.atomic.max(top, 0, np.int32(m))


@cuda.jit(cache=True)
def _zero_kernel(addr, nbytes):
    b = _ptr(addr, nbytes, _U8_0)
    for j in range(cuda.grid(1), nbytes, cuda.gridsize(1)):
        b[j] = 0


@cuda.jit(cache=True)
def _decode_kernel(dst, src, n, code):
    d = _ptr(dst, n, _F0)
    s = _ptr(src, n, _U16_0)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        if code == BF16:
            d[j] = _float(np.int64(s[j]) << 16)
        else:
            d[j] = _f16_value(np.int64(s[j]))


# ---------------------------------------------------------------- Python side
def _info(a, what):
    """ArrayInfo of a device array (TypeError for a host array or a non-array)."""
    if isinstance(a, np.ndarray):
        raise TypeError(f"{what}: the cuda backend works on device arrays, got a host numpy.ndarray")
    info = _arrays.inspect(a, what)
    _arrays.check_readable(info, what)
    return info


def _check_device(arrays, what):
    """Every array of a column is a device array (the plan checked their layouts)."""
    for i, a in enumerate(arrays):
        _info(a, f"{what}[{i}]")


def _units(plan):
    """(chunk plan of the tensors' 256-element blocks on the device, number of blocks), cached."""
    u = plan.cache.get("cuda.units")
    if u is None:
        u = plan.cache["cuda.units"] = DeviceTable(np.float32, plan.sizes).plan(BLOCK)
    return u


def _columns(plan):
    """The plan's fixed columns on the device (cached): param, master, state and scale addresses
    (state and scales as 3 x n, column-major by STATE_COLUMNS position), codes, param_index."""
    c = plan.cache.get("cuda.columns")
    if c is not None:
        return c
    _check_device(plan.params, "params")
    for name, (arrays, _code, scales) in plan.states.items():
        _check_device(arrays, name)
        if scales is not None:
            _check_device(scales, name + " scales")
    s_a, s_sc, codes = plan.table
    codes = [int(x) for x in codes]
    m_a = np.zeros(plan.n, np.int64)
    if plan.master is not None:
        _check_device(plan.master, "master")
        m_a = np.asarray(plan.addr["master"], np.int64)
    dev = cuda.to_device
    c = (dev(np.ascontiguousarray(plan.addr["param"], np.int64)), dev(m_a),
         dev(s_a.reshape(-1)), dev(s_sc.reshape(-1)), codes,
         dev(np.ascontiguousarray(plan.param_index, np.int64)))
    plan.cache["cuda.columns"] = c
    return c


def _grads(plan, who):
    """(gradient addresses, codes) on the device, checked and uploaded once per ``set_grads``."""
    grads = plan.grads
    if grads is None:
        raise ValueError(f"{who}: the plan has no gradients (call plan.set_grads(grads) first)")
    c = plan.cache.get("cuda.grad")
    if c is not None and c[0] is grads:
        return c[1], c[2]
    if len(grads) != plan.n:
        raise ValueError(f"{who}: grads holds {len(grads)} arrays for {plan.n} parameters")
    for i, g in enumerate(grads):
        info = _info(g, f"{who}: grads[{i}]")
        if info.size != int(plan.sizes[i]):
            raise ValueError(f"{who}: grads[{i}] has {info.size} elements, its parameter "
                             f"{int(plan.sizes[i])}")
        if info.dtype.itemsize != _ITEMSIZE[int(plan.gcodes[i])]:
            raise ValueError(f"{who}: grads[{i}] has dtype {info.dtype}, not that of its code")
    host_a = np.ascontiguousarray(plan.addr["grad"], dtype=np.int64)
    host_c = np.ascontiguousarray(plan.gcodes, dtype=np.int64)
    recent = plan.cache.setdefault("cuda.grad_uploads", RecentUploads())
    g_a, codes = recent.take(host_a.tobytes() + host_c.tobytes(),
                             lambda: (cuda.to_device(host_a), cuda.to_device(host_c)))
    plan.cache["cuda.grad"] = (grads, g_a, codes)
    return g_a, codes


def _rule_args(rule, sc):
    """(9 float32 scalars, flags) of the kernel from the float64 vector of ``_mixed.SCALARS``."""
    f = np.float32
    if rule == "adam":
        b1, b2, eps, wd, decay, ss, bc, ams, maxi = sc
        vals = (b1, 1.0 - b1, b2, 1.0 - b2, eps, wd, decay, ss, bc)
        flags = int(ams != 0) | int(maxi != 0) << 1 | int(decay != 1.0) << 2 | int(wd != 0.0) << 3
    elif rule == "sgd":
        lr, mu, damp, wd, nest, maxi, first = sc
        vals = (lr, mu, 1.0 - damp, wd, 0, 0, 0, 0, 0)
        flags = (int(nest != 0) | int(maxi != 0) << 1 | int(first != 0) << 2
                 | int(wd != 0.0) << 3 | int(mu != 0.0) << 4)
    else:
        lr, alpha, eps, wd, mu, centered, maxi = sc
        vals = (lr, alpha, 1.0 - alpha, eps, wd, mu, 0, 0, 0)
        flags = (int(centered != 0) | int(maxi != 0) << 1 | int(wd != 0.0) << 3
                 | int(mu > 0.0) << 4)
    return tuple(f(v) for v in vals), flags


def mixed_step(plan, *, scalars, step, grad_scale=1.0):
    """One step of ``plan``'s rule over its tensors (``fastdescent.backends._mixed``): one launch."""
    sc, seed, gs = check_call(plan, scalars, grad_scale)
    p_a, m_a, s_a, s_sc, codes, index = _columns(plan)
    g_a, gcodes = _grads(plan, "mixed_step")
    units, nunits = _units(plan)
    if nunits == 0:
        return
    vals, flags = _rule_args(plan.rule, sc)
    gs32 = np.float32(gs)
    grid = max(1, min(config().max_blocks, nunits))
    _mixed_kernel[grid, THREADS](
        units, p_a, m_a, g_a, gcodes, s_a, s_sc, index, _RULE[plan.rule], int(plan.pcode),
        int(plan.master is not None), codes[0], codes[1], codes[2], np.uint64(seed & 0xFFFFFFFF),
        np.uint64(seed >> 32), np.uint64(int(step) & 0xFFFFFFFF), int(bool(plan.stochastic)),
        int(gs32 != _ONE), gs32, *vals, flags)


def grads_finite(plan):
    """True if every element of every gradient of ``plan`` is finite (one launch, one read back:
    the largest magnitude, which is inf or NaN exactly when some element is)."""
    return bool(np.isfinite(_absmax(plan, "grads_finite")))


def grads_absmax(plan):
    """The largest |g| over every element of every gradient of ``plan`` (float32 or 16-bit), as a
    float (inf or NaN where one is): one launch, one value read back (a loss scaler's check of the
    unscaled gradients, without a host copy of them)."""
    return _absmax(plan, "grads_absmax")


def _absmax(plan, who):
    g_a, gcodes = _grads(plan, who)
    units, nunits = _units(plan)
    if nunits == 0:
        return 0.0
    top = cuda.to_device(np.zeros(1, np.int32))
    cfg = config()
    _absmax_kernel[max(1, min(cfg.max_blocks, nunits)), cfg.threads](units, g_a, gcodes, top)
    return float(np.uint32(top.copy_to_host()[0]).view(np.float32))


def decode_into(dst, src, code):
    """Write the float32 values of the bfloat16/float16 device array ``src`` (storage ``code``) into
    the float32 device array ``dst`` of as many elements (a master copy from its parameter)."""
    if code not in (BF16, F16):
        raise ValueError(f"decode_into: code must be bfloat16 or float16, got {code!r}")
    d, s = _info(dst, "decode_into: dst"), _info(src, "decode_into: src")
    if d.dtype != np.float32 or s.dtype.itemsize != 2 or d.size != s.size:
        raise ValueError(f"decode_into: {s.size} elements of {s.dtype} into {d.size} of {d.dtype}")
    if not d.writeable:
        raise ValueError("decode_into: dst is read-only")
    if d.size:
        grid, threads = flat_grid(d.size)
        _decode_kernel[grid, threads](address_of(dst), address_of(src), d.size, int(code))


def zeros(n, dtype):
    """A new 1-D device array of ``n`` zeros of any dtype (the storage of mixed-precision state:
    uint8 codes, bfloat16, float16, float32; ``_device.zeros`` fills float dtypes only)."""
    dtype = np.dtype(dtype)
    out = cuda.device_array(int(n), dtype=dtype)
    nbytes = int(n) * dtype.itemsize
    if nbytes:
        grid, threads = flat_grid(nbytes)
        _zero_kernel[grid, threads](address_of(out), nbytes)
    return out
