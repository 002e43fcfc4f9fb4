"""The mixed-precision step (Numba). Bit for bit the NumPy reference ``backends/numpy_ref/mixed.py``;
the formats are written out in :mod:`fastdescent.precision`.

Each tensor is walked in blocks of 256 elements (:data:`fastdescent.precision.BLOCK`) aligned to its
start, so an 8-bit block (one scale) is never split between threads. Per block, every column that is
not float32 is *staged*: decoded into a float32 block buffer (bfloat16 and float16 by bit arithmetic,
8-bit codes times the block's scale); float32 columns are used in place. Then the rule's float32
element loops run on the block (``adam._adam_seg``, ``sgd._sgd_seg``, ``rmsprop._rmsprop_seg``: the
float32 kernels' own code, hence their bits), and the staged columns are stored back: the parameter
(from the master copy when there is one) rounded to nearest, or stochastically (stream 0) for
bfloat16 with ``stochastic``; bfloat16 state likewise (stream 1 + its column position); 8-bit state
quantized with the block's new absmax. The random bits come from the one Philox of the Numba
backends, keyed per tensor as gradient noise is (``noise._tensor_key``), so the result depends on
neither the thread count nor the split of the work.

Work items are runs of whole blocks (up to ``_config.CHUNK`` elements rounded up to a whole block,
several small tensors per item); the threaded variant spreads them with ``prange``. Storage codes,
the master copy, stochastic rounding and the gradient unscaling are runtime arguments: one compiled
body per rule (serial and threaded, as every kernel), whatever the formats.
"""

from __future__ import annotations

import types as _pytypes

import numba
import numpy as np
from numba import prange

from ... import precision as P
from .._bitcast import as_float as _float
from .._bitcast import bits as _bits
from .._mixed import (_FLT_MIN, _HALF, _MASK32, _NAN, _ONE, _QCLAMP, _QMAX, _S32, _TWO_23, _TWO_M14,
                      check_call, checked_grads)
from . import _config
from ._config import jit, jit_variants
from ._ptr import segment
from .adam import _adam_consts, _adam_seg
from .noise import _philox, _tensor_key
from .rmsprop import _rmsprop_consts, _rmsprop_seg
from .sgd import _sgd_consts, _sgd_seg

__all__ = ["mixed_step", "grads_finite"]

F32, BF16, F16, Q8S, Q8U = P.F32, P.BF16, P.F16, P.Q8S, P.Q8U
BLOCK = P.BLOCK
#: elements staged at once: whole blocks, few enough for the buffers to stay in the L1 cache
SPAN = 4 * BLOCK
_ABSENT = -1  # storage code of an absent state column

# element types of the raw pointers (``segment``'s proto argument)
_F32P = np.empty(0, np.float32)
_U32P = np.empty(0, np.uint32)
_U16P = np.empty(0, np.uint16)
_U8P = np.empty(0, np.uint8)


# ---------------------------------------------------------------- bit views of float32
# ---------------------------------------------------------------- bfloat16 / float16
@jit
def _bf16_rne(u):
    """bfloat16 bits of the float32 with bits ``u``: nearest, ties to even; NaN -> 0x7FC0."""
    r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return 0x7FC0 if (u & 0x7FFFFFFF) > 0x7F800000 else r


@jit
def _f16_rne(u):
    """float16 bits of the float32 with bits ``u``: nearest, ties to even (subnormals included);
    overflow -> inf; NaN -> 0x7E00 (as NumPy's astype, then canonical)."""
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    # normal half: drop 13 mantissa bits rounding to nearest even, rebias 127 -> 15 (a carry into
    # the exponent is the correct rounding, up to inf)
    hn = (a - (112 << 23) + 0xFFF + ((a >> 13) & 1)) >> 13
    # subnormal half (a < 2**-14): adding 0.5 (float32, ties to even) leaves the magnitude rounded
    # to a multiple of 2**-24, the half's subnormal step, in the low mantissa bits
    hs = _bits(_float(a) + _HALF) - 0x3F000000
    h = hs if a < (113 << 23) else hn
    h = 0x7C00 if a >= (143 << 23) else h
    return 0x7E00 if a > 0x7F800000 else (h | sign)


@jit
def _f16_value(h):
    """The float32 value of float16 bits ``h`` (exact; NaN payloads kept, as NumPy)."""
    o = (h & 0x7FFF) << 13
    e = o & 0x0F800000
    normal = o + (112 << 23)
    special = o + (224 << 23)
    sub = _bits(_float(o + (113 << 23)) - _TWO_M14)
    v = special if e == 0x0F800000 else (sub if e == 0 else normal)
    return _float(v | ((h & 0x8000) << 16))


@jit
def _sr_bits(rw, lo, n, k0, k1, step, tag):
    """The Philox words of elements ``lo .. lo+n-1`` (``lo`` a multiple of 8) into the uint32
    array ``rw``, 4 per 8 elements: viewed as uint16 (little-endian), ``rw.view(uint16)[i]`` is the
    16 random bits of element ``lo + i``."""
    j0 = np.uint64(lo >> 3)
    for j in range((n + 7) >> 3):
        jj = j0 + np.uint64(j)
        x0, x1, x2, x3 = _philox(jj & _MASK32, jj >> _S32, step, tag, k0, k1)
        rw[4 * j] = x0
        rw[4 * j + 1] = x1
        rw[4 * j + 2] = x2
        rw[4 * j + 3] = x3


# ---------------------------------------------------------------- 8-bit block maps
@jit
def _q8_map(signed):
    """(exponent bias, largest magnitude code, float32 threshold of the subnormal codes, its
    scaling to subnormal code units, the value of one subnormal code unit) of a map."""
    if signed:
        return 15, 127, np.float32(2.0 ** -14), np.float32(2.0 ** 17), np.float32(2.0 ** -17)
    return 31, 255, np.float32(2.0 ** -30), np.float32(2.0 ** 33), np.float32(2.0 ** -33)


def _mag_table(code):
    """float32 value of each byte's magnitude bits on a map (the sign bit ignored)."""
    return P.q8_dequantize(np.arange(256, dtype=np.uint8) & (0x7F if code == Q8S else 0xFF),
                           np.ones(1, np.float32), code)


_MAG_S = _mag_table(Q8S)
_MAG_U = _mag_table(Q8U)


@jit
def _q8_load(codes, scales, signed, x):
    """``x[i]`` = value of byte ``codes[i]`` times its block's scale (``scales[i // BLOCK]``): the
    magnitude from a table, the sign bit flipped for a negative code."""
    mag = _MAG_S if signed else _MAG_U
    smask = 0x80 if signed else 0
    for b in range(0, x.shape[0], BLOCK):
        scale = scales[b // BLOCK]
        for i in range(b, min(b + BLOCK, x.shape[0])):
            c = np.int64(codes[i])
            # negation flips the sign bit (as NumPy's, NaN included)
            x[i] = _float(_bits(mag[c] * scale) ^ ((c & smask) << 24))


@jit
def _q8_store_block(x, codes, scale, signed):
    """Quantize one block ``x`` into ``codes`` and ``scale[0]`` (the module docstring of
    :mod:`fastdescent.precision`)."""
    n = x.shape[0]
    top = 0  # the largest |x| as float32 bits: NaN's bits exceed inf's, which exceed any finite's
    for i in range(n):
        u = _bits(x[i]) & 0x7FFFFFFF
        top = u if u > top else top
    if top >= 0x7F800000:
        scale[0] = _NAN
        codes[:] = 0
        return
    s = _float(top) / _QMAX
    if not s >= _FLT_MIN:
        scale[0] = np.float32(0.0)
        codes[:] = 0
        return
    scale[0] = s
    inv = _ONE / s
    bias, qmax, sub_lim, sub_mul, _ = _q8_map(signed)
    if signed:
        _q8_encode(x, codes, inv, bias, qmax, sub_lim, sub_mul, True)
    else:
        _q8_encode(x, codes, inv, bias, qmax, sub_lim, sub_mul, False)


@jit
def _q8_encode(x, codes, inv, bias, qmax, sub_lim, sub_mul, signed):
    """The codes of one block of inverse scale ``inv`` (branch-free per element, 32-bit integers:
    vectorizes)."""
    rebias = np.int32((127 - bias) << 3)
    qmax32 = np.int32(qmax)
    for i in range(x.shape[0]):
        xi = x[i]
        ax = abs(xi)
        y = min(ax * inv, _QCLAMP)
        u = np.int32(_bits(y))
        qn = ((u + np.int32(0x7FFFF) + ((u >> np.int32(20)) & np.int32(1))) >> np.int32(20)) - rebias
        ys = y if y < sub_lim else np.float32(0.0)  # (in range of the conversion)
        qs = np.int32(((ys * sub_mul) + _TWO_23) - _TWO_23)  # float32: rounds to nearest even
        q = qs if y < sub_lim else qn
        q = min(q, qmax32)
        if signed:
            q = q | (np.int32(0x80) if xi < 0 else np.int32(0))
        else:
            q = np.int32(1) if (q == 0) & (ax > 0) else q
        codes[i] = np.uint8(q)


@jit
def _q8_store(x, codes, scales, signed):
    """Quantize ``x`` (whole blocks from a block start, the last one maybe short) block by block."""
    n = x.shape[0]
    for b in range(0, n, BLOCK):
        e = min(b + BLOCK, n)
        _q8_store_block(x[b:e], codes[b:e], scales[b // BLOCK:b // BLOCK + 1], signed)


# ---------------------------------------------------------------- staging and storing a span
@jit
def _nblk(n):
    return (n + BLOCK - 1) // BLOCK


@jit
def _stage(code, addr, saddr, lo, n, row):
    """float32 values of elements ``lo .. lo+n-1`` of a column stored as ``code``: the column
    itself when it is float32, else decoded into ``row``."""
    if code == F32:
        return segment(addr, lo, n, _F32P)
    x = row[:n]
    if code == BF16:
        src = segment(addr, lo, n, _U16P)
        for i in range(n):
            x[i] = _float(np.int64(src[i]) << 16)
    elif code == F16:
        src = segment(addr, lo, n, _U16P)
        for i in range(n):
            x[i] = _f16_value(np.int64(src[i]))
    else:
        _q8_load(segment(addr, lo, n, _U8P), segment(saddr, lo // BLOCK, _nblk(n), _F32P), code == Q8S,
                 x)
    return x


@jit
def _resync(pcode, h, m):
    """Re-read master elements whose parameter (bits ``h``) is not the master rounded to nearest:
    the parameter was written from outside (a model load, an in-place edit) and wins."""
    for i in range(m.shape[0]):
        u = _bits(m[i])
        enc = _bf16_rne(u) if pcode == BF16 else _f16_rne(u)
        c = np.int64(h[i])
        if enc != c:
            m[i] = _float(c << 16) if pcode == BF16 else _f16_value(c)


@jit
def _unscale(g, gs, row):
    """``g / gs`` (float32) into ``row``, which may be ``g`` itself."""
    out = row[:g.shape[0]]
    for i in range(g.shape[0]):
        out[i] = g[i] / gs
    return out


@jit
def _commit(code, x, addr, saddr, lo, n, sr, k0, k1, step, stream, rb):
    """Store the float32 block ``x`` into elements ``lo .. lo+n-1`` of a column stored as ``code``
    (not float32): rounded to nearest, stochastically (bfloat16 with ``sr``: random stream
    ``stream``), or quantized."""
    if code == BF16:
        dst = segment(addr, lo, n, _U16P)
        if sr:
            _sr_bits(rb, lo, n, k0, k1, step, np.uint64(P.SR_TAG) | np.uint64(stream))
            r16 = rb.view(np.uint16)
            for i in range(n):
                u = _bits(x[i])
                up = (u + np.int64(r16[i])) >> 16
                near = _bf16_rne(u)
                dst[i] = np.uint16(up if (u & 0x7F800000) != 0x7F800000 else near)
        else:
            for i in range(n):
                dst[i] = np.uint16(_bf16_rne(_bits(x[i])))
    elif code == F16:
        dst = segment(addr, lo, n, _U16P)
        for i in range(n):
            dst[i] = np.uint16(_f16_rne(_bits(x[i])))
    else:
        _q8_store(x, segment(addr, lo, n, _U8P), segment(saddr, lo // BLOCK, _nblk(n), _F32P),
                  code == Q8S)


# ---------------------------------------------------------------- the rules
# ``_consts(sc)`` turns the float64 vector of a rule's scalars (``_mixed.SCALARS`` order) into the
# tuple its float32 segment function takes after the arrays; ``_apply`` runs it on one block with
# the state columns in STATE_COLUMNS order (an absent column gets a stand-in the flags never touch).
@jit
def _adam_k(sc):
    return _adam_consts(_F32P, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7], sc[8])


@jit
def _adam_apply(p, g, s0, s1, s2, k):
    _adam_seg(p, g, s0, s1, s2, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9], k[10],
              k[11], k[12])


@jit
def _sgd_k(sc):
    return _sgd_consts(_F32P, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6])


@jit
def _sgd_apply(p, g, s0, s1, s2, k):
    _sgd_seg(p, g, s0, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8])


@jit
def _rmsprop_k(sc):
    return _rmsprop_consts(_F32P, sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6])


@jit
def _rmsprop_apply(p, g, s0, s1, s2, k):
    _rmsprop_seg(p, g, s0, s1, s2, k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9])


# ---------------------------------------------------------------- the kernel bodies
def _mixed_body(items, pieces, p_a, pcode, m_a, g_a, gcodes, s_a, s_sc, s_codes, index, seed_lo,
                seed_hi, step, stochastic, grad_scale, sc):
    # ``_consts`` and ``_apply`` are the rule's (each rule's copy of this body has its own globals)
    k = _consts(sc)  # noqa: F821
    s_lo = np.uint64(seed_lo)
    s_hi = np.uint64(seed_hi)
    st = np.uint64(step)
    sr = stochastic != 0
    psr = sr and pcode == BF16
    has_master = m_a.shape[0] != 0
    gs = np.float32(grad_scale)
    unscale = gs != _ONE
    c0, c1, c2 = s_codes[0], s_codes[1], s_codes[2]
    for c in prange(items.shape[0] - 1):
        buf = np.empty((5, SPAN), np.float32)
        rb = np.empty(SPAN, np.uint32)
        for q in range(items[c], items[c + 1]):
            t, lo, kk = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            k0, k1 = _tensor_key(s_lo, s_hi, index[t])
            for b in range(lo, lo + kk, SPAN):
                n = min(SPAN, lo + kk - b)
                if has_master:
                    p = segment(m_a[t], b, n, _F32P)
                    _resync(pcode, segment(p_a[t], b, n, _U16P), p)
                else:
                    p = _stage(pcode, p_a[t], 0, b, n, buf[0])
                g = _stage(np.int64(gcodes[t]), g_a[t], 0, b, n, buf[1])
                if unscale:
                    g = _unscale(g, gs, buf[1])
                s0 = _stage(c0, s_a[0, t], s_sc[0, t], b, n, buf[2]) if c0 != _ABSENT else p
                s1 = _stage(c1, s_a[1, t], s_sc[1, t], b, n, buf[3]) if c1 != _ABSENT else p
                s2 = _stage(c2, s_a[2, t], s_sc[2, t], b, n, buf[4]) if c2 != _ABSENT else p
                _apply(p, g, s0, s1, s2, k)  # noqa: F821
                if pcode != F32:
                    _commit(pcode, p, p_a[t], 0, b, n, psr, k0, k1, st, 0, rb)
                if c0 > F32:
                    _commit(c0, s0, s_a[0, t], s_sc[0, t], b, n, sr, k0, k1, st, 1, rb)
                if c1 > F32:
                    _commit(c1, s1, s_a[1, t], s_sc[1, t], b, n, sr, k0, k1, st, 2, rb)
                if c2 > F32:
                    _commit(c2, s2, s_a[2, t], s_sc[2, t], b, n, sr, k0, k1, st, 3, rb)


def _rule_variants(rule, consts, apply):
    # A copy of _mixed_body whose globals name this rule's helpers, under its own name (Numba's
    # cache files are per qualified name): one compiled body per rule, not one for all three.
    glb = dict(globals(), _consts=consts, _apply=apply)
    body = _pytypes.FunctionType(_mixed_body.__code__, glb, f"_{rule}_mixed")
    body.__qualname__ = f"_{rule}_mixed"
    body.__module__ = __name__
    body.__doc__ = f"The mixed-precision step of {rule}."
    return jit_variants(body)


_KERNELS = {
    "adam": _rule_variants("adam", _adam_k, _adam_apply),
    "sgd": _rule_variants("sgd", _sgd_k, _sgd_apply),
    "rmsprop": _rule_variants("rmsprop", _rmsprop_k, _rmsprop_apply),
}


def _finite_body(items, pieces, g_a, gcodes):
    bad = np.zeros(items.shape[0] - 1, np.int64)
    for c in prange(items.shape[0] - 1):
        nb = 0
        for q in range(items[c], items[c + 1]):
            t, lo, k = pieces[q, 0], pieces[q, 1], pieces[q, 2]
            code = gcodes[t]
            if code == F32:
                u = segment(g_a[t], lo, k, _U32P)
                for i in range(k):
                    nb += (u[i] & 0x7F800000) == 0x7F800000
            else:
                h = segment(g_a[t], lo, k, _U16P)
                mask = 0x7F80 if code == BF16 else 0x7C00
                for i in range(k):
                    nb += (h[i] & mask) == mask
        bad[c] = nb
    return bad.sum() == 0


_finite_serial, _finite_parallel = jit_variants(_finite_body)


# ---------------------------------------------------------------- Python side
def _work(plan):
    """(items, pieces, threaded) of ``plan``'s sizes, cached on the plan: ``pieces`` (npieces, 3)
    holds (tensor, first element, length) runs of whole blocks from each tensor's start, at most
    one chunk long; item ``c`` is ``pieces[items[c]:items[c + 1]]``."""
    w = plan.cache.get("numba.work")
    if w is not None:
        return w
    chunk = -(-max(_config.CHUNK, BLOCK) // BLOCK) * BLOCK
    sizes = np.asarray(plan.sizes, dtype=np.int64)
    counts = -(-sizes // chunk)
    t = np.repeat(np.arange(sizes.shape[0], dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    lo = (np.arange(t.shape[0], dtype=np.int64) - first[t]) * chunk
    k = np.minimum(chunk, sizes[t] - lo)
    offsets = np.cumsum(sizes) - sizes
    item = (offsets[t] + lo) // chunk  # pieces starting in the same chunk of the whole share an item
    change = np.flatnonzero(np.diff(item)) + 1
    items = np.concatenate([[0], change, [t.shape[0]]]).astype(np.int64) if t.shape[0] else \
        np.zeros(1, np.int64)
    pieces = np.ascontiguousarray(np.stack([t, lo, k], axis=1), dtype=np.int64).reshape(-1, 3)
    threaded = int(sizes.sum()) >= _config.PARALLEL_MIN and numba.config.NUMBA_NUM_THREADS > 1
    w = (items, pieces, threaded)
    plan.cache["numba.work"] = w
    return w


def _columns(plan):
    """Master addresses (empty if none), and the plan's state table (``MixedPlan.table``)."""
    m_a = plan.addr.get("master", np.zeros(0, np.int64))
    return (np.ascontiguousarray(m_a, dtype=np.int64),) + plan.table


def _grads(plan, who):
    return checked_grads(plan, who, "numba.grad")


def mixed_step(plan, *, scalars, step, grad_scale=1.0):
    """One step of ``plan``'s rule over its tensors (``fastdescent.backends._mixed``)."""
    sc, seed, gs = check_call(plan, scalars, grad_scale)
    g_a, gcodes = _grads(plan, "mixed_step")
    items, pieces, threaded = _work(plan)
    m_a, s_a, s_sc, s_codes = _columns(plan)
    serial, parallel = _KERNELS[plan.rule]
    (parallel if threaded else serial)(
        items, pieces, plan.addr["param"], int(plan.pcode), m_a, g_a, gcodes, s_a, s_sc, s_codes,
        plan.param_index, seed & 0xFFFFFFFF, seed >> 32, int(step) & 0xFFFFFFFF,
        int(bool(plan.stochastic)), gs, sc)


def grads_finite(plan):
    """True if every element of every gradient of ``plan`` is finite."""
    g_a, gcodes = _grads(plan, "grads_finite")
    items, pieces, threaded = _work(plan)
    return bool((_finite_parallel if threaded else _finite_serial)(items, pieces, g_a, gcodes))
