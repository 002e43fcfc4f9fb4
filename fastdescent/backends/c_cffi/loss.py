"""Losses with their gradient in one pass (C). Mirrors csrc/fd_loss.c and backends/*/loss.py.

Both return the loss as a Python float (accumulated in float64 in fixed chunks: the same value for
any thread count) and accumulate d loss / d input into the first array.
"""

from __future__ import annotations

import numpy as np

from .._dense_checks import check_overlap
from ._lib import F32, F64, ffi, kernel_error, lib

__all__ = ["mse_fwd_bwd", "xent_fwd_bwd"]

_I64 = np.dtype(np.int64)

if lib is not None:
    _fb = ffi.from_buffer
    _CF32, _CF64 = ffi.typeof("float[]"), ffi.typeof("double[]")  # resolved once: cheaper calls
    _CI64 = ffi.typeof("int64_t[]")
    _new = ffi.new
    _MSE = {F32: (lib.fd_mse_fwd_bwd_f32, _CF32), F64: (lib.fd_mse_fwd_bwd_f64, _CF64)}
    _XENT = {F32: (lib.fd_xent_fwd_bwd_f32, _CF32), F64: (lib.fd_xent_fwd_bwd_f64, _CF64)}


def mse_fwd_bwd(dpred, pred, target, *, scale):
    """loss = scale * sum((pred - target)**2); dpred += 2*scale*(pred - target)."""
    try:
        fn, ct = _MSE[dpred.dtype]
        n, dt = dpred.size, dpred.dtype
        ok = pred.size == n and target.size == n and pred.dtype == dt and target.dtype == dt
    except (AttributeError, KeyError):
        ok = False
    if not ok:
        if getattr(dpred, "dtype", None) not in _MSE:
            raise TypeError(f"mse_fwd_bwd: float32 or float64 arrays, got {getattr(dpred, 'dtype', None)}")
        raise ValueError("mse_fwd_bwd: dpred, pred and target must have one size and dtype "
                         f"(got {dpred.shape} {dpred.dtype}, {getattr(pred, 'shape', None)} "
                         f"{getattr(pred, 'dtype', None)}, {getattr(target, 'shape', None)} "
                         f"{getattr(target, 'dtype', None)})")
    check_overlap("mse_fwd_bwd", (dpred, pred, target))
    out = _new("double *")
    rc = fn(n, _fb(ct, dpred, require_writable=True), _fb(ct, pred), _fb(ct, target), scale, out)
    if rc:
        raise kernel_error("mse_fwd_bwd", rc)
    return out[0]


def xent_fwd_bwd(dlogits, logits, labels, *, scale):
    """Softmax cross-entropy over integer labels: loss = scale * sum_r (logsumexp(logits[r]) -
    logits[r, labels[r]]); dlogits += scale * (softmax(logits) - onehot(labels)). A label outside
    [0, C) raises KernelError (code FD_ERR_ARG) and nothing is written."""
    try:
        fn, ct = _XENT[dlogits.dtype]
        R, C = logits.shape
        if labels.dtype != _I64:
            if labels.dtype.kind not in "iu":
                raise TypeError(f"xent_fwd_bwd: labels must be integers, got {labels.dtype}")
            if not labels.flags.c_contiguous:  # as for int64 labels (and on every backend)
                raise ValueError("xent_fwd_bwd: labels is not C-contiguous")
            labels = np.ascontiguousarray(labels, dtype=_I64)
        ok = dlogits.shape == (R, C) and logits.dtype == dlogits.dtype and labels.shape == (R,)
    except (AttributeError, KeyError, ValueError):
        ok = False
    if not ok:
        if getattr(dlogits, "dtype", None) not in _XENT:
            raise TypeError(f"xent_fwd_bwd: float32 or float64 arrays, got "
                            f"{getattr(dlogits, 'dtype', None)}")
        raise ValueError("xent_fwd_bwd: expected dlogits and logits (R, C) of one dtype and labels "
                         f"(R,); got dlogits {dlogits.shape} {dlogits.dtype}, logits "
                         f"{getattr(logits, 'shape', None)} {getattr(logits, 'dtype', None)}, "
                         f"labels {getattr(labels, 'shape', None)}")
    check_overlap("xent_fwd_bwd", (dlogits, logits, labels))
    out = _new("double *")
    rc = fn(R, C, _fb(ct, dlogits, require_writable=True), _fb(ct, logits),
            _fb(_CI64, labels), scale, out)
    if rc:
        raise kernel_error("xent_fwd_bwd", rc)
    return out[0]
