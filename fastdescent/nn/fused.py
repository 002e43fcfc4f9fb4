"""What a backend's fused training step receives: a :class:`FusedPlan` of one model, one optimizer,
one loss and one batch size, built here (the model side), so that backends never reach into the
model or the optimizer.

A backend offers a fused step (forward + loss + backward + optimizer update in one call) through a
module ``backends/<backend>/fused.py`` defining ``fused_train_step(plan) -> step or None``; the model
(:meth:`fastdescent.nn.Sequential.make_train_step`) builds the plan and uses the returned callable
``step(x, y) -> float`` instead of its kernel-by-kernel closure. A plan exists only for what the
fused kernels implement: a stack of ``Linear`` layers and built-in activations, float32/float64,
loss ``cross_entropy`` or ``mse``, an optimizer whose rule is Adam's (``Adam``/``AdamW``, every
option) or SGD's (``SGD``, every option; its gradient noise runs the kernel-by-kernel step), whose
``step`` is :meth:`Optimizer.step` (not overridden by a subclass or on the instance), with one
param group holding exactly the model's parameters in order and no L1 term, on host arrays. A backend
returns None for a rule it does not fuse (:attr:`FusedPlan.rule`; numba fuses Adam's only).

The step callable must behave as ``optimizer.step`` does: under ``bucket.lock``, unless
:meth:`FusedPlan.usable` (the plan's :class:`~fastdescent.optim.base.FlatBucket` bound and still
``current()``, the gradient arrays laid out as when it was bound), run
:meth:`FusedPlan.slow_step` (the kernel-by-kernel step, which rebuilds the optimizer's buckets) and
:meth:`FusedPlan.bind` again; else take ``bucket.scalars()`` (validates the groups, raising before
anything is written), run the kernel over ``bucket.param``/``grad``/``state`` and the plan's layer
buffers, and ``bucket.advance()``. It counts the steps that ran fused in its attribute
``fused_calls`` (a diagnostic: a loop can check that it gets the fast path).
"""

from __future__ import annotations

import numpy as np

from .._contract import LAYER_TYPES, LOSS_KINDS
from .layers import Activation, Linear
from .losses import get_loss

__all__ = ["FusedPlan", "LINEAR", "ACTIVATION"]

LINEAR = LAYER_TYPES["linear"]
ACTIVATION = LAYER_TYPES["activation"]
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


class FusedPlan:
    """A model's training step for one optimizer, loss and batch size, in the form fused kernels use.

    Attributes
    ----------
    rule
        The optimizer rule's name: ``"adam"`` or ``"sgd"``.
    rows, in_features, out_features, dtype
        The batch size and the model's widths and element type.
    desc : (nlayers, 4) int64
        Per layer ``(type, in, out, activation kind)`` (``LAYER_TYPES``, ``ACT_KINDS``).
    layers : list of (w, b, gw, gb)
        Per layer: weight ``(in, out)``, bias, and their gradient views in the arena (None for an
        activation, and for an absent bias).
    acts, dacts, dblock
        The activation buffers per layer ``(1, rows, out)``, their gradients, and the block holding
        all the activation gradients.
    flat_params, flat_grads
        The model's whole parameter and gradient blocks (the arena's).
    loss_kind, scale
        ``LOSS_KINDS`` value and the loss's scale for this batch size.
    bucket
        The optimizer's :class:`~fastdescent.optim.base.FlatBucket` (after :meth:`bind`), or None.
    lock
        The optimizer's lock (a fused step is one optimizer step).
    """

    @classmethod
    def create(cls, model, optimizer, loss_name, rows):
        """The plan, or None when the fused kernels do not implement this configuration."""
        rule = getattr(optimizer, "rule", None)
        if rule is None or rule.name not in ("adam", "sgd") or len(optimizer.param_groups) != 1:
            return None
        # a fused step replaces optimizer.step: not for a subclass (or an instance) whose step is
        # not the base class's (gradient clipping, a hook, a count), which the kernel-by-kernel
        # step calls and a fused kernel would silently skip
        from ..optim.base import Optimizer

        if (getattr(getattr(optimizer, "step", None), "__func__", None) is not Optimizer.step
                or getattr(getattr(optimizer, "_step", None), "__func__", None) is not Optimizer._step):
            return None
        group = optimizer.param_groups[0]
        if group.get("l1", 0) != 0 or optimizer.skip_nonfinite:
            return None
        if model.dtype not in (_F32, _F64) or model.param_dtype != model.dtype:
            return None  # (low-precision storage: the kernel-by-kernel step and the mixed update)
        if loss_name not in LOSS_KINDS:
            return None
        spec = get_loss(loss_name)
        arena = model.arena
        ps = group["params"]
        if len(ps) != len(arena.params) or any(p is not q for p, q in zip(ps, arena.params)):
            return None
        desc, layers = [], []
        width = model.in_features
        for layer in model.layers:
            if type(layer) is Linear:
                if layer.weight.ndim != 2:  # (reshaped in place: the slow step names it)
                    return None
                K, N = layer.weight.shape
                desc.append((LINEAR, K, N, 0))
                layers.append((layer.weight, layer.bias, layer.weight_grad, layer.bias_grad))
                width = N
            elif isinstance(layer, Activation) and type(layer).__module__ == Activation.__module__:
                desc.append((ACTIVATION, width, width, int(layer.kind)))
                layers.append((None, None, None, None))
            else:  # a layer type the fused step does not know
                return None
        if not any(d[0] == LINEAR for d in desc):
            return None
        # a kernel writes through these (a read-only flag set by the caller: the kernel-by-kernel
        # step, which names a read-only parameter, or the backend's own handling of it)
        if not all(a.flags.writeable for t in layers for a in t if a is not None):
            return None
        if not model.arena.flat_grads.flags.writeable:
            return None
        self = cls()
        self._model, self._opt, self._spec = model, optimizer, spec
        self.rule = rule.name
        self.rows, self.dtype = rows, model.dtype
        self.in_features, self.out_features = model.in_features, model.out_features
        self.desc = np.array(desc, dtype=np.int64).reshape(-1, 4)
        self.layers = layers
        ws = model._workspace(rows)
        ws.ensure_grads(model._widths, model.dtype)
        self.acts, self.dacts, self.dblock = ws.acts, ws.dacts, ws.dblock
        self.flat_params, self.flat_grads = arena.flat_params, arena.flat_grads
        self.loss_kind = LOSS_KINDS[spec.name]
        self.scale = spec.scale(rows, model.out_features)
        self._grads = model._optimizer_grads(optimizer)
        self.bucket = None
        self._gcheck = None
        self._slow = None
        return self

    @property
    def lock(self):
        """The optimizer's lock, read at every use: a forked child renews it
        (``optim.base._renew_locks_after_fork``), so one taken at plan time could be the parent's,
        held forever by a thread that the child does not have."""
        return self._opt._lock

    def bind(self):
        """Take the optimizer's coalesced bucket (building it as ``optimizer.step`` would); True if
        it is one flat bucket over the model's whole arena (then :attr:`bucket` is set)."""
        from ..optim.base import layout_checker

        self.bucket = self._gcheck = None
        fb = self._opt.coalesced(self._grads)
        if fb is None or fb.param.size != self.flat_params.size or fb.param.dtype != self.dtype:
            return False
        if (fb.param.__array_interface__["data"][0] != self.flat_params.__array_interface__["data"][0]
                or fb.grad.__array_interface__["data"][0] != self.flat_grads.__array_interface__["data"][0]):
            return False
        if any(name not in fb.state for name in fb.rule.state_names(fb.group)):
            return False
        self.bucket = fb
        # the gradient arrays as the optimizer validated them: optimizer.step refuses one changed in
        # place since (g.shape = ..., g.dtype = ..., a read-only flag; it checks its gradient list's
        # layout at every step), so a step on the fused path, which writes through the pointers
        # taken here, needs the same check (else it goes on writing where the slow step refuses)
        self._gcheck = layout_checker(list(self._grads) + [self.flat_grads])
        return True

    def usable(self):
        """True if the bound bucket can take the next step on the fused path (and the gradient
        arrays have the layout they had when it was bound: else :meth:`slow_step` raises as
        ``optimizer.step`` does)."""
        return self.bucket is not None and self.bucket.current() and self._gcheck()

    def slow_step(self, x, y):
        """The model's kernel-by-kernel step on ``(x, y)`` (a call the fused path cannot take)."""
        if self._slow is None:
            self._slow = self._model._compile(self.rows, self._spec, self._opt.step, self._grads)
        return self._slow(x.reshape(1, self.rows, -1), y)
