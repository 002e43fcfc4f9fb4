"""The benchmark cases: the ONE definition of what is measured.

``fastdescent bench``, ``fastdescent demo`` and the pytest-benchmark files in ``benchmarks/`` all build
their work from this module, so they can never disagree about sizes, hyperparameters, bytes moved or
how a result is checked.

A *case* is (hot path, data layout, implementation). Implementations are fastdescent's backends
(``numpy``, ``c``, ``numba``, ``cuda``), peers (``torch-forloop``, ``torch-foreach``, ``torch-fused``,
``numpy-textbook``, ``np.matmul``, ``torch.bmm``, ``torch-autograd``, ``torch``, ``sklearn``) and the
memory-roofline probe (``roofline``). Every case can say why it is unavailable here
(:meth:`unavailable`), builds an :class:`Instance` (persistent arrays, a ``step()`` callable), and is
checked against the NumPy reference backend before it is timed (:meth:`check`, raising
:class:`CheckError`).

Optimizer cases run through the optimizer classes with persistent gradient arrays, as a training loop
does (the gradient buffers are validated once and then reused).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CheckError", "Instance", "OptSpec", "OPTIMIZERS", "OPS", "Layout", "single", "many", "MIXED400",
    "HEADLINE_LAYOUTS", "BACKENDS", "OPT_PEERS", "OptimizerCase", "MatmulShape", "MATMUL_SHAPES",
    "MATMUL_KERNELS", "MATMUL_PEERS", "MatmulCase", "MlpCase", "MLP_PEERS", "MLP_SIZES",
    "MNIST_SIZES", "mnist_cases", "mnist_shaped_split", "mlp_data",
    "optimizer_cases", "matmul_cases", "mlp_cases", "headline_cases", "SWEEP_SIZES", "QUICK_SIZES",
    "SWEEP_COUNTS", "QUICK_COUNTS", "QUICK_OPS", "SMALL_TENSOR", "CHECK_STEPS", "SEED", "DTYPE",
    "backend_unavailable", "torch_unavailable", "FUNCTIONAL_SUFFIX", "FUNCTIONAL_OPS",
    "functional_cases",
]

DTYPE = np.dtype(np.float32)
SEED = 0
#: optimizer steps taken (from identical data) by a case and by the NumPy reference before comparing
CHECK_STEPS = 2

#: one-tensor sweep (elements); the full sweep includes 2**25, the size of the performance targets
SWEEP_SIZES = tuple([2 ** k for k in range(10, 25, 2)] + [2 ** 25, 2 ** 26])
QUICK_SIZES = (2 ** 10, 2 ** 14, 2 ** 18, 2 ** 22)
#: tensor-count sweep: this many tensors of SMALL_TENSOR elements each
SWEEP_COUNTS = (1, 4, 16, 64, 256, 1000, 4096)
QUICK_COUNTS = (1, 64, 1000)
#: ``--quick`` without ``--ops``: one optimizer of each kind of pass (plain read-modify-write, Adam's
#: moments, RMSprop's averages, LAMB's two passes with per-tensor norms), the matmul kernels and the
#: MLP; every optimizer with ``--ops``
QUICK_OPS = ("sgd_momentum", "adam", "rmsprop", "lamb", "matmul", "mlp")
SMALL_TENSOR = 64

BACKENDS = ("numpy", "c", "numba", "cuda")


class CheckError(AssertionError):
    """An implementation's result disagrees with the NumPy reference."""


# ============================================================================ optimizers
@dataclass
class OptSpec:
    """One optimizer configuration: constructor, hyperparameters, and the bytes it must move.

    ``reads``/``writes`` are the arrays an update streams per element (state written in place), so
    ``bytes_per_element = (len(reads) + len(writes)) * itemsize``: Adam fp32 reads p, g, m, v and
    writes p, m, v = 28 B; SGD reads p, g and writes p = 12 B; SGD with momentum 20 B. An update
    that must stream memory more than once lists its further passes in ``passes`` (``(reads,
    writes)`` pairs, counted too): LAMB's first pass reads p, g, m, v and writes m, v (24 B fp32),
    its second pass over a tensor larger than the cache reads p, m, v and writes p (16 B): 40 B.
    ``torch_cls`` is None where torch.optim has no such optimizer.
    writes p, m, v = 28 B; SGD reads p, g and writes p = 12 B; SGD with momentum 20 B. For an option
    that runs as a second pass after the update (``l1``: ``prox``; ``noise_std``: ``noise``) they
    are still the update's bytes, what one fused pass would move, so the roofline fraction shows what
    the second pass (8 B more per element, plus the noise's arithmetic) costs.

    ``kind="clip"`` rows measure a gradient-clipping function (``cls`` names it in ``fastdescent``;
    its ``kwargs`` are its arguments) in place of an optimizer: ``step()`` clips the case's arrays.
    ``torch_cls`` None: torch has no peer (the torch cases are unavailable).
    """

    name: str
    cls: str
    kwargs: dict
    reads: tuple
    writes: tuple
    torch_cls: str | None
    torch_fused: bool
    doc: str = ""
    kind: str = "optimizer"
    passes: tuple = ()

    def bytes_per_element(self, dtype=DTYPE):
        n = len(self.reads) + len(self.writes) + sum(len(r) + len(w) for r, w in self.passes)
        return n * np.dtype(dtype).itemsize

    @property
    def kernel(self):
        """The contract row that does the work (the optimizer's update row for optimizers)."""
        import fastdescent as fd

        # (the class's rule: ``Optimizer._kernel`` is a property, which reads as itself on a class)
        return "clip_value" if self.kind == "clip" else getattr(fd, self.cls)._rule.name

    def make(self, params, backend):
        import fastdescent as fd

        if self.kind == "clip":
            return _Clipper(getattr(fd, self.cls), params, backend, self.kwargs)
        return getattr(fd, self.cls)(params, backend=backend, **self.kwargs)


class _Clipper:
    """A clipping function as an optimizer-like object: ``step(grads)`` clips ``arrays`` in place
    (the case's data; ``grads`` is ignored), so clipping cases reuse the optimizer machinery."""

    def __init__(self, fn, arrays, backend, kwargs):
        self.fn, self.arrays, self.backend, self.kwargs = fn, list(arrays), backend, kwargs

    def step(self, grads=None):
        self.fn(self.arrays, backend=self.backend, **self.kwargs)


OPTIMIZERS = {
    s.name: s
    for s in [
        OptSpec("adam", "Adam", dict(lr=1e-3), ("param", "grad", "exp_avg", "exp_avg_sq"),
                ("param", "exp_avg", "exp_avg_sq"), "Adam", True, "Adam, lr=1e-3"),
        OptSpec("adamw", "AdamW", dict(lr=1e-3, weight_decay=1e-2),
                ("param", "grad", "exp_avg", "exp_avg_sq"), ("param", "exp_avg", "exp_avg_sq"),
                "AdamW", True, "AdamW, lr=1e-3, weight_decay=1e-2"),
        OptSpec("sgd", "SGD", dict(lr=1e-2), ("param", "grad"), ("param",), "SGD", True,
                "SGD, lr=1e-2, no momentum"),
        OptSpec("sgd_momentum", "SGD", dict(lr=1e-2, momentum=0.9),
                ("param", "grad", "momentum_buffer"), ("param", "momentum_buffer"), "SGD", True,
                "SGD, lr=1e-2, momentum=0.9"),
        OptSpec("rmsprop", "RMSprop", dict(lr=1e-2), ("param", "grad", "square_avg"),
                ("param", "square_avg"), "RMSprop", False, "RMSprop, lr=1e-2"),
        OptSpec("adagrad", "Adagrad", dict(lr=1e-2), ("param", "grad", "sum"), ("param", "sum"),
                "Adagrad", True, "Adagrad, lr=1e-2"),
        OptSpec("lion", "Lion", dict(lr=1e-4, weight_decay=1e-2), ("param", "grad", "exp_avg"),
                ("param", "exp_avg"), None, False, "Lion, lr=1e-4, weight_decay=1e-2"),
        OptSpec("lamb", "LAMB", dict(lr=1e-3, weight_decay=1e-2),
                ("param", "grad", "exp_avg", "exp_avg_sq"), ("exp_avg", "exp_avg_sq"), None, False,
                "LAMB, lr=1e-3, weight_decay=1e-2 (two passes: moments and norms, then the update)",
                passes=((("param", "exp_avg", "exp_avg_sq"), ("param",)),)),
        OptSpec("rprop", "Rprop", dict(lr=1e-2), ("param", "grad", "prev", "step_size"),
                ("param", "prev", "step_size"), "Rprop", False, "Rprop, lr=1e-2"),
        OptSpec("adamax", "Adamax", dict(lr=2e-3), ("param", "grad", "exp_avg", "exp_inf"),
                ("param", "exp_avg", "exp_inf"), "Adamax", False, "Adamax, lr=2e-3"),
        OptSpec("adadelta", "Adadelta", dict(lr=1.0), ("param", "grad", "square_avg", "acc_delta"),
                ("param", "square_avg", "acc_delta"), "Adadelta", False, "Adadelta, lr=1.0"),
        OptSpec("sgd_l1", "SGD", dict(lr=1e-2, l1=1e-3), ("param", "grad"), ("param",), None, False,
                "SGD, lr=1e-2, l1=1e-3 (update, then the prox pass)"),
        OptSpec("sgd_noise", "SGD", dict(lr=1e-2, noise_std=1e-3, noise_decay=0.55),
                ("param", "grad"), ("param",), None, False,
                "SGD, lr=1e-2, noise_std=1e-3, noise_decay=0.55 (update, then the noise pass)"),
        OptSpec("clip_value", "clip_grad_value_", dict(clip_value=0.05), ("grad",), ("grad",),
                "clip_grad_value_", False, "clip_grad_value_(grads, 0.05)", kind="clip"),
        OptSpec("nadam", "NAdam", dict(lr=2e-3), ("param", "grad", "exp_avg", "exp_avg_sq"),
                ("param", "exp_avg", "exp_avg_sq"), "NAdam", False, "NAdam, lr=2e-3"),
        OptSpec("radam", "RAdam", dict(lr=1e-3), ("param", "grad", "exp_avg", "exp_avg_sq"),
                ("param", "exp_avg", "exp_avg_sq"), "RAdam", False, "RAdam, lr=1e-3"),
    ]
}
OPS = tuple(OPTIMIZERS)
OPT_PEERS = ("torch-forloop", "torch-foreach", "torch-fused", "numpy-textbook")


@dataclass(frozen=True)
class Layout:
    """The parameter tensors of a case: ``name`` and the shape of each tensor."""

    name: str
    shapes: tuple

    @property
    def n_tensors(self):
        return len(self.shapes)

    @property
    def elements(self):
        return sum(math.prod(s) for s in self.shapes)

    def __str__(self):
        return self.name


def _size_name(n):
    k = int(n).bit_length() - 1
    return f"2^{k}" if n == 1 << k else str(n)


def single(n):
    """One tensor of ``n`` elements (named ``1x2^k``)."""
    return Layout(f"1x{_size_name(n)}", ((int(n),),))


def many(count, size=SMALL_TENSOR):
    """``count`` tensors of ``size`` elements each (named ``<count>x<size>``)."""
    return Layout(f"{count}x{size}", ((int(size),),) * int(count))


#: 400 tensors as a model has them: 200 weights of 256x256, each followed by its bias of 256
MIXED400 = Layout("400 tensors", ((256, 256), (256,)) * 200)
#: the layouts of the performance targets
HEADLINE_LAYOUTS = (single(2 ** 25), MIXED400, many(1000, 64))


class Instance:
    """A built case: persistent arrays and the callable that is timed.

    ``step()`` performs one unit of work (one optimizer step, one kernel call, one epoch) and
    returns only when it is complete (device work synchronised). ``result()`` returns the host
    arrays the check compares. ``close()`` drops every reference so memory is freed.
    """

    def __init__(self, step, result=None, *, bytes_per_step=None, flops_per_step=None, note=None,
                 keep=None):
        self.step = step
        self._result = result
        self.bytes_per_step = bytes_per_step
        self.flops_per_step = flops_per_step
        self.note = note
        self._keep = keep

    def result(self):
        return None if self._result is None else self._result()

    def close(self):
        self.step = self._result = self._keep = None


# ---------------------------------------------------------------------------- availability
def backend_unavailable(name, *, allow_simulator=False):
    """None if fastdescent backend ``name`` loads here, else the reason (a string)."""
    from .. import backends

    if name not in backends.BACKENDS:
        return f"unknown backend {name!r}"
    status = backends.backend_status()
    if status[name] is not None:
        return status[name]
    if name == "cuda" and not allow_simulator and _cuda_simulator():
        return "the CUDA backend runs in Numba's simulator here (no GPU): timings would be meaningless"
    return None


def _cuda_simulator():
    try:
        from numba import config

        return bool(config.ENABLE_CUDASIM)
    except Exception:  # noqa: BLE001
        return False


def torch_unavailable():
    """None if torch imports, else the reason."""
    try:
        import torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"torch is not installed ({type(exc).__name__}: {exc})"
    return None


def _sklearn_unavailable():
    try:
        import sklearn  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"scikit-learn is not installed ({type(exc).__name__}: {exc})"
    return None


# ---------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def _base_data(layout, dtype, seed):
    """Read-only initial parameters and gradients for a layout (cached: every impl copies them)."""
    rng = np.random.default_rng(seed)
    params, grads = [], []
    for shape in layout.shapes:
        n = math.prod(shape)
        p = rng.random(n, dtype=dtype).reshape(shape)
        p -= 0.5
        g = rng.random(n, dtype=dtype).reshape(shape)
        g -= 0.5
        g *= 0.2
        p.flags.writeable = False
        g.flags.writeable = False
        params.append(p)
        grads.append(g)
    return tuple(params), tuple(grads)


def _copies(arrays):
    return [np.array(a, copy=True) for a in arrays]


@functools.lru_cache(maxsize=2)
def _reference_params(op, layout, dtype, seed, steps):
    """Parameters after ``steps`` steps of the NumPy reference backend, from the base data."""
    spec = OPTIMIZERS[op]
    p0, g0 = _base_data(layout, dtype, seed)
    params, grads = _copies(p0), _copies(g0)
    opt = spec.make(params, "numpy")
    for _ in range(steps):
        opt.step(grads)
    for p in params:
        p.flags.writeable = False
    return tuple(params)


def _compare(name, got, want, rtol, atol):
    """Raise CheckError unless every pair of arrays agrees; return the worst absolute error."""
    worst = 0.0
    if len(got) != len(want):
        raise CheckError(f"{name}: {len(got)} result arrays, the reference has {len(want)}")
    for i, (a, b) in enumerate(zip(got, want)):
        a = np.asarray(a).reshape(np.shape(b))
        if not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False):
            diff = np.abs(a.astype(np.float64) - b)
            k = int(np.nanargmax(np.where(np.isnan(diff), np.inf, diff)))
            raise CheckError(
                f"{name}: array {i} differs from the NumPy reference: max |error| "
                f"{float(np.nanmax(diff)) if not np.isnan(diff).all() else float('nan'):.3g} at flat "
                f"index {k} (got {a.flat[k]!r}, want {b.flat[k]!r}; rtol={rtol}, atol={atol})")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    return worst


# ---------------------------------------------------------------------------- optimizer peers
def _torch_optimizer(spec, params, impl):
    import torch

    if spec.kind == "clip":  # torch.nn.utils.clip_grad_value_ over the params' .grad
        fn = getattr(torch.nn.utils, spec.torch_cls)
        foreach = impl == "torch-foreach"

        class _Step:
            def step(self):
                fn(params, foreach=foreach, **spec.kwargs)

        return _Step()
    cls = getattr(torch.optim, spec.torch_cls)
    kw = dict(spec.kwargs)
    if impl == "torch-forloop":
        kw["foreach"] = False
    elif impl == "torch-foreach":
        kw["foreach"] = True
    elif impl == "torch-fused":
        kw["fused"] = True
    return cls(params, **kw)


def _textbook(spec, params, grads):
    """What a user writes in NumPy from the papers: temporaries allocated, one tensor at a time."""
    name, kw = spec.name, spec.kwargs
    lr = kw.get("lr")
    state = {"t": 0, "a": [np.zeros_like(p) for p in params], "b": [None] * len(params)}

    if name in ("adam", "adamw"):
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        wd = kw.get("weight_decay", 0.0)

        def step():
            state["t"] += 1
            t, m, v = state["t"], state["a"], state["b"]
            for i, (p, g) in enumerate(zip(params, grads)):
                if v[i] is None:
                    v[i] = np.zeros_like(p)
                if wd:
                    p *= 1 - lr * wd
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                m_hat = m[i] / (1 - beta1 ** t)
                v_hat = v[i] / (1 - beta2 ** t)
                p -= lr * m_hat / (np.sqrt(v_hat) + eps)
    elif name == "sgd":
        def step():
            for p, g in zip(params, grads):
                p -= lr * g
    elif name == "sgd_momentum":
        mu = kw["momentum"]

        def step():
            b = state["b"]
            for i, (p, g) in enumerate(zip(params, grads)):
                b[i] = g.copy() if b[i] is None else mu * b[i] + g
                p -= lr * b[i]
    elif name == "rmsprop":
        alpha, eps = 0.99, 1e-8

        def step():
            v = state["a"]
            for i, (p, g) in enumerate(zip(params, grads)):
                v[i] = alpha * v[i] + (1 - alpha) * g * g
                p -= lr * g / (np.sqrt(v[i]) + eps)
    elif name == "adagrad":
        eps = 1e-10

        def step():
            s = state["a"]
            for i, (p, g) in enumerate(zip(params, grads)):
                s[i] += g * g
                p -= lr * g / (np.sqrt(s[i]) + eps)
    elif name == "lion":
        beta1, beta2, wd = 0.9, 0.99, kw.get("weight_decay", 0.0)

        def step():
            m = state["a"]
            for i, (p, g) in enumerate(zip(params, grads)):
                c = beta1 * m[i] + (1 - beta1) * g
                p *= 1 - lr * wd
                p -= lr * np.sign(c)
                m[i] = beta2 * m[i] + (1 - beta2) * g
    elif name == "lamb":
        beta1, beta2, eps, wd = 0.9, 0.999, 1e-6, kw.get("weight_decay", 0.0)

        def step():
            state["t"] += 1
            t, m, v = state["t"], state["a"], state["b"]
            for i, (p, g) in enumerate(zip(params, grads)):
                if v[i] is None:
                    v[i] = np.zeros_like(p)
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                m_hat = m[i] / (1 - beta1 ** t)
                v_hat = v[i] / (1 - beta2 ** t)
                r = m_hat / (np.sqrt(v_hat) + eps) + wd * p
                p_norm, r_norm = np.linalg.norm(p), np.linalg.norm(r)
                trust = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
                p -= lr * trust * r
    elif name == "rprop":
        etaminus, etaplus, step_min, step_max = 0.5, 1.2, 1e-6, 50.0

        def step():
            prev, size = state["a"], state["b"]
            for i, (p, g) in enumerate(zip(params, grads)):
                if size[i] is None:
                    size[i] = np.full_like(p, lr)
                s = np.sign(g * prev[i])
                factor = np.where(s > 0, etaplus, np.where(s < 0, etaminus, 1.0)).astype(p.dtype)
                size[i] = np.clip(size[i] * factor, step_min, step_max)
                g = np.where(s < 0, 0, g)
                p -= np.sign(g) * size[i]
                prev[i] = g
    elif name == "adamax":
        beta1, beta2, eps = 0.9, 0.999, 1e-8

        def step():
            state["t"] += 1
            t, m, u = state["t"], state["a"], state["b"]
            for i, (p, g) in enumerate(zip(params, grads)):
                if u[i] is None:
                    u[i] = np.zeros_like(p)
                m[i] = beta1 * m[i] + (1 - beta1) * g
                u[i] = np.maximum(beta2 * u[i], np.abs(g) + eps)
                p -= lr / (1 - beta1 ** t) * m[i] / u[i]
    elif name == "adadelta":
        rho, eps = 0.9, 1e-6

        def step():
            v, a = state["a"], state["b"]
            for i, (p, g) in enumerate(zip(params, grads)):
                if a[i] is None:
                    a[i] = np.zeros_like(p)
                v[i] = rho * v[i] + (1 - rho) * g * g
                delta = np.sqrt(a[i] + eps) / np.sqrt(v[i] + eps) * g
                a[i] = rho * a[i] + (1 - rho) * delta * delta
                p -= lr * delta
    elif name == "sgd_l1":
        thr = lr * kw["l1"]

        def step():
            for p, g in zip(params, grads):
                p -= lr * g
                p[...] = np.sign(p) * np.maximum(np.abs(p) - thr, 0)
    elif name == "sgd_noise":
        from ..backends.numpy_ref.noise import normals, tensor_key

        def step():
            state["t"] += 1
            t = state["t"]
            sigma = kw["noise_std"] * t ** -kw["noise_decay"]
            for i, (p, g) in enumerate(zip(params, grads)):
                p -= lr * g  # the draws of fastdescent's generator (the check compares values)
                p += sigma * normals(tensor_key(0, i), t, 0, p.size).reshape(p.shape).astype(p.dtype)
    elif name == "clip_value":
        c = kw["clip_value"]

        def step():
            for p in params:
                np.clip(p, -c, c, out=p)
    elif name == "nadam":
        beta1, beta2, eps, psi = 0.9, 0.999, 1e-8, 4e-3
        state["mu_product"] = 1.0

        def step():
            state["t"] += 1
            t, m, v = state["t"], state["a"], state["b"]
            mu = beta1 * (1 - 0.5 * 0.96 ** (t * psi))
            mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
            state["mu_product"] *= mu
            mp = state["mu_product"]
            for i, (p, g) in enumerate(zip(params, grads)):
                if v[i] is None:
                    v[i] = np.zeros_like(p)
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                denom = np.sqrt(v[i] / (1 - beta2 ** t)) + eps
                p -= lr * (1 - mu) / (1 - mp) * g / denom
                p -= lr * mu_next / (1 - mp * mu_next) * m[i] / denom
    elif name == "radam":
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        rho_inf = 2 / (1 - beta2) - 1

        def step():
            state["t"] += 1
            t, m, v = state["t"], state["a"], state["b"]
            bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
            rho_t = rho_inf - 2 * t * beta2 ** t / bc2
            for i, (p, g) in enumerate(zip(params, grads)):
                if v[i] is None:
                    v[i] = np.zeros_like(p)
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                m_hat = m[i] / bc1
                if rho_t > 5:
                    r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                                  / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                    p -= lr * m_hat * r * math.sqrt(bc2) / (np.sqrt(v[i]) + eps)
                else:
                    p -= lr * m_hat
    else:  # pragma: no cover - every OPTIMIZERS row has a textbook version
        raise KeyError(name)
    return step


@dataclass(frozen=True)
class OptimizerCase:
    """One optimizer step over ``layout`` with implementation ``impl``."""

    op: str
    layout: Layout
    impl: str
    dtype: np.dtype = DTYPE
    seed: int = SEED
    section: str = "headline"

    @property
    def spec(self):
        return OPTIMIZERS[self.op]

    @property
    def kind(self):
        if self.impl in BACKENDS or self.impl.endswith(FUNCTIONAL_SUFFIX):
            return "fastdescent"
        return "roofline" if self.impl == "roofline" else "peer"

    @property
    def group(self):
        """Cases with the same group are measured side by side and compared with each other."""
        return f"{self.op} {self.layout.name}"

    @property
    def id(self):
        return f"{self.op}-{self.layout.name.replace(' ', '')}-{self.impl}"

    def __str__(self):
        return self.id

    @property
    def bytes_per_step(self):
        return self.spec.bytes_per_element(self.dtype) * self.layout.elements

    @property
    def memory_estimate(self):
        """Bytes this case keeps alive while built (arrays and the worst temporaries)."""
        per = np.dtype(self.dtype).itemsize * self.layout.elements
        n = len(self.spec.reads) + (3 if self.impl in ("numpy-textbook", "torch-foreach", "numpy") else 0)
        return per * n

    def unavailable(self):
        """None if this case can run here, else the reason."""
        if self.op not in OPTIMIZERS:
            return f"unknown optimizer {self.op!r}"
        if self.impl in BACKENDS:
            reason = backend_unavailable(self.impl)
            if reason is None:
                from ..backends import get_backend

                kernel = self.spec.kernel
                if kernel not in get_backend(self.impl).KERNELS:
                    reason = f"backend {self.impl!r} does not implement the {kernel!r} kernel"
            return reason
        if self.impl.endswith(FUNCTIONAL_SUFFIX):
            backend = self.impl[:-len(FUNCTIONAL_SUFFIX)]
            if self.op not in FUNCTIONAL_OPS:
                return f"no functional-API case for {self.op!r} (cases: {', '.join(FUNCTIONAL_OPS)})"
            if backend not in BACKENDS or backend == "cuda":
                return f"functional-API cases run on the host backends, not {backend!r}"
            return backend_unavailable(backend)
        if self.impl.startswith("torch-"):
            if self.spec.torch_cls is None:
                return f"torch has no equivalent of {self.spec.doc or self.op}"
            reason = torch_unavailable()
            if reason is None and self.impl == "torch-fused" and not self.spec.torch_fused:
                where = "torch.nn.utils" if self.spec.kind == "clip" else "torch.optim"
                reason = f"{where}.{self.spec.torch_cls} has no fused implementation"
            return reason
        if self.impl == "numpy-textbook":
            return None
        if self.impl == "roofline":
            from .roofline import probe_provider

            return probe_provider()[1]
        return f"unknown implementation {self.impl!r}"

    def build(self):
        """Allocate the arrays (copies of the shared base data) and return an :class:`Instance`."""
        spec, impl = self.spec, self.impl
        nbytes = self.bytes_per_step
        if impl == "roofline":
            from .roofline import StreamProbe

            probe = StreamProbe(self.layout.elements, spec.reads, spec.writes, self.dtype,
                                passes=spec.passes)
            more = "".join(f", then {len(r)} read, {len(w)} written" for r, w in spec.passes)
            return Instance(probe.run, None, bytes_per_step=probe.bytes, keep=probe,
                            note=f"streaming probe ({probe.provider}): {len(spec.reads)} arrays read, "
                                 f"{len(spec.writes)} written in place{more}")
        p0, g0 = _base_data(self.layout, self.dtype, self.seed)
        params, grads = _copies(p0), _copies(g0)
        if impl in BACKENDS:
            if impl == "cuda":
                from numba import cuda

                dparams = [cuda.to_device(p) for p in params]
                dgrads = [cuda.to_device(g) for g in grads]
                opt = spec.make(dparams, impl)

                def step():
                    opt.step(dgrads)
                    cuda.synchronize()

                return Instance(step, lambda: [d.copy_to_host() for d in dparams],
                                bytes_per_step=nbytes, keep=(opt, dparams, dgrads))
            opt = spec.make(params, impl)
            return Instance(functools.partial(opt.step, grads), lambda: params,
                            bytes_per_step=nbytes, keep=(opt, grads))
        if impl.endswith(FUNCTIONAL_SUFFIX):
            step = _functional_step(self.op, params, grads, impl[:-len(FUNCTIONAL_SUFFIX)])
            return Instance(step, lambda: params, bytes_per_step=nbytes, keep=grads)
        if impl.startswith("torch-"):
            import torch

            if spec.kind == "clip":  # the case's arrays are the gradients torch clips
                tparams = [torch.nn.Parameter(torch.empty(p.shape)) for p in params]
                for t, p in zip(tparams, params):
                    t.grad = torch.from_numpy(p)
            else:
                tparams = [torch.nn.Parameter(torch.from_numpy(p)) for p in params]
                for t, g in zip(tparams, grads):
                    t.grad = torch.from_numpy(g)
            opt = _torch_optimizer(spec, tparams, impl)
            return Instance(opt.step, lambda: params, bytes_per_step=nbytes,
                            keep=(opt, tparams, grads))
        if impl == "numpy-textbook":
            return Instance(_textbook(spec, params, grads), lambda: params, bytes_per_step=nbytes,
                            keep=grads)
        raise ValueError(f"unknown implementation {impl!r}")

    def check(self, inst):
        """Take CHECK_STEPS steps and compare the parameters with the NumPy reference backend.

        Returns a dict (``max_abs_err``, tolerances) or None for the roofline probe (which computes
        nothing meaningful). fastdescent backends are held to docs/update-rules.md's float32 tolerance
        (rtol 1e-5, atol 1e-6); peers, which order their arithmetic differently, to rtol 1e-4,
        atol 1e-5 (an update is ~lr = 1e-3 per step, so a wrong rule is still far outside).
        """
        if self.impl == "roofline":
            for _ in range(CHECK_STEPS):
                inst.step()
            return None
        for _ in range(CHECK_STEPS):
            inst.step()
        ref = _reference_params(self.op, self.layout, np.dtype(self.dtype), self.seed, CHECK_STEPS)
        if self.kind == "fastdescent":
            rtol, atol = (1e-5, 1e-6) if np.dtype(self.dtype) == np.float32 else (1e-12, 1e-14)
        else:
            rtol, atol = 1e-4, 1e-5
        err = _compare(self.id, inst.result(), ref, rtol, atol)
        return {"max_abs_err": err, "rtol": rtol, "atol": atol, "steps": CHECK_STEPS}


#: ``impl`` suffix of the functional-API cases: ``c-functional`` is ``fastdescent.functional`` on the
#: ``c`` backend, over the same arrays as the class API's ``c`` case (state lists kept by the case)
FUNCTIONAL_SUFFIX = "-functional"
#: the optimizers with a functional-API case, and their default set (``--ops functional``)
FUNCTIONAL_OPS = ("sgd_momentum", "adam", "adamw", "rmsprop", "adagrad", "lion")
FUNCTIONAL_LAYOUT_COUNT = 100


def _functional_step(op, params, grads, backend):
    """A ``step()`` making one ``fastdescent.functional`` call per step over ``params``/``grads``,
    with the state arrays and step count a library embedding the functional API keeps itself (the
    same hyperparameters as the class case, ``OPTIMIZERS[op].kwargs``)."""
    from .. import functional as F

    kw = dict(OPTIMIZERS[op].kwargs, backend=backend)
    state = [[np.zeros_like(p) for p in params] for _ in range(2)]
    t = [0]
    if op == "sgd_momentum":
        def call(k):
            F.sgd(params, grads, state[0], first_step=k == 1, **kw)
    elif op in ("adam", "adamw"):
        fn = F.adam if op == "adam" else F.adamw

        def call(k):
            fn(params, grads, state[0], state[1], step=k, **kw)
    elif op == "rmsprop":
        def call(k):
            F.rmsprop(params, grads, state[0], **kw)
    elif op == "adagrad":
        def call(k):
            F.adagrad(params, grads, state[0], step=k, **kw)
    elif op == "lion":
        def call(k):
            F.lion(params, grads, state[0], **kw)
    else:
        raise ValueError(f"no functional-API case for {op!r}")

    def step():
        t[0] += 1
        call(t[0])

    return step


def functional_cases(ops, backends):
    """The functional API next to the class API: ``FUNCTIONAL_LAYOUT_COUNT`` tensors of 64 elements,
    for each host backend its class case and its ``-functional`` case (section ``functional``)."""
    impls = []
    for b in backends:
        if b != "cuda":
            impls += [b, b + FUNCTIONAL_SUFFIX]
    return optimizer_cases(ops, [many(FUNCTIONAL_LAYOUT_COUNT)], tuple(impls), section="functional")


def optimizer_cases(ops=OPS, layouts=HEADLINE_LAYOUTS, impls=BACKENDS + OPT_PEERS + ("roofline",),
                    *, dtype=DTYPE, section="headline"):
    """Every (op, layout, impl) combination, in group order (layout-major within each op)."""
    return [OptimizerCase(op, layout, impl, np.dtype(dtype), SEED, section)
            for op in ops for layout in layouts for impl in impls]


# ============================================================================ dense layers
@dataclass(frozen=True)
class MatmulShape:
    """x (B, M, K) @ w (Bw, K, N) -> y (B, M, N); ``shared`` means Bw == 1 (a Linear layer)."""

    name: str
    B: int
    M: int
    K: int
    N: int
    shared: bool = False

    @property
    def Bw(self):
        return 1 if self.shared else self.B

    def flops(self):
        return 2 * self.B * self.M * self.K * self.N


MATMUL_SHAPES = (
    MatmulShape("4096x(16x16)", 4096, 16, 16, 16),
    MatmulShape("64x(128x128)", 64, 128, 128, 128),
    MatmulShape("1x(1024x1024)", 1, 1024, 1024, 1024),
)
#: fwd: y = x @ w; bwd_x: dx += dy @ w^T; bwd_w: dw += x^T @ dy; fwd_bwd: all three (a layer's step)
MATMUL_KERNELS = ("fwd", "bwd_x", "bwd_w", "fwd_bwd")
MATMUL_PEERS = ("np.matmul", "torch.bmm", "torch-autograd")
_MM_ROWS = {"fwd": ("matmul_fwd",), "bwd_x": ("matmul_bwd_x",), "bwd_w": ("matmul_bwd_w",),
            "fwd_bwd": ("matmul_fwd", "matmul_bwd_x", "matmul_bwd_w")}
_MM_OUTS = {"fwd": ("y",), "bwd_x": ("dx",), "bwd_w": ("dw",), "fwd_bwd": ("y", "dx", "dw")}


@functools.lru_cache(maxsize=1)
def _mm_data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    s = shape

    def r(*dims):
        a = rng.standard_normal(dims, dtype=np.float32).astype(dtype)
        a.flags.writeable = False
        return a

    return {"x": r(s.B, s.M, s.K), "w": r(s.Bw, s.K, s.N), "dy": r(s.B, s.M, s.N)}


def _mm_literal(kernel, x, w, dy, shared):
    """The NumPy expression of each kernel (used when the numpy backend has no matmul yet)."""
    out = {}
    if kernel in ("fwd", "fwd_bwd"):
        out["y"] = np.matmul(x, w)
    if kernel in ("bwd_x", "fwd_bwd"):
        out["dx"] = np.matmul(dy, np.swapaxes(w, 1, 2))
    if kernel in ("bwd_w", "fwd_bwd"):
        dw = np.matmul(np.swapaxes(x, 1, 2), dy)
        out["dw"] = dw.sum(axis=0, keepdims=True) if shared else dw
    return out


@functools.lru_cache(maxsize=1)
def _mm_reference(kernel, shape, dtype, seed):
    d = _mm_data(shape, dtype, seed)
    from ..backends import get_backend

    kernels = get_backend("numpy").KERNELS
    if all(r in kernels for r in _MM_ROWS[kernel]):
        outs = _mm_outputs(shape, dtype)
        _mm_fd_step(kernels, kernel, outs, d)()
        res = {k: outs[k] for k in _MM_OUTS[kernel]}
    else:
        res = _mm_literal(kernel, d["x"], d["w"], d["dy"], shape.shared)
    return {k: v.copy() for k, v in res.items()}


def _mm_outputs(shape, dtype):
    s = shape
    return {"y": np.zeros((s.B, s.M, s.N), dtype), "dx": np.zeros((s.B, s.M, s.K), dtype),
            "dw": np.zeros((s.Bw, s.K, s.N), dtype)}


def _mm_fd_step(kernels, kernel, outs, d):
    x, w, dy = d["x"], d["w"], d["dy"]
    y, dx, dw = outs["y"], outs["dx"], outs["dw"]
    if kernel == "fwd":
        f = kernels["matmul_fwd"]
        return functools.partial(f, y, x, w, None)
    if kernel == "bwd_x":
        f = kernels["matmul_bwd_x"]
        return functools.partial(f, dx, dy, w)
    if kernel == "bwd_w":
        f = kernels["matmul_bwd_w"]
        return functools.partial(f, dw, None, x, dy)
    fw, fx, fwt = kernels["matmul_fwd"], kernels["matmul_bwd_x"], kernels["matmul_bwd_w"]

    def step():
        fw(y, x, w, None)
        fx(dx, dy, w)
        fwt(dw, None, x, dy)

    return step


@dataclass(frozen=True)
class MatmulCase:
    """A dense-layer kernel (``fwd``, ``bwd_x``, ``bwd_w`` or ``fwd_bwd``) on ``shape`` by ``impl``."""

    kernel: str
    shape: MatmulShape
    impl: str
    dtype: np.dtype = DTYPE
    seed: int = SEED
    section: str = "matmul"

    @property
    def op(self):
        return f"matmul_{self.kernel}"

    @property
    def kind(self):
        return "fastdescent" if self.impl in BACKENDS else "peer"

    @property
    def group(self):
        return f"{self.op} {self.shape.name}"

    @property
    def id(self):
        return f"{self.op}-{self.shape.name}-{self.impl}"

    def __str__(self):
        return self.id

    @property
    def flops_per_step(self):
        return self.shape.flops() * len(_MM_ROWS[self.kernel])

    @property
    def memory_estimate(self):
        s = self.shape
        return np.dtype(self.dtype).itemsize * 2 * (s.B * s.M * s.K + s.Bw * s.K * s.N + s.B * s.M * s.N)

    def unavailable(self):
        if self.kernel not in MATMUL_KERNELS:
            return f"unknown matmul kernel {self.kernel!r}"
        if self.impl in BACKENDS:
            reason = backend_unavailable(self.impl)
            if reason is None:
                from ..backends import get_backend

                missing = [r for r in _MM_ROWS[self.kernel] if r not in get_backend(self.impl).KERNELS]
                if missing:
                    reason = f"backend {self.impl!r} does not implement {', '.join(missing)} yet"
            return reason
        if self.impl == "np.matmul":
            return None
        if self.impl in ("torch.bmm", "torch-autograd"):
            reason = torch_unavailable()
            if reason is None and self.impl == "torch-autograd" and self.kernel != "fwd_bwd":
                reason = "torch autograd is measured on the whole layer step (fwd_bwd) only"
            if reason is None and self.shape.shared:
                reason = "torch.bmm needs one weight per batch entry"
            return reason
        return f"unknown implementation {self.impl!r}"

    def build(self):
        d = _mm_data(self.shape, np.dtype(self.dtype), self.seed)
        outs = _mm_outputs(self.shape, self.dtype)
        names = _MM_OUTS[self.kernel]
        flops = self.flops_per_step
        kernel, impl = self.kernel, self.impl
        if impl in BACKENDS:
            from ..backends import get_backend

            if impl == "cuda":
                from numba import cuda

                dd = {k: cuda.to_device(v) for k, v in d.items()}
                douts = {k: cuda.to_device(v) for k, v in outs.items()}
                inner = _mm_fd_step(get_backend(impl).KERNELS, kernel, douts, dd)

                def step():
                    inner()
                    cuda.synchronize()

                return Instance(step, lambda: [douts[k].copy_to_host() for k in names],
                                flops_per_step=flops, keep=(dd, douts))
            step = _mm_fd_step(get_backend(impl).KERNELS, kernel, outs, d)
            return Instance(step, lambda: [outs[k] for k in names], flops_per_step=flops,
                            keep=(d, outs))
        x, w, dy = d["x"], d["w"], d["dy"]
        y, dx, dw = outs["y"], outs["dx"], outs["dw"]
        if impl == "np.matmul":
            wT, xT = np.swapaxes(w, 1, 2), np.swapaxes(x, 1, 2)

            def step():
                if kernel in ("fwd", "fwd_bwd"):
                    np.matmul(x, w, out=y)
                if kernel in ("bwd_x", "fwd_bwd"):
                    dx[...] += np.matmul(dy, wT)
                if kernel in ("bwd_w", "fwd_bwd"):
                    dw[...] += np.matmul(xT, dy)

            return Instance(step, lambda: [outs[k] for k in names], flops_per_step=flops,
                            keep=(d, outs))
        import torch

        tx, tw, tdy = (torch.from_numpy(np.array(a)) for a in (x, w, dy))
        if impl == "torch.bmm":
            ty, tdx, tdw = (torch.from_numpy(outs[k]) for k in ("y", "dx", "dw"))
            twT, txT = tw.transpose(1, 2), tx.transpose(1, 2)

            def step():
                if kernel in ("fwd", "fwd_bwd"):
                    torch.bmm(tx, tw, out=ty)
                if kernel in ("bwd_x", "fwd_bwd"):
                    tdx.baddbmm_(tdy, twT)
                if kernel in ("bwd_w", "fwd_bwd"):
                    tdw.baddbmm_(txT, tdy)

            return Instance(step, lambda: [outs[k] for k in names], flops_per_step=flops,
                            keep=(tx, tw, tdy, ty, tdx, tdw))
        # torch-autograd: the layer's forward and backward through autograd (grads accumulate)
        tx.requires_grad_(True)
        tw.requires_grad_(True)
        last = {}

        def step():
            yy = torch.bmm(tx, tw)
            yy.backward(tdy)
            last["y"] = yy

        def result():
            return [last["y"].detach().numpy(), tx.grad.numpy(), tw.grad.numpy()]

        return Instance(step, result, flops_per_step=flops, keep=(tx, tw, tdy, last))

    def check(self, inst):
        """Run once on zeroed outputs and compare with the NumPy reference (relative to max |ref|)."""
        inst.step()
        ref = _mm_reference(self.kernel, self.shape, np.dtype(self.dtype), self.seed)
        want = [ref[k] for k in _MM_OUTS[self.kernel]]
        scale = max(float(np.max(np.abs(a))) for a in want)
        rtol = 1e-4 if np.dtype(self.dtype) == np.float32 else 1e-10
        err = _compare(self.id, inst.result(), want, 0.0, rtol * scale)
        return {"max_abs_err": err, "rtol": 0.0, "atol": rtol * scale, "relative_to_max_abs": rtol}


def matmul_cases(kernels=MATMUL_KERNELS, shapes=MATMUL_SHAPES, impls=BACKENDS + MATMUL_PEERS, *,
                 dtype=DTYPE):
    cases = []
    for kernel in kernels:
        for shape in shapes:
            for impl in impls:
                if impl == "torch-autograd" and kernel != "fwd_bwd":
                    continue
                cases.append(MatmulCase(kernel, shape, impl, np.dtype(dtype)))
    return cases


# ============================================================================ the digits MLP
MLP_SIZES = (64, 256, 10)
MLP_PEERS = ("torch", "sklearn")
MLP_BATCH = 64
MLP_LR = 1e-3


def nn_unavailable():
    """None if ``fastdescent.nn`` (``MLP`` and ``fit``) imports, else the reason."""
    try:
        from .. import nn
    except Exception as exc:  # noqa: BLE001
        return f"fastdescent.nn is not available ({type(exc).__name__}: {exc})"
    if not hasattr(nn, "MLP") or not hasattr(nn, "fit"):
        return "fastdescent.nn is not available (no nn.MLP / nn.fit yet)"
    return None


def _nn_kernels_missing(backend):
    """None if ``backend`` implements every kernel the MLP case needs, else the reason."""
    from ..backends import get_backend
    from ..nn._backend import DENSE_KERNELS

    need = tuple(DENSE_KERNELS) + ("xent_fwd_bwd", "adam")
    missing = [k for k in need if k not in get_backend(backend).KERNELS]
    if missing:
        return f"backend {backend!r} does not implement {', '.join(missing)} (needed by fastdescent.nn) yet"
    return None


@functools.lru_cache(maxsize=1)
def digits_split(seed=SEED):
    """The digits data (ships with scikit-learn): X scaled to [0, 1] float32, an 80/20 split."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(X))
    cut = int(0.8 * len(X))
    tr, te = idx[:cut], idx[cut:]
    return X[tr], y[tr], X[te], y[te]


#: the MNIST-shaped case: 60,000 synthetic 28x28 "images" in [0, 1] (10 classes), 784-128-10, batch 128
MNIST_SIZES = (784, 128, 10)
MNIST_TRAIN, MNIST_TEST = 60_000, 10_000
MNIST_BATCH = 128
#: the optimizers of the MLP cases: (fastdescent / torch class, keyword arguments, scikit-learn's
#: MLPClassifier arguments for the same rule)
MLP_OPTIMIZERS = {
    "adam": ("Adam", dict(lr=MLP_LR), dict(solver="adam", learning_rate_init=MLP_LR)),
    "sgd": ("SGD", dict(lr=0.01, momentum=0.9),
            dict(solver="sgd", learning_rate="constant", learning_rate_init=0.01, momentum=0.9,
                 nesterovs_momentum=False)),
}


@functools.lru_cache(maxsize=1)
def mnist_shaped_split(seed=SEED):
    """MNIST's shape without the download: 60,000 + 10,000 rows of 784 float32 values in [0, 1],
    10 classes. Each class is a random smooth 28x28 prototype; a row is its class's prototype plus
    per-pixel noise, clipped: learnable (an MLP reaches > 90% in one epoch), not trivially so."""
    rng = np.random.default_rng(seed)
    proto = rng.random((10, 7, 7))
    proto = np.kron(proto, np.ones((4, 4))).reshape(10, 784)  # 28x28 blocks of 4x4 pixels
    n = MNIST_TRAIN + MNIST_TEST
    y = rng.integers(0, 10, n)
    X = proto[y].astype(np.float32)
    X += rng.standard_normal((n, 784), dtype=np.float32) * np.float32(0.6)
    np.clip(X, 0.0, 1.0, out=X)
    return X[:MNIST_TRAIN], y[:MNIST_TRAIN], X[MNIST_TRAIN:], y[MNIST_TRAIN:]


def mlp_data(data, seed=SEED):
    """(X_train, y_train, X_test, y_test) of an MLP case's data set."""
    if data == "digits":
        return digits_split(seed)
    if data == "mnist-shaped":
        return mnist_shaped_split(seed)
    raise ValueError(f"unknown MLP data set {data!r}")


@dataclass(frozen=True)
class MlpCase:
    """One training epoch of an MLP: the digits one (64-256-10, ReLU, Adam lr=1e-3, batch 64) by
    default; ``data="mnist-shaped"`` is 784-128-10 on 60,000 synthetic rows, batch 128."""

    impl: str
    sizes: tuple = MLP_SIZES
    seed: int = SEED
    section: str = "mlp"
    op: str = "mlp"
    data: str = "digits"
    optimizer: str = "adam"
    batch: int = MLP_BATCH

    @property
    def check_epochs(self):
        return 3 if self.data == "digits" else 1

    @property
    def name(self):
        """The row key in the report: data set, layer sizes, optimizer (Adam, the digits case's,
        unnamed there)."""
        name = f"{self.data} {'-'.join(map(str, self.sizes))}"
        return name if (self.data, self.optimizer) == ("digits", "adam") else f"{name} {self.optimizer}"

    @property
    def kind(self):
        return "fastdescent" if self.impl in BACKENDS else "peer"

    @property
    def group(self):
        return "mlp " + self.name

    @property
    def id(self):
        extra = "" if (self.data, self.optimizer) == ("digits", "adam") else \
            f"-{self.data}-{self.optimizer}"
        return f"mlp-{'-'.join(map(str, self.sizes))}{extra}-{self.impl}"

    def __str__(self):
        return self.id

    memory_estimate = 0

    def unavailable(self):
        reason = _sklearn_unavailable()
        if reason is not None:
            return reason
        if self.impl in BACKENDS:
            return nn_unavailable() or backend_unavailable(self.impl) or _nn_kernels_missing(self.impl)
        if self.impl == "torch":
            return torch_unavailable()
        if self.impl == "sklearn":
            return None
        return f"unknown implementation {self.impl!r}"

    def build(self):
        from . import mlp

        return mlp.build(self)

    def check(self, inst):
        from . import mlp

        return mlp.check(self, inst)


def mlp_cases(impls=BACKENDS + MLP_PEERS):
    return [MlpCase(impl) for impl in impls]


def mnist_cases(impls=BACKENDS + MLP_PEERS):
    """The MNIST-shaped MLP (784-128-10, batch 128), Adam and momentum SGD."""
    return [MlpCase(impl, MNIST_SIZES, op="mnist", data="mnist-shaped", optimizer=o, batch=MNIST_BATCH)
            for o in ("adam", "sgd") for impl in impls]


# ============================================================================ the headline list
def headline_cases(backends=BACKENDS, *, ops=OPS, with_peers=True):
    """The cases behind the performance targets and the README's figures (what ``benchmarks/`` runs)."""
    peers = OPT_PEERS if with_peers else ()
    out = optimizer_cases(ops, HEADLINE_LAYOUTS, tuple(backends) + peers + ("roofline",))
    out += matmul_cases(MATMUL_KERNELS, MATMUL_SHAPES, tuple(backends) + (MATMUL_PEERS if with_peers else ()))
    out += mlp_cases(tuple(backends) + (MLP_PEERS if with_peers else ()))
    return out
