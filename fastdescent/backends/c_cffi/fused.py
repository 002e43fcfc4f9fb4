"""Fused training step of a dense-layer model (C): forward, loss, backward and the Adam / AdamW update
in ONE call of ``fd_mlp_step_f32/_f64`` (csrc/fd_fused.c), or the momentum-SGD update in one call of
``fd_mlp_step_sgd_f32/_f64``. Mirrors backends/numba_cpu/fused.py (which fuses Adam's rule only).

``fused_train_step(plan)`` takes a :class:`fastdescent.nn.fused.FusedPlan` (the model's layers and
buffers, and the optimizer's published :class:`~fastdescent.optim.base.FlatBucket`; see that module
for what a plan covers and the protocol a step follows) and returns ``step(x, y) -> float``, or None.

State: the step writes into the optimizer's own flat state blocks and advances the bucket's step
count, so ``opt.state``, ``state_dict()`` and a later ``opt.step()`` see exactly what the
kernel-by-kernel path would have left. Every call takes the scalars from ``bucket.scalars()``
(the rule's, after validating the groups by value), so a scheduler's lr or a hyperparameter edited in
place applies at once and a bad value raises before anything is written. When the optimizer's
buckets change under the step (``load_state_dict``, ``add_param_group``, amsgrad switched,
``skip_nonfinite`` set), that call runs the kernel-by-kernel step, which rebuilds them, and the fused
path binds again afterwards.
"""

from __future__ import annotations

import numpy as np

from ..._contract import LOSS_KINDS
from ..._contract import row as _row
from ._lib import F32, NULL, ffi, kernel_error, lib

__all__ = ["fused_train_step"]

_ADAM_SCALARS = _row("adam").scalars  # fd_mlp_step's optimizer scalars, in this order
_SGD_SCALARS = _row("sgd").scalars  # fd_mlp_step_sgd's, in this order
_XENT = LOSS_KINDS["cross_entropy"]


def fused_train_step(plan):
    """``step(x, y) -> loss`` running the whole training step in one C call, or None (unsupported)."""
    if lib is None or plan.rule not in ("adam", "sgd"):
        return None
    bd = plan
    rows = bd.rows
    dt = bd.dtype
    sgd = bd.rule == "sgd"
    if sgd:
        fn = lib.fd_mlp_step_sgd_f32 if dt == F32 else lib.fd_mlp_step_sgd_f64
    else:
        fn = lib.fd_mlp_step_f32 if dt == F32 else lib.fd_mlp_step_f64
    ct = "float" if dt == F32 else "double"
    cptr = ffi.typeof(ct + "[]")
    fb = ffi.from_buffer
    keep = []  # arrays whose pointers the cdata below hold

    def ptr(a):
        if a is None:
            return NULL
        keep.append(a)
        return fb(cptr, a, require_writable=True)

    L = len(bd.layers)
    c_w = ffi.new(ct + " *[]", [ptr(t[0]) for t in bd.layers])
    c_b = ffi.new(ct + " *[]", [ptr(t[1]) for t in bd.layers])
    c_dw = ffi.new(ct + " *[]", [ptr(t[2]) for t in bd.layers])
    c_db = ffi.new(ct + " *[]", [ptr(t[3]) for t in bd.layers])
    c_act = ffi.new(ct + " *[]", [ptr(a) for a in bd.acts])
    c_dact = ffi.new(ct + " *[]", [ptr(a) for a in bd.dacts])
    c_desc = fb("int64_t[]", bd.desc)
    c_dblock = ptr(bd.dblock)
    ndact = bd.dblock.size
    c_grad = ptr(bd.flat_grads)
    nparams = bd.flat_params.size
    loss_out = ffi.new("double[1]")
    loss_kind, scale, xent = bd.loss_kind, bd.scale, bd.loss_kind == _XENT
    dummy_labels = ffi.cast("int64_t *", 0)
    nx, ydt = rows * bd.in_features, np.dtype(np.int64) if xent else dt
    ny = rows if xent else rows * bd.out_features
    state = {}

    def bptr(a):  # a pointer into the bound bucket's arrays (kept alive by `state`, not `keep`)
        return NULL if a is None else fb(cptr, a, require_writable=True)

    def rebind():
        # (the previous bucket's arrays are dropped here: kept in `keep`, every rebind -- each
        # load_state_dict, momentum switched, ... -- would hold a model-sized block for good)
        state.clear()
        if not bd.bind():
            return False
        st = bd.bucket.state
        if sgd:
            state["buf"] = bptr(st.get("momentum_buffer"))  # (absent with momentum 0: NULL)
        else:
            state["m"] = bptr(st["exp_avg"])
            state["v"] = bptr(st["exp_avg_sq"])
            state["vmax"] = bptr(st.get("max_exp_avg_sq"))
        state["p"] = bptr(bd.bucket.param)
        state["arrays"] = (bd.bucket.param, st)  # (alive while their pointers are used)
        return True

    if not rebind():
        return None
    keepalive = (c_w, c_b, c_dw, c_db, c_act, c_dact, c_desc, c_dblock, c_grad, keep, bd.desc)

    def step(x, y):
        with bd.lock:  # the optimizer's own lock (read per call: renewed in a forked child)
            return _step(x, y)

    def _step(x, y):
        if not (state and bd.usable()):
            loss = bd.slow_step(x, y)
            rebind()
            return loss
        b = bd.bucket
        sc = b.scalars()  # validates the groups first (by value), as Optimizer.step does
        if x.dtype != dt or x.size != nx or y.dtype != ydt or y.size != ny:
            raise ValueError(f"fused step: x must hold {nx} {dt} values and y {ny} {ydt} values, got "
                             f"x {x.shape} {x.dtype}, y {y.shape} {y.dtype}")
        if xent:
            lab, tgt = fb("int64_t[]", y), NULL
        else:
            lab, tgt = dummy_labels, fb(cptr, y)
        if sgd:
            lr, mom, damp, wd, nest, mx, first = (sc[k] for k in _SGD_SCALARS)
            rc = fn(L, c_desc, c_w, c_b, c_dw, c_db, c_act, c_dact, rows, fb(cptr, x), loss_kind, lab,
                    tgt, scale, nparams, state["p"], state["buf"], c_grad, c_dblock, ndact, lr, mom,
                    damp, wd, nest, mx, first, loss_out)
        else:
            b1, b2, eps, wd, decay, ss, bc2, ams, mx = (sc[k] for k in _ADAM_SCALARS)
            rc = fn(L, c_desc, c_w, c_b, c_dw, c_db, c_act, c_dact, rows, fb(cptr, x), loss_kind, lab,
                    tgt, scale, nparams, state["p"], state["m"], state["v"], state["vmax"], c_grad,
                    c_dblock, ndact, b1, b2, eps, wd, decay, ss, bc2, ams, mx, loss_out)
        if rc:
            raise kernel_error("mlp_step_sgd" if sgd else "mlp_step", rc)
        b.advance()
        step.fused_calls += 1
        return loss_out[0]

    step._keepalive = keepalive
    step.fast = step
    step.fused = True
    step.fused_calls = 0
    return step
