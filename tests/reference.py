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
    "TOLERANCES", "DEFAULTS", "state_names", "rounder", "sgd", "adam", "rmsprop", "adagrad", "lion",
    "lamb", "clip_grad_norm", "RefOptimizer", "assert_close",
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
    "lion": dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
    "lamb": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, bias_correction=True,
                 maximize=False),
}


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
    if kind == "lion":
        return ("exp_avg",)
    if kind == "lamb":
        return ("exp_avg", "exp_avg_sq")
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


def _sign(x):
    # sign(0) = 0 (either zero), sign(NaN) = NaN
    if x != x:
        return math.nan
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


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
        pj = R(pj - R(lr_ * _sign(c)))
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
    kind : {"sgd", "adam", "adamw", "rmsprop", "adagrad", "lion", "lamb"}
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
        """One step; ``grads`` aligned with the parameters, ``None`` skips that parameter."""
        assert len(grads) == len(self.params)
        rule = RULES[self.kind]
        for group in self.param_groups:
            hp = {k: v for k, v in group.items() if k != "params"}
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
                self.params[i] = rule(self.params[i], g, arrays, t, self.dtypes[i], **hp)
                st.update(arrays)

    def param(self, i):
        return np.array(self.params[i], dtype=self.dtypes[i]).reshape(self.shapes[i])

    def state_array(self, i, name):
        return np.array(self.state[i][name], dtype=self.dtypes[i]).reshape(self.shapes[i])


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
