"""Models: ``Sequential`` stacks of layers, and ``MLP``.

Memory layout
-------------
Every parameter of a model lives in ONE :class:`~fastdescent.arena.ParamArena` (``model.arena``),
its gradients in the arena's gradient block, so ``fd.Adam(model.parameters())`` coalesces the whole
update into a single flat kernel call. Activations and their gradients live in per-batch-size
*workspaces* (one contiguous block each), allocated the first time a batch size is seen and reused.

How a training step runs
------------------------
:meth:`Sequential.make_train_step` validates once, fetches the kernel functions once and returns a
closure for one batch size whose body is only kernel calls: zero the gradient block and the
activation-gradient block (two ``fill`` calls), ``matmul_fwd``/``act_fwd`` per layer, the fused loss
kernel (loss value and d loss / d output in one pass), ``act_bwd``/``matmul_bwd_x``/``matmul_bwd_w``
per layer, then ``optimizer.step``. :func:`fastdescent.fit` calls that closure per minibatch.

A backend may offer a fused training step (forward + backward + update in one call): a module
``backends/<backend>/fused.py`` defining ``fused_train_step(plan)``, which receives a
:class:`fastdescent.nn.fused.FusedPlan` (built here: the layers, buffers and the optimizer's published
flat bucket; that module states the protocol) and returns a callable ``step(x, y) -> float`` or None.
``make_train_step`` uses it instead of the kernel-by-kernel closure; ``fit`` needs no change. Such a
callable receives ``x`` of shape ``(1, rows, in_features)`` (C-contiguous, the model's dtype) and ``y``
as ``model.prepare_targets`` returns it (int64 labels, or targets ``(rows, out_features)``), updates
the parameters in ``model.arena`` and the optimizer's state as ``optimizer.step`` would, and returns
the mean batch loss before the update (``fit`` never reads the gradient block after a step).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..arena import ParamArena
from ._backend import resolve_dense
from .fused import FusedPlan
from .layers import Activation, Layer, Linear, _positive_int, activation
from ..precision import BF16, F16, code_of_dtype
from .losses import _as_array, _check_real, _to_dtype, get_loss

__all__ = ["Sequential", "MLP"]

#: rows per forward call in predict/evaluate (bounds the workspace memory for large inputs)
CHUNK_ROWS = 4096
#: number of per-batch-size workspaces (and compiled steps) kept
_CACHE_SIZE = 8


def _fused_train_step(be):
    """The backend's fused training step: an attribute of the backend package (set by a plug-in or
    a test), else ``fused.fused_train_step`` from its ``fused`` module (imported lazily), else None."""
    import importlib

    fn = getattr(be, "fused_train_step", None)
    if fn is not None:
        return fn
    name = be.__name__ + ".fused"
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None
    return getattr(mod, "fused_train_step", None)


class _Workspace:
    """Activation buffers (and their gradients, allocated on first training use) for ``rows`` rows."""

    __slots__ = ("rows", "acts", "dacts", "dblock", "scratch")

    def __init__(self, rows, widths, dtype):
        self.rows = rows
        self.acts = self._views(np.empty(rows * sum(widths), dtype), rows, widths)
        self.dacts = None
        self.dblock = None
        self.scratch = None

    @staticmethod
    def _views(block, rows, widths):
        out, off = [], 0
        for n in widths:
            out.append(block[off:off + rows * n].reshape(1, rows, n))
            off += rows * n
        return out

    def ensure_grads(self, widths, dtype):
        if self.dacts is None:
            self.dblock = np.zeros(self.rows * sum(widths), dtype)
            self.dacts = self._views(self.dblock, self.rows, widths)


class Sequential:
    """A stack of layers applied in order, with all parameters in one ``ParamArena``.

    Parameters
    ----------
    *layers : Layer
        ``Linear`` and activation layers (or one list of them). Consecutive ``Linear`` sizes must
        match; the first ``Linear`` fixes the input size.
    seed : int, numpy.random.Generator or None, default 0
        Seed of the ``numpy.random.default_rng`` that initialises the weights, layer by layer.
    dtype : float32, float64, bfloat16 or float16, default float32
        The parameters' dtype. With bfloat16 (``ml_dtypes.bfloat16``) or float16 the parameters
        (``model.arena``, ``model.params``, ``state_dict()``) are stored in that dtype and the
        gradients in float32; the forward and backward passes run in float32 (:attr:`dtype` is then
        float32, :attr:`param_dtype` the storage dtype) on a float32 copy of the weights refreshed
        from the stored ones before every pass (exact: each stored value is a float32 value), so the
        matrix products accumulate in float32. Train it with an optimizer's ``master_weights`` or
        ``stochastic_rounding`` (``docs/low-precision.md``).
    backend : str or None
        ``"numpy"``, ``"c"``, ``"numba"`` or ``"auto"``; None means the default in force
        (:func:`fastdescent.use_backend`, ``$FASTDESCENT_BACKEND``, else ``"auto"``), resolved once
        here. ``"auto"`` takes the first backend that implements the dense-layer kernels.

    Outputs and losses
    ------------------
    The model's output is the last layer's output: raw *logits* for a classifier (no softmax), the
    prediction for a regressor. :meth:`predict` returns it, :meth:`predict_proba` the softmax
    probabilities and :meth:`predict_classes` the arg-max labels.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> model = fd.nn.Sequential(fd.nn.Linear(4, 8), fd.nn.Tanh(), fd.nn.Linear(8, 3), seed=0)
    >>> opt = fd.Adam(model.parameters(), lr=1e-2)
    >>> X = np.random.default_rng(0).normal(size=(32, 4)); y = np.arange(32) % 3
    >>> loss, grads = model.loss_and_grad(X, y, loss="cross_entropy")
    >>> _ = opt.step(grads)
    """

    def __init__(self, *layers, seed=0, dtype=np.float32, backend=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("layers: a model needs at least one layer")
        seen = set()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastdescent.nn layer (Linear, ReLU, ...), "
                                f"got {type(layer).__name__}")
            if id(layer) in seen:
                raise ValueError(f"layers[{i}] ({layer!r}) appears twice; create a new layer instead")
            seen.add(id(layer))
            if getattr(layer, "_model_owned", False):
                raise ValueError(f"layers[{i}] ({layer!r}) already belongs to another model; create a "
                                 "new layer instead")
        first = next((i for i, lay in enumerate(layers) if lay.in_features is not None), None)
        if first is None:
            raise ValueError("layers: a model needs at least one Linear layer (none fixes the input size)")
        dims = [layers[first].in_features]
        cur, prev = dims[0], None
        for i, layer in enumerate(layers):
            if layer.in_features is not None and layer.in_features != cur:
                raise ValueError(
                    f"layers[{i}] ({layer!r}) expects {layer.in_features} input features, but "
                    f"layers[{prev}] ({layers[prev]!r}) outputs {cur}")
            cur = layer.out_features(cur)
            dims.append(cur)
            if layer.in_features is not None:
                prev = i
        dtype = np.dtype(dtype)
        low = code_of_dtype(dtype) in (BF16, F16)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)) and not low:
            raise TypeError(f"dtype must be float32, float64, bfloat16 or float16, got {dtype}")
        shapes, owner = [], []
        for i, layer in enumerate(layers):
            for s in layer.param_shapes():
                shapes.append(s)
                owner.append(i)
        self.arena = ParamArena(shapes, dtype)
        self.layers = list(layers)
        self.param_dtype = dtype
        # compute dtype; with low-precision storage, a float32 copy of the weights for the kernels
        self.dtype = np.dtype(np.float32) if low else dtype
        self._compute = ParamArena(shapes, np.float32) if low else None
        cparams = self._compute.params if low else self.arena.params
        self.in_features = dims[0]
        self.out_features = dims[-1]
        self._widths = dims[1:]  # output width of each layer
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        k = 0
        for layer in layers:
            n = len(layer.param_shapes())
            layer._bind(cparams[k:k + n], self.arena.grads[k:k + n])
            layer._model_owned = True
            tmp = [np.empty(v.shape, np.float64) for v in layer._params]
            layer.init(rng, tmp)
            for v, t, s in zip(layer._params, tmp, self.arena.params[k:k + n]):
                v[...] = t
                if low:  # stored rounded to nearest; the float32 copy follows the stored values
                    s[...] = v.astype(dtype)
            k += n
        self._sync()
        self._be = resolve_dense(backend)
        K = self._be.KERNELS
        self._k_mm_fwd = K["matmul_fwd"]
        self._k_mm_bwd_x = K["matmul_bwd_x"]
        self._k_mm_bwd_w = K["matmul_bwd_w"]
        self._k_act_fwd = K["act_fwd"]
        self._k_act_bwd = K["act_bwd"]
        # kernel-shaped views: w (1, K, N), b (1, N)
        self._kviews = []
        for layer in layers:
            if isinstance(layer, Linear):
                w, gw = layer.weight, layer.weight_grad
                b, gb = layer.bias, layer.bias_grad
                self._kviews.append((
                    w.reshape(1, *w.shape), None if b is None else b.reshape(1, -1),
                    gw.reshape(1, *gw.shape), None if gb is None else gb.reshape(1, -1)))
            else:
                self._kviews.append(None)
        self._workspaces = OrderedDict()
        self._compiled = OrderedDict()

    # ------------------------------------------------------------------ parameters
    @property
    def backend(self):
        """Public name of the backend the model's kernels run on."""
        return self._be.NAME

    def parameters(self):
        """The model's :class:`~fastdescent.arena.ParamArena`: pass it to an optimizer
        (``fd.Adam(model.parameters())``) for one coalesced flat update; ``opt.step()`` then takes
        the arena's gradients. :attr:`params` is the plain list of parameter arrays."""
        return self.arena

    @property
    def params(self):
        """List of the parameter arrays (views of the arena), layer by layer: weight, bias, ..."""
        return self.arena.params

    def grads(self):
        """List of the gradient arrays (views of the arena's gradient block), aligned with
        :attr:`params`."""
        return self.arena.grads

    def zero_grad(self):
        """Set every gradient to zero (one memset)."""
        self.arena.flat_grads.fill(0)

    @property
    def n_params(self):
        """Total number of scalar parameters."""
        return self.arena.size

    def state_dict(self, layout="fastdescent"):
        """Copies of the parameters, ``{"<layer index>.weight": array, "<layer index>.bias": ...}``.

        ``layout="torch"`` gives weights as ``(out_features, in_features)`` (torch.nn.Linear's
        layout, keys as in a torch ``nn.Sequential``); the default is fastdescent's ``(in, out)``.
        """
        if layout not in ("fastdescent", "torch"):
            raise ValueError(f"layout must be 'fastdescent' or 'torch', got {layout!r}")
        out = {}
        stored = iter(self.arena.params)  # (the stored dtype; layer.weight is the float32 copy)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Linear):
                w = next(stored)
                out[f"{i}.weight"] = (w.T if layout == "torch" else w).copy()
                if layer.bias is not None:
                    out[f"{i}.bias"] = next(stored).copy()
        return out

    def load_state_dict(self, state_dict, layout="fastdescent"):
        """Copy parameters in place from ``state_dict`` (as :meth:`state_dict` makes it; with
        ``layout="torch"`` a torch ``nn.Sequential.state_dict()`` of the same architecture also works,
        tensors included). Entries must hold real numbers (not bool, complex, datetime, object ...)
        that are finite once converted to the model's dtype. Everything is checked and converted
        before anything is written (a bad entry changes nothing); optimizers built on the model stay
        bound to it."""
        if layout not in ("fastdescent", "torch"):
            raise ValueError(f"layout must be 'fastdescent' or 'torch', got {layout!r}")
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        mine = self.state_dict()
        extra = sorted(set(state_dict) - set(mine))
        missing = sorted(set(mine) - set(state_dict))
        if extra or missing:
            raise ValueError(f"state_dict: keys do not match the model (missing {missing}, "
                             f"unexpected {extra})")
        new = {}
        for key, ref in mine.items():
            what = f"state_dict[{key!r}]"
            v = _as_array(state_dict[key], what)
            _check_real(v, what)
            if layout == "torch" and key.endswith(".weight"):
                v = v.T
            if v.shape != ref.shape:
                raise ValueError(f"{what} has shape {v.shape}, expected {ref.shape}"
                                 f"{' (torch layout: (out, in))' if layout == 'torch' else ''}")
            # finite in the model's dtype (1e300 is finite in float64, inf in float32)
            v = _to_dtype(v, self.dtype, what)
            if self._compute is not None:  # and in the stored dtype (1e5 overflows float16)
                with np.errstate(over="ignore"):
                    stored = v.astype(self.param_dtype)
                if not np.isfinite(stored.astype(np.float32)).all():
                    raise ValueError(f"{what} holds values that overflow {self.param_dtype} (the "
                                     "model's parameter dtype)")
                v = stored
            new[key] = v
        # everything checked and converted: the writes below cannot fail
        stored = iter(self.arena.params)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Linear):
                next(stored)[...] = new[f"{i}.weight"]
                if layer.bias is not None:
                    next(stored)[...] = new[f"{i}.bias"]
        self._sync()

    # ------------------------------------------------------------------ input checks
    def _check_X(self, X, what="X"):
        """Validate inputs once: returns (2-D C-contiguous array of the model dtype, leading shape).

        The values are checked finite AFTER the conversion to the model's dtype (1e39 is finite in
        float64 but not representable in float32), and the result never shares memory with the
        model's parameters or gradients (training would change its own inputs)."""
        a = _as_array(X, what)
        _check_real(a, what)
        K = self.in_features
        if a.ndim == 0:
            raise ValueError(f"{what} must have shape (n_samples, {K}), got a scalar")
        if a.ndim == 1:
            if K != 1:
                raise ValueError(f"{what} has shape {a.shape}; the model expects (n_samples, {K}) "
                                 f"(for a single sample use {what}[None])")
            a = a.reshape(-1, 1)
        if a.shape[-1] != K:
            raise ValueError(f"{what} has {a.shape[-1]} features (shape {a.shape}), but the model's "
                             f"input size (layers[0].in_features) is {K}")
        lead = a.shape[:-1]
        a2 = self._unaliased(_to_dtype(a.reshape(-1, K), self.dtype, what, rows=True))
        return a2, lead

    def _unaliased(self, a):
        """``a``, or a copy of it if it may share memory with the parameter or gradient block."""
        arena = self.arena
        if (np.may_share_memory(a, arena.flat_params) or np.may_share_memory(a, arena.flat_grads)
                or (self._compute is not None
                    and np.may_share_memory(a, self._compute.flat_params))):
            return a.copy()
        return a

    def _sync(self):
        """Low-precision storage: refresh the float32 copy the kernels read from the stored
        parameters (exact; one pass). Called before every forward pass, so the copy always follows
        what an optimizer wrote into ``arena``. A no-op for float32/float64 models."""
        c = self._compute
        if c is None:
            return
        src = self.arena.flat_params
        if code_of_dtype(src.dtype) == BF16:  # the bfloat16 bits are float32's top half
            np.left_shift(src.view(np.uint16), 16, out=c.flat_params.view(np.uint32),
                          dtype=np.uint32)
        else:
            np.copyto(c.flat_params, src)

    def _check_rows(self, x2, y, what="y"):
        if y.shape[0] != x2.shape[0]:
            raise ValueError(f"{what} has {y.shape[0]} rows but X has {x2.shape[0]}")

    # ------------------------------------------------------------------ workspaces and plans
    def _workspace(self, rows):
        ws = self._workspaces.get(rows)
        if ws is None:
            ws = _Workspace(rows, self._widths, self.dtype)
            self._workspaces[rows] = ws
            if len(self._workspaces) > _CACHE_SIZE:
                self._workspaces.popitem(last=False)
        else:
            self._workspaces.move_to_end(rows)
        return ws

    def _forward_ops(self, ws):
        """(first op, other ops): first = (fn, pre, post, kw) is called fn(*pre, x, *post, **kw)."""
        ops = []
        for i, layer in enumerate(self.layers):
            y = ws.acts[i]
            if isinstance(layer, Linear):
                w, b = self._kviews[i][:2]
                op = (self._k_mm_fwd, (y,), (w, b), {})
            else:
                op = (self._k_act_fwd, (y,), (), {"kind": layer.kind})
            ops.append(op)
        first = ops[0]
        rest = [(fn, pre + (ws.acts[i],) + post, kw) for i, (fn, pre, post, kw) in enumerate(ops[1:])]
        return first, rest

    def _backward_ops(self, ws):
        """(ops, last): ops run in order; last (or None) takes the input x like the first forward op."""
        L = len(self.layers)
        has_params_before = [False] * L  # does any layer < i hold parameters?
        seen = False
        for i in range(L):
            has_params_before[i] = seen
            seen = seen or isinstance(self.layers[i], Linear)
        ops, last = [], None
        for i in range(L - 1, -1, -1):
            layer, dy = self.layers[i], ws.dacts[i]
            if isinstance(layer, Linear):
                w, _, gw, gb = self._kviews[i]
                if i == 0:
                    last = (self._k_mm_bwd_w, (gw, gb), (dy,))
                else:
                    ops.append((self._k_mm_bwd_w, (gw, gb, ws.acts[i - 1], dy), {}))
                if i > 0 and has_params_before[i]:
                    ops.append((self._k_mm_bwd_x, (ws.dacts[i - 1], dy, w), {}))
            elif i > 0 and has_params_before[i]:
                ops.append((self._k_act_bwd, (ws.dacts[i - 1], dy, ws.acts[i - 1], ws.acts[i]),
                            {"kind": layer.kind}))
        return ops, last

    def _forward_fn(self, rows):
        """A closure ``forward(x3) -> output buffer (1, rows, out)`` for inputs of ``rows`` rows."""
        key = ("fwd", rows)
        fn = self._compiled.get(key)
        if fn is not None:
            self._compiled.move_to_end(key)
            return fn
        ws = self._workspace(rows)
        (f0, pre0, post0, kw0), rest = self._forward_ops(ws)
        out = ws.acts[-1]

        sync = self._sync

        def forward(x3):
            sync()
            f0(*pre0, x3, *post0, **kw0)
            for fn_, a, kw in rest:
                fn_(*a, **kw)
            return out

        self._remember(key, forward)
        return forward

    def _remember(self, key, fn):
        self._compiled[key] = fn
        if len(self._compiled) > 4 * _CACHE_SIZE:
            self._compiled.popitem(last=False)

    def _compile(self, rows, spec, opt_step=None, opt_grads=None, mean_rows=None):
        """A closure ``step(x3, y) -> loss`` for batches of ``rows`` rows: zero the gradients, forward,
        fused loss + d loss/d output, backward into the arena's gradients, then (if ``opt_step`` is
        given) ``opt_step(opt_grads)``. Inputs are trusted: x3 (1, rows, in) C-contiguous of the model
        dtype, y as ``spec.prepare_targets`` returns it. ``mean_rows`` (default ``rows``): the loss
        and its gradient are this batch's sum over ``mean_rows`` rows (a data-parallel rank's share
        of the mean over a global batch of ``mean_rows`` rows)."""
        ws = self._workspace(rows)
        ws.ensure_grads(self._widths, self.dtype)
        try:
            lossk = self._be.KERNELS[spec.kernel]
        except KeyError:
            from ..errors import BackendUnavailableError
            raise BackendUnavailableError(
                f"backend {self.backend!r} does not implement the {spec.kernel!r} kernel "
                f"(loss={spec.name!r})") from None
        (f0, pre0, post0, kw0), fwd = self._forward_ops(ws)
        bwd, last = self._backward_ops(ws)
        N = self.out_features
        out2 = ws.acts[-1].reshape(rows, N)
        dout2 = ws.dacts[-1].reshape(rows, N)
        scale = spec.scale(rows if mean_rows is None else mean_rows, N)
        zero_grads = self.arena.flat_grads.fill
        zero_dacts = ws.dblock.fill
        sync = self._sync
        if last is None:
            lf, lpre, lpost = (lambda *a: None), (), ()
        else:
            lf, lpre, lpost = last

        if opt_step is None:
            def step(x3, y):
                sync()
                zero_grads(0)
                zero_dacts(0)
                f0(*pre0, x3, *post0, **kw0)
                for fn_, a, kw in fwd:
                    fn_(*a, **kw)
                loss = lossk(dout2, out2, y, scale=scale)
                for fn_, a, kw in bwd:
                    fn_(*a, **kw)
                lf(*lpre, x3, *lpost)
                return loss
        else:
            def step(x3, y):
                sync()
                zero_grads(0)
                zero_dacts(0)
                f0(*pre0, x3, *post0, **kw0)
                for fn_, a, kw in fwd:
                    fn_(*a, **kw)
                loss = lossk(dout2, out2, y, scale=scale)
                for fn_, a, kw in bwd:
                    fn_(*a, **kw)
                lf(*lpre, x3, *lpost)
                opt_step(opt_grads)
                return loss
        return step

    def _optimizer_grads(self, optimizer):
        """The gradient arrays aligned with ``optimizer``'s parameters (which must be this model's)."""
        from ..optim.base import Optimizer

        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastdescent optimizer (fd.Adam(model.parameters()), "
                            f"...), got {type(optimizer).__name__}")
        index = {id(p): i for i, p in enumerate(self.arena.params)}
        out = []
        for gi, group in enumerate(optimizer.param_groups):
            for k, p in enumerate(group["params"]):
                i = index.get(id(p))
                if i is None:
                    raise ValueError(
                        f"optimizer: param_groups[{gi}]['params'][{k}] is not a parameter of this model; "
                        "build the optimizer on the model, e.g. fd.Adam(model.parameters())")
                out.append(self.arena.grads[i])
        return out

    # ------------------------------------------------------------------ training API
    def make_train_step(self, optimizer, loss="cross_entropy", rows=None):
        """A fast training-step callable ``step(x, y) -> float`` (the minibatch loss before the update).

        Validates ``optimizer`` and ``loss`` once; the callable itself does no validation: ``x`` must be
        a C-contiguous array of the model's dtype, shape ``(1, rows, in_features)`` (or
        ``(rows, in_features)``), ``y`` the targets as :meth:`prepare_targets` returns them. With
        ``rows`` given the callable is specialised to that batch size (buffers and kernel arguments
        bound once); this is what :func:`fastdescent.fit` calls per minibatch. If the backend offers
        ``fused_train_step`` (see the module docstring), it is used.
        """
        spec = get_loss(loss)
        opt_grads = self._optimizer_grads(optimizer)
        opt_step = optimizer.step
        if rows is not None:
            rows = _positive_int("rows", rows)
            fused = _fused_train_step(self._be)
            if fused is not None:
                plan = FusedPlan.create(self, optimizer, spec.name, rows)
                fn = fused(plan) if plan is not None else None
                if fn is not None:
                    return fn
            inner = self._compile(rows, spec, opt_step, opt_grads)
            shape3 = (1, rows, self.in_features)

            def step_rows(x, y):
                if x.ndim == 2:
                    x = x.reshape(shape3)
                return inner(x, y)
            step_rows.fast = inner  # for callers that already pass (1, rows, in) arrays
            return step_rows
        cache = {}
        K = self.in_features

        def step(x, y):
            rows_ = x.shape[-2]
            fn = cache.get(rows_)
            if fn is None:
                fn = cache[rows_] = self._compile(rows_, spec, opt_step, opt_grads)
            if x.ndim == 2:
                x = x.reshape(1, rows_, K)
            return fn(x, y)
        return step

    def prepare_targets(self, y, loss="cross_entropy", what="y"):
        """Validate and convert targets for ``loss`` (see :meth:`LossSpec.prepare_targets`)."""
        return self._targets(get_loss(loss), y, what)

    def _targets(self, spec, y, what="y"):
        """``spec.prepare_targets`` for this model, never sharing memory with its parameters."""
        return self._unaliased(spec.prepare_targets(y, self.out_features, self.dtype, what))

    def train_step(self, x, y, optimizer, loss="cross_entropy"):
        """One validated training step on the batch ``(x, y)``: forward, backward, ``optimizer.step``.

        Returns the batch loss (before the update). For loops that call this many times,
        :meth:`make_train_step` avoids the per-call validation.
        """
        x2, _ = self._check_X(x, "x")
        spec = get_loss(loss)
        yy = self._targets(spec, y)
        self._check_rows(x2, yy)
        rows = x2.shape[0]
        key = ("train", rows, spec.name, id(optimizer))
        entry = self._compiled.get(key)
        if entry is None or entry[0] is not optimizer:
            entry = (optimizer, self._compile(rows, spec, optimizer.step, self._optimizer_grads(optimizer)))
            self._remember(key, entry)
        return float(entry[1](x2.reshape(1, rows, -1), yy))

    def loss_and_grad(self, x, y, loss="cross_entropy"):
        """Loss on the batch ``(x, y)`` and its gradient with respect to every parameter.

        Returns
        -------
        loss : float
            Mean loss over the batch (see :mod:`fastdescent.nn.losses`).
        grads : list of ndarray
            Aligned with :attr:`params` (and with ``parameters()``): the live views of the arena's
            gradient block, overwritten by the next call -- copy them to keep them. They can go
            straight into ``opt.step(grads)``.
        """
        x2, _ = self._check_X(x, "x")
        spec = get_loss(loss)
        yy = self._targets(spec, y)
        self._check_rows(x2, yy)
        rows = x2.shape[0]
        if rows == 0:
            raise ValueError("x has no rows")
        key = ("grad", rows, spec.name)
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compile(rows, spec)
            self._remember(key, fn)
        loss_value = float(fn(x2.reshape(1, rows, -1), yy))
        return loss_value, self.arena.grads

    # ------------------------------------------------------------------ inference
    def _predict2(self, x2):
        """Outputs for validated 2-D inputs, in chunks of CHUNK_ROWS rows."""
        n, K = x2.shape
        out = np.empty((n, self.out_features), self.dtype)
        for s in range(0, n, CHUNK_ROWS):
            e = min(n, s + CHUNK_ROWS)
            res = self._forward_fn(e - s)(x2[s:e].reshape(1, e - s, K))
            out[s:e] = res[0]
        return out

    def predict(self, X):
        """The network's output for ``X`` (n, in_features) or (..., in_features): raw logits for a
        classifier (apply :meth:`predict_proba` for probabilities), the prediction for a regressor.
        Returns a new array of shape ``(..., out_features)`` in the model's dtype."""
        x2, lead = self._check_X(X)
        return self._predict2(x2).reshape(*lead, self.out_features)

    forward = predict

    def __call__(self, X):
        return self.predict(X)

    def predict_proba(self, X):
        """Softmax of :meth:`predict` along the last axis (class probabilities)."""
        z = self.predict(X)
        z = z - z.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=-1, keepdims=True)
        return z

    def predict_classes(self, X):
        """Arg-max class labels (int64) of :meth:`predict`."""
        return self.predict(X).argmax(axis=-1)

    def _evaluate2(self, x2, yy, spec, batch_rows=CHUNK_ROWS):
        """{"loss", "accuracy"} on validated inputs (x2 2-D, yy prepared targets)."""
        n, K = x2.shape
        N = self.out_features
        lossk = self._be.KERNELS[spec.kernel]
        total = 0.0
        correct = 0
        inv = spec.scale(n, N)
        for s in range(0, n, batch_rows):
            e = min(n, s + batch_rows)
            rows = e - s
            out = self._forward_fn(rows)(x2[s:e].reshape(1, rows, K))
            # (the forward closure may outlive its workspace's cache entry: fetch or remake it)
            ws = self._workspace(rows)
            if ws.scratch is None:
                ws.scratch = np.empty((rows, N), self.dtype)
            out2 = out.reshape(rows, N)
            total += float(lossk(ws.scratch, out2, yy[s:e], scale=inv))
            if spec.classification:
                correct += int(np.count_nonzero(out2.argmax(axis=1) == yy[s:e]))
        res = {"loss": total}
        if spec.classification:
            res["accuracy"] = correct / n
        return res

    def evaluate(self, X, y, loss="cross_entropy"):
        """Mean loss on ``(X, y)`` and, for ``loss="cross_entropy"``, the accuracy of the arg-max
        prediction: ``{"loss": float, "accuracy": float}``."""
        x2, _ = self._check_X(X)
        spec = get_loss(loss)
        yy = self._targets(spec, y)
        self._check_rows(x2, yy)
        if x2.shape[0] == 0:
            raise ValueError("X has no rows")
        return self._evaluate2(x2, yy, spec)

    def score(self, X, y):
        """Classification accuracy on ``(X, y)`` (scikit-learn's ``score``)."""
        return self.evaluate(X, y, loss="cross_entropy")["accuracy"]

    # ------------------------------------------------------------------ misc
    def __repr__(self):
        body = ",\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return (f"{type(self).__name__}(\n{body}\n)  # {self.n_params} params, {self.dtype}, "
                f"backend={self.backend!r}")


class MLP(Sequential):
    """Multi-layer perceptron: ``Linear`` layers of the given sizes with an activation between them
    (none after the last: the output is logits / a regression value).

    Parameters
    ----------
    sizes : sequence of int
        ``[in_features, hidden..., out_features]``, at least two entries.
    activation : str or Activation class, default "relu"
        ``"relu"``, ``"tanh"``, ``"sigmoid"`` or ``"gelu"``.
    seed, dtype, backend
        As for :class:`Sequential`.
    bias : bool, default True
    init : str, default "default"
        Weight initialisation of every ``Linear`` (torch's default; see :class:`Linear`).

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> model = fd.nn.MLP([64, 256, 10], activation="relu", seed=0)
    >>> model.predict(np.zeros((2, 64))).shape
    (2, 10)
    """

    def __init__(self, sizes, activation="relu", seed=0, dtype=np.float32, backend=None, *,
                 bias=True, init="default"):
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"sizes must be a sequence of ints [in, hidden..., out], got {sizes!r}")
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must have at least two entries [in, out], got {sizes!r}")
        sizes = [_positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
        _make_act(activation)  # validate before building anything
        layers = []
        for i in range(len(sizes) - 1):
            if i:
                layers.append(_make_act(activation))
            layers.append(Linear(sizes[i], sizes[i + 1], bias=bias, init=init))
        self.sizes = sizes
        self.activation = _make_act(activation).name
        super().__init__(*layers, seed=seed, dtype=dtype, backend=backend)


def _make_act(spec):
    if isinstance(spec, Activation):  # one instance per position: build fresh ones of its kind
        return activation(spec.name)
    return activation(spec)

