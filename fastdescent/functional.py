"""Stateless functional API: one optimizer step over lists of arrays the caller owns.

For libraries that keep their own optimizer state. Each function validates its arguments (shapes,
dtypes, contiguity, alignment, aliasing, hyperparameters; nothing is modified if a check fails), groups
the tensors by dtype and makes one multi-tensor kernel call per dtype on the chosen backend.

Validated tables are cached by array identity: a loop that passes the same array objects every call
pays the per-array inspection once (the last tables of each kind keep their arrays alive; release
them with :func:`clear_cache`). ``check=False`` skips the aliasing checks between arrays (an
O(n log n) sweep); the per-array checks that keep every kernel inside each array's memory always run.

The hyperparameter checks and the per-step scalars come from the same rules (``fastdescent.rules``)
the optimizer classes use, so the functional and class APIs give identical numbers.

Examples
--------
>>> import numpy as np
>>> from fastdescent import functional as F
>>> p = [np.ones(4, np.float32)]; g = [np.ones(4, np.float32)]
>>> m = [np.zeros(4, np.float32)]; v = [np.zeros(4, np.float32)]
>>> F.adam(p, g, m, v, step=1, lr=0.1)
>>> p[0]
array([0.9, 0.9, 0.9, 0.9], dtype=float32)
"""

from __future__ import annotations

import math
import operator
import warnings

import numpy as np

from . import _arrays
from .backends import resolve
from ._prints import array_prints, prints_equal
from .rules import check_flag, check_real, check_scalars
from .rules.adadelta import ADADELTA
from .rules.adagrad import ADAGRAD
from .rules.adam import ADAM
from .rules.adamax import ADAMAX
from .rules.lamb import LAMB
from .rules.lion import LION
from .rules.nadam import NADAM
from .rules.radam import RADAM
from .rules.rmsprop import RMSPROP
from .rules.rprop import RPROP, check_etas, check_step_sizes
from .rules.sgd import SGD, check_noise

__all__ = ["sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "radam", "adamax", "adadelta",
           "rprop", "lion", "lamb", "prox_l1", "sgd_noise", "clip_grad_norm_", "clip_grad_value_",
           "all_finite", "clear_cache"]


def _as_list(x, name):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return x  # the caller's own sequence: the cache keeps a copy (see _tables)
    if isinstance(x, np.ndarray) or _arrays.is_device_array(x):
        return [x]
    raise TypeError(f"{name} must be a list of arrays, got {type(x).__name__}")


#: the last validated tables per (backend, columns, check): {key: (lists, fingerprints, tables)}. An
#: entry holds strong references to the arrays it was built over (their memory cannot be freed), and
#: each array's data address, shape, strides and dtype: a call with the very same array objects,
#: unchanged, reuses the tables instead of inspecting every array again.
_CACHE = {}
_CACHE_MAX = 16


def _tables(backend, columns, check=True):
    """Validate ``columns`` and build one backend table per dtype.

    ``columns`` maps a contract column name to ``(argument name, list or None, written?)``, or
    ``(argument name, list or None, written?, required?)`` (default: required). The first column is
    the reference: every other column must match it array by array in shape and dtype. Error
    messages use the caller's argument names (``grads[3]``, ``exp_avgs[0]``...).

    ``check=False`` skips the aliasing checks (O(n log n) over the arrays); the O(1) per-array checks
    that keep the kernels within each array's memory (dtype, size, contiguity, alignment, writeable)
    always run. Tables are cached by array identity (see ``_CACHE``), so a loop that passes the same
    arrays every call pays the per-array inspection once.
    Returns (backend module, [table, ...]).
    """
    lists = {}
    sig = []
    n = -1
    for name, spec in columns.items():
        lst = _as_list(spec[1], spec[0])
        if lst is None and (len(spec) < 4 or spec[3]):
            raise ValueError(f"{spec[0]}: required, got None")
        if n < 0:  # the reference column
            if not lst:
                raise ValueError(f"{spec[0]}: expected a non-empty list of arrays")
            n, ref_arg = len(lst), spec[0]
        elif lst is not None and len(lst) != n:
            raise ValueError(f"{spec[0]}: expected {n} arrays (one per entry of {ref_arg}), "
                             f"got {len(lst)}")
        lists[name] = lst
        sig.append((name, lst is None, spec[2]))
    first = next(iter(lists.values()))
    device = _arrays.is_device_array(first[0])
    mod = resolve(backend, device=device)
    key = (mod.NAME, tuple(sig), bool(check))
    cols = [lst for lst in lists.values() if lst is not None]
    hit = _CACHE.get(key)
    if hit is not None:
        cached, prints, tables, cached_fast, _dtypes = hit
        if cached_fast is not None:
            # one C pass over all arrays, compared there with the cached entry's prints. The object
            # addresses are in the prints: equal prints = the same (still referenced) objects with
            # the same data address, dtype, flags and shape. Unreadable now (an array reshaped
            # beyond 6-d, ...): a miss, revalidated below.
            if prints_equal(cols, cached_fast):
                return mod, tables
        elif all(lst is None or (len(lst) == len(cached[name])
                                 and all(map(operator.is_, lst, cached[name])))
                 for name, lst in lists.items()) and all(
                     list(map(_fingerprint, lst)) == prints[name] for name, lst in lists.items()
                     if lst is not None):
            return mod, tables
    # a miss: validate and build over copies of the lists (another thread may change the caller's
    # lists meanwhile), and take the prints the cache keeps from those very copies
    names = list(columns)
    arg = {name: columns[name][0] for name in names}
    written = {name: columns[name][2] for name in names}
    lists = {name: None if lists[name] is None else list(lists[name]) for name in names}
    fast = None if device else array_prints([lists[name] for name in names if lists[name] is not None])
    first_infos = []
    w_infos = []
    for i in range(n):
        ref = None
        infos = []
        for name in names:
            arrs = lists[name]
            if arrs is None:
                continue
            what = f"{arg[name]}[{i}]"
            info = _arrays.inspect(arrs[i], what)
            if info.device != device:
                raise ValueError(f"{what}: mixing host and device arrays is not supported")
            if ref is None:
                ref = info
                first_infos.append(info)
                if written[name]:
                    _arrays.check_param(info, what)
                elif info.dtype not in _arrays.SUPPORTED_DTYPES or not info.contiguous:
                    raise TypeError(f"{what} must be a C-contiguous float32/float64 array")
                else:
                    _arrays.check_aligned(info, what)
            else:
                _arrays.check_like(info, ref, what, f"{arg[names[0]]}[{i}]")
                if written[name] and not info.writeable:
                    raise ValueError(f"{what} is read-only")
            infos.append((what, info))
            if written[name]:
                w_infos.append((what, info))
        if check:
            for a in range(len(infos)):
                for b in range(a + 1, len(infos)):
                    if infos[a][1].overlaps(infos[b][1]):
                        raise ValueError(f"{infos[b][0]} shares memory with {infos[a][0]}")
    if check:
        clash = _arrays.find_overlap([info for _, info in w_infos])
        if clash is not None:
            i, j = clash
            raise ValueError(f"{w_infos[j][0]} shares memory with {w_infos[i][0]}")
    by_dtype = {}
    for i, info in enumerate(first_infos):
        by_dtype.setdefault(info.dtype.str, []).append(i)
    plain = {name: None if lists[name] is None else [_plain(a) for a in lists[name]] for name in names}
    tables = []
    for dt, idx in by_dtype.items():
        tab = mod.Table(np.dtype(dt), [first_infos[i].size for i in idx])
        for name in names:
            arrs = plain[name]
            tab.set(name, None if arrs is None else [arrs[i] for i in idx])
        tab.positions = np.array(idx, dtype=np.int64)  # where its tensors are in the caller's lists
        tables.append(tab)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = ({name: lists[name] for name in names},
                   None if fast is not None else {name: list(map(_fingerprint, lists[name]))
                                                  for name in names if lists[name] is not None},
                   tables, fast,
                   # the dtype objects, kept alive: the prints hold their addresses, and one freed
                   # by ``g.dtype = ...`` could come back at the same address as another dtype
                   None if fast is None else [a.dtype for name in names if lists[name] is not None
                                             for a in lists[name]])
    return mod, tables


def _fingerprint(a):
    """What a packed table relies on besides the array's identity: its data address, shape,
    strides, dtype and writeability (all of which can change in place: ``resize(refcheck=False)``,
    ``a.shape = ...``, ``a.flags.writeable = False``), so a cached table is never used over memory
    that moved or became read-only (~1 us an array)."""
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"], a.shape, a.strides, a.dtype
    cai = a.__cuda_array_interface__
    return cai["data"], tuple(cai["shape"]), cai.get("strides"), cai["typestr"]


def clear_cache():
    """Drop the cached tables (and with them the references to the arrays of the last calls)."""
    _CACHE.clear()


def _plain(a):
    """A plain ndarray view of an ndarray subclass (np.matrix, np.memmap...); anything else as is."""
    return a.view(np.ndarray) if isinstance(a, np.ndarray) and type(a) is not np.ndarray else a


def _run(kernel, mod, tables, scalars):
    for tab in tables:  # every table's scalars first: nothing is written if one cannot run
        check_scalars(scalars, kernel, tab.dtype)
    fn = mod.KERNELS[kernel]
    for tab in tables:
        fn(tab, **scalars)


def sgd(params, grads, momentum_buffers=None, *, lr=1e-3, momentum=0.0, dampening=0.0,
        weight_decay=0.0, nesterov=False, maximize=False, first_step=False, backend=None, check=True):
    """One SGD step (see :class:`fastdescent.SGD`). ``momentum_buffers`` is required when
    momentum != 0; ``first_step=True`` initialises them to the gradient (torch's first step)."""
    hp = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
              nesterov=nesterov, maximize=maximize)
    SGD.check(hp)
    if momentum != 0 and momentum_buffers is None:
        raise ValueError("momentum_buffers: required when momentum != 0")
    bufs = momentum_buffers if momentum != 0 else None
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "momentum_buffer": ("momentum_buffers", bufs, True, False)}, check)
    _run("sgd", mod, tabs, SGD.scalars(hp, 1, first_step))


def _check_step(step):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an int >= 1 (the step count after incrementing), got {step!r}")


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3,
         betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
         decoupled=False, backend=None, check=True):
    """One Adam step (AdamW if ``decoupled``); ``step`` is t, 1 on the first step."""
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
              maximize=maximize, decoupled_weight_decay=decoupled)
    ADAM.check(hp)
    _check_step(step)
    if amsgrad and max_exp_avg_sqs is None:
        raise ValueError("max_exp_avg_sqs: required when amsgrad=True")
    vmax = max_exp_avg_sqs if amsgrad else None
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "exp_avg": ("exp_avgs", exp_avgs, True),
                                  "exp_avg_sq": ("exp_avg_sqs", exp_avg_sqs, True),
                                  "max_exp_avg_sq": ("max_exp_avg_sqs", vmax, True, False)}, check)
    _run("adam", mod, tabs, ADAM.scalars(hp, step, step == 1))


def adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs=None, *, step, lr=1e-3,
          betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
          backend=None, check=True):
    """One AdamW step (decoupled weight decay)."""
    adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step=step, lr=lr, betas=betas,
         eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, decoupled=True,
         backend=backend, check=check)


def rmsprop(params, grads, square_avgs, grad_avgs=None, momentum_buffers=None, *, lr=1e-2,
            alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False,
            backend=None, check=True):
    """One RMSprop step; ``grad_avgs`` needed if centered, ``momentum_buffers`` if momentum > 0."""
    hp = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
              centered=centered, maximize=maximize)
    RMSPROP.check(hp)
    if centered and grad_avgs is None:
        raise ValueError("grad_avgs: required when centered=True")
    if momentum > 0 and momentum_buffers is None:
        raise ValueError("momentum_buffers: required when momentum > 0")
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "square_avg": ("square_avgs", square_avgs, True),
                                  "grad_avg": ("grad_avgs", grad_avgs if centered else None, True,
                                               False),
                                  "momentum_buffer": ("momentum_buffers",
                                                      momentum_buffers if momentum > 0 else None, True,
                                                      False)},
                        check)
    _run("rmsprop", mod, tabs, RMSPROP.scalars(hp, 1, False))


def adagrad(params, grads, state_sums, *, step, lr=1e-2, lr_decay=0.0, weight_decay=0.0, eps=1e-10,
            maximize=False, backend=None, check=True):
    """One Adagrad step; ``step`` is t, 1 on the first step."""
    hp = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps, maximize=maximize)
    ADAGRAD.check(hp)
    _check_step(step)
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "sum": ("state_sums", state_sums, True)}, check)
    _run("adagrad", mod, tabs, ADAGRAD.scalars(hp, step, step == 1))


def lion(params, grads, exp_avgs, *, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False,
         backend=None, check=True):
    """One Lion step (see :class:`fastdescent.Lion`); Lion has no step-dependent scalar."""
    hp = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
    LION.check(hp)
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "exp_avg": ("exp_avgs", exp_avgs, True)}, check)
    _run("lion", mod, tabs, LION.scalars(hp, 1, False))


def lamb(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-6,
         weight_decay=0.0, bias_correction=True, maximize=False, backend=None, check=True):
    """One LAMB step; ``step`` is t, 1 on the first step. The trust ratio is per array of
    ``params`` (each its own tensor, never merged), computed inside the kernel call."""
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
              bias_correction=bias_correction, maximize=maximize)
    LAMB.check(hp)
    _check_step(step)
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "exp_avg": ("exp_avgs", exp_avgs, True),
                                  "exp_avg_sq": ("exp_avg_sqs", exp_avg_sqs, True)}, check)
    _run("lamb", mod, tabs, LAMB.scalars(hp, step, step == 1))


def rprop(params, grads, prevs, step_sizes, *, etaminus=0.5, etaplus=1.2, step_size_min=1e-6,
          step_size_max=50.0, maximize=False, backend=None, check=True):
    """One Rprop step (see :class:`fastdescent.Rprop`), with torch.optim's functional argument names.

    The caller keeps the state: ``prevs`` starts at zeros and ``step_sizes`` at the learning rate
    (torch fills both when a parameter's state is created); both are updated in place."""
    check_etas(etaminus, etaplus, names=("etaminus", "etaplus"))
    check_step_sizes(step_size_min, step_size_max, names=("step_size_min", "step_size_max"))
    check_flag("maximize", maximize)
    hp = dict(etas=(etaminus, etaplus), step_sizes=(step_size_min, step_size_max),
              maximize=maximize)
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "prev": ("prevs", prevs, True),
                                  "step_size": ("step_sizes", step_sizes, True)}, check)
    _run("rprop", mod, tabs, RPROP.scalars(hp, 1, False))


def prox_l1(params, *, lr, l1, backend=None, check=True):
    """The proximal L1 step (soft thresholding) in place: ``p <- sign(p) * max(|p| - lr*l1, 0)``.

    What an optimizer with the group option ``l1`` does after its update (docs/update-rules.md "L1"): call it
    after a functional step with the learning rate that step used (for Adagrad the decayed
    ``lr / (1 + (t-1)*lr_decay)``). An element with ``|p| <= lr*l1`` becomes exactly +0.0 (never
    -0.0); NaN and +-inf pass through. ``l1 == 0`` validates the arguments and calls no kernel.
    """
    lr = check_real("lr", lr, lo=0.0)
    l1 = check_real("l1", l1, lo=0.0)
    mod, tabs = _tables(backend, {"param": ("params", params, True)}, check)
    if l1 > 0.0:
        _run("prox", mod, tabs, {"threshold": lr * l1})


def sgd_noise(params, *, step, noise_std, noise_decay=0.0, seed=0, param_indices=None,
              backend=None, check=True):
    """SGD's gradient noise in place: ``p <- p + sigma_t * z`` (docs/update-rules.md "Gradient noise").

    ``sigma_t = noise_std * step**(-noise_decay)``; ``z ~ N(0, 1)`` is a pure function of (``seed``,
    the parameter's index, ``step``, the element's index), the same values :class:`fastdescent.SGD`
    adds after its update at step ``step`` (call this after a functional :func:`sgd` step to get
    its noisy version). ``param_indices`` gives each array's index (default ``0 .. len(params)-1``,
    the positions an optimizer over ``params`` would use): arrays with different indices get
    independent noise. ``noise_std == 0`` validates the arguments and calls no kernel.
    """
    check_noise(dict(noise_std=noise_std, noise_decay=noise_decay, seed=seed))
    _check_step(step)
    mod, tabs = _tables(backend, {"param": ("params", params, True)}, check)
    n = sum(t.n for t in tabs)
    if param_indices is None:
        index = np.arange(n, dtype=np.int64)
    else:
        if isinstance(param_indices, (np.ndarray, list, tuple)) and len(param_indices) == n:
            raw = list(param_indices)
        else:
            raise ValueError(f"param_indices: expected {n} ints (one per array of params), got "
                             f"{param_indices!r:.80}")
        index = np.empty(n, dtype=np.int64)
        for i, v in enumerate(raw):
            index[i] = _index_arg(v, f"param_indices[{i}]")
    sigma = SGD.noise_sigma(dict(noise_std=noise_std, noise_decay=noise_decay), int(step))
    if sigma > 0.0:
        for tab in tabs:  # every table's scalars first: nothing is written if one cannot run
            check_scalars({"sigma": sigma}, "sgd_noise", tab.dtype)
        fn = mod.KERNELS["noise"]
        for tab in tabs:
            fn(tab, param_index=index[tab.positions], sigma=sigma, seed=int(seed), step=int(step))


def _index_arg(v, what):
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{what} must be an int >= 0, got {v!r}")
    try:
        v = operator.index(v)
    except TypeError:
        raise TypeError(f"{what} must be an int >= 0, got {type(v).__name__} {v!r}") from None
    if not 0 <= v < 2 ** 63:
        raise ValueError(f"{what} must be an int in [0, 2**63), got {v}")
    return v


def clip_grad_value_(grads, clip_value, *, backend=None, check=True):
    """Clamp ``grads`` in place to ``[-clip_value, clip_value]``, as
    ``torch.nn.utils.clip_grad_value_`` (which returns None, as this does).

    Per element: ``g <- min(max(g, -c), c)`` with ``c`` rounded once to the gradient's dtype, in
    torch.clamp_'s order: a NaN stays NaN (clamping never hides it), ``-0.0`` stays ``-0.0``, and with
    ``clip_value == 0`` a negative gradient becomes ``-0.0``. One kernel call per dtype.

    ``clip_value`` must be a real >= 0: ``+inf`` leaves the gradients as they are (as in torch); a
    NaN or negative value raises ``ValueError`` (torch would silently make every gradient NaN, or
    set every gradient to the negative value); a finite value beyond float32's range raises
    ``ValueError`` for float32 gradients (torch raises too).
    """
    if isinstance(clip_value, (float, np.floating)) and clip_value == math.inf:
        _tables(backend, {"grad": ("grads", grads, True)}, check)  # validated, left as they are
        return None
    clip_value = check_real("clip_value", clip_value, lo=0.0)
    mod, tabs = _tables(backend, {"grad": ("grads", grads, True)}, check)
    _run("clip_value", mod, tabs, {"clip_value": clip_value})
    return None


def nadam(params, grads, exp_avgs, exp_avg_sqs, *, step, mu_product, lr=2e-3, betas=(0.9, 0.999),
          eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
          maximize=False, backend=None, check=True):
    """One NAdam step (NAdamW if ``decoupled_weight_decay``); ``step`` is t, 1 on the first step.

    ``mu_product`` is the running product of the momentum factors before this step (1.0 before the
    first step, as torch's ``state['mu_product']``); the function returns its new value, to pass to
    the next call. Nothing is written (and ``mu_product`` is not advanced) if a check fails.
    """
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
              momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
              maximize=maximize)
    NADAM.check(hp)
    _check_step(step)
    sstate = {"mu_product": NADAM.check_scalar_state("mu_product", mu_product, "mu_product")}
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "exp_avg": ("exp_avgs", exp_avgs, True),
                                  "exp_avg_sq": ("exp_avg_sqs", exp_avg_sqs, True)}, check)
    _run("nadam", mod, tabs, NADAM.scalars(hp, step, step == 1, sstate))
    return NADAM.next_scalar_state(hp, step, sstate)["mu_product"]


def radam(params, grads, exp_avgs, exp_avg_sqs, *, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
          weight_decay=0.0, decoupled_weight_decay=False, maximize=False, backend=None, check=True):
    """One RAdam step (RAdamW if ``decoupled_weight_decay``); ``step`` is t, 1 on the first step
    (the rectification, rho_t > 5, depends on it)."""
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
              decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    RADAM.check(hp)
    _check_step(step)
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "exp_avg": ("exp_avgs", exp_avgs, True),
                                  "exp_avg_sq": ("exp_avg_sqs", exp_avg_sqs, True)}, check)
    _run("radam", mod, tabs, RADAM.scalars(hp, step, step == 1))
def adamax(params, grads, exp_avgs, exp_infs, *, step, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
           weight_decay=0.0, maximize=False, backend=None, check=True):
    """One Adamax step (see :class:`fastdescent.Adamax`); ``step`` is t, 1 on the first step."""
    hp = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
    ADAMAX.check(hp)
    _check_step(step)
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "exp_avg": ("exp_avgs", exp_avgs, True),
                                  "exp_inf": ("exp_infs", exp_infs, True)}, check)
    _run("adamax", mod, tabs, ADAMAX.scalars(hp, step, step == 1))


def adadelta(params, grads, square_avgs, acc_deltas, *, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,
             maximize=False, backend=None, check=True):
    """One Adadelta step (see :class:`fastdescent.Adadelta`)."""
    hp = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    ADADELTA.check(hp)
    mod, tabs = _tables(backend, {"param": ("params", params, True), "grad": ("grads", grads, False),
                                  "square_avg": ("square_avgs", square_avgs, True),
                                  "acc_delta": ("acc_deltas", acc_deltas, True)}, check)
    _run("adadelta", mod, tabs, ADADELTA.scalars(hp, 1, False))


def clip_grad_norm_(grads, max_norm, norm_type=2.0, *, error_if_nonfinite=False, backend=None,
                    check=True):
    """Scale ``grads`` in place so their global norm is at most ``max_norm``; return the norm.

    total = (sum_i ||g_i||_p^p)^(1/p) (max |g| for p = inf), accumulated in float64;
    coef = min(1, max_norm / (total + 1e-6)). A non-finite total is never used: the gradients are left
    unchanged and ``FloatingPointError`` is raised if ``error_if_nonfinite``, else a RuntimeWarning.
    """
    max_norm = check_real("max_norm", max_norm, lo=0.0)
    norm_type = float(norm_type)
    if math.isnan(norm_type) or norm_type <= 0:
        raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type!r}")
    mod, tabs = _tables(backend, {"grad": ("grads", grads, True)}, check)
    f = mod.KERNELS["norm_pow_sum"]
    parts = [f(t, norm_type=norm_type) for t in tabs]
    if any(math.isnan(x) for x in parts):
        total = math.nan
    elif math.isinf(norm_type):
        total = max(parts)
    else:
        total = math.fsum(parts) ** (1.0 / norm_type)
    if not math.isfinite(total):
        msg = f"the total norm of order {norm_type} of the gradients is non-finite ({total}); " \
              "gradients left unscaled"
        if error_if_nonfinite:
            raise FloatingPointError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        _run("scale", mod, tabs, {"factor": coef})
    return total


def all_finite(grads, *, backend=None, check=True):
    """True if every element of every array in ``grads`` is finite (one pass)."""
    mod, tabs = _tables(backend, {"grad": ("grads", grads, False)}, check)
    f = mod.KERNELS["all_finite"]
    return all(f(t) for t in tabs)
