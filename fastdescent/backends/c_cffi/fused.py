"""Fused training step of a dense-layer model (C): forward, loss, backward and the Adam / AdamW update
in ONE call of ``fd_mlp_step_f32/_f64`` (csrc/fd_fused.c). Mirrors backends/numba_cpu/fused.py.

``fused_train_step(model, optimizer, loss_name, rows)`` (the protocol of ``fastdescent.nn.model``)
returns ``step(x, y) -> float`` for batches of ``rows`` rows, or None when it cannot handle the
configuration (then the model runs its kernel-by-kernel step). Handled: a model of ``Linear`` and
activation layers, float32 / float64, loss ``cross_entropy`` or ``mse``, an ``Adam`` or ``AdamW``
optimizer (every option: weight decay, amsgrad, maximize) with one param group holding exactly the
model's parameters in order, on host arrays, without ``skip_nonfinite`` and without the proximal L1
option (a group with ``l1 != 0`` runs the kernel-by-kernel step, whose ``prox`` pass follows the
update; the fused kernel has no such pass).

State: the step writes into the optimizer's own flat state blocks (the single coalesced bucket that
``Optimizer.step`` builds for a model arena) and advances the bucket's step count, so ``opt.state``,
``state_dict()`` and a later ``opt.step()`` see exactly what the kernel-by-kernel path would have left.
Every call first validates the param groups with the optimizer's own check (``_check_groups``, by
value, as ``Optimizer.step`` does), then takes the per-step scalars from the optimizer's own
``_scalars`` (``adam_scalars``, float64) on ``param_groups[0]`` as it is now, so a scheduler's lr or a
hyperparameter edited in place (``betas[0] = 0.0`` on a list) applies at once, and a bad value raises
(naming it) before anything is written. When the optimizer's buckets change under the
step (``load_state_dict``, ``add_param_group``, amsgrad switched, ``skip_nonfinite`` set), that call
runs the kernel-by-kernel step, which rebuilds them, and the fused path binds again afterwards.

The model/optimizer binding below (:class:`Binding`) does not depend on the backend; the numba
backend's ``fused`` module uses it too.
"""

from __future__ import annotations

import numpy as np

from ._lib import F32, F64, NULL, ffi, kernel_error, lib

__all__ = ["fused_train_step", "Binding"]

LINEAR, ACT = 0, 1
XENT, MSE = 0, 1
_LOSS_KIND = {"cross_entropy": XENT, "mse": MSE}


class Binding:
    """What a fused step needs from a model and its optimizer, resolved once.

    ``Binding.create(model, optimizer, loss_name, rows)`` returns None for an unsupported
    configuration. Attributes: ``desc`` (nlayers, 4) int64 {type, in, out, kind}; ``layers`` a list of
    per-layer tuples ``(w, b, gw, gb)`` (None for activations / absent bias); ``ws`` the model's
    workspace for ``rows`` (``acts``, ``dacts``, ``dblock``); ``loss_kind``, ``scale``; and, after
    :meth:`bind`, the optimizer bucket ``bucket`` with its flat blocks.
    """

    @classmethod
    def create(cls, model, optimizer, loss_name, rows, dtypes=(F32, F64)):
        from ...nn.layers import Activation, Linear
        from ...nn.losses import get_loss
        from ...optim.adam import Adam, AdamW

        if type(optimizer) not in (Adam, AdamW) or optimizer._device:
            return None
        if optimizer.skip_nonfinite or len(optimizer.param_groups) != 1:
            return None
        if model.dtype not in dtypes or loss_name not in _LOSS_KIND:
            return None
        arena = model.arena
        ps = optimizer.param_groups[0]["params"]
        if len(ps) != len(arena.params) or any(p is not q for p, q in zip(ps, arena.params)):
            return None
        desc, layers = [], []
        width = model.in_features
        for layer in model.layers:
            if type(layer) is Linear:
                K, N = layer.weight.shape
                desc.append((LINEAR, K, N, 0))
                layers.append((layer.weight, layer.bias, layer.weight_grad, layer.bias_grad))
                width = N
            elif isinstance(layer, Activation) and type(layer).__module__ == Activation.__module__:
                desc.append((ACT, width, width, int(layer.kind)))
                layers.append((None, None, None, None))
            else:  # a layer type the fused step does not know
                return None
        if not any(d[0] == LINEAR for d in desc):
            return None
        self = cls()
        self.model, self.opt, self.rows = model, optimizer, rows
        self.desc = np.array(desc, dtype=np.int64).reshape(-1, 4)
        self.layers = layers
        self.ws = model._workspace(rows)
        self.ws.ensure_grads(model._widths, model.dtype)
        spec = get_loss(loss_name)
        self.spec = spec
        self.loss_kind = _LOSS_KIND[spec.name]
        self.scale = spec.scale(rows, model.out_features)
        self.grads = model._optimizer_grads(optimizer)
        self.group = optimizer.param_groups[0]
        self.bucket = None
        return self

    def bind(self):
        """Build (or take) the optimizer's buckets as ``Optimizer.step`` would; True if they are one
        flat bucket over the whole arena (then ``bucket``, ``param``, ``m``, ``v``, ``vmax`` are set)."""
        opt, arena = self.opt, self.model.arena
        self.bucket = None
        if opt.skip_nonfinite or len(opt.param_groups) != 1 or opt.param_groups[0] is not self.group:
            return False
        opt._check_group(self.group)
        if self.group.get("l1", 0.0) != 0:  # the proximal L1 pass is not part of the fused kernel
            return False
        changed = opt._prepare_grads(self.grads)
        if opt._needs_rebuild():
            opt._build_buckets()
            changed = True
        if changed:
            opt._pack_grads()
        bs = opt._buckets
        if len(bs) != 1:
            return False
        b = bs[0]
        n = len(arena.params)
        if b.group != 0 or list(b.indices) != list(range(n)) or b.param_flat is None:
            return False
        pf = b.param_flat
        if (pf.dtype != arena.flat_params.dtype or pf.size != arena.flat_params.size
                or pf.__array_interface__["data"][0] != arena.flat_params.__array_interface__["data"][0]):
            return False
        self.amsgrad = bool(self.group["amsgrad"])
        self.param = arena.flat_params
        self.m = b.flat["exp_avg"]
        self.v = b.flat["exp_avg_sq"]
        self.vmax = b.flat.get("max_exp_avg_sq") if self.amsgrad else None
        if self.amsgrad and self.vmax is None:
            return False
        self.buckets = bs
        self.bucket = b
        return True

    def usable(self):
        """Cheap per-call check that the bound bucket is still the optimizer's and valid."""
        opt = self.opt
        return (opt._buckets is self.buckets and not opt.skip_nonfinite
                and bool(self.group["amsgrad"]) == self.amsgrad and len(opt.param_groups) == 1
                and self.group.get("l1", 0.0) == 0)

    def check(self):
        """Validate the optimizer's param groups with its own check, as ``Optimizer.step`` does first
        thing every step (by value: a list-valued hyperparameter edited in place is seen). Raises
        the optimizer's ``TypeError``/``ValueError`` naming the hyperparameter; nothing is written."""
        self.opt._check_groups()

    def scalars(self, step):
        """The Adam kernel scalars for step number ``step``: the optimizer's own ``_scalars``
        (``adam_scalars``) on the group's values read now, so in-place edits (schedulers, callbacks,
        ``betas[0] = ...`` on a list) apply at once. Call :meth:`check` first."""
        s = self.opt._scalars(self.group, step, False)
        return (s["beta1"], s["beta2"], s["eps"], s["weight_decay"], s["decay"], s["step_size"],
                s["bias_correction2_sqrt"], int(self.amsgrad), s["maximize"])

    def slow_step(self):
        """The model's kernel-by-kernel step (used for a call the fused path cannot take)."""
        fn = getattr(self, "_slow", None)
        if fn is None:
            fn = self._slow = self.model._compile(self.rows, self.spec, self.opt.step, self.grads)
        return fn


#: how many fused steps ran (all models; tests read it to see that the fused path is taken)
calls = 0


def fused_train_step(model, optimizer, loss_name, rows):
    """``step(x, y) -> loss`` running the whole training step in one C call, or None (unsupported)."""
    if lib is None:
        return None
    bd = Binding.create(model, optimizer, loss_name, rows)
    if bd is None or not bd.bind():
        return None
    dt = model.dtype
    fn = lib.fd_mlp_step_f32 if dt == F32 else lib.fd_mlp_step_f64
    ct = "float" if dt == F32 else "double"
    cptr = ffi.typeof(ct + "[]")
    fb = ffi.from_buffer
    ws = bd.ws
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
    c_act = ffi.new(ct + " *[]", [ptr(a) for a in ws.acts])
    c_dact = ffi.new(ct + " *[]", [ptr(a) for a in ws.dacts])
    c_desc = fb("int64_t[]", bd.desc)
    c_dblock = ptr(ws.dblock)
    ndact = ws.dblock.size
    c_grad = ptr(model.arena.flat_grads)
    nparams = model.arena.size
    loss_out = ffi.new("double[1]")
    loss_kind, scale, xent = bd.loss_kind, bd.scale, bd.loss_kind == XENT
    dummy_labels = ffi.cast("int64_t *", 0)
    nx, ydt = rows * model.in_features, np.dtype(np.int64) if xent else dt
    ny = rows if xent else rows * model.out_features
    state = {}

    def rebind():
        state.clear()
        if not bd.bind():
            return False
        state["m"] = ptr(bd.m)
        state["v"] = ptr(bd.v)
        state["vmax"] = ptr(bd.vmax)
        state["p"] = ptr(bd.param)
        return True

    rebind()
    keepalive = (c_w, c_b, c_dw, c_db, c_act, c_dact, c_desc, c_dblock, c_grad, keep, bd.desc)

    lock = optimizer._lock  # the optimizer's own lock: a fused step is one optimizer step

    def step(x, y):
        with lock:
            return _step(x, y)

    def _step(x, y):
        global calls
        bd.check()
        if not (state and bd.usable()):
            loss = bd.slow_step()(x.reshape(1, rows, -1), y)
            rebind()
            return loss
        if x.dtype != dt or x.size != nx or y.dtype != ydt or y.size != ny:
            raise ValueError(f"fused step: x must hold {nx} {dt} values and y {ny} {ydt} values, got "
                             f"x {x.shape} {x.dtype}, y {y.shape} {y.dtype}")
        b = bd.bucket
        t = b.step + 1
        b1, b2, eps, wd, decay, ss, bc2, ams, mx = bd.scalars(t)
        if xent:
            lab, tgt = fb("int64_t[]", y), NULL
        else:
            lab, tgt = dummy_labels, fb(cptr, y)
        rc = fn(L, c_desc, c_w, c_b, c_dw, c_db, c_act, c_dact, rows, fb(cptr, x), loss_kind, lab, tgt,
                scale, nparams, state["p"], state["m"], state["v"], state["vmax"], c_grad, c_dblock,
                ndact, b1, b2, eps, wd, decay, ss, bc2, ams, mx, loss_out)
        if rc:
            raise kernel_error("mlp_step", rc)
        b.step = t
        b.fresh = False
        calls += 1
        return loss_out[0]

    step._keepalive = keepalive
    step.fast = step
    step.fused = True
    return step
