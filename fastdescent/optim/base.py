"""The optimizer base class: param groups, dtype buckets, state, validation, state_dict.

How a step runs
---------------
Parameters are grouped into *buckets*: one per (param group, dtype, step count, fresh-state flag, and
scalar state for rules that have one, see below). A bucket owns a backend tensor table whose param and
state columns are fixed; optimizer state of a bucket lives in one flat block per state name
(per-parameter state arrays are views into it). A step is:

1. validate every group's hyperparameters, and the gradients when the gradient arrays changed identity
   since the last step (a training loop that reuses its gradient buffers pays this once);
2. compute the per-step scalars in float64 (subclass ``_scalars``) and call the bucket's kernel once;
3. run the rule's post-update passes, if any (``Rule.post_passes``: SGD's gradient noise, then the
   proximal L1 pass of a group with ``l1 > 0``), one kernel call each per bucket.

Nothing is modified until every check has passed. When a bucket's parameters, gradients and state are
each adjacent views of one block (a :class:`~fastdescent.arena.ParamArena`, or state, always), the table
is coalesced to one flat tensor, so a whole model's update is one pass over memory (unless the class
sets ``_coalesce = False``: an update with per-tensor quantities, such as LAMB's trust ratio).

Scalar state
------------
A rule with ``scalar_state`` (NAdam's ``mu_product``: a running product that depends on the
history of beta1, not only on the step count) has floats per parameter besides the step count. They
are kept like the step count: per bucket (``_Bucket.sstate``; parameters with different values never
share a bucket), in ``_sstates`` for parameters outside a bucket, advanced by
``rule.next_scalar_state`` after each successful kernel call (never by a skipped step or an error),
exported by ``state``/``state_dict()`` as floats and validated by ``load_state_dict``.
"""

from __future__ import annotations

import bisect
import math
import operator
import os
import threading
import weakref

import numpy as np

from .. import _arrays
from .. import _prints
from .._contract import row as _row
from .._validate import check_flag, check_loss_scale, check_real
from ..rules import check_scalars
from .._arrays import flat_view
from ..backends import resolve
from .. import precision as _P
from . import _precision

__all__ = ["Optimizer", "FlatBucket", "check_hyper", "check_scalars"]


#: the optimizers' hyperparameter check (a finite real within bounds; ``_validate.check_real``)
check_hyper = check_real


_check_flag = check_flag


class _ParamList(list):
    """The ``"params"`` list of a param group: readable like a list, but fixed.

    The optimizer's tables, state and aliasing checks are built from the parameter list given at
    construction (or :meth:`Optimizer.add_param_group`); editing the list in place would leave them
    describing other arrays, so every in-place edit raises a ``TypeError`` saying what to do instead.
    """

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise TypeError("param_groups[i]['params'] cannot be edited in place: the optimizer's "
                        "tables and state are built from it; use add_param_group() to add "
                        "parameters, or build a new optimizer")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


# Optimizers whose lock must be renewed in a forked child (a lock held by another thread at fork
# time would otherwise stay locked forever in the child, which has only the forking thread).
_LIVE = weakref.WeakSet()


_F32 = np.dtype(np.float32)
_MIXED_RULES = _P.MIXED_RULES


def post_any(rule, group):
    """True if ``group`` runs post-update passes (l1, SGD's noise) at some step."""
    return bool(rule.post_passes(group, 1))




def _layout(a):
    """A host array's data address, read-only flag, shape, strides and dtype."""
    return a.__array_interface__["data"], a.shape, a.strides, a.dtype


def layout_checker(arrays):
    """A function of no argument that is True while every host array of ``arrays`` (a list the
    caller does not change) has the layout it has now: data address, dtype, flags, shape (one C
    call: the one-pass prints) or, where that pass cannot read them (subclasses, no extension),
    address, shape, strides and dtype per array. An identity cache of gradient lists needs it: an
    array changes in place between steps (``g.dtype = ...``, ``g.shape = ...``;
    ``g.resize(..., refcheck=False)`` frees and moves the memory). The dtype objects are kept: one
    freed by ``g.dtype = ...`` could come back at the same address and compare equal in the
    prints."""
    dtypes = [a.dtype for a in arrays]
    prints = _prints.array_prints([arrays])
    check = None if prints is None else _prints.prints_checker([arrays], prints)
    if check is None:
        layouts = list(map(_layout, arrays))

        def check():
            return list(map(_layout, arrays)) == layouts

    def unchanged(_keep=(arrays, dtypes)):
        return check()

    return unchanged


def _low(dtype):
    """bfloat16 or float16 (the mixed-precision step's low-precision parameter dtypes)."""
    return _P.code_of_dtype(dtype) in (_P.BF16, _P.F16)


def _renew_locks_after_fork():
    for opt in list(_LIVE):
        opt._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_after_fork)


class _Bucket:
    __slots__ = ("group", "dtype", "indices", "step", "fresh", "names", "flat", "sizes", "tab_multi",
                 "tab_flat", "tab", "param_flat", "param_addrs", "grad_flat", "param_index",
                 "sstate", "spec", "plan")


class FlatBucket:
    """One coalesced bucket of an optimizer, published for fused kernels (the fused training step of
    ``fastdescent.nn``): the whole bucket's parameters, gradients and each state buffer as one flat
    1-D block each, with the rule and the group that give its per-step scalars.

    Obtained from :meth:`Optimizer.coalesced`. A kernel that updates these blocks itself follows the
    protocol of :meth:`Optimizer.step`: under :attr:`lock`, check :meth:`current` (else let
    ``optimizer.step`` run, which rebuilds the buckets, and ask for a new FlatBucket), take
    :meth:`scalars` (validates every group first, raising before anything is written), run the kernel
    on ``param``, ``grad`` and ``state``, then :meth:`advance`.

    Attributes: ``rule`` (:class:`fastdescent.rules.Rule`), ``group`` (the param group dict, read at
    every :meth:`scalars` so schedulers apply), ``dtype``, ``param``, ``grad`` (flat views over the
    parameters' and gradients' memory), ``state`` ({name: flat block}, the optimizer's own state
    memory), ``lock`` (the optimizer's lock).
    """

    __slots__ = ("rule", "group", "dtype", "param", "grad", "state", "_opt", "_bucket",
                 "_buckets")

    def __init__(self, opt, bucket):
        self._opt, self._bucket, self._buckets = opt, bucket, opt._buckets
        self.rule = opt._rule
        self.group = opt.param_groups[bucket.group]
        self.dtype = bucket.dtype
        self.param = bucket.param_flat
        self.grad = bucket.grad_flat
        self.state = dict(bucket.flat)

    @property
    def lock(self):
        """The optimizer's lock (read at every use: a forked child renews it)."""
        return self._opt._lock

    @property
    def step(self):
        """Steps taken so far (the next step is ``step + 1``)."""
        return self._bucket.step

    def current(self):
        """True while this is still the optimizer's bucket and its state buffers are still the ones
        the group's options need (False after ``load_state_dict``, ``add_param_group``, an option
        that adds a buffer, or ``skip_nonfinite`` switched on: the fused kernel has no skip), and
        the group has no post-update pass (``Rule.post_passes``: ``l1 > 0``, SGD's noise), which a
        fused kernel does not run. False too once ``param_groups[i]`` is another dict than the one
        read here (``opt.param_groups[0] = dict(...)``, as ``optimizer.step`` reads the list at
        every step: :attr:`group` would go on giving the replaced dict's hyperparameters)."""
        opt = self._opt
        groups, gi = opt.param_groups, self._bucket.group
        return (gi < len(groups) and groups[gi] is self.group
                and opt._buckets is self._buckets and not opt._skip_nonfinite
                and tuple(self._bucket.names) == tuple(opt._state_names(self.group))
                and not self._post_passes() and self._plain())

    def _plain(self):
        """The group still runs the plain kernel (no low-precision option switched on since)."""
        try:
            return _precision.group_spec(self._opt._rule, self.group, self.dtype,
                                         self._bucket.names) is None
        except ValueError:  # an invalid combination: the kernel-by-kernel step names it
            return False

    def _post_passes(self):
        try:
            return bool(self.rule.post_passes(self.group, self._bucket.step + 1))
        except (TypeError, ValueError):  # an invalid option: the kernel-by-kernel step names it
            return True

    def scalars(self):
        """The rule's kernel scalars (float64 dict) for the next step, after validating every group
        as :meth:`Optimizer.step` does (by value: in-place edits are seen)."""
        opt, b = self._opt, self._bucket
        opt._check_groups()
        return check_scalars(opt._scalars(self.group, b.step + 1, b.fresh, b.sstate),
                             f"param_groups[{b.group}]", b.dtype)

    def advance(self):
        """Record one successful step of the bucket (and advance its scalar state, if any)."""
        b = self._bucket
        if b.sstate is not None:
            b.sstate = self.rule.next_scalar_state(self.group, b.step + 1, b.sstate)
        b.step += 1
        b.fresh = False


class Optimizer:
    """Base class of fastdescent's optimizers (torch.optim-like).

    Subclasses set ``_rule`` (a :class:`fastdescent.rules.Rule`: the contract row to call, the
    hyperparameter checks, state names and initial values, and the per-step scalars); the hooks
    ``_check_group(group)``, ``_state_names(group)``, ``_init_value(group, name)`` and
    ``_scalars(group, step, fresh)`` take them from it.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        The parameters to update in place (C-contiguous, writeable float32/float64 NumPy arrays, or
        device arrays exposing ``__cuda_array_interface__``), or param groups: dicts with a
        ``"params"`` list and per-group hyperparameters.
    defaults : dict
        Default hyperparameters for groups that do not set them.
    backend : str or None
        ``"numpy"``, ``"c"``, ``"numba"``, ``"cuda"`` or ``"auto"``; None means the default in force
        (:func:`fastdescent.use_backend`, ``$FASTDESCENT_BACKEND``, else ``"auto"``).
    skip_nonfinite : bool
        If True, a step whose gradients contain a NaN or Inf changes nothing (parameters, state,
        step count) and sets ``last_step_skipped``; ``skipped_steps`` counts such steps.

    Every optimizer's groups take the option ``l1`` (default 0, finite and >= 0, checked here for
    every rule): after the update, ``p <- sign(p) * max(|p| - lr_t * l1, 0)`` with ``lr_t`` the rule's
    rate in force (``Rule.prox_lr``), one ``prox`` kernel call per bucket; with ``l1 == 0`` nothing
    is called. Subclasses put ``l1`` (keyword-only, default 0.0) into their defaults.
    """

    _rule = None
    #: False for optimizers whose update depends on how the parameters are split into tensors
    #: (LAMB's per-tensor trust ratio): their buckets are never coalesced into one flat tensor
    _coalesce = True
    #: set from ``_rule`` for every subclass: the contract row, every state buffer name the optimizer
    #: may hold (for load_state_dict validation), and the buffers every parameter with state has,
    #: whatever the options (a state_dict entry without one is refused; option buffers such as
    #: amsgrad's ``max_exp_avg_sq`` may be absent and are created at the next step, as ``step``
    #: creates them when an option is switched on between steps)
    _kernel = None
    _all_state_names = ()
    _core_state_names = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        rule = cls.__dict__.get("_rule")
        if rule is not None:
            cls._kernel = rule.name
            cls._all_state_names = tuple(rule.all_state)
            cls._core_state_names = tuple(rule.core_state)

    def __init__(self, params, defaults, *, backend=None, skip_nonfinite=False):
        from ..arena import ParamArena

        self._lock = threading.RLock()
        _LIVE.add(self)
        self.defaults = dict(defaults)
        self._skip_nonfinite = _check_flag("skip_nonfinite", skip_nonfinite)
        self.last_step_skipped = False
        self.skipped_steps = 0
        self._arena = None
        if isinstance(params, ParamArena):
            self._arena = params
            params = params.params
        if isinstance(params, np.ndarray) or _arrays.is_device_array(params):
            raise TypeError("params must be a list of arrays (or of param-group dicts), "
                            "not a single array: wrap it as [array]")
        params = list(params)
        if not params:
            raise ValueError("params: the optimizer got an empty parameter list")
        self.param_groups = []
        self._params = []
        self._infos = []
        self._device = None
        self._backend = None
        self._pcheck = None  # (layout_checker of every parameter, them, their _layout then)
        self._requested_backend = backend
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)
        self._state = {}  # param index -> {state name: array}
        self._steps = {}  # param index -> step count (for params not currently in a bucket)
        self._sstates = {}  # param index -> {scalar state name: float} (likewise; see the top)
        self._buckets = None
        self._grads_ref = None
        self._grad_infos = None
        self._grad_layout = None  # _layout_of(the gradient list of _grads_ref)
        self._gtmpl = None  # _grad_template's cache
        self._none_mask = None
        self._finite_tabs = None
        self._finite_for = None  # the grads list the finiteness tables were built over
        self._grads_packed = False  # the kernel tables hold the current gradient arrays
        self._write_ranges = None  # sorted (start, end) byte ranges of params and state blocks
        self._checked = []
        self._post_groups = []  # per group: may its rule run post-update passes (l1, noise)?
        self._options_changed = True

    @property
    def skip_nonfinite(self):
        """If True, a step whose gradients hold a NaN or Inf changes nothing (may be toggled between
        steps; each step follows the value in force when it starts)."""
        return self._skip_nonfinite

    @skip_nonfinite.setter
    def skip_nonfinite(self, value):
        self._skip_nonfinite = _check_flag("skip_nonfinite", value)

    # ------------------------------------------------------------------ groups and params
    @property
    def backend(self):
        """Public name of the backend this optimizer runs on."""
        return self._backend.NAME

    def add_param_group(self, param_group):
        """Add a param group (dict with ``"params"`` and optional hyperparameters)."""
        with self._lock:
            self._add_param_group(param_group)

    def _add_param_group(self, param_group):
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        ps = group.get("params")
        if ps is None:
            raise ValueError("param_group: missing the 'params' key")
        if isinstance(ps, np.ndarray) or _arrays.is_device_array(ps):
            ps = [ps]
        ps = list(ps)
        if not ps:
            raise ValueError("param_group['params'] is empty")
        base = len(self._params)
        infos = []
        for k, p in enumerate(ps):
            what = f"params[{base + k}]"
            info = _arrays.inspect(p, what)
            low = info.dtype not in _arrays.SUPPORTED_DTYPES
            if low:
                _precision.check_param_dtype(self._rule, info.dtype, what)
            _arrays.check_param(info, what, low_precision=low)
            if self._device is not None and info.device != self._device:
                raise ValueError(f"{what}: mixing host (NumPy) and device arrays in one optimizer is "
                                 "not supported; use one optimizer per device")
            self._device = info.device if self._device is None else self._device
            infos.append(info)
        clash = _arrays.find_overlap(self._infos + infos)
        if clash is not None:
            i, j = clash
            raise ValueError(f"params[{j}] shares memory with params[{i}]: each parameter must be "
                             "a distinct, non-overlapping array")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        group["params"] = _ParamList(ps)
        self._check_group(group)
        self._check_kernels(group, infos)
        if self._backend is None:
            self._backend = resolve(self._requested_backend, device=bool(self._device))
        self.param_groups.append(group)
        self._plists = getattr(self, "_plists", []) + [group["params"]]
        self._params.extend(info.obj for info in infos)  # plain ndarray views of subclasses
        self._infos.extend(infos)
        if not self._device:  # (what every step compares the parameters with)
            ps = [p for pl in self._plists for p in pl]
            self._pcheck = (layout_checker(ps), ps, list(map(_layout, ps)))
        if getattr(self, "_buckets", None) is not None:
            self._invalidate()
        self._grads_ref = None
        self._write_ranges = None

    def _check_kernels(self, group, infos, where=""):
        """ValueError (prefixed with ``where``) unless the group's options have a kernel for each
        dtype of ``infos`` (float16 with stochastic rounding, float64 with 8-bit state, bfloat16 with
        l1 have none): a group refused here, and not at every later step of the whole optimizer."""
        names = None
        for dt in {i.dtype for i in infos}:
            if names is None:
                names = self._state_names(group)
            try:
                _precision.group_spec(self._rule, group, dt, names)
            except ValueError as exc:
                raise ValueError(f"{where}{exc}") from None

    # ------------------------------------------------------------------ subclass hooks
    def _check_group(self, group):
        self._rule.check_group(group)  # its hyperparameters and the l1 option every optimizer has
        _precision.check_options(self._rule, group)  # master_weights, state_dtype, ...

    def _state_names(self, group):
        """Names of the state buffers this group's options need, in contract column order."""
        return self._rule.state_names(group)

    def _init_value(self, group, name):
        return self._rule.init_value(group, name)

    def _scalars(self, group, step, fresh, sstate=None):
        """Kernel scalars (a dict, float64) for a bucket about to take step number ``step``
        (``sstate``: the bucket's scalar state, for rules that have one)."""
        return self._rule.step_scalars(group, step, fresh, sstate)

    @property
    def rule(self):
        """The update rule (:class:`fastdescent.rules.Rule`) this optimizer applies."""
        return self._rule

    def coalesced(self, grads=None):
        """The optimizer's single coalesced bucket for ``grads`` (as :meth:`step` takes them), as a
        :class:`FlatBucket`, or None when the parameters do not form one: several groups or dtypes,
        parameters or gradients that are not adjacent views of one block (use a
        :class:`~fastdescent.ParamArena`), ``skip_nonfinite`` set, or device arrays.

        Validates the groups and the gradients and builds the buckets exactly as :meth:`step` would
        (nothing is updated). For fused kernels that run a whole step themselves."""
        with self._lock:
            if self._skip_nonfinite or self._device or len(self.param_groups) != 1:
                return None
            self._check_groups()
            changed = self._prepare_grads(grads)
            if self._needs_rebuild():
                self._build_buckets()
                changed = True
            if changed or not self._grads_packed:
                self._pack_grads()
            bs = self._buckets
            if len(bs) != 1:
                return None
            b = bs[0]
            if (b.spec is not None or list(b.indices) != list(range(len(self._params)))
                    or b.param_flat is None
                    or b.grad_flat is None):
                return None
            return FlatBucket(self, b)

    # ------------------------------------------------------------------ state
    @property
    def state(self):
        """``{param index: {"step": int, name: array}}``; the arrays are live views of the state."""
        out = {}
        for idx in self._stateful():
            d = {"step": self._step_of(idx)}
            d.update(self._state.get(idx, {}))
            d.update(self._sstate_of(idx))
            out[idx] = d
        return out

    def _stateful(self):
        """Indices of the parameters that have state: buffers, or a step count (SGD without
        momentum keeps no buffer, but its step count must survive a state_dict round trip)."""
        return [i for i in range(len(self._params)) if self._state.get(i) or self._step_of(i) > 0]

    def _step_of(self, idx):
        if self._buckets is not None:
            b = self._bucket_of.get(idx)
            if b is not None:
                return b.step
        return self._steps.get(idx, 0)

    def _sync_steps(self):
        if self._buckets is not None:
            for b in self._buckets:
                for idx in b.indices:
                    self._steps[idx] = b.step
                    if b.sstate is not None:
                        self._sstates[idx] = dict(b.sstate)

    # ---- scalar state (rules with ``scalar_state``; see the module docstring) -------------------
    def _sstate_of(self, idx):
        """{name: float} of params[idx]'s scalar state ({} for rules without one)."""
        init = self._rule.scalar_state
        if not init:
            return {}
        if self._buckets is not None:
            b = self._bucket_of.get(idx)
            if b is not None:
                return dict(b.sstate)
        return dict(self._sstates.get(idx, init))
    # ---- end of scalar state ---------------------------------------------------------------------

    def _invalidate(self):
        """Drop the buckets (they are rebuilt at the next step), keeping every step count."""
        self._sync_steps()
        self._buckets = None

    def _zeros(self, n, dtype, fill):
        zeros = getattr(self._backend, "zeros", None)
        if zeros is not None:
            return zeros(n, dtype, fill)
        out = np.empty(n, dtype=dtype)
        out.fill(fill)
        return out

    def _to_host(self, a):
        f = getattr(self._backend, "to_host", None)
        return f(a) if f is not None else np.array(a, copy=True)

    def _from_host(self, host, like_shape, dtype):
        f = getattr(self._backend, "from_host", None)
        arr = np.ascontiguousarray(host, dtype=dtype).reshape(like_shape)
        return f(arr) if f is not None else arr.copy()

    def _copy_into(self, dst, src):
        f = getattr(self._backend, "copy_", None)  # device backends: a device-to-device copy
        if f is not None:
            f(dst, src)
        else:
            dst[...] = src

    def _flat_view(self, arrays, infos):
        if not self._device:
            return flat_view(arrays, infos)
        f = getattr(self._backend, "flat_view", None)  # device arrays: adjacency by address
        return f(arrays, infos) if f is not None else None

    # ------------------------------------------------------------------ buckets
    def _check_initial_values(self):
        """Raise ``ValueError`` if a state buffer about to be created would start at a value its
        parameter's dtype cannot hold (Rprop's ``step_size`` starts at the group's lr: lr=1e42 with
        float32 parameters would fill it with inf)."""
        idx = 0
        for gi, group in enumerate(self.param_groups):
            names = self._state_names(group)
            for _ in group["params"]:
                info = self._infos[idx]
                st = self._state.get(idx, {})
                for name in names:
                    if name not in st:
                        fill = self._init_value(group, name)
                        check_scalars({f"initial value of {name!r} (from the group's lr and "
                                       "options)": fill}, f"param_groups[{gi}]", info.dtype)
                idx += 1

    def _build_buckets(self):
        """(Re)group parameters into buckets; move state into flat per-bucket blocks."""
        self._sync_steps()
        keyed = {}
        idx = 0
        none = self._none_mask
        for gi, group in enumerate(self.param_groups):
            names = self._state_names(group)
            for _ in group["params"]:
                if none is None or not none[idx]:
                    st = self._state.get(idx, {})
                    fresh = any(n not in st for n in names)
                    ss = self._sstates.get(idx, self._rule.scalar_state)
                    key = (gi, self._infos[idx].dtype, self._steps.get(idx, 0), fresh,
                           tuple(sorted(ss.items())))
                    keyed.setdefault(key, []).append(idx)
                idx += 1
        buckets = []
        self._bucket_of = {}
        for (gi, dt, step, fresh, ss), indices in keyed.items():
            group = self.param_groups[gi]
            b = _Bucket()
            b.group, b.dtype, b.indices, b.step, b.fresh = gi, np.dtype(dt), indices, step, fresh
            b.sstate = dict(ss) if ss else None
            b.names = self._state_names(group)
            b.sizes = [self._infos[i].size for i in indices]
            b.spec = _precision.group_spec(self._rule, group, b.dtype, b.names)
            b.plan = None
            b.flat = {}
            params = [self._params[i] for i in indices]
            b.param_index = np.array(indices, dtype=np.int64)
            if b.spec is not None:
                self._build_mixed(b, group, params)
                buckets.append(b)
                for i in indices:
                    self._bucket_of[i] = b
                continue
            total = sum(b.sizes)
            for name in b.names:
                block = self._zeros(total, b.dtype, self._init_value(group, name))
                off = 0
                for i, n in zip(indices, b.sizes):
                    st = self._state.setdefault(i, {})
                    view = block[off:off + n].reshape(self._infos[i].shape)
                    old = st.get(name)
                    if old is not None:
                        if not self._device and old.dtype == np.uint8:  # 8-bit codes: read back
                            old = _precision.convert_state(old, st.get(_precision.scale_name(name)),
                                                           name, _P.F32, view.shape)[0]
                        elif self._device and _arrays.inspect(old, name).dtype != b.dtype:
                            # bfloat16 or 8-bit state of a mixed-precision step: read back on
                            # the host
                            sc = st.get(_precision.scale_name(name))
                            old = self._from_host(_precision.convert_state(
                                self._to_host(old), None if sc is None else self._to_host(sc), name,
                                _P.F32, view.shape)[0], view.shape, b.dtype)
                        self._copy_into(view, old)
                    st[name] = view
                    st.pop(_precision.scale_name(name), None)
                    off += n
                b.flat[name] = block
            for i in indices:
                self._state.get(i, {}).pop(_precision.MASTER, None)
            b.param_addrs = np.array([self._infos[i].addr for i in indices], dtype=np.int64)
            b.param_flat = (self._flat_view(params, [self._infos[i] for i in indices])
                            if self._coalesce else None)
            Table = self._backend.Table
            b.tab_multi = Table(b.dtype, b.sizes)
            b.tab_multi.set("param", params, b.param_addrs)
            for name in b.names:
                b.tab_multi.set(name, [self._state[i][name] for i in indices])
            b.tab_flat = None
            if b.param_flat is not None:
                b.tab_flat = Table(b.dtype, [total])
                b.tab_flat.set("param", [b.param_flat])
                for name in b.names:
                    b.tab_flat.set(name, [b.flat[name]])
            b.tab = None
            buckets.append(b)
            for i in indices:
                self._bucket_of[i] = b
        self._buckets = buckets
        self._grads_packed = False

    def _build_mixed(self, b, group, params):
        """State blocks and the :class:`~fastdescent.backends._mixed.MixedPlan` of a bucket with a
        mixed-precision step (``b.spec``): each state buffer in its storage (with block scales for
        8-bit state), a float32 master copy if asked; existing state is converted into it."""
        from ..backends._mixed import MixedPlan

        spec = b.spec
        codes = dict(spec.codes)
        indices = b.indices
        shapes = [self._infos[i].shape for i in indices]
        total = sum(b.sizes)
        states = {}
        dev = self._device  # device arrays: allocated, converted and filled by the backend
        alloc = self._mixed_kernels().zeros if dev else (lambda n, dt: np.zeros(n, dt))
        host = self._to_host if dev else (lambda a: a)

        def _fill(view, vals):  # converted host values into a state view
            if dev:
                self._backend.copy_from_host(view, vals)
            else:
                view[...] = vals
        for name in b.names:
            if self._init_value(group, name) != 0:
                raise ValueError(f"state buffer {name!r} does not start at 0: no mixed-precision "
                                 "step for it")
            code = codes[name]
            q8 = code in (_P.Q8S, _P.Q8U)
            sname = _precision.scale_name(name)
            block = alloc(total, _P.storage_dtype(code))
            nbs = [_P.nblocks(n) for n in b.sizes]
            sblock = alloc(sum(nbs), np.float32) if q8 else None
            arrays, scales = [], []
            off = soff = 0
            for i, n, nb, shape in zip(indices, b.sizes, nbs, shapes):
                st = self._state.setdefault(i, {})
                view = block[off:off + n].reshape(shape)
                old = st.get(name)
                vals = sc = None
                if old is not None:
                    osc = st.get(sname)
                    vals, sc = _precision.convert_state(host(old), None if osc is None else host(osc),
                                                        name, code, shape)
                    _fill(view, vals)
                st[name] = view
                arrays.append(view)
                if q8:
                    sview = sblock[soff:soff + nb]
                    if sc is not None:
                        _fill(sview, sc)
                    st[sname] = sview
                    scales.append(sview)
                    soff += nb
                else:
                    st.pop(sname, None)
                off += n
            b.flat[name] = block
            if q8:
                b.flat[sname] = sblock
            states[name] = (arrays, code, scales if q8 else None)
        masters = None
        if spec.master:
            mblock = alloc(total, np.float32) if dev else np.empty(total, np.float32)
            masters = []
            off = 0
            for i, n, shape, p in zip(indices, b.sizes, shapes, params):
                st = self._state.setdefault(i, {})
                view = mblock[off:off + n].reshape(shape)
                old = st.get(_precision.MASTER)
                if not dev:
                    view[...] = old if old is not None else p.astype(np.float32)
                elif old is not None:
                    self._copy_into(view, old)
                else:
                    self._mixed_mod.decode_into(view, p, spec.pcode)
                st[_precision.MASTER] = view
                masters.append(view)
                off += n
            b.flat[_precision.MASTER] = mblock
        else:
            for i in indices:
                self._state.get(i, {}).pop(_precision.MASTER, None)
        b.plan = MixedPlan(self._rule.name, _precision.plan_arrays([self._infos[i] for i in indices]),
                           spec.pcode, masters, states, b.param_index, spec.seed, spec.stochastic)
        b.param_addrs = b.plan.addr["param"]
        b.param_flat = None
        b.tab_multi = b.tab_flat = b.tab = None

    def _mixed_kernels(self):
        """The backend's mixed-precision step module (``backends/<backend>/mixed.py``)."""
        mod = self.__dict__.get("_mixed_mod")
        if mod is None:
            from ..backends._mixed import mixed_module

            mod = mixed_module(self._backend)
            self._mixed_mod = mod
        return mod

    def _f32_plan(self, b):
        """A float32 bucket's tensors as a mixed-precision plan (for a step with grad_scale)."""
        from ..backends._mixed import MixedPlan, STATE_COLUMNS

        if b.plan is None:
            states = {name: ([self._state[i][name] for i in b.indices], _P.F32, None)
                      for name in STATE_COLUMNS[self._rule.name] if name in b.names}
            b.plan = MixedPlan(self._rule.name,
                               _precision.plan_arrays([self._infos[i] for i in b.indices]), _P.F32,
                               None, states, b.param_index, 0, False)
            b.plan.set_grads(_precision.plan_arrays([self._grad_infos[i] for i in b.indices]))
        return b.plan

    def _write_set(self):
        """Sorted, disjoint (start, end, label) byte ranges of everything a step writes: the
        parameters and the state blocks (per device). Rebuilt when the buckets or params change."""
        if self._write_ranges is None or self._write_ranges[0] is not self._buckets:
            ranges = [(info.device, info.addr, info.addr + info.nbytes, f"params[{i}]")
                      for i, info in enumerate(self._infos) if info.nbytes]
            if self._buckets is not None:
                arrays = [(f"the optimizer state {name!r} of params{list(b.indices)[:3]}"
                           f"{'...' if len(b.indices) > 3 else ''}", arr)
                          for b in self._buckets for name, arr in b.flat.items()]
            else:
                arrays = [(f"optimizer state {name!r} of params[{i}]", arr)
                          for i, st in self._state.items() for name, arr in st.items()]
            for label, arr in arrays:
                info = _arrays.inspect(arr, label)
                if info.nbytes:
                    ranges.append((info.device, info.addr, info.addr + info.nbytes, label))
            ranges.sort()
            keys = [(r[0], r[1]) for r in ranges]
            self._write_ranges = (self._buckets, ranges, keys)
        return self._write_ranges[1], self._write_ranges[2]

    def _grad_template(self):
        """What a new gradient list is checked against in one pass (:meth:`_check_grads_fast`):
        (expected fingerprint columns 2 and 4-11 per parameter, gradient bytes, the host write
        ranges' starts and ends); None where that pass cannot apply (device parameters, more than
        6 dimensions, no one-call fingerprints here). Cached per parameter list and write set."""
        ranges, _keys = self._write_set()
        t = self._gtmpl
        if t is not None and t[0] == len(self._infos) and t[1] is ranges:
            return t[2]
        tmpl = None
        infos = self._infos
        if infos and _prints.available() and all(not i.device and len(i.shape) <= 6 for i in infos):
            want = np.full((len(infos), _prints.SLOTS - 3), -1, np.int64)  # dtype, ndim, dims, 0
            for k, i in enumerate(infos):
                want[k, 0] = id(i.dtype)  # the parameter's dtype object (kept alive by its info)
                want[k, 1] = len(i.shape)
                want[k, 2:2 + len(i.shape)] = i.shape
                want[k, -1] = 0
            nbytes = np.array([i.nbytes for i in infos], np.int64)
            host = [r for r in ranges if not r[0]]
            tmpl = (want, nbytes, np.array([r[1] for r in host], np.int64),
                    np.array([r[2] for r in host], np.int64))
        self._gtmpl = (len(infos), ranges, tmpl)
        return tmpl

    def _check_grads_fast(self, grads):
        """Infos of a new gradient list whose every entry is a plain C-contiguous, aligned ndarray
        with its parameter's dtype object and shape, overlapping nothing a step writes, read in one
        C pass over the list (~10 ns an array instead of ~4 us); None to take the per-array checks
        (anything else, including every error, which they name)."""
        tmpl = self._grad_template()
        if tmpl is None:
            return None
        prints = _prints.array_prints([grads])
        if prints is None:
            return None
        want, nbytes, starts, ends = tmpl
        req = _prints.C_CONTIGUOUS | _prints.ALIGNED
        if (not np.array_equal(prints[:, 4:], want[:, 1:]) or not np.array_equal(prints[:, 2], want[:, 0])
                or ((prints[:, 3] & req) != req).any()):
            return None
        addr = prints[:, 1]
        if starts.size:
            k = np.searchsorted(starts, addr + nbytes, side="left") - 1
            if ((nbytes > 0) & (k >= 0) & (ends[np.maximum(k, 0)] > addr)).any():
                return None
        wflag = _prints.WRITEABLE
        return [_arrays.ArrayInfo(g, pi.shape, pi.dtype, a, True, bool(f & wflag), False, pi.size)
                for g, pi, a, f in zip(grads, self._infos, addr.tolist(), prints[:, 3].tolist())]

    def _check_grads(self, grads):
        n = len(self._params)
        if len(grads) != n:
            raise ValueError(f"grads: expected {n} arrays (one per parameter, in param_groups order), "
                             f"got {len(grads)}")
        fast = self._check_grads_fast(grads)
        if fast is not None:
            return fast, [False] * n
        infos = []
        none = []
        ranges = keys = None
        for i, (g, pinfo) in enumerate(zip(grads, self._infos)):
            if g is None:
                infos.append(None)
                none.append(True)
                continue
            what = f"grads[{i}]"
            info = _arrays.inspect(g, what)
            if info.dtype != pinfo.dtype and info.dtype == _F32 and _low(pinfo.dtype):
                pinfo = _arrays.ArrayInfo(pinfo.obj, pinfo.shape, _F32, pinfo.addr,
                                          pinfo.contiguous, pinfo.writeable, pinfo.device,
                                          pinfo.size)  # float32 gradients of bf16/fp16 params
            _arrays.check_like(info, pinfo, what, f"params[{i}]")
            if info.nbytes:
                if ranges is None:
                    ranges, keys = self._write_set()
                # the write ranges are disjoint and sorted: only the last one starting before the
                # gradient's end can overlap it
                k = bisect.bisect_left(keys, (info.device, info.addr + info.nbytes)) - 1
                if k >= 0 and ranges[k][0] == info.device and ranges[k][2] > info.addr:
                    label = ranges[k][3]
                    if label == f"params[{i}]":
                        raise ValueError(f"{what} shares memory with params[{i}]: a gradient must "
                                         "not alias its parameter")
                    raise ValueError(f"{what} shares memory with {label}: a gradient must not alias "
                                     "memory that the step writes (a parameter or optimizer state)")
            infos.append(info)
            none.append(False)
        return infos, none

    def _prepare_grads(self, grads):
        """Validate the gradients if the gradient arrays changed. Returns True when the kernel tables
        must be (re)packed with them (:meth:`_pack_grads`)."""
        if grads is None:
            if self._arena is None:
                raise TypeError("step() needs grads: a list of arrays aligned with the parameters "
                                "(only an optimizer built on a ParamArena can take its grads itself)")
            grads = self._arena.grads
        if isinstance(grads, np.ndarray) or _arrays.is_device_array(grads):
            grads = [grads]
        elif not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads must be a list of arrays aligned with the parameters, got "
                            f"{type(grads).__name__}")
        ref = self._grads_ref
        if (ref is not None and len(ref) == len(grads) and self._buckets is not None
                and all(map(operator.is_, grads, ref)) and self._grads_layout_unchanged()):
            return not self._grads_packed
        grads = list(grads)
        infos, none = self._check_grads(grads)
        if self._none_mask != none:
            self._none_mask = none
            self._invalidate()
        self._grads_ref = grads
        self._grad_infos = infos
        self._grad_layout = self._layout_of(grads)
        self._grads_packed = False
        return True

    def _layout_of(self, grads):
        """What the identity cache of the gradient list (:meth:`_prepare_grads`) compares besides
        the objects: :func:`layout_checker` of the present arrays; None for device arrays
        (identity only)."""
        if self._device:
            return None
        return layout_checker([g for g in grads if g is not None])

    def _grads_layout_unchanged(self):
        lay = self._grad_layout
        return lay is None or lay()

    def _pack_grads(self):
        infos = self._grad_infos
        for b in self._buckets:
            gs = [infos[i].obj for i in b.indices]  # plain ndarray views (subclasses unwrapped)
            if b.spec is not None:
                b.plan.set_grads(_precision.plan_arrays([infos[i] for i in b.indices]),
                                 np.array([infos[i].addr for i in b.indices], dtype=np.int64))
                b.grad_flat = None
                continue
            if b.plan is not None:  # a float32 bucket's plan for grad_scale steps
                b.plan.set_grads(_precision.plan_arrays([infos[i] for i in b.indices]))
            gflat = None
            if b.tab_flat is not None:
                gflat = self._flat_view(gs, [infos[i] for i in b.indices])
            b.grad_flat = gflat
            if gflat is not None:
                b.tab_flat.set("grad", [gflat])
                b.tab = b.tab_flat
            else:
                addrs = np.array([infos[i].addr for i in b.indices], dtype=np.int64)
                b.tab_multi.set("grad", gs, addrs)
                b.tab = b.tab_multi
        self._grads_packed = True

    def _check_groups(self):
        """Validate every group's hyperparameters, skipping groups unchanged since their last check
        (schedulers and users may edit ``param_groups`` between steps; an unchanged group costs an
        identity comparison of its values instead of a full validation)."""
        if len(self.param_groups) != len(self._plists):
            raise ValueError(f"param_groups has {len(self.param_groups)} groups, the optimizer was "
                             f"built with {len(self._plists)}: add groups with add_param_group(), "
                             "never by editing the list")
        checked = self._checked
        if len(checked) != len(self.param_groups):
            checked = self._checked = [None] * len(self.param_groups)
            self._post_groups = [False] * len(self.param_groups)
        for i, group in enumerate(self.param_groups):
            if not isinstance(group, dict) or group.get("params") is not self._plists[i]:
                raise ValueError(f"param_groups[{i}]['params'] was replaced: the optimizer's tables "
                                 "and state are built from the parameters it was given; use "
                                 "add_param_group() or build a new optimizer")
            # (keys, values, has a mutable value): unchanged means the same keys, every value the
            # same object, and no list/dict/array value (one could have been edited in place)
            keys, values = tuple(group), tuple(group.values())
            old = checked[i]
            if (old is not None and not old[2] and old[0] == keys
                    and all(map(operator.is_, old[1], values))):
                continue
            self._check_group(group)
            self._options_changed = True  # (the buckets' storage may depend on the options)
            # passes only switch off as t grows (a noise sigma_t underflowing), so step 1 says
            # whether this group may have any: groups without skip the per-step query
            self._post_groups[i] = bool(self._rule.post_passes(group, 1))
            checked[i] = (keys, values, any(isinstance(v, (list, dict, np.ndarray))
                                            for k, v in group.items() if k != "params"))
        pc = self._pcheck
        if pc is not None and not pc[0]():
            raise self._param_changed(pc[1], pc[2])

    def _param_changed(self, ps, was):
        """The error for a parameter changed in place since the optimizer took it (its tables and
        state hold its address, dtype and shape): ``p.dtype = ...``, ``p.shape = ...``,
        ``p.resize(..., refcheck=False)`` (which frees and moves the memory), a read-only flag."""
        def show(lay):
            (addr, ro), shape, strides, dtype = lay
            return (f"{dtype}, shape {shape}, strides {strides}, data at {addr:#x}"
                    + (", read-only" if ro else ""))

        for i, (p, old) in enumerate(zip(ps, was)):
            now = _layout(p)
            if now != old:
                return ValueError(f"params[{i}] changed in place since it was given to the optimizer "
                                  f"(now {show(now)}; was {show(old)}): the optimizer's tables and "
                                  "state are built for the array as it was; restore it, or build a "
                                  "new optimizer (state_dict()/load_state_dict() carry the state over)")
        return ValueError("a parameter changed in place since it was given to the optimizer (its "
                          "flags or layout): restore it, or build a new optimizer")

    def _grad_tables(self):
        """One table per dtype over the present gradients (for the finiteness check)."""
        by_dtype = {}
        for i, info in enumerate(self._grad_infos):
            if info is not None:
                by_dtype.setdefault(info.dtype, []).append(i)
        tabs = []
        for dt, idx in by_dtype.items():
            if _low(dt):  # bfloat16/float16: the mixed-precision module's check
                from ..backends._mixed import GradList

                tabs.append(GradList(_precision.plan_arrays([self._grad_infos[i] for i in idx])))
                continue
            tab = self._backend.Table(np.dtype(dt), [self._grad_infos[i].size for i in idx])
            tab.set("grad", [self._grad_infos[i].obj for i in idx],
                    np.array([self._grad_infos[i].addr for i in idx], dtype=np.int64))
            tabs.append(tab)
        return tabs

    def _needs_rebuild(self):
        if self._buckets is None:
            return True
        for b in self._buckets:
            group = self.param_groups[b.group]
            names = self._state_names(group)
            if b.names != names:
                return True
            if self._options_changed and b.spec != _precision.group_spec(self._rule, group, b.dtype,
                                                                          names):
                return True
        self._options_changed = False
        return False

    # ------------------------------------------------------------------ step
    def step(self, grads=None, grad_scale=None):
        """Update every parameter in place from ``grads`` (aligned with the parameters).

        A ``None`` entry skips that parameter (its state and step count do not change), as torch
        skips parameters whose ``.grad`` is None. Nothing is modified if any check fails.

        ``grad_scale`` (a finite float > 0, or None): the gradients were multiplied by it (loss
        scaling); the kernel divides them by it in float32 as it reads them, so no unscaled copy is
        made (:class:`fastdescent.amp.GradScaler`). For float32, bfloat16 and float16 parameters of
        SGD, Adam, AdamW and RMSprop. With ``skip_nonfinite`` the finiteness check reads the
        gradients as passed (scaled) before anything is written.

        Thread-safe: ``step``, ``state_dict``, ``load_state_dict`` and ``add_param_group`` of one
        optimizer are serialised by a per-optimizer lock (separate optimizers run concurrently).
        """
        with self._lock:
            return self._step(grads, grad_scale)

    def _finite(self, kernels):
        finite = kernels["all_finite"]
        for t in self._finite_tabs:
            if hasattr(t, "gcodes"):  # bfloat16/float16 gradients
                if not self._mixed_kernels().grads_finite(t):
                    return False
            elif not finite(t):
                return False
        return True

    def _scaled_step(self, grads, grad_scale):
        """:meth:`step` with ``grad_scale``, skipping (returning False) on a non-finite gradient
        whatever ``skip_nonfinite`` says (:class:`fastdescent.amp.GradScaler`)."""
        with self._lock:
            return self._step(grads, grad_scale, skip=True)

    def _step(self, grads, grad_scale=None, skip=False):
        self._check_groups()
        gscale = 1.0
        if grad_scale is not None:
            gscale = check_loss_scale("grad_scale", grad_scale)
        self._prepare_grads(grads)
        kernels = self._backend.KERNELS
        if self._skip_nonfinite or skip:
            if self._finite_tabs is None or self._finite_for is not self._grads_ref:
                self._finite_tabs = self._grad_tables()
                self._finite_for = self._grads_ref
            if not self._finite(kernels) or (gscale < 1.0 and self._unscale_overflows(gscale)):
                self.last_step_skipped = True
                self.skipped_steps += 1
                return False
        self.last_step_skipped = False
        rebuilt = self._needs_rebuild()
        if rebuilt:
            # what the state was, so that a step refused below leaves it as it was (the rebuild
            # creates the buffers of parameters without state, and refills existing ones)
            saved = {i: dict(st) for i, st in self._state.items()}
        try:
            if rebuilt:
                self._check_initial_values()
                self._build_buckets()
            if not self._grads_packed:
                self._pack_grads()
            # every bucket's scalars first: one that overflows (lr=1e300 / (1 - beta1)) raises
            # before any bucket is updated, identically on every backend
            # (bfloat16/float16 buckets compute in float32: their scalars must fit it too)
            scalars = [check_scalars(self._scalars(self.param_groups[b.group], b.step + 1, b.fresh,
                                                   b.sstate),
                                     f"param_groups[{b.group}]", _F32 if _low(b.dtype) else b.dtype)
                       for b in self._buckets]
            # and the post-update passes' (Rule.post_passes: noise, L1 prox) of the groups that
            # have any
            post = self._post_groups
            passes = [[(name, check_scalars(sc, f"param_groups[{b.group}]", b.dtype)) for name, sc in
                       self._rule.post_passes(self.param_groups[b.group], b.step + 1)]
                      if post[b.group] else () for b in self._buckets] if any(post) else None
            mixed = self._mixed_plans(gscale)
        except (TypeError, ValueError):
            if rebuilt:
                self._invalidate()
                self._state = saved  # no buffers created for a refused step
                self._write_ranges = None
            raise
        kernel = kernels[self._kernel]
        rule = self._rule
        sstates = [None if b.sstate is None else
                   rule.next_scalar_state(self.param_groups[b.group], b.step + 1, b.sstate)
                   for b in self._buckets]
        for k, (b, sc, ss) in enumerate(zip(self._buckets, scalars, sstates)):
            step = b.step + 1
            if mixed is not None and mixed[k] is not None:
                self._mixed_mod.mixed_step(mixed[k], scalars=sc, step=step, grad_scale=gscale)
            else:
                kernel(b.tab, **sc)
            if passes is not None:
                for name, psc in passes[k]:
                    self._post_pass(kernels[name], name, b, psc)
            b.step = step
            if ss is not None:
                b.sstate = ss
            if b.fresh:
                b.fresh = False
        return True

    def _unscale_overflows(self, gscale):
        """True if dividing some (finite) gradient by ``gscale`` < 1 in float32, as the kernels do,
        gives inf: a step that the finiteness check of the scaled gradients would let through, and
        that would write inf/NaN (torch's GradScaler checks the unscaled gradients). Division is
        monotonic, so the largest magnitude of each gradient decides."""
        gs = np.float32(gscale)
        # float32/float64 gradients: the backend's max-|g| reduction over each dtype's table (one
        # pass, on the device for device arrays: only the maximum comes back)
        # (bfloat16/float16 device gradients: the cuda mixed module's reduction of the same kind)
        norm = self._backend.KERNELS["norm_pow_sum"]
        for t in self._finite_tabs:
            if not hasattr(t, "gcodes"):
                top = norm(t, norm_type=math.inf)
            elif self._device:
                top = self._mixed_kernels().grads_absmax(t)
            else:
                continue
            with np.errstate(over="ignore"):
                if not np.isfinite(np.float32(top) / gs):
                    return True
        for info in self._grad_infos:  # bfloat16/float16 host gradients
            if info is None or not info.size or not _low(info.dtype) or info.device:
                continue
            a = info.obj
            top = max(abs(float(np.max(a))), abs(float(np.min(a))))
            with np.errstate(over="ignore"):
                if not np.isfinite(np.float32(top) / gs):
                    return True
        return False

    def _mixed_plans(self, gscale):
        """Per bucket, the mixed-precision plan its step runs (None: the plain kernel), or None
        when every bucket runs its plain kernel. Raises (before anything is written) for a
        grad_scale the bucket cannot apply, or a backend without the mixed step."""
        if gscale == 1.0 and all(b.spec is None for b in self._buckets):
            return None
        self._mixed_kernels()
        out = []
        for b in self._buckets:
            if b.spec is None and gscale == 1.0:
                out.append(None)
                continue
            if b.spec is None:
                if self._rule.name not in _MIXED_RULES:
                    raise ValueError(f"grad_scale is supported by SGD, Adam, AdamW and RMSprop, "
                                     f"not by {type(self).__name__}")
                if b.dtype != _F32:
                    raise ValueError(f"grad_scale needs float32, bfloat16 or float16 parameters; "
                                     f"params[{b.indices[0]}] is {b.dtype}")
                if post_any(self._rule, self.param_groups[b.group]):
                    raise ValueError("grad_scale is not supported together with l1 > 0 or SGD's "
                                     "gradient noise")
                plan = self._f32_plan(b)
            else:
                plan = b.plan
            if b.step + 1 >= 2 ** 32:
                raise ValueError(f"param_groups[{b.group}]: the mixed-precision step counts steps "
                                 "below 2**32")
            out.append(plan)
        return out

    @staticmethod
    def _post_pass(fn, name, b, scalars):
        """Run a post-update pass (``Rule.post_passes``) over bucket ``b``'s parameters. A row with
        per-tensor arguments (``noise``: each tensor's ``param_index``) runs on the bucket's
        uncoalesced table, so a ParamArena bucket gets exactly the values its tensors would get one
        by one; the others (``prox``) run on the table the update used (coalesced when it can be)."""
        per_tensor = _row(name).per_tensor
        if not per_tensor:
            fn(b.tab, **scalars)
            return
        extra = {}
        for arg in per_tensor:
            if arg != "param_index":
                raise KeyError(f"the optimizer has no per-tensor argument {arg!r} for row {name!r}")
            extra[arg] = b.param_index
        fn(b.tab_multi, **extra, **scalars)

    # ------------------------------------------------------------------ state_dict
    #: group keys that torch.optim writes for its own implementation choices: accepted from a
    #: state_dict and ignored (fastdescent always runs its fused multi-tensor kernels), plus the
    #: keys that torch's (and fastdescent's) schedulers add to a group: ``initial_lr``, and
    #: OneCycleLR's / CyclicLR's ``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum``
    #: (restored when the scheduler was built before the load, the order torch recommends).
    _BOOKKEEPING_KEYS = ("foreach", "fused", "capturable", "differentiable", "initial_lr",
                         "max_lr", "min_lr", "max_momentum", "base_momentum")
    #: False for optimizers whose torch state_dict has no ``step`` entry (SGD)
    _step_in_state = True
    #: group values a loaded state_dict cannot change (AdamW stays decoupled, as torch's does)
    _forced_on_load = {}

    def state_dict(self):
        """A torch-like, self-contained copy: ``{"state": {index: {...}}, "param_groups": [...]}``.

        State arrays are host NumPy copies (also for device parameters); ``step`` is an int.
        """
        with self._lock:
            groups = []
            idx = 0
            for group in self.param_groups:
                g = {k: v for k, v in group.items() if k != "params"}
                n = len(group["params"])
                g["params"] = list(range(idx, idx + n))
                idx += n
                groups.append(g)
            state = {}
            for i in self._stateful():
                d = {"step": int(self._step_of(i))}
                for name, arr in self._state.get(i, {}).items():
                    d[name] = self._to_host(arr).copy()
                d.update(self._sstate_of(i))  # floats (scalar state)
                state[i] = d
            return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state produced by :meth:`state_dict` (or torch's, same layout). Exact round trip.

        Atomic: every group, hyperparameter, step count and state array is validated and converted
        before anything changes, so a bad state_dict raises ``ValueError``/``TypeError`` naming the
        entry and leaves the optimizer exactly as it was. Group keys that torch writes for its own
        implementation choices (``foreach``, ``fused``, ``capturable``, ``differentiable``) and
        schedulers' ``initial_lr`` are accepted and ignored; any other key this optimizer does not
        know raises, since it could change the update rule.
        """
        with self._lock:
            new_groups, new_state, new_steps, new_sstates = self._validate_state_dict(state_dict)
            # convert (and, on a device backend, upload) every array before changing anything
            converted = {i: {n: self._from_host(h, h.shape, h.dtype) for n, h in d.items()}
                         for i, d in new_state.items()}
            for mine, g in zip(self.param_groups, new_groups):
                mine.clear()
                mine.update(g)
            self._state = converted
            self._steps = new_steps
            self._sstates = new_sstates
            self._buckets = None
            self._grads_ref = None
            self._finite_tabs = None
            self._write_ranges = None
            self._checked = []
            if any("state_dtype" in g or "master_weights" in g for g in self.param_groups) or any(
                    np.dtype(a.dtype) != self._infos[i].dtype
                    for i, d in new_state.items() for a in d.values()):
                # state stored in bfloat16/8 bits or a master copy, or loaded in another storage:
                # convert it now, so that state_dict() shows the storage the groups ask for (as
                # after a step)
                self._build_buckets()

    def _validate_state_dict(self, state_dict):
        from collections.abc import Mapping, Sequence

        if not isinstance(state_dict, Mapping) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' keys")
        groups, states = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, Sequence) or isinstance(groups, (str, bytes)):
            raise ValueError(f"state_dict['param_groups'] must be a list of dicts, got "
                             f"{type(groups).__name__}")
        if not isinstance(states, Mapping):
            raise ValueError(f"state_dict['state'] must be a dict, got {type(states).__name__}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, the optimizer has "
                             f"{len(self.param_groups)}")
        id_map, owner = {}, {}
        new_groups = []
        idx = 0
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, Mapping):
                raise ValueError(f"state_dict['param_groups'][{gi}] must be a dict, got "
                                 f"{type(saved).__name__}")
            ids = saved.get("params")
            if not isinstance(ids, Sequence) or isinstance(ids, (str, bytes)):
                raise ValueError(f"state_dict['param_groups'][{gi}]['params'] must be a list of "
                                 f"parameter ids, got {type(ids).__name__}")
            if len(ids) != len(mine["params"]):
                raise ValueError(f"state_dict param_groups[{gi}] has {len(ids)} params, the "
                                 f"optimizer's has {len(mine['params'])}")
            for key in ids:
                try:
                    hash(key)
                except TypeError:
                    raise ValueError(f"state_dict['param_groups'][{gi}]['params'] holds an "
                                     f"unhashable id {key!r}") from None
                if key in id_map:
                    raise ValueError(f"state_dict['param_groups'][{gi}]['params']: parameter id "
                                     f"{key!r} appears twice")
                id_map[key] = idx
                owner[idx] = gi
                idx += 1
            g = dict(mine)
            for k, v in saved.items():
                if k == "params" or k in self._BOOKKEEPING_KEYS and k not in mine:
                    continue
                if k not in mine and not (k in _precision.OPTION_KEYS
                                          and self._rule.name in _MIXED_RULES):
                    raise ValueError(
                        f"state_dict['param_groups'][{gi}] has the key {k!r}, which "
                        f"{type(self).__name__} does not know (it keeps "
                        f"{sorted(x for x in mine if x != 'params')}); refusing to ignore it, "
                        "since it may change the update rule: drop it from the state_dict if it "
                        "does not")
                g[k] = v
            g.update(self._forced_on_load)
            try:
                self._check_group(g)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"state_dict['param_groups'][{gi}]: {exc}") from None
            self._check_kernels(g, self._infos[idx - len(ids):idx],
                                f"state_dict['param_groups'][{gi}]: ")
            g["params"] = mine["params"]
            new_groups.append(g)
        new_state, new_steps = {}, {}
        sinit = self._rule.scalar_state
        new_sstates = {}
        mixed_ok = self._rule.name in _MIXED_RULES
        extra_ok = (frozenset(_precision.scale_name(n) for n in self._all_state_names)
                    | {_precision.MASTER}) if mixed_ok else frozenset()
        for key, st in states.items():
            where = f"state_dict['state'][{key!r}]"
            try:
                i = id_map.get(key)
            except TypeError:
                i = None
            if i is None:
                raise ValueError(f"{where} names no parameter of state_dict['param_groups']")
            if not isinstance(st, Mapping):
                raise ValueError(f"{where} must be a dict, got {type(st).__name__}")
            info = self._infos[i]
            needed = self._state_names(new_groups[owner[i]])
            d, step = {}, None
            ss = {}
            spec, extra, codes = None, {}, {}
            if mixed_ok:
                try:
                    spec = _precision.group_spec(self._rule, new_groups[owner[i]], info.dtype,
                                                 needed)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc}") from None
            for name, val in st.items():
                if name == "step":
                    step = _state_step(val, f"{where}['step']")
                    continue
                if name in extra_ok:  # block scales of 8-bit state, the master copy
                    extra[name] = _state_float32(val, f"{where}[{name!r}]")
                    continue
                if (mixed_ok and name in self._all_state_names and val is not None
                        and (spec is not None or _codes_or_low(val))):
                    host = _state_float32(val, f"{where}[{name!r}]", codes_ok=True)
                    if host.dtype == np.uint8:  # 8-bit codes
                        if host.shape != tuple(info.shape):
                            raise ValueError(f"{where}[{name!r}] has shape {host.shape}, "
                                             f"params[{i}] has shape {tuple(info.shape)}")
                        codes[name] = host
                        continue
                    if spec is not None:  # kept as float32, converted to the storage at the step
                        if host.shape != tuple(info.shape):
                            raise ValueError(f"{where}[{name!r}] has shape {host.shape}, "
                                             f"params[{i}] has shape {tuple(info.shape)}")
                        d[name] = host
                        continue
                    # bfloat16 values for a plain group: read back exactly (as 8-bit codes are)
                    val = host if host.dtype.kind in "fiu" else host.astype(np.float32)
                if name in sinit:  # scalar state: a float (a 0-d tensor in torch's state_dicts)
                    try:
                        ss[name] = self._rule.check_scalar_state(name, val, f"{where}[{name!r}]")
                    except TypeError as exc:
                        raise ValueError(str(exc)) from None
                    continue
                if name not in self._all_state_names:
                    raise ValueError(f"{where} has an unknown entry {name!r}; "
                                     f"{type(self).__name__} keeps "
                                     f"{('step',) + self._all_state_names + tuple(sinit)}")
                if val is None and name not in needed:
                    continue  # torch writes e.g. momentum_buffer=None when there is none
                d[name] = _state_array(val, info, f"{where}[{name!r}]", i)
            if codes or extra:
                self._load_mixed_extras(d, codes, extra, spec, info, where, i)
            if d or (step or 0) > 0:
                missing = [n for n in self._core_state_names if n in needed and n not in d]
                if missing:
                    raise ValueError(f"{where} lacks {missing}, which params[{i}]'s group needs "
                                     f"(it holds {sorted(st)})")
                if step is None and self._step_in_state:
                    raise ValueError(f"{where} lacks 'step' (the step count its buffers belong to)")
                missing = [n for n in sinit if n not in ss]
                if missing:
                    raise ValueError(f"{where} lacks {missing}, which {type(self).__name__} keeps "
                                     f"with its step count (it holds {sorted(st)})")
            if step is not None:
                new_steps[i] = step
            if ss and (d or (step or 0) > 0):
                new_sstates[i] = ss
            new_state[i] = d
        return new_groups, new_state, new_steps, new_sstates

    def _load_mixed_extras(self, d, codes, extra, spec, info, where, i):
        """Pair loaded 8-bit codes with their block scales and take a master copy: kept as they are
        for a group with a mixed-precision step (converted to its storage at the next step),
        read back into the parameter's dtype otherwise (a master copy is then dropped)."""
        shape = tuple(info.shape)
        for name, c in codes.items():
            sname = _precision.scale_name(name)
            sc = extra.get(sname)
            if sc is None:
                raise ValueError(f"{where}[{name!r}] holds 8-bit codes (uint8) but the state has no "
                                 f"{sname!r} (their block scales)")
            nb = _P.nblocks(info.size)
            if sc.shape != (nb,):
                raise ValueError(f"{where}[{sname!r}] has shape {sc.shape}, expected ({nb},) (one "
                                 f"scale per {_P.BLOCK} elements of params[{i}])")
            bad = (sc < 0) | np.isinf(sc)  # (NaN is a block that held a non-finite value)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{where}[{sname!r}] holds {sc[k]!r} at block {k}; a block scale "
                                 "is >= 0 and finite (or NaN for a block that held inf/NaN)")
            if spec is not None:
                d[name] = c
                d[sname] = sc
            else:
                vals = _P.q8_dequantize(c, sc, _precision.state_map(name)).reshape(shape)
                d[name] = _state_array(vals, info, f"{where}[{name!r}]", i)
        for sname in extra:
            if sname != _precision.MASTER and sname[:-len("_scale")] not in codes:
                raise ValueError(f"{where}[{sname!r}] has no 8-bit codes "
                                 f"{sname[:-len('_scale')]!r} to go with it")
        m = extra.get(_precision.MASTER)
        if m is not None and spec is not None and spec.master:
            if m.shape != shape:
                raise ValueError(f"{where}[{_precision.MASTER!r}] has shape {m.shape}, params[{i}] "
                                 f"has shape {shape}")
            d[_precision.MASTER] = m

    def __repr__(self):
        lines = [f"{type(self).__name__} (backend={self.backend!r})"]
        for i, g in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={v!r}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} params, {hp}")
        return "\n".join(lines)




def _state_step(val, where):
    """A step count from a state_dict: an int, an integral float, or a 0-d array/tensor of one."""
    if hasattr(val, "detach") and hasattr(val, "cpu"):  # a torch tensor (torch keeps step as one)
        val = val.detach().cpu()
        val = val.double() if val.is_floating_point() else val
        val = val.numpy()
    if isinstance(val, np.ndarray):
        if val.shape not in ((), (1,)):
            raise ValueError(f"{where} must be a scalar, got an array of shape {val.shape}")
        val = val.reshape(()).item() if val.dtype.kind in "iuf" else val
    if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where} must be a non-negative integer, got {type(val).__name__} {val!r}")
    if isinstance(val, (float, np.floating)):
        if not math.isfinite(val) or val != math.floor(val):
            raise ValueError(f"{where} must be a non-negative integer, got {val!r}")
    step = int(val)
    if not 0 <= step < 2 ** 62:
        raise ValueError(f"{where} must be a non-negative integer below 2**62, got {val!r}")
    return step


def _codes_or_low(val):
    """True for a state_dict value holding 8-bit codes (uint8) or bfloat16/float16 numbers."""
    dt = getattr(val, "dtype", None)
    if isinstance(val, np.ndarray):
        return dt == np.uint8 or _P.code_of_dtype(dt) in (_P.BF16, _P.F16)
    return str(dt) in ("torch.uint8", "torch.bfloat16", "torch.float16")


def _state_float32(val, where, codes_ok=False):
    """A host array from a state_dict value: float32 for real values (wider floats must stay
    finite); with ``codes_ok``, uint8 (8-bit codes) and bfloat16/float16 arrays kept as they are."""
    if hasattr(val, "detach") and hasattr(val, "cpu"):  # torch tensor, on any device
        val = val.detach().cpu()
        if val.is_floating_point() and val.element_size() < 4:
            val = val.float()
        val = val.numpy()
    if not isinstance(val, (np.ndarray, list, tuple)):
        raise ValueError(f"{where} must be an array (NumPy array or torch tensor), got "
                         f"{type(val).__name__}")
    try:
        host = np.asarray(val)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where} is not an array of numbers: {exc}") from None
    if codes_ok and (host.dtype == np.uint8 or _P.code_of_dtype(host.dtype) in (_P.BF16, _P.F16)):
        return np.array(host, order="C", copy=True)  # codes, or bf16/fp16 values kept as they are
    if _P.code_of_dtype(host.dtype) is None and host.dtype.kind not in "fiu":
        raise ValueError(f"{where} has dtype {host.dtype}; state must hold real numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(host, dtype=np.float32, order="C", copy=True)
        if host.dtype.kind == "f" and host.dtype.itemsize > 4:
            bad = np.isfinite(host) & ~np.isfinite(out)
            if bad.any():
                raise ValueError(f"{where} holds values that overflow float32")
    return out


def _state_array(val, info, where, i):
    """A host float array with params[i]'s shape, from a state_dict value (NumPy array, torch
    tensor, or nested list). Values that are finite before the conversion to the parameter's dtype
    must stay finite after it (1e300 into float32 is an error, not an inf)."""
    if hasattr(val, "detach") and hasattr(val, "cpu"):  # torch tensor, on any device
        val = val.detach().cpu()
        if getattr(val, "is_complex", lambda: False)():
            raise ValueError(f"{where} is a complex tensor; state must be real")
        if val.is_floating_point() and val.element_size() < 4:  # bfloat16/float16: no NumPy view
            val = val.float()
        val = val.numpy()
    if isinstance(val, np.ma.MaskedArray):
        raise ValueError(f"{where} is a masked array; state must be a plain array")
    if not isinstance(val, (np.ndarray, list, tuple, float, int, np.floating, np.integer)) \
            or isinstance(val, (bool, np.bool_)):
        raise ValueError(f"{where} must be a real array (NumPy array or torch tensor), got "
                        f"{type(val).__name__}")
    try:
        host = np.asarray(val)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where} is not an array of numbers: {exc}") from None
    if host.dtype.kind not in "fiu":
        raise ValueError(f"{where} has dtype {host.dtype}; state must hold real numbers "
                        "(float or int)")
    if host.shape != tuple(info.shape):
        raise ValueError(f"{where} has shape {host.shape}, params[{i}] has shape {tuple(info.shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(host, dtype=info.dtype, order="C", copy=True)
    if host.dtype.kind == "f" and host.dtype.itemsize > info.dtype.itemsize:
        with np.errstate(over="ignore", invalid="ignore"):
            bad = np.isfinite(host) & ~np.isfinite(out)
        if bad.any():
            k = int(np.flatnonzero(bad.reshape(-1))[0])
            raise ValueError(f"{where} holds {host.reshape(-1)[k]!r}, which overflows "
                             f"{info.dtype} (params[{i}]'s dtype)")
    elif host.dtype.kind in "iu" and host.size:
        if not np.isfinite(out).all():
            raise ValueError(f"{where} holds integers too large for {info.dtype}")
    return out
