"""The oracle: slow, literal per-element loops written straight from SEMANTICS.md.

Nothing here imports fastdescent. Every update rule below is the text of ``SEMANTICS.md`` turned into
a loop over the elements of one tensor, one arithmetic operation at a time:

* per-step scalars (bias corrections, the Adagrad learning rate) are computed in float64 (Python
  floats), as the contract says;
* derived constants (``1 - beta1``, ``1 - dampening`` ...) are computed in float64 and rounded ONCE to
  the element type;
* every arithmetic operation on elements is rounded to the element type (``R`` below). For float64
  ``R`` is the identity; for float32 it rounds a float64 result to the nearest float32, which for
  ``+ - * /`` and ``sqrt`` of float32 operands is exactly IEEE float32 arithmetic (double rounding is
  innocuous for these operations). So the oracle is float32 arithmetic without fused multiply-add, in
  the textual order of SEMANTICS.md. Kernels may differ only by operation order and FMA, which the
  contract's tolerances (:data:`TOLERANCES`) absorb.

Tensors are handled as flat Python lists of floats; :class:`RefOptimizer` adds param groups, the
per-parameter step count (``t`` is incremented before use) and torch's rule that a parameter whose
gradient is ``None`` is skipped (state and step unchanged).
"""

from __future__ import annotations

import math
import struct

import numpy as np

__all__ = [
    "TOLERANCES", "DEFAULTS", "state_names", "rounder", "sgd", "adam", "rmsprop", "adagrad",
    "prox", "philox4x32_10", "normal", "noise", "prox_lr", "POST_OPTIONS", "SCALAR_STATE", "nadam",
    "radam", "adamax", "adadelta", "rprop", "lion", "lamb", "clip_grad_norm", "RefOptimizer", "assert_close",
]

#: SEMANTICS.md "Tolerances": backends agree with the reference to these, per dtype.
#: (float64: rtol 1e-12; the atol only covers results that cancel to ~0 from O(1) operands.)
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12),
}

#: Default hyperparameters, from the headings of SEMANTICS.md (SGD's lr has no default there).
DEFAULTS = {
    "sgd": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                maximize=False),
    "adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False),
    "adamw": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                  maximize=False),
    "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                    maximize=False),
    "adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                    eps=1e-10, maximize=False),
    # torch.optim.Rprop's; l1 is the group option fastdescent adds to every optimizer (0: none)
    "rprop": dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False, l1=0.0),
    # torch.optim.NAdam / RAdam (SEMANTICS.md: "follow its published rules exactly"); l1 is the
    # base class's proximal group option (0: off), carried by these classes' groups
    "nadam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False, l1=0.0),
    "radam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  decoupled_weight_decay=False, maximize=False, l1=0.0),
    # torch.optim 2.13's Adamax / Adadelta, plus the proximal-L1 group option (SEMANTICS.md)
    "adamax": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                   l1=0.0),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False, l1=0.0),
    "lion": dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
    "lamb": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, bias_correction=True,
                 maximize=False),
}

#: per-parameter state that is a float, not an array (kind -> names): NAdam's running product of
#: the momentum factors, which depends on the history of beta1
SCALAR_STATE = {"nadam": ("mu_product",)}


def state_names(kind, hp):
    """Names of the state arrays SEMANTICS.md lists for optimizer ``kind`` with options ``hp``."""
    if kind == "sgd":
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()
    if kind in ("adam", "adamw"):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if hp["amsgrad"] else ())
    if kind == "rmsprop":
        return (("square_avg",) + (("grad_avg",) if hp["centered"] else ())
                + (("momentum_buffer",) if hp["momentum"] > 0 else ()))
    if kind == "adagrad":
        return ("sum",)
    if kind == "rprop":
        return ("prev", "step_size")
    if kind == "lion":
        return ("exp_avg",)
    if kind == "lamb":
        return ("exp_avg", "exp_avg_sq")
    if kind in ("nadam", "radam"):
        return ("exp_avg", "exp_avg_sq")
    if kind == "adamax":
        return ("exp_avg", "exp_inf")
    if kind == "adadelta":
        return ("square_avg", "acc_delta")
    raise KeyError(kind)


_F32 = struct.Struct("f")


def _round_f32(x):
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:  # finite float64 beyond float32's range rounds to +-inf
        return math.copysign(math.inf, x)


def _identity(x):
    return x


def rounder(dtype):
    """``R(x)``: round the float64 ``x`` to the element type ``dtype`` (float32 or float64)."""
    dt = np.dtype(dtype)
    if dt == np.float64:
        return _identity
    if dt == np.float32:
        return _round_f32
    raise TypeError(f"the reference handles float32 and float64, not {dt}")


def _sqrt(x):
    # IEEE sqrt: NaN for negative input (math.sqrt raises), inf for inf
    if x != x or x < 0:
        return math.nan
    return math.sqrt(x)


def _div(a, b):
    # IEEE division: x/0 is +-inf (NaN for 0/0 or NaN/0) where Python's raises
    if b == 0:
        if a != a or a == 0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _max(a, b):
    # NaN-propagating max (a NaN in either operand gives NaN), as torch.maximum / np.maximum
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


# --------------------------------------------------------------------------------- update rules
# Each function updates ONE tensor: p and g are flat lists of floats (values of the element type),
# `state` a dict of flat lists (created here on the tensor's first step); t is the step count after
# incrementing (1 on the first step). They return the new parameter list.

def sgd(p, g, state, t, dtype, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    R = rounder(dtype)
    wd, mu, one_m_damp, lr_ = R(weight_decay), R(momentum), R(1.0 - dampening), R(lr)
    first = "momentum_buffer" not in state  # "b <- g on the first step"
    if momentum != 0 and first:
        state["momentum_buffer"] = [0.0] * len(p)
    b = state.get("momentum_buffer")
    out = []
    for j in range(len(p)):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        if weight_decay != 0:
            gj = R(gj + R(wd * pj))
        if momentum != 0:
            if first:
                b[j] = gj
            else:
                b[j] = R(R(mu * b[j]) + R(one_m_damp * gj))
            if nesterov:
                gj = R(gj + R(mu * b[j]))
            else:
                gj = b[j]
        out.append(R(pj - R(lr_ * gj)))
    return out


def adam(p, g, state, t, dtype, *, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled):
    R = rounder(dtype)
    beta1, beta2 = float(betas[0]), float(betas[1])
    n = len(p)
    if "exp_avg" not in state:
        state["exp_avg"] = [0.0] * n
        state["exp_avg_sq"] = [0.0] * n
    if amsgrad and "max_exp_avg_sq" not in state:
        state["max_exp_avg_sq"] = [0.0] * n
    m, v, vmax = state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq")
    # per-step scalars, float64
    bc1 = 1.0 - beta1 ** t
    bc2 = 1.0 - beta2 ** t
    decay = R(1.0 - lr * weight_decay)
    wd = R(weight_decay)
    b1, c1, b2, c2 = R(beta1), R(1.0 - beta1), R(beta2), R(1.0 - beta2)
    sqrt_bc2 = R(math.sqrt(bc2))
    step_size = R(lr / bc1)
    eps_ = R(eps)
    out = []
    for j in range(n):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        if decoupled:
            pj = R(pj * decay)
        elif weight_decay != 0:
            gj = R(gj + R(wd * pj))
        m[j] = R(R(b1 * m[j]) + R(c1 * gj))
        v[j] = R(R(b2 * v[j]) + R(R(c2 * gj) * gj))
        if amsgrad:
            vmax[j] = _max(vmax[j], v[j])  # max over the RAW v
            vv = vmax[j]
        else:
            vv = v[j]
        denom = R(R(R(_sqrt(vv)) / sqrt_bc2) + eps_)  # eps after bias correction, outside sqrt
        out.append(R(pj - R(step_size * R(m[j] / denom))))
    return out


def rmsprop(p, g, state, t, dtype, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    R = rounder(dtype)
    n = len(p)
    if "square_avg" not in state:
        state["square_avg"] = [0.0] * n
    if centered and "grad_avg" not in state:
        state["grad_avg"] = [0.0] * n
    if momentum > 0 and "momentum_buffer" not in state:
        state["momentum_buffer"] = [0.0] * n
    v, a, b = state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer")
    al, one_m_al, wd, eps_, mu, lr_ = R(alpha), R(1.0 - alpha), R(weight_decay), R(eps), R(momentum), R(lr)
    out = []
    for j in range(n):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        if weight_decay != 0:
            gj = R(gj + R(wd * pj))
        v[j] = R(R(al * v[j]) + R(R(one_m_al * gj) * gj))
        if centered:
            a[j] = R(R(al * a[j]) + R(one_m_al * gj))
            avg = R(R(_sqrt(R(v[j] - R(a[j] * a[j])))) + eps_)
        else:
            avg = R(R(_sqrt(v[j])) + eps_)  # eps outside the sqrt; no bias correction
        if momentum > 0:
            b[j] = R(R(mu * b[j]) + R(gj / avg))
            out.append(R(pj - R(lr_ * b[j])))
        else:
            out.append(R(pj - R(lr_ * R(gj / avg))))
    return out


def adagrad(p, g, state, t, dtype, *, lr, lr_decay, weight_decay, initial_accumulator_value, eps,
            maximize):
    R = rounder(dtype)
    n = len(p)
    if "sum" not in state:
        state["sum"] = [R(initial_accumulator_value)] * n  # s starts at initial_accumulator_value
    s = state["sum"]
    clr = R(lr / (1.0 + (t - 1) * lr_decay))  # float64 per step, rounded once
    wd, eps_ = R(weight_decay), R(eps)
    out = []
    for j in range(n):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        if weight_decay != 0:
            gj = R(gj + R(wd * pj))
        s[j] = R(s[j] + R(gj * gj))
        out.append(R(pj - R(clr * R(gj / R(R(_sqrt(s[j])) + eps_)))))
    return out


def nadam(p, g, state, t, dtype, *, lr, betas, eps, weight_decay, momentum_decay,
          decoupled_weight_decay, maximize, l1=0.0):
    """torch.optim.NAdam's for-loop rule, in its order: d = sqrt(v/bc2) + eps, then two updates
    p += -lr*(1-mu_t)/(1-Pi_t) * g/d and p += -lr*mu_{t+1}/(1-Pi_t*mu_{t+1}) * m/d. ``state``
    holds ``mu_product`` (Pi, a float; 1 before the first step)."""
    assert l1 == 0, "the oracle's rules take l1 = 0 (the L1 pass belongs to the base class)"
    R = rounder(dtype)
    beta1, beta2 = float(betas[0]), float(betas[1])
    n = len(p)
    if "exp_avg" not in state:
        state["exp_avg"] = [0.0] * n
        state["exp_avg_sq"] = [0.0] * n
    m, v = state["exp_avg"], state["exp_avg_sq"]
    # per-step scalars, float64
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    pi = state.get("mu_product", 1.0) * mu
    state["mu_product"] = pi
    bc2 = R(1.0 - beta2 ** t)
    coef_g = R(lr * (1.0 - mu) / (1.0 - pi))
    coef_m = R(lr * mu_next / (1.0 - pi * mu_next))
    decay = R(1.0 - lr * weight_decay)
    wd, eps_ = R(weight_decay), R(eps)
    b1, c1, b2, c2 = R(beta1), R(1.0 - beta1), R(beta2), R(1.0 - beta2)
    out = []
    for j in range(n):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        if decoupled_weight_decay:
            pj = R(pj * decay)
        elif weight_decay != 0:
            gj = R(gj + R(wd * pj))
        m[j] = R(R(b1 * m[j]) + R(c1 * gj))
        v[j] = R(R(b2 * v[j]) + R(R(c2 * gj) * gj))
        d = R(R(_sqrt(R(v[j] / bc2))) + eps_)
        pj = R(pj - R(R(coef_g * gj) / d))
        out.append(R(pj - R(R(coef_m * m[j]) / d)))
    return out


def radam(p, g, state, t, dtype, *, lr, betas, eps, weight_decay, decoupled_weight_decay,
          maximize, l1=0.0):
    """torch.optim.RAdam's for-loop rule, in its order: mh = m/bc1; if rho_t > 5,
    p -= ((mh*lr) * (sqrt(bc2)/(sqrt(v) + eps))) * r_t, else p -= mh*lr."""
    assert l1 == 0, "the oracle's rules take l1 = 0 (the L1 pass belongs to the base class)"
    R = rounder(dtype)
    beta1, beta2 = float(betas[0]), float(betas[1])
    n = len(p)
    if "exp_avg" not in state:
        state["exp_avg"] = [0.0] * n
        state["exp_avg_sq"] = [0.0] * n
    m, v = state["exp_avg"], state["exp_avg_sq"]
    # per-step scalars, float64
    bc1 = 1.0 - beta1 ** t
    bc2 = 1.0 - beta2 ** t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * (beta2 ** t) / bc2
    rect = None
    if rho_t > 5.0:
        rect = R(((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5)
    decay = R(1.0 - lr * weight_decay)
    wd, eps_, lr_, bc1_, sbc2 = R(weight_decay), R(eps), R(lr), R(bc1), R(bc2 ** 0.5)
    b1, c1, b2, c2 = R(beta1), R(1.0 - beta1), R(beta2), R(1.0 - beta2)
    out = []
    for j in range(n):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        if decoupled_weight_decay:
            pj = R(pj * decay)
        elif weight_decay != 0:
            gj = R(gj + R(wd * pj))
        m[j] = R(R(b1 * m[j]) + R(c1 * gj))
        v[j] = R(R(b2 * v[j]) + R(R(c2 * gj) * gj))
        mh = R(m[j] / bc1_)
        if rect is not None:
            adaptive = R(sbc2 / R(R(_sqrt(v[j])) + eps_))
            out.append(R(pj - R(R(R(mh * lr_) * adaptive) * rect)))
        else:
            out.append(R(pj - R(mh * lr_)))
    return out


def _prox_l1(p, thresh, R):
    """SEMANTICS.md "L1": p <- sign(p) * max(|p| - lr*l1, 0) (``thresh`` = R(lr*l1))."""
    return [math.copysign(max(R(abs(x) - thresh), 0.0), x) if x == x else x for x in p]


def adamax(p, g, state, t, dtype, *, lr, betas, eps, weight_decay, maximize, l1=0.0):
    """torch.optim.Adamax (for-loop implementation), its expression order."""
    R = rounder(dtype)
    beta1, beta2 = float(betas[0]), float(betas[1])
    n = len(p)
    if "exp_avg" not in state:
        state["exp_avg"] = [0.0] * n
        state["exp_inf"] = [0.0] * n
    m, u = state["exp_avg"], state["exp_inf"]
    # exp_avg.lerp_(g, w), w = 1 - beta1: m + w*(g - m) if |w| < 0.5, else g - (g - m)*(1 - w),
    # written as g + (w - 1)*(g - m); the weight is derived in float64 and rounded once
    w = 1.0 - beta1
    from_grad = not abs(w) < 0.5
    lw = R(w - 1.0 if from_grad else w)
    b2, eps_, wd = R(beta2), R(eps), R(weight_decay)
    clr = R(lr / (1.0 - beta1 ** t))  # float64 per step, rounded once
    out = []
    for j in range(n):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        if weight_decay != 0:
            gj = R(gj + R(wd * pj))
        m[j] = R((gj if from_grad else m[j]) + R(lw * R(gj - m[j])))
        u[j] = _max(R(u[j] * b2), R(abs(gj) + eps_))  # torch.maximum: NaN propagates
        out.append(R(pj - R(_div(R(clr * m[j]), u[j]))))  # addcdiv_(m, u, value=-clr)
    return _prox_l1(out, R(lr * l1), R) if l1 != 0 else out


def adadelta(p, g, state, t, dtype, *, lr, rho, eps, weight_decay, maximize, l1=0.0):
    """torch.optim.Adadelta (for-loop implementation), its expression order."""
    R = rounder(dtype)
    n = len(p)
    if "square_avg" not in state:
        state["square_avg"] = [0.0] * n
        state["acc_delta"] = [0.0] * n
    v, a = state["square_avg"], state["acc_delta"]
    lr_, rho_, omr, eps_, wd = R(lr), R(rho), R(1.0 - rho), R(eps), R(weight_decay)
    out = []
    for j in range(n):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        if weight_decay != 0:
            gj = R(gj + R(wd * pj))
        v[j] = R(R(v[j] * rho_) + R(R(omr * gj) * gj))
        std = R(_sqrt(R(v[j] + eps_)))
        d = R(R(_div(R(_sqrt(R(a[j] + eps_))), std)) * gj)
        a[j] = R(R(a[j] * rho_) + R(R(omr * d) * d))
        out.append(R(pj - R(lr_ * d)))
    return _prox_l1(out, R(lr * l1), R) if l1 != 0 else out


# --------------------------------------------------------------------------------- after the update
# SEMANTICS.md "Beyond torch.optim": the proximal L1 step (any optimizer, group option l1) and SGD's
# gradient noise (noise_std, noise_decay, seed). Both follow the optimizer's update in the same step:
# the update, then the noise, then the thresholding.

#: group options that are not arguments of the rules above (handled by :class:`RefOptimizer`)
POST_OPTIONS = ("l1", "noise_std", "noise_decay", "seed")


def prox_lr(kind, hp, t):
    """The learning rate in force at step t: Adagrad's decayed clr, every other optimizer's lr."""
    if kind == "adagrad":
        return hp["lr"] / (1.0 + (t - 1) * hp["lr_decay"])
    return hp["lr"]


def prox(p, threshold, dtype):
    """p <- sign(p) * max(|p| - threshold, 0) (threshold rounded once to the element type); a
    thresholded element is +0.0 (fastdescent's convention: never -0.0); NaN stays NaN."""
    R = rounder(dtype)
    th = R(threshold)
    out = []
    for x in p:
        if x != x:
            out.append(x)
            continue
        m = R(abs(x) - th)
        out.append(math.copysign(m, x) if m > 0 else 0.0)
    return out


def _sign(x):
    # torch.sign: 1.0, -1.0, or 0.0 for +-0 and NaN
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def _clamp(x, lo, hi):
    # torch.clamp: a NaN stays NaN
    return lo if x < lo else (hi if x > hi else x)


def rprop(p, g, state, t, dtype, *, lr, etas, step_sizes, maximize, l1=0.0):
    """torch.optim.Rprop's for-loop implementation (``_single_tensor_rprop``), statement by
    statement; its products and comparisons are in the element type."""
    if l1 != 0:
        raise NotImplementedError("the oracle's Rprop has no L1 step")
    R = rounder(dtype)
    n = len(p)
    if "prev" not in state:
        state["prev"] = [0.0] * n
        state["step_size"] = [R(lr)] * n  # filled with the group's lr when the state is created
    prev, ss = state["prev"], state["step_size"]
    etam, etap = R(etas[0]), R(etas[1])
    smin, smax = R(step_sizes[0]), R(step_sizes[1])
    out = []
    for j in range(n):
        gj = g[j]
        if maximize:
            gj = -gj
        f = _sign(R(gj * prev[j]))  # sign = grad.mul(prev).sign()
        if f > 0:                   # sign[sign.gt(0)] = etaplus
            f = etap
        if f < 0:                   # sign[sign.lt(0)] = etaminus
            f = etam
        if f == 0:                  # sign[sign.eq(0)] = 1
            f = 1.0
        ss[j] = _clamp(R(ss[j] * f), smin, smax)  # step_size.mul_(sign).clamp_(min, max)
        if f == etam:               # grad[sign.eq(etaminus)] = 0
            gj = 0.0
        out.append(R(p[j] - R(_sign(gj) * ss[j])))  # param.addcmul_(grad.sign(), step_size, value=-1)
        prev[j] = gj                # prev.copy_(grad)
    return out


_M32 = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    """Philox4x32-10 (Salmon et al. 2011; Random123's rounds) of 4 counter words under 2 key words."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & _M32, (p0 >> 32) ^ c3 ^ k1, p0 & _M32
        k0 = (k0 + 0x9E3779B9) & _M32
        k1 = (k1 + 0xBB67AE85) & _M32
    return c0, c1, c2, c3


def normal(seed, index, t, e):
    """The N(0, 1) draw of element e of parameter ``index`` at step t (float64): Philox4x32-10 keyed
    per parameter by (seed, index), counter (e // 2, t), Box-Muller (cos for even e, sin for odd)."""
    key = philox4x32_10((index & _M32, index >> 32, 0, 0), (seed & _M32, seed >> 32))[:2]
    j = e // 2
    x0, x1, x2, x3 = philox4x32_10((j & _M32, j >> 32, t & _M32, t >> 32), key)
    u1 = ((((x1 << 32) | x0) >> 11) + 1) * 2.0 ** -53
    u2 = (((x3 << 32) | x2) >> 11) * 2.0 ** -53
    r = math.sqrt(-2.0 * math.log(u1))
    a = u2 * 6.283185307179586
    return r * (math.cos(a) if e % 2 == 0 else math.sin(a))


def noise(p, index, t, dtype, *, noise_std, noise_decay, seed):
    """p <- p + sigma_t * z, sigma_t = noise_std * t**(-noise_decay) (float64, rounded once), z
    rounded to the element type. noise_std == 0: p unchanged (exactly plain SGD)."""
    R = rounder(dtype)
    sigma = noise_std * float(t) ** -noise_decay
    if sigma == 0:
        return list(p)
    s = R(sigma)
    return [R(x + R(s * R(normal(seed, index, t, j)))) for j, x in enumerate(p)]


def _sign_nan(x):
    # sign(0) = 0 (either zero), sign(NaN) = NaN
    if x != x:
        return math.nan
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def lion(p, g, state, t, dtype, *, lr, betas, weight_decay, maximize):
    R = rounder(dtype)
    n = len(p)
    if "exp_avg" not in state:
        state["exp_avg"] = [0.0] * n
    m = state["exp_avg"]
    beta1, beta2 = float(betas[0]), float(betas[1])
    b1, c1, b2, c2 = R(beta1), R(1.0 - beta1), R(beta2), R(1.0 - beta2)
    decay = R(1.0 - lr * weight_decay)  # float64, rounded once
    lr_ = R(lr)
    out = []
    for j in range(n):
        pj, gj = p[j], g[j]
        if maximize:
            gj = -gj
        c = R(R(b1 * m[j]) + R(c1 * gj))
        pj = R(pj * decay)  # decoupled, as AdamW
        pj = R(pj - R(lr_ * _sign_nan(c)))
        m[j] = R(R(b2 * m[j]) + R(c2 * gj))
        out.append(pj)
    return out


def lamb(p, g, state, t, dtype, *, lr, betas, eps, weight_decay, bias_correction, maximize):
    R = rounder(dtype)
    n = len(p)
    if "exp_avg" not in state:
        state["exp_avg"] = [0.0] * n
        state["exp_avg_sq"] = [0.0] * n
    m, v = state["exp_avg"], state["exp_avg_sq"]
    beta1, beta2 = float(betas[0]), float(betas[1])
    b1, c1, b2, c2 = R(beta1), R(1.0 - beta1), R(beta2), R(1.0 - beta2)
    if bias_correction:
        bc1, bc2 = R(1.0 - beta1 ** t), R(1.0 - beta2 ** t)  # float64 per step, rounded once
    else:
        bc1 = bc2 = 1.0  # mh = m, vh = v
    eps_, wd = R(eps), R(weight_decay)
    r = []
    for j in range(n):
        gj = g[j]
        if maximize:
            gj = -gj
        m[j] = R(R(b1 * m[j]) + R(c1 * gj))
        v[j] = R(R(b2 * v[j]) + R(R(c2 * gj) * gj))
        mh = R(m[j] / bc1)
        vh = R(v[j] / bc2)
        rj = R(mh / R(R(_sqrt(vh)) + eps_))
        if weight_decay != 0:
            rj = R(rj + R(wd * p[j]))
        r.append(rj)
    # per tensor, in float64, in element order
    pn = math.sqrt(sum(x * x for x in p))
    rn = math.sqrt(sum(x * x for x in r))
    trust = pn / rn if pn > 0 and rn > 0 else 1.0
    step = R(lr * trust)  # float64, rounded once
    return [R(pj - R(step * rj)) for pj, rj in zip(p, r)]


RULES = {"sgd": sgd, "adam": adam, "adamw": adam, "rmsprop": rmsprop, "adagrad": adagrad,
         "nadam": nadam, "radam": radam, "adamax": adamax, "adadelta": adadelta, "rprop": rprop,
         "lion": lion, "lamb": lamb}


def clip_grad_norm(grads, max_norm, norm_type=2.0):
    """Clip by global norm (SEMANTICS.md). ``grads``: list of arrays (any float dtype), NOT modified.

    Returns ``(total, clipped)`` with ``total`` the float64 global norm and ``clipped`` new arrays of
    the grads' dtypes: ``coef = min(1, max_norm/(total + 1e-6)); g <- coef*g`` (each product rounded to
    the element type). A non-finite total returns the grads unchanged.
    """
    flat = [[float(x) for x in np.asarray(g).reshape(-1)] for g in grads]
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        total = 0.0
        for gs in flat:
            for x in gs:
                total = _max(total, abs(x))
    else:
        acc = 0.0
        for gs in flat:
            for x in gs:
                acc += abs(x) ** norm_type
        total = acc ** (1.0 / norm_type)
    if not math.isfinite(total):
        return total, [np.array(g, copy=True) for g in grads]
    coef = min(1.0, max_norm / (total + 1e-6))
    out = []
    for g, gs in zip(grads, flat):
        R = rounder(np.asarray(g).dtype)
        c = R(coef)
        out.append(np.array([R(c * x) for x in gs], dtype=np.asarray(g).dtype).reshape(np.shape(g)))
    return total, out


# --------------------------------------------------------------------------------- optimizer
class RefOptimizer:
    """A literal optimizer over host arrays: param groups, per-parameter step and state.

    Parameters
    ----------
    kind : {"sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "radam", "adamax", "adadelta",
            "rprop", "lion", "lamb"}
    groups : list of dicts
        ``{"params": [arrays], **hyperparameters}``; missing hyperparameters take :data:`DEFAULTS`.
        The arrays are copied (the oracle never touches the caller's arrays).
    """

    def __init__(self, kind, groups):
        self.kind = kind
        self.param_groups = []
        self.params = []  # flat lists of floats
        self.shapes = []
        self.dtypes = []
        self.state = {}  # index -> {"step": t, name: flat list}
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, g):
        """Append a group; its parameters get the next indices (torch's order)."""
        group = dict(DEFAULTS[self.kind])
        group.update({k: v for k, v in g.items() if k != "params"})
        idx = []
        for a in g["params"]:
            a = np.asarray(a)
            idx.append(len(self.params))
            self.params.append([float(x) for x in a.reshape(-1)])
            self.shapes.append(a.shape)
            self.dtypes.append(a.dtype)
        group["params"] = idx
        self.param_groups.append(group)

    def step(self, grads):
        """One step; ``grads`` aligned with the parameters, ``None`` skips that parameter. The
        options of :data:`POST_OPTIONS` apply after the rule: SGD's noise, then the L1 prox."""
        assert len(grads) == len(self.params)
        rule = RULES[self.kind]
        for group in self.param_groups:
            hp = {k: v for k, v in group.items() if k != "params" and k not in POST_OPTIONS}
            if self.kind in ("adam", "adamw"):
                hp["decoupled"] = self.kind == "adamw"
            for i in group["params"]:
                if grads[i] is None:
                    continue
                g = [float(x) for x in np.asarray(grads[i]).reshape(-1)]
                st = self.state.setdefault(i, {"step": 0})
                t = st["step"] + 1  # incremented BEFORE use
                st["step"] = t
                arrays = {k: v for k, v in st.items() if k != "step"}
                new = rule(self.params[i], g, arrays, t, self.dtypes[i], **hp)
                if group.get("noise_std", 0.0) > 0:
                    new = noise(new, i, t, self.dtypes[i], noise_std=group["noise_std"],
                                noise_decay=group.get("noise_decay", 0.0),
                                seed=group.get("seed", 0))
                if group.get("l1", 0.0) > 0:
                    new = prox(new, prox_lr(self.kind, group, t) * group["l1"], self.dtypes[i])
                self.params[i] = new
                st.update(arrays)

    def param(self, i):
        return np.array(self.params[i], dtype=self.dtypes[i]).reshape(self.shapes[i])

    def state_array(self, i, name):
        """State ``name`` of params[i]: an array of its shape and dtype, or, for scalar state
        (:data:`SCALAR_STATE`), the float itself."""
        val = self.state[i][name]
        if isinstance(val, float):
            return val
        return np.array(val, dtype=self.dtypes[i]).reshape(self.shapes[i])


def assert_close(actual, expected, what=""):
    """Compare with the contract's tolerances for ``expected``'s dtype.

    The contract's atol is stated for O(1) values; it is applied relative to the array's largest
    finite magnitude when that exceeds 1 (an RMSprop momentum buffer of ~10 that cancels to ~0 in one
    element carries an absolute rounding error of a few ulp(10), not ulp(1)). NaNs must match.
    """
    expected = np.asarray(expected)
    tol = TOLERANCES[expected.dtype]
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    finite = np.abs(expected[np.isfinite(expected)])
    magnitude = max(1.0, float(finite.max())) if finite.size else 1.0
    rtol, atol = tol["rtol"], tol["atol"] * magnitude
    with np.errstate(invalid="ignore", over="ignore"):  # fast path; the slow one explains failures
        a, e = actual.astype(np.float64), expected.astype(np.float64)
        ok = np.where(np.isfinite(e), np.abs(a - e) <= atol + rtol * np.abs(e),
                      (a == e) | (np.isnan(a) & np.isnan(e)))
    if not ok.all():
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)
        raise AssertionError(f"{what}: not close (inf or NaN where the other is not)")
