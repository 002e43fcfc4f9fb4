"""The engine of ``fastdescent.torch``: a ``torch.optim.Optimizer`` that runs fastdescent's kernels on
the tensors' own memory.

How a step runs
---------------
A step reads every parameter's ``.grad`` (a parameter whose grad is None is skipped: its state and
step count do not change, as in torch). The parameters that have a gradient are grouped into
*buckets*, one per (param group, dtype, step count, scalar state, fresh-state flag); each bucket has
a backend tensor table (``fastdescent.backends._table``) whose param and state columns are the data
addresses of the parameters and of their state tensors, so one kernel call updates a whole bucket.
The buckets and their tables are a cached *plan*, rebuilt only when something they describe changes:

- the parameters (identity, or their memory, shape or strides: ``p.data = ...``);
- which parameters have a gradient (the pattern of None grads);
- the state: ``self.state`` replaced, a parameter's state dict or any state tensor replaced
  (``load_state_dict``, user code), a state tensor's memory moved in place (``resize_``, ``set_``,
  ``.data = ...``), a step count edited in place, or an option that needs another buffer
  (``amsgrad`` switched on);
- ``add_param_group``, ``load_state_dict``, unpickling.

A plan refuses parameters listed twice and parameters or state tensors that share memory: one kernel
call updates them all at once, on several threads. Its tables keep aliases of every tensor they point
at, so memory they point at is never freed while they do; a moved tensor is noticed at the next step.

The gradient column is re-packed at every step from the grads' current addresses, after checking
them (dense, same dtype, shape and layout as the parameter): ``zero_grad()`` (``set_to_none=True``,
torch's default) gives new ``.grad`` tensors at every backward, and a step never reads an old one.
A gradient that shares memory with what the step writes (``p.grad = p.data``) is copied first.
No reference to a gradient is kept after the step, so torch's allocator can reuse its memory.

State layout
------------
``self.state[p]`` holds torch tensors named as torch names them (``exp_avg``, ``exp_avg_sq``,
``momentum_buffer``, ...) with ``p``'s shape, dtype and strides; the kernels update them in place.
``step`` is a 0-d tensor of torch's scalar dtype (float32, float64 under a float64 default dtype), as
torch 2.13 keeps it; the step tensors of a param group are views into one block, so a step advances
them with one write. Scalar state (NAdam's ``mu_product``) is kept the same way. So ``state_dict()``
has torch's layout and loads into the torch.optim class, and torch's state_dict loads here
(``load_state_dict`` copies every loaded tensor into buffers of this optimizer's own: two optimizers
never share state tensors through a load).
"""

from __future__ import annotations

import operator
from collections import defaultdict
from itertools import compress, repeat

import numpy as np
import torch

from .._contract import row as _row
from ..backends import resolve
from ..optim.base import _state_step
from ..rules import check_scalars

__all__ = ["Optimizer"]

_F32, _F64 = torch.float32, torch.float64
_NP = {_F32: np.dtype(np.float32), _F64: np.dtype(np.float64)}
_STRIDED = torch.strided
_data_ptr = torch.Tensor.data_ptr
_is_contiguous = torch.Tensor.is_contiguous
_get_grad = operator.attrgetter("grad")
#: what the fast path compares of each gradient with its parameter's (one C-level pass)
_get_meta = operator.attrgetter("dtype", "is_cpu", "shape")
_get_shape = operator.attrgetter("shape")
_is_neg = torch.Tensor.is_neg
_is_not = operator.is_not
_is = operator.is_
_getitem = operator.getitem

try:  # bumps autograd's version counters, as torch's in-place updates do
    from torch.autograd.graph import increment_version as _increment_version
except ImportError:  # pragma: no cover - torch < 2.1
    _increment_version = None


def _bump_versions(tensors):
    """Bump the autograd version counter of every tensor: one call where torch takes a list, one per
    tensor where its ``increment_version`` takes a single tensor (older versions)."""
    if _increment_version is None:  # pragma: no cover - torch < 2.1
        return
    try:
        _increment_version(tensors)
    except TypeError:  # pragma: no cover - depends on the torch version
        for t in tensors:
            _increment_version(t)


def _scalar_dtype():
    """torch's dtype for ``step`` and other scalar state (``torch.optim.optimizer._get_scalar_dtype``)."""
    return _F64 if torch.get_default_dtype() == _F64 else _F32


def _dense(t):
    """True if ``t``'s elements fill its memory without gaps or overlaps (any dim order), so that
    tensors of the same shape and strides correspond element by element in flat memory."""
    if t.is_contiguous():
        return True
    dims = sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1)
    expect = 1
    for st, sz in dims:
        if st != expect:
            return False
        expect *= sz
    return True


def _span(t):
    """The bytes ``[start, end)`` a dense tensor's elements occupy."""
    start = t.data_ptr()
    return start, start + t.numel() * t.element_size()


def _first_overlap(spans):
    """The first pair of indices into ``spans`` (``(start, end)`` byte ranges) whose ranges share a
    byte, or None (empty ranges share nothing)."""
    order = sorted((s, e, k) for k, (s, e) in enumerate(spans) if e > s)
    for (_, e0, k0), (s1, _, k1) in zip(order, order[1:]):
        if s1 < e0:
            return k0, k1
    return None


_PLAIN = frozenset((float, int, bool, str, type(None)))


def _resolve(v):
    """A hyperparameter as the rules take it: one-element tensors (torch allows ``lr`` and
    ``betas`` as tensors) as Python floats, inside tuples too."""
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.is_complex():
            raise TypeError(f"a tensor hyperparameter must hold one real number, got {v!r}")
        return float(v.item())
    if isinstance(v, (tuple, list)) and any(isinstance(x, torch.Tensor) for x in v):
        return tuple(_resolve(x) for x in v)
    return v


class _Bucket:
    __slots__ = ("gi", "dtype", "pos", "sel", "step", "sstate", "fresh", "tab", "kidx", "kall",
                 "names", "param_index")


class _Plan:
    """What a step needs and what the next steps compare with (see the module docstring)."""


class Optimizer(torch.optim.Optimizer):
    """Base class of ``fastdescent.torch``'s optimizers: a ``torch.optim.Optimizer`` whose
    :meth:`step` runs the fastdescent rule ``_rule`` (a :class:`fastdescent.rules.Rule`) with one
    kernel call per (param group, dtype) bucket, on the parameters', gradients' and state tensors'
    own memory.

    Subclasses set ``_rule``, ``_torch_name`` (torch's class name, for messages), ``_step_in_state``
    (False for SGD, whose torch state has no ``step``), ``_eager_state`` (Adagrad: torch creates its
    state in the constructor) and ``_forced`` (group values a load cannot change: AdamW's
    ``decoupled_weight_decay``). ``defaults`` holds torch's group keys, including ``foreach``,
    ``fused``, ``capturable`` and ``differentiable`` where torch has them.

    ``backend``: ``"c"``, ``"numba"``, ``"numpy"`` or ``"auto"``; None means the default in force
    (:func:`fastdescent.use_backend`, ``$FASTDESCENT_BACKEND``, else ``"auto"``: the C backend).
    CPU tensors of float32 or float64 only.
    """

    _rule = None
    _torch_name = None
    _step_in_state = True
    _eager_state = False
    _forced = {}
    def __init__(self, params, defaults, *, backend=None):
        if defaults.get("differentiable"):
            raise ValueError(f"{self._name()}: differentiable=True is not supported (the kernels "
                             "update the tensors' memory outside autograd); use torch.optim."
                             f"{self._torch_name or type(self).__name__} for a differentiable step")
        self._fd_backend_name = backend
        self._fd_backend = resolve(backend, device=False)
        if self._fd_backend.NAME == "cuda":
            raise ValueError(f"{self._name()}: backend 'cuda': CUDA tensors are not yet supported "
                             "by fastdescent.torch (CPU tensors only)")
        self._fd_reset()
        self._fd_steps = {}  # group index -> (block tensor, NumPy view): the groups' step tensors
        self._fd_sblocks = {}  # (group index, name) -> (block, view): scalar state (mu_product)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ helpers
    @classmethod
    def _name(cls):
        return f"fastdescent.torch.{cls.__name__}"

    @property
    def backend(self):
        """Public name of the backend the kernels run on."""
        return self._fd_backend.NAME

    @property
    def rule(self):
        """The update rule (:class:`fastdescent.rules.Rule`)."""
        return self._rule

    def _fd_reset(self):
        self._fd_plan = None
        self._fd_checked = []  # per group: (keys, values, resolved hp) of its last validation
        self._fd_adopt_needed = False

    # ------------------------------------------------------------------ params and groups
    def _fd_check_param(self, p, where):
        """Raise if ``p`` cannot be updated by the kernels (clear errors for what torch.optim
        accepts and fastdescent does not, yet)."""
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{where} must be a torch.Tensor, got {type(p).__name__}")
        if p.is_complex():
            raise TypeError(f"{where}: complex parameters ({p.dtype}) are not supported by "
                            f"{self._name()} (float32 and float64 only); view them as real "
                            "(torch.view_as_real) or use torch.optim")
        if p.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(f"{where}: {p.dtype} parameters are not supported yet by fastdescent "
                            "(its kernels are float32 and float64); keep float32 master weights "
                            "(e.g. torch.autocast for the forward pass) or use torch.optim")
        if p.dtype not in _NP:
            raise TypeError(f"{where}: dtype {p.dtype} is not supported ({self._name()} updates "
                            "float32 and float64 parameters)")
        if p.device.type != "cpu":
            if p.device.type == "cuda":
                raise ValueError(f"{where} is on {p.device}: CUDA tensors are not yet supported "
                                 f"by {self._name()} (CPU tensors only); use torch.optim."
                                 f"{self._torch_name or 'Adam'}(fused=True) on the GPU")
            raise ValueError(f"{where} is on device {p.device}: {self._name()} supports CPU "
                             "tensors only")
        if p.layout != _STRIDED:
            raise TypeError(f"{where}: {p.layout} parameters are not supported (dense tensors only)")
        if p.is_neg():
            raise ValueError(f"{where} is a lazily negated view (its negative bit is set, e.g. the "
                             "imaginary part of a conjugated tensor): its memory holds the "
                             "negated values; make it a parameter of its own (t.resolve_neg())")
        if not _dense(p):
            raise ValueError(f"{where} is a view with gaps or overlaps (shape {tuple(p.shape)}, "
                             f"strides {p.stride()}): fastdescent updates dense parameters only; "
                             "make it a parameter of its own (e.g. nn.Parameter(t.contiguous()))")

    def add_param_group(self, param_group):
        """torch's ``add_param_group``, then this optimizer's checks of the new group's parameters
        and hyperparameters (on failure the group is not added)."""
        n = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            base = sum(len(g["params"]) for g in self.param_groups[:-1])
            seen = set()
            for k, p in enumerate(group["params"]):
                self._fd_check_param(p, f"params[{base + k}]")
                if id(p) in seen:
                    raise ValueError(self._fd_duplicate_message(n, p, group["params"]))
                seen.add(id(p))
            self._fd_hp(n, group)
            if self._eager_state:
                self._fd_create_eager_state(n, group)
        except Exception:
            del self.param_groups[n:]
            self._fd_checked[n:] = []
            raise
        self._fd_plan = None

    def _fd_duplicate_message(self, gi, p, params):
        ks = [k for k, q in enumerate(params) if q is p]
        return (f"param_groups[{gi}] holds the same tensor more than once (at positions {ks}): "
                f"{self._name()} refuses duplicate parameters (torch.optim warns that it will "
                "refuse them, and steps such a parameter once per occurrence); list each "
                "parameter once")

    def _fd_hp(self, gi, group):
        """Validate group ``gi`` (by value; unchanged groups cost an identity comparison) and return
        its hyperparameters as the rule takes them (tensors resolved to floats)."""
        checked = self._fd_checked
        if len(checked) <= gi:
            checked.extend([None] * (gi + 1 - len(checked)))
        keys, values = tuple(group), tuple(group.values())
        old = checked[gi]
        if old is not None and old[0] == keys and all(map(_is, old[1], values)):
            return old[2]
        where = f"param_groups[{gi}]"
        if group.get("differentiable"):
            raise ValueError(f"{where}: differentiable=True is not supported by {self._name()}")
        try:
            mutable = False
            hp = dict(group)
            del hp["params"]
            hp.pop("param_names", None)  # (torch's names of named_parameters(): not options)
            for k, v in hp.items():
                if type(v) in _PLAIN:
                    continue
                r = _resolve(v)
                mutable = mutable or r is not v or isinstance(v, (list, dict))
                hp[k] = r
            self._rule.check_group(hp)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        # a group holding tensors or lists is re-validated at every step (edited in place)
        checked[gi] = (keys, values, hp) if not mutable else None
        return hp

    def _fd_create_eager_state(self, gi, group):
        """torch's Adagrad creates ``step`` (0) and ``sum`` in its constructor: the same here."""
        hp = self._fd_hp(gi, group)
        names = self._rule.state_names(hp)
        for k, p in enumerate(group["params"]):
            st = self.state[p]
            if st:
                continue
            for name in names:
                st[name] = torch.full_like(p, self._rule.init_value(hp, name))
            st["step"] = self._fd_step_view(gi, k, len(group["params"]), 0)

    # ------------------------------------------------------------------ step blocks
    def _fd_block(self, table, key, n, dtype):
        blk = table.get(key)
        if blk is None or blk[0].numel() != n:
            t = torch.zeros(n, dtype=dtype)
            blk = table[key] = (t, t.numpy())
        return blk

    def _fd_step_view(self, gi, k, n, value):
        t, a = self._fd_block(self._fd_steps, gi, n, _scalar_dtype())
        a[k] = value
        return t[k]

    # ------------------------------------------------------------------ state_dict
    def __getstate__(self):
        state = super().__getstate__()
        state["_fd_backend_name"] = self._fd_backend_name
        return state

    def __setstate__(self, state):
        backend = state.pop("_fd_backend_name", getattr(self, "_fd_backend_name", None))
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)
            group.update(self._forced)
        if not hasattr(self, "_fd_backend"):  # unpickled / deep-copied: nothing of ours yet
            self._fd_backend_name = backend
            self._fd_backend = resolve(backend, device=False)
            self._fd_steps = {}
            self._fd_sblocks = {}
        self._fd_reset()
        self._fd_adopt_needed = True

    def load_state_dict(self, state_dict):
        """torch's ``load_state_dict`` (same format, same id mapping, tensors cast to the parameters'
        dtype), then every loaded state tensor is checked (names this optimizer keeps, the
        parameter's shape, a valid ``step``) and copied into buffers of this optimizer's own.
        Atomic: a state_dict that fails a check raises and leaves the optimizer as it was."""
        old = (self.__dict__.get("state"), self.__dict__.get("param_groups"),
               self._fd_steps, self._fd_sblocks)
        super().load_state_dict(state_dict)
        try:
            self._fd_adopt()
        except Exception:
            self.state, self.param_groups, self._fd_steps, self._fd_sblocks = old
            self._fd_reset()
            raise

    def _fd_adopt(self):
        """Check the state (after a load or unpickling) and move it into this optimizer's layout:
        own buffers with the parameters' strides, step tensors (and scalar state) in the groups'
        blocks. Builds everything first and swaps it in at the end."""
        rule = self._rule
        sinit = rule.scalar_state
        allowed = set(rule.all_state)
        sdt = _scalar_dtype()
        new_state = defaultdict(dict)
        steps, sblocks = {}, {}
        idx = 0
        for gi, group in enumerate(self.param_groups):
            hp = self._fd_hp(gi, group)
            needed = self._rule.state_names(hp)
            params = group["params"]
            n = len(params)
            svals = np.zeros(n)
            ssvals = {name: np.full(n, init) for name, init in sinit.items()}
            for k, p in enumerate(params):
                where = f"state[{idx + k}]"
                st = self.state.get(p)
                if not st:
                    continue
                d = {}
                step = None
                for name, val in st.items():
                    if name == "step":
                        if self._step_in_state:  # (SGD's torch state has no step: dropped)
                            step = _state_step(val, f"{where}['step']")
                        continue
                    if name in sinit:
                        ssvals[name][k] = rule.check_scalar_state(name, val, f"{where}[{name!r}]")
                        continue
                    if name not in allowed:
                        raise ValueError(f"{where} has an unknown entry {name!r}; {self._name()} "
                                         f"keeps {('step',) + tuple(rule.all_state) + tuple(sinit)}")
                    if val is None and name not in needed:
                        continue  # (an absent momentum buffer, as old torch versions wrote it)
                    if not isinstance(val, torch.Tensor) or val.is_complex() \
                            or not val.is_floating_point():
                        raise ValueError(f"{where}[{name!r}] must be a real floating-point tensor, "
                                         f"got {type(val).__name__}")
                    if tuple(val.shape) != tuple(p.shape):
                        raise ValueError(f"{where}[{name!r}] has shape {tuple(val.shape)}, "
                                         f"params[{idx + k}] has shape {tuple(p.shape)}")
                    buf = torch.empty_like(p)
                    buf.copy_(val.detach())
                    d[name] = buf
                missing = [nm for nm in rule.core_state if nm in needed and nm not in d]
                if missing and (d or (step or 0) > 0):
                    raise ValueError(f"{where} lacks {missing}, which params[{idx + k}]'s group "
                                     f"needs (it holds {sorted(st)})")
                if step is None and self._step_in_state and d:
                    raise ValueError(f"{where} lacks 'step' (the step count its buffers belong to)")
                if self._step_in_state or step is not None:
                    svals[k] = step or 0
                    d["step"] = None  # a view of the group's block, set below
                for name in sinit:
                    if d:
                        d[name] = None
                new_state[p] = d
            if self._step_in_state:
                t = torch.tensor(svals, dtype=sdt)
                steps[gi] = (t, t.numpy())
            for name in sinit:
                t = torch.tensor(ssvals[name], dtype=sdt)
                sblocks[(gi, name)] = (t, t.numpy())
            for k, p in enumerate(params):
                d = new_state.get(p)
                if d is None:
                    continue
                if "step" in d:
                    d["step"] = steps[gi][0][k]
                for name in sinit:
                    if name in d:
                        d[name] = sblocks[(gi, name)][0][k]
            idx += n
        self.state = new_state
        self._fd_steps, self._fd_sblocks = steps, sblocks
        self._fd_plan = None
        self._fd_adopt_needed = False

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step over every parameter whose ``.grad`` is not None.

        ``closure``: re-evaluates the model and returns the loss; it runs under
        ``torch.enable_grad()`` before the update, and its loss is returned (as in torch.optim).
        Nothing is modified if a check fails (an invalid hyperparameter, a sparse or mismatched
        gradient, an unsupported dtype or device).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._fd_step()
        return loss

    def _fd_step(self):
        if self._fd_adopt_needed:
            self._fd_adopt()
        groups = self.param_groups
        hps = [self._fd_hp(gi, g) for gi, g in enumerate(groups)]
        params = [p for g in groups for p in g["params"]]
        grads = list(map(_get_grad, params))
        have = list(map(_is_not, grads, repeat(None)))
        paddrs = list(map(_data_ptr, params))
        pshapes = list(map(_get_shape, params))
        pcontig = list(map(_is_contiguous, params))
        plan = self._fd_plan
        if (plan is None or plan.have != have or plan.paddr_list != paddrs
                or len(plan.params) != len(params) or not all(map(_is, params, plan.params))
                or plan.pshapes != pshapes or plan.pcontig != pcontig
                or not all(params[i].stride() == st for i, st in plan.pnc)
                or not self._fd_plan_current(plan, hps)):
            plan = self._fd_build(params, have, paddrs, hps)
        if plan.inference and not torch.is_inference_mode_enabled():
            raise RuntimeError(f"{self._name()}: a parameter is an inference tensor (created under "
                               "torch.inference_mode()), which torch does not update in place "
                               "outside inference mode; clone it into a normal tensor")
        gs, gaddrs = self._fd_check_grads(plan, list(compress(grads, have)))
        # every bucket's scalars (and post-update passes) before anything is written
        rule = self._rule
        scalars, passes = [], []
        for b in plan.buckets:
            hp = hps[b.gi]
            t = b.step + 1
            sc = rule.step_scalars(hp, t, b.fresh, b.sstate)
            where = f"param_groups[{b.gi}]"
            scalars.append(check_scalars(sc, where, b.dtype))
            passes.append([(name, check_scalars(psc, where, b.dtype))
                           for name, psc in rule.post_passes(hp, t)])
        if plan is not self._fd_plan:
            self._fd_commit(plan)
        if not plan.buckets:
            return
        kernels = self._fd_backend.KERNELS
        kernel = kernels[rule.name]
        numpy_cols = self._fd_backend.NAME == "numpy"
        try:
            for b, sc, ps in zip(plan.buckets, scalars, passes):
                if numpy_cols:
                    b.tab.set("grad", [gs[k].numpy() for k in b.kidx], gaddrs[b.kidx])
                else:  # (c, numba: the addresses are what the kernel reads)
                    b.tab.set("grad", gs, gaddrs if b.kall else gaddrs[b.kidx])
                kernel(b.tab, **sc)
                for name, psc in ps:
                    if _row(name).per_tensor:
                        kernels[name](b.tab, param_index=b.param_index, **psc)
                    else:
                        kernels[name](b.tab, **psc)
        finally:
            for b in plan.buckets:
                b.tab.set("grad", None)  # no reference to a gradient outlives the step
        for b in plan.buckets:
            b.step += 1
            b.fresh = False
            if self._step_in_state:
                self._fd_steps[b.gi][1][b.sel] = b.step
            if b.sstate is not None:
                b.sstate = rule.next_scalar_state(hps[b.gi], b.step, b.sstate)
                for name, v in b.sstate.items():
                    self._fd_sblocks[(b.gi, name)][1][b.sel] = v
        _bump_versions(plan.ptensors)

    def _fd_plan_current(self, plan, hps):
        """False when the state the plan's tables point at is no longer the optimizer's (replaced
        state dicts or tensors, step counts edited, an option that needs another buffer)."""
        state = self.state
        if (plan.state_obj is not state or len(state) != len(plan.svals)
                or not all(map(_is, state.values(), plan.svals))):
            return False
        if list(map(_data_ptr, plan.st_kern)) != plan.st_addrs:
            return False  # (a state tensor's memory moved: resize_, set_, .data = ...)
        if plan.sd_rep and not all(map(_is, map(_getitem, plan.sd_rep, plan.sn_rep), plan.st_rep)):
            return False
        for b in plan.buckets:
            if b.names != self._rule.state_names(hps[b.gi]):
                return False
            if self._step_in_state and (self._fd_steps[b.gi][1][b.sel] != b.step).any():
                return False
        return True

    # ------------------------------------------------------------------ gradients
    def _fd_check_grads(self, plan, present):
        """The gradients to read (parameter order) and their addresses, after checking them. Fast
        path: every one on the CPU with its parameter's dtype, shape and layout, a plain tensor (no
        negative bit, not a zero tensor) and sharing no memory with what the step writes (the
        parameters and their state; a sparse gradient fails it: it has no ``is_contiguous``).
        Otherwise each is looked at: sparse, another dtype, shape or device raise; a gradient whose
        strides differ from its parameter's, a lazily negated one, a zero tensor, or one that
        shares memory with a parameter or state tensor of the step is copied into a tensor with the
        parameter's layout, for this step only (so the step reads the gradient as it was before
        the step, whatever the kernels write)."""
        if not present:
            return present, None
        try:
            if (list(map(_get_meta, present)) == plan.meta
                    and list(map(_is_contiguous, present)) == plan.contig
                    and all(present[k].stride() == st for k, st in plan.pstrides)
                    and not any(map(_is_neg, present))):
                gaddrs = np.fromiter(map(_data_ptr, present), np.int64, len(present))
                if (np.logical_or(gaddrs, plan.gempty).all()
                        and not self._fd_grad_overlaps(plan, gaddrs).any()):
                    return present, gaddrs
        except RuntimeError:  # (sparse tensors have no strides nor data pointer)
            pass
        out = []
        for g, p, i in zip(present, plan.sparams, plan.sindex):
            where = f"params[{i}].grad"
            if g.layout != _STRIDED:
                raise RuntimeError(f"{self._name()} does not support sparse gradients ({where} is "
                                   f"{g.layout}); torch.optim.SparseAdam, or torch.optim's SGD and "
                                   "Adagrad, take them")
            if g.is_complex() or g.dtype != p.dtype:
                raise TypeError(f"{where} has dtype {g.dtype}, the parameter {p.dtype}")
            if g.device != p.device:
                raise ValueError(f"{where} is on {g.device}, the parameter on {p.device}")
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"{where} has shape {tuple(g.shape)}, the parameter "
                                 f"{tuple(p.shape)}")
            out.append(g)
        addrs = np.fromiter(map(_data_ptr, out), np.int64, len(out))
        shared = self._fd_grad_overlaps(plan, addrs)
        for k, (g, p) in enumerate(zip(out, plan.sparams)):
            if g._is_zerotensor():
                out[k] = torch.zeros_like(p)
            elif ((g.stride() != p.stride() and g.numel() > 1) or g.is_neg() or shared[k]
                  or not _dense(g)):
                tmp = torch.empty_like(p)  # the parameter's layout: elements correspond in memory
                tmp.copy_(g)
                out[k] = tmp
        return out, np.fromiter(map(_data_ptr, out), np.int64, len(out))

    @staticmethod
    def _fd_grad_overlaps(plan, gaddrs):
        """Per gradient (at ``gaddrs``, with its parameter's size): True if its bytes meet those of
        a tensor the step writes (``plan.w_start``/``plan.w_end``: sorted and disjoint, so the ranges
        a gradient meets are those that start before its end, less those that end before its
        start)."""
        meets = (np.searchsorted(plan.w_start, gaddrs + plan.gbytes, "left")
                 != np.searchsorted(plan.w_end, gaddrs, "right"))
        return meets & plan.gsized

    # ------------------------------------------------------------------ plan
    @staticmethod
    def _fd_own(table, key, k, n, t):
        """True if tensor ``t`` is element ``k`` of block ``table[key]``, a block of ``n`` (a step
        count or a scalar state in this optimizer's own layout)."""
        blk = table.get(key)
        return (blk is not None and isinstance(t, torch.Tensor) and t.dim() == 0
                and blk[0].numel() == n and t.dtype == blk[0].dtype
                and t.data_ptr() == blk[0].data_ptr() + k * blk[0].element_size())

    def _fd_build(self, params, have, paddrs, hps):
        """A new plan for this step. Only reads: the state it needs (buffers to create, step
        tensors to move into the groups' blocks) is listed in ``plan.pending`` and made by
        :meth:`_fd_commit`, after every check of the step has passed."""
        rule = self._rule
        state = self.state
        sinit = rule.scalar_state
        plan = _Plan()
        plan.params, plan.have, plan.paddr_list = params, have, paddrs
        plan.paddrs = np.array(paddrs, dtype=np.int64)
        keyed = {}
        pending = []
        sparams, sindex, sgroup = [], [], []
        i = 0
        for gi, g in enumerate(self.param_groups):
            hp = hps[gi]
            names = self._rule.state_names(hp)
            n = len(g["params"])
            for k, p in enumerate(g["params"]):
                if not have[i]:
                    i += 1
                    continue
                where = f"params[{i}]"
                self._fd_check_param(p, where)
                st = state.get(p, {})
                missing = []
                for nm in names:
                    buf = st.get(nm)
                    if buf is None:
                        check_scalars({f"initial value of {nm!r} (from the group's lr and "
                                       "options)": rule.init_value(hp, nm)},
                                      f"param_groups[{gi}]", _NP[p.dtype])
                        missing.append(nm)
                    elif (not isinstance(buf, torch.Tensor) or buf.dtype != p.dtype
                          or buf.shape != p.shape or buf.device != p.device
                          or (buf.stride() != p.stride() and p.numel() > 1)):
                        raise ValueError(
                            f"state[{i}][{nm!r}] does not match params[{i}] (it is "
                            f"{type(buf).__name__}"
                            + (f" {buf.dtype}, shape {tuple(buf.shape)}, strides {buf.stride()}"
                               if isinstance(buf, torch.Tensor) else "")
                            + f"; the parameter {p.dtype}, shape {tuple(p.shape)}, strides "
                            f"{p.stride()}): load state with load_state_dict")
                    elif buf.is_neg():
                        raise ValueError(f"state[{i}][{nm!r}] is a lazily negated view (its "
                                         "negative bit is set): give it a tensor of its own "
                                         "(t.resolve_neg())")
                step, rehome = 0, False
                if self._step_in_state:
                    t = st.get("step")
                    if t is None:
                        rehome = True
                    elif self._fd_own(self._fd_steps, gi, k, n, t):
                        step = _state_step(float(self._fd_steps[gi][1][k]), f"state[{i}]['step']")
                    else:
                        step = _state_step(t, f"state[{i}]['step']")
                        rehome = True
                ss = []
                for nm, init in sinit.items():
                    t = st.get(nm)
                    if t is None:
                        v = init
                    elif self._fd_own(self._fd_sblocks, (gi, nm), k, n, t):
                        v = float(self._fd_sblocks[(gi, nm)][1][k])
                    else:
                        v = rule.check_scalar_state(nm, t, f"state[{i}][{nm!r}]")
                        rehome = True
                    ss.append((nm, v))
                if any(nm not in st for nm in sinit):
                    rehome = True
                key = (gi, p.dtype, step, tuple(ss), bool(missing))
                keyed.setdefault(key, []).append((i, k))
                if missing or rehome:
                    pending.append((gi, k, n, p, missing, hp, step, ss))
                sparams.append(p)
                sindex.append(i)
                sgroup.append(gi)
                i += 1
        plan.pending = pending
        # the memory the step writes (parameters, their state) must not be shared: the kernels
        # update every tensor of a bucket at once (on several threads), not one after the other
        # as torch.optim's for-loop does
        seen = {}
        for p, i, gi in zip(sparams, sindex, sgroup):
            if id(p) in seen:
                j, gj = seen[id(p)]
                if gj == gi:
                    raise ValueError(self._fd_duplicate_message(gi, p, self.param_groups[gi]["params"]))
                raise ValueError(f"params[{j}] and params[{i}] are the same tensor, in "
                                 f"param_groups[{gj}] and param_groups[{gi}] (torch.optim refuses "
                                 "that too)")
            seen[id(p)] = (i, gi)
        spans, whats = [], []
        for p, i, gi in zip(sparams, sindex, sgroup):
            spans.append(_span(p))
            whats.append(f"params[{i}]")
            st = state.get(p, {})
            for nm in self._rule.state_names(hps[gi]):
                buf = st.get(nm)
                if buf is not None:
                    spans.append(_span(buf))
                    whats.append(f"state[{i}][{nm!r}]")
        hit = _first_overlap(spans)
        if hit is not None:
            a, b = whats[hit[0]], whats[hit[1]]
            raise ValueError(f"{a} and {b} share memory (views of one tensor, or one tensor "
                             f"assigned to both): {self._name()} updates the tensors of a step "
                             "at once and needs each to have memory of its own; make them separate "
                             "tensors (e.g. nn.Parameter(t.clone()))")
        self._fd_set_written(plan, spans)  # (completed by _fd_commit with the new buffers)
        plan.inference = any(p.is_inference() for p in sparams)
        pos_of = {i: j for j, i in enumerate(sindex)}
        plan.buckets = []
        for (gi, dt, step, ss, fresh), members in keyed.items():
            b = _Bucket()
            b.gi, b.dtype, b.step, b.fresh = gi, _NP[dt], step, fresh
            b.sstate = dict(ss) if ss else None
            b.pos = np.array([k for _, k in members], dtype=np.int64)
            b.param_index = np.array([i for i, _ in members], dtype=np.int64)
            b.kidx = np.array([pos_of[i] for i, _ in members], dtype=np.int64)
            b.kall = False
            b.sel = b.pos
            if len(b.pos) and (b.pos == np.arange(b.pos[0], b.pos[0] + len(b.pos))).all():
                b.sel = slice(int(b.pos[0]), int(b.pos[0]) + len(b.pos))  # (a view: cheaper)
            b.names = self._rule.state_names(hps[gi])
            plan.buckets.append(b)
        if len(plan.buckets) == 1:
            plan.buckets[0].kall = True  # the bucket reads every gradient, in order
        plan.sparams, plan.sindex = sparams, sindex
        plan.meta = [(p.dtype, True, p.shape) for p in sparams]
        plan.gbytes = np.array([p.numel() * p.element_size() for p in sparams], dtype=np.int64)
        plan.gempty = plan.gbytes == 0
        plan.gsized = ~plan.gempty
        plan.pshapes = [p.shape for p in params]
        plan.pcontig = [p.is_contiguous() for p in params]
        plan.pnc = [(i, p.stride()) for i, (p, c) in enumerate(zip(params, plan.pcontig)) if not c]
        plan.contig = [p.is_contiguous() for p in sparams]
        plan.pstrides = [(k, p.stride()) for k, (p, c) in enumerate(zip(sparams, plan.contig))
                         if not c]
        return plan

    @staticmethod
    def _fd_set_written(plan, spans):
        """The byte ranges a step writes (disjoint, checked), sorted."""
        spans = sorted(sp for sp in spans if sp[1] > sp[0])
        plan.w_start = np.array([a for a, _ in spans], dtype=np.int64)
        plan.w_end = np.array([e for _, e in spans], dtype=np.int64)

    def _fd_commit(self, plan):
        """Create the plan's pending state (buffers, step tensors, scalar state) and build its
        tables; the plan becomes the optimizer's."""
        rule = self._rule
        state = self.state
        sdt = _scalar_dtype()
        for gi, k, n, p, missing, hp, step, ss in plan.pending:
            st = state[p]
            for nm in missing:
                st[nm] = torch.full_like(p, rule.init_value(hp, nm))
            if self._step_in_state:
                st["step"] = self._fd_step_view(gi, k, n, step)
            for nm, v in ss:
                t, a = self._fd_block(self._fd_sblocks, (gi, nm), n, sdt)
                a[k] = v
                st[nm] = t[k]
        plan.pending = None
        Table = self._fd_backend.Table
        numpy_cols = self._fd_backend.NAME == "numpy"
        ptensors = []
        sd_rep, sn_rep, st_rep = [], [], []
        st_kern, st_addrs, spans = [], [], []
        params = plan.params
        for b in plan.buckets:
            ps = [params[i] for i in b.param_index]
            aliases = [p.detach() for p in ps]  # keep the memory alive while the table points at it
            ptensors.extend(ps)
            spans.extend(map(_span, ps))
            tab = Table(b.dtype, [p.numel() for p in ps])
            tab.set("param", [a.numpy() for a in aliases] if numpy_cols else aliases,
                    plan.paddrs[b.param_index])
            names = list(b.names) + (["step"] if self._step_in_state else []) \
                + list(rule.scalar_state)
            for nm in names:
                bufs = [state[p][nm] for p in ps]
                if nm in b.names:
                    # aliases keep the memory alive even if a buffer's storage is swapped
                    # (.data = ..., set_): its address then changes, and the next step sees it
                    salias = [x.detach() for x in bufs]
                    addrs = np.fromiter(map(_data_ptr, bufs), np.int64, len(bufs))
                    tab.set(nm, [x.numpy() for x in salias] if numpy_cols else salias, addrs)
                    st_kern.extend(bufs)
                    st_addrs.extend(addrs.tolist())
                    spans.extend(map(_span, bufs))
                for p, buf in zip(ps, bufs):
                    sd_rep.append(state[p])
                    sn_rep.append(nm)
                    st_rep.append(buf)
            b.tab = tab
        plan.ptensors = ptensors
        plan.st_kern, plan.st_addrs = st_kern, st_addrs
        self._fd_set_written(plan, spans)
        plan.state_obj = state
        plan.svals = list(state.values())
        plan.sd_rep, plan.sn_rep, plan.st_rep = sd_rep, sn_rep, st_rep
        self._fd_plan = plan

    def __repr__(self):
        name = type(self).__name__
        return super().__repr__().replace(f"{name} (", f"{name} (backend: {self.backend!r}", 1)
