"""The optimizer base class: param groups, dtype buckets, state, validation, state_dict.

How a step runs
---------------
Parameters are grouped into *buckets*: one per (param group, dtype, step count, fresh-state flag). A
bucket owns a backend tensor table whose param and state columns are fixed; optimizer state of a bucket
lives in one flat block per state name (per-parameter state arrays are views into it). A step is:

1. validate every group's hyperparameters, and the gradients when the gradient arrays changed identity
   since the last step (a training loop that reuses its gradient buffers pays this once);
2. compute the per-step scalars in float64 (subclass ``_scalars``) and call the bucket's kernel once.

Nothing is modified until every check has passed. When a bucket's parameters, gradients and state are
each adjacent views of one block (a :class:`~fastdescent.arena.ParamArena`, or state, always), the table
is coalesced to one flat tensor, so a whole model's update is one pass over memory.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import _arrays
from .._arrays import flat_view
from ..backends import resolve

__all__ = ["Optimizer", "check_hyper"]


def check_hyper(name, value, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    """Validate a hyperparameter: a finite real number within [lo, hi] (open ends if asked).

    Raises ``TypeError``/``ValueError`` whose message names ``name``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return v


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


class _Bucket:
    __slots__ = ("group", "dtype", "indices", "step", "fresh", "names", "flat", "sizes", "tab_multi",
                 "tab_flat", "tab", "param_flat", "param_addrs")


class Optimizer:
    """Base class of fastdescent's optimizers (torch.optim-like).

    Subclasses set ``_kernel`` (a contract row) and implement ``_check_group(group)``,
    ``_state_names(group)``, ``_init_value(group, name)`` and ``_scalars(group, step, fresh)``.

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
    """

    _kernel = None
    #: every state buffer name this optimizer may hold (for load_state_dict validation)
    _all_state_names = ()

    def __init__(self, params, defaults, *, backend=None, skip_nonfinite=False):
        from ..arena import ParamArena

        self.defaults = dict(defaults)
        self.skip_nonfinite = _check_flag("skip_nonfinite", skip_nonfinite)
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
        self._requested_backend = backend
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)
        self._state = {}  # param index -> {state name: array}
        self._steps = {}  # param index -> step count (for params not currently in a bucket)
        self._buckets = None
        self._grads_ref = None
        self._grad_infos = None
        self._none_mask = None
        self._finite_tabs = None
        self._checked = []

    # ------------------------------------------------------------------ groups and params
    @property
    def backend(self):
        """Public name of the backend this optimizer runs on."""
        return self._backend.NAME

    def add_param_group(self, param_group):
        """Add a param group (dict with ``"params"`` and optional hyperparameters)."""
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
            _arrays.check_param(info, what)
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
        group["params"] = ps
        self._check_group(group)
        if self._backend is None:
            self._backend = resolve(self._requested_backend, device=bool(self._device))
        self.param_groups.append(group)
        self._params.extend(ps)
        self._infos.extend(infos)
        if getattr(self, "_buckets", None) is not None:
            self._invalidate()
        self._grads_ref = None

    # ------------------------------------------------------------------ subclass hooks
    def _check_group(self, group):
        raise NotImplementedError

    def _state_names(self, group):
        """Names of the state buffers this group's options need, in contract column order."""
        raise NotImplementedError

    def _init_value(self, group, name):
        return 0.0

    def _scalars(self, group, step, fresh):
        """Kernel scalars (a dict, float64) for a bucket about to take step number ``step``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    @property
    def state(self):
        """``{param index: {"step": int, name: array}}``; the arrays are live views of the state."""
        out = {}
        for idx, st in self._state.items():
            d = {"step": self._step_of(idx)}
            d.update(st)
            out[idx] = d
        return out

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
                    key = (gi, self._infos[idx].dtype.str, self._steps.get(idx, 0), fresh)
                    keyed.setdefault(key, []).append(idx)
                idx += 1
        buckets = []
        self._bucket_of = {}
        for (gi, dt, step, fresh), indices in keyed.items():
            group = self.param_groups[gi]
            b = _Bucket()
            b.group, b.dtype, b.indices, b.step, b.fresh = gi, np.dtype(dt), indices, step, fresh
            b.names = self._state_names(group)
            b.sizes = [self._infos[i].size for i in indices]
            total = sum(b.sizes)
            b.flat = {}
            for name in b.names:
                block = self._zeros(total, b.dtype, self._init_value(group, name))
                off = 0
                for i, n in zip(indices, b.sizes):
                    st = self._state.setdefault(i, {})
                    view = block[off:off + n].reshape(self._infos[i].shape)
                    old = st.get(name)
                    if old is not None:
                        self._copy_into(view, old)
                    st[name] = view
                    off += n
                b.flat[name] = block
            params = [self._params[i] for i in indices]
            b.param_addrs = np.array([self._infos[i].addr for i in indices], dtype=np.int64)
            b.param_flat = self._flat_view(params, [self._infos[i] for i in indices])
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

    def _check_grads(self, grads):
        n = len(self._params)
        if len(grads) != n:
            raise ValueError(f"grads: expected {n} arrays (one per parameter, in param_groups order), "
                             f"got {len(grads)}")
        infos = []
        none = []
        for i, (g, pinfo) in enumerate(zip(grads, self._infos)):
            if g is None:
                infos.append(None)
                none.append(True)
                continue
            what = f"grads[{i}]"
            info = _arrays.inspect(g, what)
            if info.device != pinfo.device:
                raise ValueError(f"{what} is a {'device' if info.device else 'host'} array but "
                                 f"params[{i}] is a {'device' if pinfo.device else 'host'} array")
            if info.shape != pinfo.shape:
                raise ValueError(f"{what} has shape {info.shape}, expected {pinfo.shape} "
                                 f"(the shape of params[{i}])")
            if info.dtype != pinfo.dtype:
                raise TypeError(f"{what} has dtype {info.dtype}, expected {pinfo.dtype} "
                                f"(the dtype of params[{i}])")
            if not info.contiguous:
                raise ValueError(f"{what} is not C-contiguous")
            if info.overlaps(pinfo):
                raise ValueError(f"{what} shares memory with params[{i}]: a gradient must not alias "
                                 "its parameter")
            infos.append(info)
            none.append(False)
        return infos, none

    def _prepare_grads(self, grads):
        """Validate and (re)pack the gradient columns if the gradient arrays changed."""
        if grads is None:
            if self._arena is None:
                raise TypeError("step() needs grads: a list of arrays aligned with the parameters "
                                "(only an optimizer built on a ParamArena can take its grads itself)")
            grads = self._arena.grads
        if isinstance(grads, np.ndarray) or _arrays.is_device_array(grads):
            grads = [grads]
        ref = self._grads_ref
        if (ref is not None and len(ref) == len(grads) and self._buckets is not None
                and all(map(operator.is_, grads, ref))):
            return False
        grads = list(grads)
        infos, none = self._check_grads(grads)
        if self._none_mask != none:
            self._none_mask = none
            self._invalidate()
        self._grads_ref = grads
        self._grad_infos = infos
        return True

    def _pack_grads(self):
        grads, infos = self._grads_ref, self._grad_infos
        for b in self._buckets:
            gs = [grads[i] for i in b.indices]
            gflat = None
            if b.tab_flat is not None:
                gflat = self._flat_view(gs, [infos[i] for i in b.indices])
            if gflat is not None:
                b.tab_flat.set("grad", [gflat])
                b.tab = b.tab_flat
            else:
                addrs = np.array([infos[i].addr for i in b.indices], dtype=np.int64)
                b.tab_multi.set("grad", gs, addrs)
                b.tab = b.tab_multi

    def _check_groups(self):
        """Validate every group's hyperparameters, skipping groups unchanged since their last check
        (schedulers and users may edit ``param_groups`` between steps; an unchanged group costs one
        tuple comparison instead of a full validation)."""
        checked = self._checked
        if len(checked) != len(self.param_groups):
            checked = self._checked = [None] * len(self.param_groups)
        for i, group in enumerate(self.param_groups):
            snap = tuple(kv for kv in group.items() if kv[0] != "params")
            old = checked[i]
            if old is not None and len(old) == len(snap) and all(
                    a[0] == b[0] and a[1] is b[1] and not isinstance(b[1], (list, dict, np.ndarray))
                    for a, b in zip(old, snap)):
                continue
            self._check_group(group)
            checked[i] = snap

    def _grad_tables(self):
        """One table per dtype over the present gradients (for the finiteness check)."""
        by_dtype = {}
        for i, info in enumerate(self._grad_infos):
            if info is not None:
                by_dtype.setdefault(info.dtype.str, []).append(i)
        tabs = []
        for dt, idx in by_dtype.items():
            tab = self._backend.Table(np.dtype(dt), [self._grad_infos[i].size for i in idx])
            tab.set("grad", [self._grads_ref[i] for i in idx],
                    np.array([self._grad_infos[i].addr for i in idx], dtype=np.int64))
            tabs.append(tab)
        return tabs

    def _needs_rebuild(self):
        if self._buckets is None:
            return True
        for b in self._buckets:
            if b.names != self._state_names(self.param_groups[b.group]):
                return True
        return False

    # ------------------------------------------------------------------ step
    def step(self, grads=None):
        """Update every parameter in place from ``grads`` (aligned with the parameters).

        A ``None`` entry skips that parameter (its state and step count do not change), as torch
        skips parameters whose ``.grad`` is None. Nothing is modified if any check fails.
        """
        self._check_groups()
        changed = self._prepare_grads(grads)
        kernels = self._backend.KERNELS
        if self.skip_nonfinite:
            if changed or self._finite_tabs is None:
                self._finite_tabs = self._grad_tables()
            finite = kernels["all_finite"]
            if not all(finite(t) for t in self._finite_tabs):
                self.last_step_skipped = True
                self.skipped_steps += 1
                return False
            self.last_step_skipped = False
        if self._needs_rebuild():
            self._build_buckets()
            changed = True
        if changed:
            self._pack_grads()
        kernel = kernels[self._kernel]
        for b in self._buckets:
            step = b.step + 1
            kernel(b.tab, **self._scalars(self.param_groups[b.group], step, b.fresh))
            b.step = step
            if b.fresh:
                b.fresh = False
        return True

    # ------------------------------------------------------------------ state_dict
    def state_dict(self):
        """A torch-like, self-contained copy: ``{"state": {index: {...}}, "param_groups": [...]}``.

        State arrays are host NumPy copies (also for device parameters); ``step`` is an int.
        """
        groups = []
        idx = 0
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            n = len(group["params"])
            g["params"] = list(range(idx, idx + n))
            idx += n
            groups.append(g)
        state = {}
        for i, st in self._state.items():
            d = {"step": int(self._step_of(i))}
            for name, arr in st.items():
                d[name] = self._to_host(arr).copy()
            state[i] = d
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state produced by :meth:`state_dict` (or torch's, same layout). Exact round trip.

        Validates everything (group count and sizes, state shapes, names) before changing anything.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' keys")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, the optimizer has "
                             f"{len(self.param_groups)}")
        id_map = {}
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(mine["params"]):
                raise ValueError(f"state_dict param_groups[{gi}] has {len(saved['params'])} params, "
                                 f"the optimizer's has {len(mine['params'])}")
        idx = 0
        for saved in groups:
            for key in saved["params"]:
                id_map[key] = idx
                idx += 1
        new_groups = []
        for saved, mine in zip(groups, self.param_groups):
            g = dict(mine)
            g.update({k: v for k, v in saved.items() if k != "params"})
            g["params"] = mine["params"]
            self._check_group(g)
            new_groups.append(g)
        new_state, new_steps = {}, {}
        for key, st in state_dict["state"].items():
            if key not in id_map:
                raise ValueError(f"state_dict['state'] has an entry {key!r} that names no parameter")
            i = id_map[key]
            info = self._infos[i]
            d = {}
            for name, val in st.items():
                if name == "step":
                    s = float(np.asarray(val))
                    if not math.isfinite(s) or s < 0 or s != int(s):
                        raise ValueError(f"state_dict['state'][{key!r}]['step'] must be a "
                                         f"non-negative integer, got {val!r}")
                    new_steps[i] = int(s)
                    continue
                if name not in self._all_state_names:
                    raise ValueError(f"state_dict['state'][{key!r}] has an unknown entry {name!r}; "
                                     f"{type(self).__name__} keeps {('step',) + self._all_state_names}")
                host = np.asarray(val.cpu() if hasattr(val, "cpu") else val)
                if host.size != info.size:
                    raise ValueError(f"state_dict['state'][{key!r}][{name!r}] has {host.size} "
                                     f"elements, params[{i}] has {info.size}")
                d[name] = host
            new_state[i] = d
        # everything checked: apply
        for mine, g in zip(self.param_groups, new_groups):
            mine.clear()
            mine.update(g)
        self._state = {i: {n: self._from_host(h, self._infos[i].shape, self._infos[i].dtype)
                           for n, h in d.items()} for i, d in new_state.items()}
        self._steps = new_steps
        self._buckets = None
        self._grads_ref = None

    def __repr__(self):
        lines = [f"{type(self).__name__} (backend={self.backend!r})"]
        for i, g in enumerate(self.param_groups):
            hp = ", ".join(f"{k}={v!r}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} params, {hp}")
        return "\n".join(lines)
