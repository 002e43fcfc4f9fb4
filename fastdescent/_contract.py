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

Numerics shared by every backend: scalars arrive as Python floats (float64); derived constants such
as ``1 - beta1`` are computed in float64 and rounded once to the element type; per-element arithmetic
is done in the element type, following the expression order of the NumPy backend
(``fastdescent/backends/numpy_ref``), fused multiply-add allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KernelRow", "KERNELS", "DTYPES", "row"]

#: dtypes every kernel is compiled for, with the suffix used in C names.
DTYPES = {"float32": "f32", "float64": "f64"}


@dataclass(frozen=True)
class KernelRow:
    name: str
    writes: tuple  # columns written in place (in this order)
    reads: tuple  # read-only columns
    scalars: tuple  # keyword-only scalars, in this order
    optional: tuple = ()  # columns that may be absent
    flags: tuple = ()  # scalars that are 0/1 flags (ints), not reals rounded to the element type
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
