"""The kernel contract: one row per kernel, mirrored by every backend and by ``csrc/fastdescent.h``.

A kernel works on a *tensor table*: several columns (``param``, ``grad``, ``exp_avg`` ...), each a list
of same-dtype contiguous 1-D views with one shared list of sizes, so that one call updates every tensor
of a dtype bucket (multi-tensor). Argument order everywhere is: buffers that are written, then read-only
buffers, then keyword-only scalars. Optional columns (``optional``) may be absent (``None`` in Python,
``NULL`` in C); the kernel then never touches them, and a scalar or flag says so.

Scalars are computed once per step in Python, in float64, by the optimizer layer (bias corrections,
effective learning rates); kernels only do per-element work. Flags are passed as ints (0/1).

Every backend package exposes ``KERNELS``: a dict from row name to a Python callable, collected by
:func:`fastdescent.backends.collect_kernels` from the module ``<backend package>.<row.stem>`` (the hot
path's file stem, the same as ``csrc/fd_<stem>.c``). ``kind="multi"`` rows are called
``fn(table, *, <scalars in this order>)``; ``kind="array"`` rows (dense-layer kernels, which take
plain arrays) are called ``fn(*writes, *reads, *, <scalars>)``. ``tests/test_contract.py`` checks
names and keyword order against this table and that the C header declares ``fd_<name>_f32`` and
``fd_<name>_f64``.

Two kinds of keyword argument are not rounded: ``per_tensor`` ones are int64 arrays with one value
per tensor of the table (``noise`` receives each tensor's position in the optimizer's parameter list
this way; C: ``const int64_t *``), listed first among the row's ``scalars``; ``ints`` are integer
scalars (a seed, a step count; C: ``int64_t``, Python ints elsewhere).

Numerics shared by every backend: scalars arrive as Python floats (float64); derived constants such
as ``1 - beta1`` are computed in float64 and rounded once to the element type; per-element arithmetic
is done in the element type, following the expression order of the NumPy backend
(``fastdescent/backends/numpy_ref``), fused multiply-add allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KernelRow", "KERNELS", "DTYPES", "ACT_KINDS", "LOSS_KINDS", "LAYER_TYPES", "row",
           "kernel_scalars"]

#: dtypes every kernel is compiled for, with the suffix used in C names.
DTYPES = {"float32": "f32", "float64": "f64"}

#: the ``kind`` scalar of ``act_fwd``/``act_bwd`` (C: ``enum fd_act_kind``, ``FD_ACT_RELU`` ...)
ACT_KINDS = {"relu": 0, "tanh": 1, "sigmoid": 2, "gelu": 3}
#: the loss of the fused training step (C: ``enum fd_loss_kind``, ``FD_LOSS_XENT``, ``FD_LOSS_MSE``)
LOSS_KINDS = {"cross_entropy": 0, "mse": 1}
#: layer types in the fused step's layer table (C: ``enum fd_layer_type``, ``FD_LAYER_LINEAR`` ...)
LAYER_TYPES = {"linear": 0, "activation": 1}


@dataclass(frozen=True)
class KernelRow:
    name: str
    writes: tuple  # columns written in place (in this order)
    reads: tuple  # read-only columns
    scalars: tuple  # keyword-only scalars, in this order
    optional: tuple = ()  # columns that may be absent
    flags: tuple = ()  # scalars that are 0/1 flags (ints), not reals rounded to the element type
    per_tensor: tuple = ()  # int64 arrays, one value per tensor (C: const int64_t *), first in scalars
    ints: tuple = ()  # integer scalars (C: int64_t), passed as Python ints
    returns: str | None = None  # reductions return a Python float/int
    doc: str = ""
    hotpath: str = ""  # file stem: csrc/fd_<hotpath>.c, backends/*/<hotpath>.py (default: name)
    kind: str = "multi"  # "multi": fn(table, *, scalars); "array": fn(*writes, *reads, *, scalars)

    @property
    def stem(self):
        return self.hotpath or self.name

    @property
    def columns(self):
        return self.writes + self.reads


KERNELS = {
    r.name: r
    for r in [
        KernelRow(
            "sgd",
            writes=("param", "momentum_buffer"),
            reads=("grad",),
            scalars=("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "first_step"),
            optional=("momentum_buffer",),
            flags=("nesterov", "maximize", "first_step"),
            doc="SGD with optional coupled weight decay, (Nesterov) momentum; first_step=1 sets b <- g.",
        ),
        KernelRow(
            "adam",
            writes=("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
            reads=("grad",),
            scalars=(
                "beta1", "beta2", "eps", "weight_decay", "decay", "step_size",
                "bias_correction2_sqrt", "amsgrad", "maximize",
            ),
            optional=("max_exp_avg_sq",),
            flags=("amsgrad", "maximize"),
            doc=(
                "Adam/AdamW. weight_decay is the coupled decay (0 for AdamW); decay = 1 - lr*wd is the "
                "decoupled factor applied to p first (1 for Adam); step_size = lr/bc1."
            ),
        ),
        KernelRow(
            "rmsprop",
            writes=("param", "square_avg", "grad_avg", "momentum_buffer"),
            reads=("grad",),
            scalars=("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
            optional=("grad_avg", "momentum_buffer"),
            flags=("centered", "maximize"),
            doc="RMSprop; grad_avg present iff centered, momentum_buffer iff momentum > 0.",
        ),
        KernelRow(
            "adagrad",
            writes=("param", "sum"),
            reads=("grad",),
            scalars=("clr", "eps", "weight_decay", "maximize"),
            flags=("maximize",),
            doc="Adagrad; clr = lr / (1 + (t-1)*lr_decay).",
        ),
        KernelRow(
            "lion",
            writes=("param", "exp_avg"),
            reads=("grad",),
            scalars=("lr", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "decay",
                     "maximize"),
            flags=("maximize",),
            doc=(
                "Lion: c = beta1*m + (1-beta1)*g; p = p*decay (decay = 1 - lr*wd); "
                "p = p - lr*sign(c) (sign(0) = 0, sign(NaN) = NaN); m = beta2*m + (1-beta2)*g."
            ),
        ),
        KernelRow(
            "lamb",
            writes=("param", "exp_avg", "exp_avg_sq"),
            reads=("grad",),
            scalars=("lr", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "eps",
                     "weight_decay", "inv_bias_correction1", "inv_bias_correction2", "maximize"),
            flags=("maximize",),
            doc=(
                "LAMB: m = beta1*m + (1-beta1)*g; v = beta2*v + (1-beta2)*g*g; "
                "r = (m*inv_bias_correction1) / (sqrt(v*inv_bias_correction2) + eps) + "
                "weight_decay*p (inv_bias_correction = 1/(1 - beta**t), or 1); per "
                "tensor, pn = ||p||, rn = ||r|| (float64, fixed order), trust = pn/rn if both > 0 "
                "else 1; p = p - (lr*trust)*r with lr*trust computed in float64 and rounded once. "
                "The norms are per tensor of the table, inside the one call (a coalesced table "
                "would change them)."
            ),
        ),
        KernelRow(
            "rprop",
            writes=("param", "prev", "step_size"),
            reads=("grad",),
            scalars=("etaminus", "etaplus", "step_size_min", "step_size_max", "maximize"),
            flags=("maximize",),
            doc=(
                "Rprop (torch.optim.Rprop): g = -g if maximize; f = etaplus if g*prev > 0, etaminus "
                "if g*prev < 0, else 1 (a NaN product counts as 0); step_size = clamp(step_size*f, "
                "step_size_min, step_size_max); g = 0 where f == etaminus; p -= sign(g)*step_size "
                "(sign(0) = sign(NaN) = 0); prev = g."
            ),
        ),
        KernelRow(
            "nadam",
            writes=("param", "exp_avg", "exp_avg_sq"),
            reads=("grad",),
            scalars=(
                "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "weight_decay", "decay",
                "step_size_grad", "step_size_exp_avg", "eps_scaled", "maximize",
            ),
            flags=("maximize",),
            doc=(
                "NAdam/NAdamW (torch.optim.NAdam). p *= decay (1 - lr*wd for NAdamW, else 1); "
                "g += weight_decay*p (coupled); m, v as Adam; p -= (step_size_grad*g + "
                "step_size_exp_avg*m) / (sqrt(v) + eps_scaled), with step_size_grad = "
                "lr*(1-mu_t)/(1-mu_product_t)*sqrt(bc2), step_size_exp_avg = "
                "lr*mu_{t+1}/(1-mu_product_t*mu_{t+1})*sqrt(bc2), eps_scaled = eps*sqrt(bc2) "
                "(torch's p -= lr*(1-mu_t)/(1-mu_product_t)*g/d + ..., d = sqrt(v/bc2) + eps)."
            ),
        ),
        KernelRow(
            "radam",
            writes=("param", "exp_avg", "exp_avg_sq"),
            reads=("grad",),
            scalars=(
                "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "eps", "weight_decay",
                "decay", "step_size", "rectify", "maximize",
            ),
            flags=("rectify", "maximize"),
            doc=(
                "RAdam/RAdamW (torch.optim.RAdam). p *= decay; g += weight_decay*p (coupled); m, v "
                "as Adam; rectify (rho_t > 5): p -= step_size * (m / (sqrt(v) + eps)) with "
                "step_size = lr*r_t*sqrt(bc2)/bc1; else p -= step_size * m with step_size = lr/bc1."
            ),
        ),
        KernelRow(
            "norm_pow_sum",
            hotpath="clip",
            writes=(),
            reads=("grad",),
            scalars=("norm_type",),
            returns="float",
            doc=(
                "sum over all tensors of sum |g|**norm_type, accumulated in float64; for "
                "norm_type=inf the max |g|. Deterministic for a given backend and thread count."
            ),
        ),
        KernelRow(
            "scale",
            hotpath="clip",
            writes=("grad",),
            reads=(),
            scalars=("factor",),
            doc="g <- factor * g (gradient clipping's second pass).",
        ),
        KernelRow(
            "all_finite",
            hotpath="clip",
            writes=(),
            reads=("grad",),
            scalars=(),
            returns="bool",
            doc="1 if every element of every tensor is finite, else 0.",
        ),
        KernelRow(
            "clip_value",
            hotpath="clip",
            writes=("grad",),
            reads=(),
            scalars=("clip_value",),
            doc=(
                "g <- min(max(g, -clip_value), clip_value), torch.clamp_'s rule (clip_grad_value_): "
                "a NaN stays NaN, -0.0 stays -0.0; clip_value finite and >= 0."
            ),
        ),
        KernelRow(
            "prox",
            writes=("param",),
            reads=(),
            scalars=("threshold",),
            doc=(
                "Proximal L1 step (soft thresholding), run after an optimizer's update when its group "
                "has l1 > 0: p <- sign(p) * max(|p| - threshold, 0) with threshold = lr_in_force * l1 "
                "(rules.Rule.prox_lr). Element order: a = |p| - threshold; p <- (a <= 0) ? +0.0 : "
                "copysign(a, p); so every thresholded element is exactly +0.0 (never -0.0, also "
                "for p = -0.0), a NaN stays NaN and +-inf stays +-inf. threshold finite, >= 0."
            ),
        ),
        KernelRow(
            "noise",
            writes=("param",),
            reads=(),
            scalars=("param_index", "sigma", "seed", "step"),
            per_tensor=("param_index",),
            ints=("seed", "step"),
            doc=(
                "Gradient noise after an SGD update: p <- p + sigma * z with z ~ N(0, 1) a function "
                "of (seed, param_index[i], step, element index) only (no state): Philox4x32-10 "
                "(Random123) keyed per tensor, then Box-Muller in float64, z rounded once to the "
                "element type. Per tensor i: K = philox((idx_lo, idx_hi, 0, 0), (seed_lo, seed_hi))"
                "[0:2] with idx = param_index[i]; element e: (x0, x1, x2, x3) = philox((j_lo, j_hi, "
                "step_lo, step_hi), K) with j = e // 2; u1 = (((x1 << 32 | x0) >> 11) + 1) * 2^-53 "
                "in (0, 1], u2 = ((x3 << 32 | x2) >> 11) * 2^-53; z = sqrt(-2 ln u1) * (cos if e is "
                "even else sin)(2 pi u2). The same z for any thread count, chunking or table layout; "
                "backends agree up to the last bits of their log/sin/cos. sigma finite, >= 0; seed in "
                "[0, 2^63); step >= 1; param_index[i] >= 0."
            ),
        ),
        KernelRow(
            "adamax",
            writes=("param", "exp_avg", "exp_inf"),
            reads=("grad",),
            scalars=("lerp_weight", "lerp_from_grad", "beta2", "eps", "weight_decay", "clr",
                     "maximize"),
            flags=("lerp_from_grad", "maximize"),
            doc=(
                "Adamax (torch.optim.Adamax). g += wd*p; m <- (g if lerp_from_grad else m) + "
                "lerp_weight*(g - m) (torch's lerp_(g, 1 - beta1)); u <- max(beta2*u, |g| + eps), "
                "NaN-propagating; p <- p - (clr*m)/u with clr = lr / (1 - beta1**t)."
            ),
        ),
        KernelRow(
            "adadelta",
            writes=("param", "square_avg", "acc_delta"),
            reads=("grad",),
            scalars=("lr", "rho", "one_minus_rho", "eps", "weight_decay", "maximize"),
            flags=("maximize",),
            doc=(
                "Adadelta (torch.optim.Adadelta). g += wd*p; v <- v*rho + (one_minus_rho*g)*g; "
                "d = sqrt(a + eps)/sqrt(v + eps)*g; a <- a*rho + (one_minus_rho*d)*d; p <- p - lr*d."
            ),
        ),
        # ---------------------------------------------------------------- dense layers (backprop)
        # Shapes: x (B, M, K), w (Bw, K, N), b (Bw, N), y / dy (B, M, N), with Bw == 1 (one weight
        # shared by the whole batch: an ordinary Linear layer, leading dims flattened into M) or
        # Bw == B (a stack of independent layers, e.g. an ensemble). All C-contiguous, one dtype.
        # Backward kernels ACCUMULATE into their outputs (zeroing is a separate call) and are
        # deterministic on CPU (no float atomics; fixed reduction order).
        KernelRow(
            "matmul_fwd", hotpath="matmul", kind="array",
            writes=("y",), reads=("x", "w", "b"), scalars=(), optional=("b",),
            doc="y[i] = x[i] @ w[i if Bw == B else 0] (+ b[...] broadcast over rows).",
        ),
        KernelRow(
            "matmul_bwd_x", hotpath="matmul", kind="array",
            writes=("dx",), reads=("dy", "w"), scalars=(),
            doc="dx[i] += dy[i] @ w[i or 0].T",
        ),
        KernelRow(
            "matmul_bwd_w", hotpath="matmul", kind="array",
            writes=("dw", "db"), reads=("x", "dy"), scalars=(), optional=("db",),
            doc="dw[j] += sum over i mapped to j of x[i].T @ dy[i]; db[j] += column sums of dy[i].",
        ),
        KernelRow(
            "act_fwd", hotpath="activation", kind="array",
            writes=("y",), reads=("x",), scalars=("kind",), flags=("kind",),
            doc="y = f(x) elementwise (any shape, same size); kind: 0 relu, 1 tanh, 2 sigmoid, "
                "3 gelu (exact, erf-based, as torch's default). y may be x (in place).",
        ),
        KernelRow(
            "act_bwd", hotpath="activation", kind="array",
            writes=("dx",), reads=("dy", "x", "y"), scalars=("kind",), flags=("kind",),
            doc="dx += dy * f'(x), using y = f(x) where cheaper (tanh: 1 - y*y, sigmoid: y*(1 - y)); "
                "relu: f'(x) = 1 if x > 0 else 0 (0 at x == 0, as torch); gelu: "
                "f'(x) = Phi(x) + x*phi(x) (standard normal cdf / pdf).",
        ),
        KernelRow(
            "mse_fwd_bwd", hotpath="loss", kind="array",
            writes=("dpred",), reads=("pred", "target"), scalars=("scale",), returns="float",
            doc="loss = scale * sum((pred - target)**2) (float64 accumulation, returned); "
                "dpred += 2 * scale * (pred - target). For a mean over n elements scale = 1/n.",
        ),
        KernelRow(
            "xent_fwd_bwd", hotpath="loss", kind="array",
            writes=("dlogits",), reads=("logits", "labels"), scalars=("scale",), returns="float",
            doc="Softmax cross-entropy over integer labels, numerically stable (max-shifted "
                "log-sum-exp). logits (R, C), labels (R,) int64 in [0, C). loss = scale * sum_r "
                "(logsumexp(logits[r]) - logits[r, labels[r]]) returned (float64); "
                "dlogits += scale * (softmax(logits) - onehot(labels)). Mean: scale = 1/R.",
        ),
    ]
}


def row(name):
    """Return the contract row ``name`` (KeyError lists the choices)."""
    try:
        return KERNELS[name]
    except KeyError:
        raise KeyError(f"no kernel {name!r} in the contract; known: {sorted(KERNELS)}") from None


def kernel_scalars(name, scalars, dtype):
    """The scalars of contract row ``name`` as the kernels use them, in the row's order: each float
    rounded once to ``dtype`` (NumPy scalars), each flag or integer scalar (a name listed in the
    row's ``flags`` or ``ints``, or an int value) as a Python int, each per-tensor argument as an
    int64 array. The one rounding function of the Python-side backends (numpy, numba, cuda); C
    rounds the same float64 values with a cast."""
    r = row(name)
    T = np.dtype(dtype).type
    out = []
    for k in r.scalars:
        v = scalars[k]
        if k in r.per_tensor:
            out.append(np.ascontiguousarray(v, dtype=np.int64))
        elif k in r.flags or k in r.ints or isinstance(v, (bool, int, np.integer)):
            out.append(int(v))
        else:
            out.append(T(v))
    return tuple(out)
