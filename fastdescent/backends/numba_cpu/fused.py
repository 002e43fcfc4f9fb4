"""Fused training step of a dense-layer model (Numba): forward, loss, backward and the Adam / AdamW
update in ONE ``@njit`` call. Mirrors backends/c_cffi/fused.py and csrc/fd_fused.c.

``fused_train_step(plan)`` takes a :class:`fastdescent.nn.fused.FusedPlan` (the model's layers and
buffers and the optimizer's published :class:`~fastdescent.optim.base.FlatBucket`; that module says
what a plan covers and the protocol a step follows) and returns ``step(x, y) -> float`` for batches
of ``plan.rows`` rows, or None.

:func:`_mlp_step` runs the serial variants of this backend's own kernel bodies (matmul, activation,
loss) and the Adam element loop, in the order of the model's kernel-by-kernel step, with the same
GEMM forms (``matmul._short_rows``) and scalar roundings, so it gives the same bits as that step. It
reaches every buffer through a table of data addresses (``_ptr.pointer``), so a call unboxes a handful
of arguments, not one per layer. Serial: at the sizes where a Python-bound step matters (small MLPs,
small batches) threads would not pay.
"""

from __future__ import annotations

import numpy as np
from numba import carray

from ..._contract import LAYER_TYPES, LOSS_KINDS
from ..._contract import row as _row
from .._dense_checks import kernel_error
from . import activation as _act
from . import loss as _loss
from . import matmul as _mm
from ._config import CHUNK, jit
from ._ptr import like, pointer
from .adam import _adam_loop, _amsgrad_loop

__all__ = ["fused_train_step"]

_mm_fwd = _mm._FWD[0]
_mm_bwd_x = _mm._BWD_X[0]
_mm_bwd_w = _mm._BWD_W[0]
_act_fwd = _act._FWD[0]
_act_bwd = _act._BWD[0]
_xent = _loss._XENT[0]
_mse = _loss._MSE[0]

_LINEAR = LAYER_TYPES["linear"]
_XENT_KIND = LOSS_KINDS["cross_entropy"]
_ADAM_SCALARS = _row("adam").scalars  # _mlp_step's optimizer scalars, in this order

# columns of the per-layer table (int64)
T_TYPE, T_IN, T_OUT, T_KIND, T_MODE, T_W, T_B, T_GW, T_GB, T_ACT, T_DACT, T_PACK = range(12)
NCOL = 12
# entries of the global address vector
G_PARAM, G_GRAD, G_M, G_V, G_VMAX, G_DBLOCK, G_NPARAMS, G_NDACT = range(8)


@jit
def _mlp_step(tab, glob, x, labels, target, proto, loss_kind, scale, beta1, beta2, eps,
              weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad, maximize):
    L = tab.shape[0]
    R = labels.shape[0] if loss_kind == _XENT_KIND else target.shape[0]
    if loss_kind == _XENT_KIND:  # labels in [0, C) before anything is written (as the C library checks)
        C0 = tab[L - 1, T_OUT]
        for r in range(R):
            if labels[r] < 0 or labels[r] >= C0:
                return np.nan
    n = glob[G_NPARAMS]
    param = carray(pointer(glob[G_PARAM], 0, proto), n)
    grad = carray(pointer(glob[G_GRAD], 0, proto), n)
    dblock = carray(pointer(glob[G_DBLOCK], 0, proto), glob[G_NDACT])
    zero = like(0.0, proto)
    for i in range(n):
        grad[i] = zero
    for i in range(dblock.shape[0]):
        dblock[i] = zero
    K0 = tab[0, T_IN]
    x3 = carray(pointer(x.ctypes.data, 0, proto), (1, R, K0))

    # forward
    for i in range(L):
        K = tab[i, T_IN]
        N = tab[i, T_OUT]
        src = x3 if i == 0 else carray(pointer(tab[i - 1, T_ACT], 0, proto), (1, R, K))
        y = carray(pointer(tab[i, T_ACT], 0, proto), (1, R, N))
        if tab[i, T_TYPE] == _LINEAR:
            w = carray(pointer(tab[i, T_W], 0, proto), (1, K, N))
            has_b = tab[i, T_B] != 0
            b = carray(pointer(tab[i, T_B], 0, proto), (1, N if has_b else 0))
            mode = tab[i, T_MODE]
            pack = carray(pointer(tab[i, T_PACK], 0, proto), (1, N, K) if mode == 1 else (0, 0, 0))
            _mm_fwd(y, src, w, b, has_b, pack, mode, 1)
        else:
            _act_fwd(y.reshape(R * N), src.reshape(R * K), tab[i, T_KIND], CHUNK)

    # loss and d loss / d output
    C = tab[L - 1, T_OUT]
    out = carray(pointer(tab[L - 1, T_ACT], 0, proto), (R, C))
    dout = carray(pointer(tab[L - 1, T_DACT], 0, proto), (R, C))
    if loss_kind == _XENT_KIND:
        total = _xent(dout, out, labels, scale, max(1, CHUNK // C))
    else:
        total = _mse(dout.reshape(R * C), out.reshape(R * C), target.reshape(R * C),
                     like(2 * scale, proto), CHUNK)
    loss = scale * total

    # backward (dact[i-1] only if a parameter lies before layer i)
    first_linear = L
    for i in range(L):
        if tab[i, T_TYPE] == _LINEAR:
            first_linear = i
            break
    for i in range(L - 1, -1, -1):
        K = tab[i, T_IN]
        N = tab[i, T_OUT]
        need_dx = i > 0 and first_linear < i
        dy = carray(pointer(tab[i, T_DACT], 0, proto), (1, R, N))
        src = x3 if i == 0 else carray(pointer(tab[i - 1, T_ACT], 0, proto), (1, R, K))
        if tab[i, T_TYPE] == _LINEAR:
            has_b = tab[i, T_GB] != 0
            gw = carray(pointer(tab[i, T_GW], 0, proto), (1, K, N))
            gb = carray(pointer(tab[i, T_GB], 0, proto), (1, N if has_b else 0))
            mode = tab[i, T_MODE]
            pack = carray(pointer(tab[i, T_PACK], 0, proto), (1, N, K) if mode == 1 else (0, 0, 0))
            _mm_bwd_w(gw, gb, has_b, src, dy, pack, mode, 1)
            if need_dx:
                w = carray(pointer(tab[i, T_W], 0, proto), (1, K, N))
                dx = carray(pointer(tab[i - 1, T_DACT], 0, proto), (1, R, K))
                _mm_bwd_x(dx, dy, w, pack, mode, 1)
        elif need_dx:
            dx = carray(pointer(tab[i - 1, T_DACT], 0, proto), R * K)
            yv = carray(pointer(tab[i, T_ACT], 0, proto), R * N)
            _act_bwd(dx, dy.reshape(R * N), src.reshape(R * K), yv, tab[i, T_KIND], CHUNK)

    # Adam / AdamW over the flat blocks (scalars rounded as adam._adam_body does)
    m = carray(pointer(glob[G_M], 0, proto), n)
    v = carray(pointer(glob[G_V], 0, proto), n)
    b1 = like(beta1, proto)
    c1 = like(1.0 - beta1, proto)
    b2 = like(beta2, proto)
    c2 = like(1.0 - beta2, proto)
    ep = like(eps, proto)
    wd = like(weight_decay, proto)
    dc = like(decay, proto)
    ss = like(step_size, proto)
    bc = like(bias_correction2_sqrt, proto)
    use_wd = weight_decay != 0.0
    use_decay = decay != 1.0
    neg = maximize != 0
    if amsgrad != 0:
        vmax = carray(pointer(glob[G_VMAX], 0, proto), n)
        _amsgrad_loop(param, grad, m, v, vmax, neg, use_decay, dc, use_wd, wd, b1, c1, b2, c2, ep,
                      ss, bc)
    else:
        _adam_loop(param, grad, m, v, neg, use_decay, dc, use_wd, wd, b1, c1, b2, c2, ep, ss, bc)
    return loss


def _addr(a):
    return 0 if a is None else a.__array_interface__["data"][0]


def fused_train_step(plan):
    """``step(x, y) -> loss`` running the whole training step in one jitted call, or None."""
    bd = plan
    if bd.rule != "adam":  # (the c backend also fuses momentum SGD; this one runs Adam's only)
        return None
    rows = bd.rows
    dt = bd.dtype
    proto = np.empty(0, dt)
    L = len(bd.layers)
    tab = np.zeros((L, NCOL), np.int64)
    keep = [bd.dblock, bd.flat_grads, bd.flat_params]
    for i, ((typ, K, N, kind), (w, b, gw, gb)) in enumerate(zip(bd.desc.tolist(), bd.layers)):
        tab[i, :4] = (typ, K, N, kind)
        tab[i, T_ACT] = _addr(bd.acts[i])
        tab[i, T_DACT] = _addr(bd.dacts[i])
        keep += [bd.acts[i], bd.dacts[i]]
        if typ == _LINEAR:
            mode = 1 if _mm._short_rows(K, N) else 0
            tab[i, T_MODE] = mode
            tab[i, T_W], tab[i, T_B], tab[i, T_GW], tab[i, T_GB] = map(_addr, (w, b, gw, gb))
            keep += [w, b, gw, gb]
            if mode == 1:
                pk = np.empty(N * K, dt)
                keep.append(pk)
                tab[i, T_PACK] = _addr(pk)
    glob = np.zeros(8, np.int64)
    glob[G_GRAD] = _addr(bd.flat_grads)
    glob[G_DBLOCK] = _addr(bd.dblock)
    glob[G_NPARAMS] = bd.flat_params.size
    glob[G_NDACT] = bd.dblock.size
    state = {}

    def rebind():
        state.clear()
        if not bd.bind():
            return False
        st = bd.bucket.state
        arrays = (bd.bucket.param, st["exp_avg"], st["exp_avg_sq"], st.get("max_exp_avg_sq"))
        glob[G_PARAM], glob[G_M], glob[G_V], glob[G_VMAX] = map(_addr, arrays)
        state["arrays"] = arrays  # alive while their addresses are used
        return True

    if not rebind():
        return None
    xent = bd.loss_kind == _XENT_KIND
    loss_kind, scale = bd.loss_kind, bd.scale
    no_labels = np.zeros(rows, np.int64)  # gives R to the kernel when the loss is mse: unused
    no_target = np.zeros((rows, bd.out_features), dt)
    nx = rows * bd.in_features
    ny = rows if xent else rows * bd.out_features
    ydt = np.dtype(np.int64) if xent else dt
    tshape = (rows, bd.out_features)
    xshape = (1, rows, bd.in_features)
    fn = _mlp_step

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
        b1, b2, eps, wd, decay, ss, bc2, ams, mx = (sc[k] for k in _ADAM_SCALARS)
        if (x.dtype != dt or x.size != nx or not x.flags.c_contiguous or y.dtype != ydt
                or y.size != ny or not y.flags.c_contiguous):
            raise ValueError(f"fused step: x must hold {nx} {dt} values and y {ny} {ydt} values "
                             f"(C-contiguous), got x {x.shape} {x.dtype}, y {y.shape} {y.dtype}")
        if x.ndim != 3:  # one compiled signature: x always (1, rows, in)
            x = x.reshape(xshape)
        if xent:
            loss = fn(tab, glob, x, y, no_target, proto, loss_kind, scale, b1, b2, eps, wd, decay, ss,
                      bc2, ams, mx)
            if loss != loss and ((y < 0) | (y >= bd.out_features)).any():  # NaN: labels refused
                raise kernel_error("mlp_step", 3)
        else:
            loss = fn(tab, glob, x, no_labels, y.reshape(tshape), proto, loss_kind, scale, b1, b2, eps,
                      wd, decay, ss, bc2, ams, mx)
        b.advance()
        step.fused_calls += 1
        return loss

    step._keepalive = (keep, tab, glob, proto, no_labels, no_target)
    step.fast = step
    step.fused = True
    step.fused_calls = 0
    return step
