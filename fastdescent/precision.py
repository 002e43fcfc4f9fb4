"""Low-precision storage: bfloat16/float16 rounding, stochastic rounding and 8-bit block quantization.

This module is the written-out specification (in NumPy) of every conversion the mixed-precision
step does (``docs/low-precision.md``); the C and Numba kernels reproduce it bit for bit, and the
tests compare them with it. Arithmetic is float32; storage is one of the *storage codes*:

=====  ==========  =============================================================================
code   name        storage of one value
=====  ==========  =============================================================================
0      float32     itself
1      bfloat16    the top 16 bits of the float32 (``ml_dtypes.bfloat16``)
2      float16     IEEE binary16 (``numpy.float16``)
3      int8        a byte of the signed 8-bit map, times its block's float32 scale
4      uint8       a byte of the unsigned 8-bit map, times its block's float32 scale
=====  ==========  =============================================================================

Rounding to bfloat16/float16
    Round to nearest, ties to even; overflow gives inf; every NaN becomes the canonical quiet NaN
    (``0x7FC0`` for bfloat16, ``0x7E00`` for float16).

Stochastic rounding to bfloat16
    A finite float32 with bits ``u`` becomes ``(u + r) >> 16`` (sign-magnitude, so the magnitude is
    rounded up with probability equal to its distance from the value below, in units of the last
    place); ``r`` is 16 random bits. Non-finite values round to nearest. The random bits are a pure
    function of ``(seed, param_index, step, stream, element)``::

        K = Philox4x32-10((idx_lo, idx_hi, 0, 0), (seed_lo, seed_hi))[0:2]       once per tensor
        x = Philox4x32-10((j_lo, j_hi, step, 0x53520000 | stream), K), j = element >> 3
        r = 16 bits number (element & 7) of x0 | x1 << 32 | x2 << 64 | x3 << 96

    (``K`` is the key SGD's gradient noise uses; the fourth counter word keeps the two streams
    apart). ``stream`` is 0 for the parameter and 1 + the state column's position in the rule's
    column order for a state buffer. So the result does not depend on the backend, the thread count
    or how the work is split, and a run is reproducible from its seed.

8-bit block quantization (codes 3 and 4)
    A tensor's values are split into blocks of :data:`BLOCK` = 256 consecutive elements (the last
    block may be shorter); each block stores one float32 ``scale`` and one byte per element. A byte
    holds a small floating-point number ``q`` relative to the scale, with 3 mantissa bits:

    - signed map (``exp_avg``, ``momentum_buffer``, ``grad_avg``): sign bit, then 7 bits ``E4M3``
      with exponent bias 15: magnitudes ``2**(e-15) * (1 + f/8)`` for ``e`` in 1..15 and
      ``f * 2**-17`` for ``e = 0``;
    - unsigned map (``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``): 8 bits ``E5M3`` with bias
      31: ``2**(e-31) * (1 + f/8)`` for ``e`` in 1..31, ``f * 2**-33`` for ``e = 0``.

    Both maps top out at :data:`QMAX` = 1.875. Quantizing a block ``x``:
    ``a = max|x|`` (NaN if any element is not finite); ``scale = float32(a / 1.875)``; if ``scale``
    is below the smallest normal float32 (``a < 2.2e-38``) the block is stored as zeros (scale 0); if
    ``a`` is not finite the scale is NaN and every code 0 (the whole block reads back as NaN, as a
    non-finite float32 moment would have poisoned its parameter). Otherwise
    ``y = |x| * float32(1 / scale)`` is rounded to the nearest representable magnitude (ties to even
    mantissa; at most the largest code), a nonzero ``x`` that rounds to magnitude 0 gets the smallest
    nonzero code on the unsigned map (so a positive second moment never reads back as 0), and the sign
    bit is ``x < 0``. Reading back: ``value(q) * scale``, negated when the sign bit is set.

    Error bound: a value whose magnitude is at least ``2**-14/1.875`` of its block's max (signed map;
    ``2**-30/1.875`` on the unsigned one) reads back with a relative error of at most
    ``2**-4`` (6.25%), plus 2**-23 from the float32 products; below that, the absolute error is at
    most half a subnormal step: ``2**-18 * scale`` (signed), ``2**-34 * scale`` (unsigned) — except
    the unsigned map's round-up of tiny positive values, which reads back as ``2**-33 * scale``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["F32", "BF16", "F16", "Q8S", "Q8U", "BLOCK", "QMAX", "SR_TAG", "CODE_NAMES",
           "MIXED_RULES", "SIGNED_STATE", "state_map", "state_columns", "bfloat16", "code_of_dtype",
           "storage_dtype", "encode", "decode", "sr_random",
           "bf16_round_stochastic", "q8_quantize", "q8_dequantize", "nblocks"]

F32, BF16, F16, Q8S, Q8U = 0, 1, 2, 3, 4
#: the update rules (contract rows) that have a mixed-precision step
MIXED_RULES = ("sgd", "adam", "rmsprop")
#: state buffers that hold signed values (the signed 8-bit map); the others are >= 0 (unsigned map)
SIGNED_STATE = frozenset({"exp_avg", "momentum_buffer", "grad_avg"})
CODE_NAMES = {F32: "float32", BF16: "bfloat16", F16: "float16", Q8S: "int8", Q8U: "int8"}
#: elements per quantization block
BLOCK = 256
#: the largest magnitude of both 8-bit maps
QMAX = 1.875
#: fourth Philox counter word of the stochastic-rounding stream ``s`` is ``SR_TAG | s``
SR_TAG = 0x53520000

_U32 = np.uint32
_FLT_MIN = np.float32(2.0 ** -126)
# (exponent bits, bias) of the 8-bit maps' magnitudes; 3 mantissa bits each
_MAPS = {Q8S: (4, 15), Q8U: (5, 31)}
_MBITS = 3


def bfloat16():
    """The bfloat16 NumPy dtype (``ml_dtypes.bfloat16``); ImportError naming the package if missing."""
    try:
        import ml_dtypes
    except ImportError as exc:  # pragma: no cover - ml_dtypes is a dependency
        raise ImportError("bfloat16 needs the ml_dtypes package (pip install ml_dtypes)") from exc
    return np.dtype(ml_dtypes.bfloat16)


def state_map(name):
    """The 8-bit storage code of state buffer ``name``: Q8S (signed values) or Q8U (>= 0)."""
    return Q8S if name in SIGNED_STATE else Q8U


def state_columns(rule):
    """The state columns of a rule's kernel (contract order): every written column but ``param``."""
    from ._contract import KERNELS

    return KERNELS[rule].writes[1:]


def code_of_dtype(dtype):
    """The storage code of a parameter/gradient dtype (float32, bfloat16, float16), else None."""
    dt = np.dtype(dtype)
    if dt == np.float32:
        return F32
    if dt == np.float16:
        return F16
    if dt.name == "bfloat16" and dt.itemsize == 2:
        return BF16
    return None


def storage_dtype(code):
    """The NumPy dtype that holds values of storage ``code`` (uint8 for the 8-bit maps)."""
    if code == F32:
        return np.dtype(np.float32)
    if code == BF16:
        return bfloat16()
    if code == F16:
        return np.dtype(np.float16)
    if code in (Q8S, Q8U):
        return np.dtype(np.uint8)
    raise ValueError(f"unknown storage code {code!r}")


def nblocks(n):
    """Number of quantization blocks of an ``n``-element tensor."""
    return (int(n) + BLOCK - 1) // BLOCK


# ---------------------------------------------------------------- bfloat16 / float16
def _bits(x32):
    return np.ascontiguousarray(x32, dtype=np.float32).view(_U32)


def _bf16_rne_bits(x32):
    u = _bits(x32)
    out = ((u + _U32(0x7FFF) + ((u >> _U32(16)) & _U32(1))) >> _U32(16)).astype(np.uint16)
    out[np.isnan(x32)] = 0x7FC0
    return out


def _f16_rne_bits(x32):
    with np.errstate(all="ignore"):
        h = np.asarray(x32, dtype=np.float32).astype(np.float16)  # IEEE round to nearest even
    out = h.view(np.uint16).copy()
    out[np.isnan(x32)] = 0x7E00
    return out


def encode(x32, code):
    """float32 values rounded to nearest-even into storage ``code`` (BF16, F16 or F32): an array of
    :func:`storage_dtype` (a new array)."""
    x32 = np.asarray(x32, dtype=np.float32)
    if code == F32:
        return x32.copy()
    if code == BF16:
        return _bf16_rne_bits(x32).view(bfloat16())
    if code == F16:
        return _f16_rne_bits(x32).view(np.float16)
    raise ValueError(f"encode: storage code {code!r} is not an element format")


def decode(a, code):
    """float32 values of an array stored in ``code`` (BF16, F16 or F32); exact."""
    a = np.asarray(a)
    if code == F32:
        return a.astype(np.float32, copy=True)
    if code == BF16:
        return (a.view(np.uint16).astype(_U32) << _U32(16)).view(np.float32)
    if code == F16:
        return a.view(np.float16).astype(np.float32)
    raise ValueError(f"decode: storage code {code!r} is not an element format")


def sr_random(seed, param_index, step, stream, start, n):
    """The 16 random bits (as uint32) of elements ``start .. start+n-1`` (module docstring)."""
    from .backends.numpy_ref.noise import philox4x32_10, tensor_key

    k0, k1 = tensor_key(seed, param_index)
    if n <= 0:
        return np.zeros(0, dtype=_U32)
    j0, j1 = start >> 3, (start + n - 1) >> 3
    js = np.arange(j0, j1 + 1, dtype=np.uint64)
    m = np.uint64(0xFFFFFFFF)
    x = philox4x32_10(js & m, js >> np.uint64(32), np.uint64(int(step) & 0xFFFFFFFF),
                      np.uint64(SR_TAG | int(stream)), k0, k1)
    words = np.stack([w.astype(_U32) for w in x], axis=1)  # (blocks, 4)
    halves = np.empty((words.shape[0], 8), dtype=_U32)
    halves[:, 0::2] = words & _U32(0xFFFF)
    halves[:, 1::2] = words >> _U32(16)
    flat = halves.reshape(-1)
    off = start - 8 * j0
    return flat[off:off + n]


def bf16_round_stochastic(x32, r16):
    """float32 values rounded stochastically to bfloat16 with the random bits ``r16`` (uint32 < 2**16)."""
    x32 = np.asarray(x32, dtype=np.float32)
    u = _bits(x32)
    out = ((u + np.asarray(r16, dtype=_U32)) >> _U32(16)).astype(np.uint16)
    bad = ~np.isfinite(x32)
    if bad.any():
        out[bad] = _bf16_rne_bits(x32[bad])
    return out.view(bfloat16())


# ---------------------------------------------------------------- 8-bit block quantization
def _q_encode_mag(y, code):
    """Magnitude codes (uint32) of float32 ``y`` >= 0 (finite) on map ``code``."""
    e_bits, bias = _MAPS[code]
    qmax = (1 << (e_bits + _MBITS)) - 1
    sub = y < np.float32(2.0 ** (1 - bias))
    # subnormal range: exact scaling by a power of two, then round half to even
    qs = np.rint(y * np.float32(2.0 ** (bias - 1 + _MBITS))).astype(_U32)
    u = _bits(y)
    r = 23 - _MBITS
    qn = ((u + _U32((1 << (r - 1)) - 1) + ((u >> _U32(r)) & _U32(1))) >> _U32(r))
    qn = qn - _U32((127 - bias) << _MBITS) * (~sub)  # (only used where not sub; avoid wraparound)
    q = np.where(sub, qs, qn)
    return np.minimum(q, _U32(qmax))


def _q_decode_mag(q, code):
    e_bits, bias = _MAPS[code]
    q = q.astype(_U32)
    e = q >> _U32(_MBITS)
    f = q & _U32((1 << _MBITS) - 1)
    normal = ((e + _U32(127 - bias)) << _U32(23)) | (f << _U32(23 - _MBITS))
    out = normal.view(np.float32).copy()
    sub = e == 0
    out[sub] = f[sub].astype(np.float32) * np.float32(2.0 ** (1 - bias - _MBITS))
    return out


def q8_quantize(x32, code):
    """Quantize a 1-D float32 array into (codes uint8 [n], scales float32 [nblocks(n)])."""
    if code not in _MAPS:
        raise ValueError(f"q8_quantize: storage code {code!r} is not an 8-bit map")
    x = np.ascontiguousarray(x32, dtype=np.float32).reshape(-1)
    n = x.shape[0]
    nb = nblocks(n)
    codes = np.zeros(n, dtype=np.uint8)
    scales = np.zeros(nb, dtype=np.float32)
    with np.errstate(all="ignore"):
        for b in range(nb):
            blk = x[b * BLOCK:(b + 1) * BLOCK]
            ax = np.abs(blk)
            if not np.isfinite(ax).all():
                scales[b] = np.nan
                continue
            a = ax.max()
            s = np.float32(a / np.float32(QMAX))
            if not s >= _FLT_MIN:
                continue  # zeros
            scales[b] = s
            inv = np.float32(np.float32(1.0) / s)
            q = _q_encode_mag(np.minimum(ax * inv, np.float32(4.0)), code)
            if code == Q8U:
                q = np.where((q == 0) & (ax > 0), _U32(1), q)
            else:
                q = q | (blk < 0).astype(_U32) << _U32(7)
            codes[b * BLOCK:b * BLOCK + blk.shape[0]] = q
    return codes, scales


def q8_dequantize(codes, scales, code):
    """float32 values [n] of 8-bit ``codes`` [n] with their block ``scales`` [nblocks(n)]."""
    if code not in _MAPS:
        raise ValueError(f"q8_dequantize: storage code {code!r} is not an 8-bit map")
    c = np.ascontiguousarray(codes).reshape(-1).view(np.uint8).astype(_U32)
    n = c.shape[0]
    s = np.repeat(np.asarray(scales, dtype=np.float32).reshape(-1)[:nblocks(n)], BLOCK)[:n]
    if code == Q8S:
        mag = _q_decode_mag(c & _U32(0x7F), code)
        with np.errstate(all="ignore"):
            out = mag * s
        neg = (c & _U32(0x80)) != 0
        out[neg] = -out[neg]
        return out
    with np.errstate(all="ignore"):
        return _q_decode_mag(c, code) * s
