"""The mixed-precision step (C): ``csrc/fd_mixed.c`` through cffi. Bit for bit the NumPy reference
``backends/numpy_ref/mixed.py`` (and the Numba kernel); the formats are written out in
:mod:`fastdescent.precision`.

The C function takes the whole bucket at once: parameter, master, gradient, state and scale
addresses as pointer arrays (state and scales column-major, ``MAX_STATE`` columns in contract
order), the storage codes, the per-tensor keys of the random bits (``param_index``), and the rule's
float32-kernel scalars as one float64 vector. The packed arrays are cached on the plan (its arrays
never move); the gradients' are rebuilt only when ``set_grads`` is given new ones.
"""

from __future__ import annotations

import numpy as np

from ... import precision as P
from .._mixed import check_call, checked_grads
from ._lib import ffi, kernel_error, lib

__all__ = ["mixed_step", "grads_finite", "q8_quantize", "q8_dequantize"]

_RULE = {"sgd": 0, "adam": 1, "rmsprop": 2}


def _packed(plan):
    """The cdata of the plan's fixed columns (cached on the plan)."""
    c = plan.cache.get("c.columns")
    if c is not None:
        return c
    sizes = np.ascontiguousarray(plan.sizes, dtype=np.int64)
    p_a = np.ascontiguousarray(plan.addr["param"], dtype=np.int64)
    m_a = None if plan.master is None else np.ascontiguousarray(plan.addr["master"], dtype=np.int64)
    s_a, s_sc, codes = plan.table
    codes = codes.astype(np.int32)
    index = np.ascontiguousarray(plan.param_index, dtype=np.int64)
    keep = (sizes, p_a, m_a, s_a, s_sc, codes, index)  # the cdata below view these arrays
    c = {
        "keep": keep,
        "sizes": ffi.from_buffer("int64_t[]", sizes),
        "param": ffi.from_buffer("void *[]", p_a),
        "master": ffi.NULL if m_a is None else ffi.from_buffer("float *[]", m_a),
        "state": ffi.from_buffer("void *[]", s_a),
        "scales": ffi.from_buffer("float *[]", s_sc),
        "codes": ffi.from_buffer("int32_t[]", codes),
        "index": ffi.from_buffer("int64_t[]", index),
    }
    plan.cache["c.columns"] = c
    return c


def _grad_cdata(plan, who):
    g_a, gcodes = checked_grads(plan, who, "c.grad")
    c = plan.cache.get("c.gradc")
    if c is not None and c[0] is g_a:
        return c[1], c[2]
    codes8 = np.ascontiguousarray(gcodes, dtype=np.int8)
    gp = ffi.from_buffer("void *[]", g_a)
    gc = ffi.from_buffer("int8_t[]", codes8)
    plan.cache["c.gradc"] = (g_a, gp, gc, codes8)
    return gp, gc


def mixed_step(plan, *, scalars, step, grad_scale=1.0):
    """One step of ``plan``'s rule over its tensors (``fastdescent.backends._mixed``)."""
    sc, seed, gs = check_call(plan, scalars, grad_scale)
    gp, gc = _grad_cdata(plan, "mixed_step")
    c = _packed(plan)
    rc = lib.fd_mixed_step(_RULE[plan.rule], plan.n, c["sizes"], c["param"], int(plan.pcode),
                           c["master"], gp, gc, c["state"], c["scales"], c["codes"], c["index"],
                           seed, int(step) & 0xFFFFFFFF, int(bool(plan.stochastic)), gs,
                           ffi.from_buffer("double[]", sc), sc.shape[0])
    if rc:
        raise kernel_error(f"mixed {plan.rule}", rc)


def grads_finite(plan):
    """True if every element of every gradient of ``plan`` is finite."""
    gp, gc = _grad_cdata(plan, "grads_finite")
    sizes = plan.cache.get("c.sizes")
    if sizes is None:
        arr = np.ascontiguousarray(plan.sizes, dtype=np.int64)
        sizes = plan.cache["c.sizes"] = (arr, ffi.from_buffer("int64_t[]", arr))
    out = ffi.new("int *")
    rc = lib.fd_grads_finite(plan.n, sizes[1], gp, gc, out)
    if rc:
        raise kernel_error("grads_finite", rc)
    return bool(out[0])


def _q8_code(code, who):
    if code not in (P.Q8S, P.Q8U):
        raise ValueError(f"{who}: storage code {code!r} is not an 8-bit map")
    return int(code)


def q8_quantize(x32, code):
    """8-bit block codes and scales of a 1-D float32 array (as ``precision.q8_quantize``)."""
    code = _q8_code(code, "q8_quantize")
    x = np.ascontiguousarray(x32, dtype=np.float32).reshape(-1)
    codes = np.zeros(x.shape[0], np.uint8)
    scales = np.zeros(P.nblocks(x.shape[0]), np.float32)
    rc = lib.fd_q8_quantize(x.shape[0], ffi.from_buffer("float[]", x), code,
                            ffi.from_buffer("uint8_t[]", codes), ffi.from_buffer("float[]", scales))
    if rc:
        raise kernel_error("q8_quantize", rc)
    return codes, scales


def q8_dequantize(codes, scales, code):
    """float32 values of 8-bit block codes (as ``precision.q8_dequantize``)."""
    code = _q8_code(code, "q8_dequantize")
    c = np.ascontiguousarray(codes).reshape(-1).view(np.uint8)
    s = np.ascontiguousarray(scales, dtype=np.float32).reshape(-1)
    if s.shape[0] < P.nblocks(c.shape[0]):
        raise ValueError(f"q8_dequantize: {c.shape[0]} codes need {P.nblocks(c.shape[0])} scales, "
                         f"got {s.shape[0]}")
    x = np.empty(c.shape[0], np.float32)
    rc = lib.fd_q8_dequantize(c.shape[0], ffi.from_buffer("uint8_t[]", c), ffi.from_buffer("float[]", s),
                              code, ffi.from_buffer("float[]", x))
    if rc:
        raise kernel_error("q8_dequantize", rc)
    return x
