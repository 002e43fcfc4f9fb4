"""The engine of ``fastdescent.torch``: a ``torch.optim.Optimizer`` that runs fastdescent's kernels on
the tensors' own memory.

How a step runs
---------------
A step reads every parameter's ``.grad`` (a parameter whose grad is None is skipped: its state and
step count do not change, as in torch). The parameters that have a gradient are grouped into
*buckets*, one per (param group, dtype, step count, scalar state, fresh-state flag, device); each
bucket has a backend tensor table (``fastdescent.backends._table``) whose param and state columns are the data
addresses of the parameters and of their state tensors, so one kernel call updates a whole bucket.
CPU tensors run on the CPU backend, CUDA tensors on the ``cuda`` backend (device pointer tables, its
launches ordered with torch's current stream: :func:`_torch_stream`).
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

Fast path: once a step has checked everything above one tensor at a time and used the plan, it
records a guard (``_guard.tensor_guard``: torch's C++ check of many tensors' type, dispatch keys,
dtype, requires_grad, sizes and strides) over the parameters and the gradients it took as they were.
The next steps first try :meth:`Optimizer._fd_fast`: the parameters the same objects, one guard call
over parameters and gradients, one pass comparing the parameters' and state tensors' addresses, the
state's identity and step counts as :meth:`Optimizer._fd_plan_current` compares them, and the
gradients' addresses non-null and clear of what the step writes (computed once per set of addresses,
the last few remembered per plan). Anything that fails there takes the full path, which decides
exactly as before (and raises, rebuilds the plan or copies a gradient). Large state buffers are
placed at another offset within a page than their parameter, and from 4 MiB on transparent huge pages
(:func:`_state_like`): ordinary tensors of the parameter's shape and strides, each with a storage of
its own (one page longer than it needs).

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

Low precision
-------------
In the optimizers whose rule has a mixed-precision step (SGD, Adam, AdamW, RMSprop), a bucket whose
:func:`fastdescent.optim._precision.group_spec` is not None (bfloat16/float16 parameters, or
bfloat16/int8 state) runs the backend's ``mixed.mixed_step`` on a
:class:`fastdescent.backends._mixed.MixedPlan` of NumPy views of the tensors' memory (device spans,
``__cuda_array_interface__``, on the cuda backend) instead of the plain kernel. The 8-bit codecs of a
conversion (a loaded float32 state quantized, or the reverse) run on the CPU: device state goes
through a host copy then, never in a step. Its state stays in torch tensors of the parameter's
shape and strides, in their storage dtype (bfloat16, float32, uint8 codes), with ``<name>_scale``
(float32 block scales, blocks in memory order, on the parameter's device) and ``master_param``
(float32) entries where the options ask for them. bfloat16 parameters default to bfloat16 state
(torch.optim's choice), not the NumPy-facing classes' float32.
State in another storage than its group's (a load, an option changed between steps) is converted
before the step, as the NumPy-facing optimizers do; ``load_state_dict`` takes the saved tensors as
they are, not cast to the parameter's dtype as torch does. SGD keeps its step counts (which key
stochastic rounding's random bits) in the group's block too, out of its state (torch's SGD has none).
"""

from __future__ import annotations

import contextlib
import functools
import operator
import sys
import threading
from collections import defaultdict
from itertools import compress, repeat

import numpy as np
import torch

from .. import precision as _P
from .._contract import row as _row
from ..backends import default_backend, get_backend, resolve
from ..optim import _precision
from ..optim.base import _state_step
from ..precision import MIXED_RULES
from ..rules import check_scalars
from ._guard import tensor_guard

__all__ = ["Optimizer"]

#: how many times a plan records its fast-path guard (a guard that keeps failing, e.g. gradients
#: whose type or requires_grad alternate, stops being recorded: the full path is taken)
_GUARD_TRIES = 8
#: gradient address sets a plan remembers as checked (no overlap with what the step writes)
_SEEN = 4

_F32, _F64 = torch.float32, torch.float64
_BF16, _F16, _U8 = torch.bfloat16, torch.float16, torch.uint8
#: parameter dtypes the plain (float32/float64) kernels update
_NP = {_F32: np.dtype(np.float32), _F64: np.dtype(np.float64)}
#: parameter dtypes the mixed-precision step stores (SGD, Adam, AdamW, RMSprop)
_LOW = (_BF16, _F16)
#: torch dtype of each storage code of the mixed-precision step
_STORAGE = {_P.F32: _F32, _P.BF16: _BF16, _P.Q8S: _U8, _P.Q8U: _U8}
_Q8 = (_P.Q8S, _P.Q8U)
_MASTER = _precision.MASTER
_scale_name = _precision.scale_name
_SUPPORTED_LOW = "SGD, Adam, AdamW and RMSprop"
_STRIDED = torch.strided
_ITEMSIZE = {dt: torch.empty(0, dtype=dt).element_size() for dt in (_F32, _F64, _BF16, _F16, _U8)}
_data_ptr = torch.Tensor.data_ptr
_is_contiguous = torch.Tensor.is_contiguous
_get_grad = operator.attrgetter("grad")
#: what the fast path compares of each gradient with its parameter's (one C-level pass)
_get_meta = operator.attrgetter("dtype", "is_cpu", "shape")
#: the same where a plan holds CUDA tensors (the device, index included)
_get_meta_dev = operator.attrgetter("dtype", "device", "shape")
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


_set_grad_enabled = torch._C._set_grad_enabled
try:  # (private to torch: where missing, step keeps torch's own wrapper)
    from torch._C._profiler import _RecordFunctionFast
    from torch.autograd import _profiler_enabled
    from torch.optim.optimizer import _global_optimizer_post_hooks as _GLOBAL_POST
    from torch.optim.optimizer import _global_optimizer_pre_hooks as _GLOBAL_PRE
except ImportError:  # pragma: no cover - depends on the torch version
    _RecordFunctionFast = None


def _hook_step(func):
    """``func`` (an optimizer's step) wrapped as torch's ``Optimizer.profile_hook_step`` wraps it:
    with a step hook registered (global or the optimizer's) or torch's profiler on, torch's own
    wrapper runs; otherwise ``func`` runs inside the same profiler range
    (``Optimizer.step#<the instance's class>.step``, opened by torch's low-overhead recorder) and
    is followed by ``_optimizer_step_code``, as in torch's. None where torch lacks what this
    needs."""
    if _RecordFunctionFast is None:  # pragma: no cover - depends on the torch version
        return None
    hooked = torch.optim.Optimizer.profile_hook_step(func)

    @functools.wraps(func)
    def step(self, *args, **kwargs):
        if (_GLOBAL_PRE or _GLOBAL_POST or self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks or _profiler_enabled()):
            return hooked(self, *args, **kwargs)
        with _RecordFunctionFast(f"Optimizer.step#{type(self).__name__}.step"):
            out = func(self, *args, **kwargs)
            self._optimizer_step_code()
        return out

    step.hooked = True
    step._fd_hook_step = True
    return step


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


#: state buffers of at least this many bytes start at their own offset within a 4 KiB page
_STAGGER_MIN = 1 << 16
_PAGE = 4096
#: and those of at least this many bytes ask Linux for transparent huge pages (as NumPy does for
#: its arrays of 4 MiB and more)
_HUGE_MIN = 4 << 20
_HUGE = 2 << 20
_MADV_HUGEPAGE = 14
_MADVISE = []  # [] not looked up yet; [None] unavailable; [libc's madvise]


def _advise_huge(addr, nbytes):
    """Ask Linux to back the whole 2 MiB pages inside ``[addr, addr + nbytes)`` (memory of ours, not
    touched yet) with transparent huge pages: a step streams several such buffers at once, and with
    4 KiB pages its address translations miss (measured: a ResNet-50 Adam or RMSprop step ~2-4%
    slower than over the NumPy-facing class's state, which NumPy allocates this way). Advice only:
    where it is unavailable or refused nothing changes."""
    if not _MADVISE:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = ctypes.CDLL(None).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
            except (OSError, AttributeError):  # pragma: no cover - depends on the libc
                fn = None
        _MADVISE.append(fn)
    fn = _MADVISE[0]
    lo = -(-addr // _HUGE) * _HUGE
    hi = (addr + nbytes) // _HUGE * _HUGE
    if fn is not None and hi > lo:
        fn(lo, hi - lo, _MADV_HUGEPAGE)


def _stagger_step(nslots):
    """Bytes between the page offsets of a parameter and its ``nslots`` kinds of state buffer."""
    return (_PAGE // (nslots + 1)) & ~63


def _state_like(p, dtype, slot, nslots):
    """A zero-filled tensor with dense parameter ``p``'s shape and strides, of ``dtype``: a state
    buffer. One of at least :data:`_STAGGER_MIN` bytes is a view into a storage of its own, one page
    longer than it needs, that starts ``slot + 1`` steps of :func:`_stagger_step` past ``p``'s
    offset within a page: buffers allocated on their own often start at the same offset within a
    page as their parameter and its gradient, and a step that streams them together then loads and
    stores lines that fall in the same cache sets (measured: a ResNet-50 Adam step 2-4% slower
    than with the buffers staggered). One of at least :data:`_HUGE_MIN` bytes asks for transparent
    huge pages (:func:`_advise_huge`)."""
    n = p.numel()
    es = _ITEMSIZE[dtype]
    if n * es < _STAGGER_MIN or not _dense(p) or not p.is_cpu:
        # (not dense: torch's layout for it, as before; on a GPU: torch's allocator)
        return torch.zeros_like(p, dtype=dtype)
    base = torch.empty(n + _PAGE // es, dtype=dtype)
    if n * es >= _HUGE_MIN:
        _advise_huge(base.data_ptr(), base.numel() * es)  # (before the first touch: zero_)
    base.zero_()
    off = (p.data_ptr() + _stagger_step(nslots) * (slot + 1) - base.data_ptr()) % _PAGE // es
    return base.as_strided(p.shape, p.stride(), off)


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


def _np_dtype(dt):
    """The NumPy dtype of a torch parameter dtype (float32, float64, bfloat16, float16)."""
    if dt == _BF16:
        return _P.bfloat16()
    return np.dtype(np.float16) if dt == _F16 else _NP[dt]


@functools.cache
def _storage_np(dt):
    """The NumPy dtype of a torch storage dtype (a parameter's, or uint8 codes), looked up once."""
    return np.dtype(np.uint8) if dt == _U8 else _np_dtype(dt)


def _flat_np(t):
    """A NumPy view of a dense tensor's memory, C-contiguous, in memory order (what the
    mixed-precision step reads and writes: tensors with the same layout correspond element by
    element): the tensor's shape if it is contiguous, else 1-D."""
    if t.requires_grad:
        t = t.detach()
    if not t.is_contiguous():
        t = t.detach().as_strided((t.numel(),), (1,))
    if t.dtype == _BF16:
        return t.view(torch.int16).numpy().view(_storage_np(_BF16))
    return t.numpy()


def _valid_scale(sc, n, device):
    """True if ``sc`` can be the block scales of an ``n``-element 8-bit state buffer as the step
    reads them (float32, on the parameter's ``device``, contiguous, one per block)."""
    return (isinstance(sc, torch.Tensor) and sc.dtype == _F32 and sc.device == device
            and sc.dim() == 1 and sc.numel() == _P.nblocks(n) and sc.is_contiguous()
            and not sc.is_neg())


def _flat_dev(t):
    """What :func:`_flat_np` is for the cuda backend: the dense tensor's memory as a 1-D device
    array (``__cuda_array_interface__``) of its storage dtype (bfloat16 as ml_dtypes' dtype), in
    memory order, keeping ``t`` alive. Also the simulator's stand-in over a CPU tensor."""
    from ..backends.numba_cuda._device import DeviceSpan

    return DeviceSpan(t.data_ptr(), t.numel(), _storage_np(t.dtype), (t,))


_NO_CONTEXT = contextlib.nullcontext()


def _launch(b, name, sc, ps):
    """Bucket ``b``'s kernel of rule ``name`` with its scalars ``sc``, then its post-update passes
    ``ps`` ((name, scalars) pairs)."""
    kernels = b.be.KERNELS
    kernels[name](b.tab, **sc)
    for pname, psc in ps:
        if _row(pname).per_tensor:
            kernels[pname](b.tab, param_index=b.param_index, **psc)
        else:
            kernels[pname](b.tab, **psc)


@contextlib.contextmanager
def _torch_stream(device):
    """The cuda backend's launches for tensors on ``device`` (Numba's default stream, which is the
    legacy default stream, in ``device``'s context) ordered with torch's current stream there: after
    the work queued on it so far (the backward that made the gradients) and before the work queued on
    it next (the forward that reads the parameters). On torch's default stream, which is the legacy
    default stream too, they are in order already; on another one (``with torch.cuda.stream(s)``)
    the default stream waits for it before the launches and it waits for the default stream after
    them (events: the host does not wait). A CPU ``device`` (the simulator's stand-in for device
    memory): nothing to order."""
    if device.type != "cuda":
        yield
        return
    from numba import cuda

    index = device.index if device.index is not None else torch.cuda.current_device()
    cur = torch.cuda.current_stream(index)
    null = torch.cuda.default_stream(index)
    other = cur.cuda_stream != null.cuda_stream
    if other:
        null.wait_stream(cur)
    try:
        with cuda.gpus[index]:
            yield
    finally:
        if other:
            cur.wait_stream(null)


#: Numba's CUDA simulator runs one simulated kernel at a time in the process (a second launch from
#: another thread fails its assertion): the simulated launches of a bucket hold this lock
_SIM_LAUNCH = threading.Lock()


def _ordered(b):
    """The context bucket ``b``'s launches run in: torch's stream order on a GPU, the simulator's
    one-launch-at-a-time lock there, nothing on the CPU backends."""
    if b.gpu:
        return _torch_stream(b.device)
    return _SIM_LAUNCH if b.sim else _NO_CONTEXT


class _Bucket:
    __slots__ = ("gi", "dtype", "pos", "sel", "step", "sstate", "fresh", "tab", "kidx", "kall",
                 "names", "param_index", "spec", "plan", "tdtype", "hp", "sbytes", "be", "device", "gpu",
                 "numpy", "device_table", "sim")


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
    CPU tensors of float32 or float64; bfloat16 and float16 too for the rules with a
    mixed-precision step (SGD, Adam, AdamW, RMSprop: the module docstring, "Low precision").
    """

    _rule = None
    _torch_name = None
    _step_in_state = True
    _eager_state = False
    _forced = {}

    @property
    def _lowp(self):
        """True if the rule has a mixed-precision step (bfloat16/float16 parameters, the
        low-precision options)."""
        return self._rule.name in MIXED_RULES

    def __init__(self, params, defaults, *, backend=None):
        if defaults.get("differentiable"):
            raise ValueError(f"{self._name()}: differentiable=True is not supported (the kernels "
                             "update the tensors' memory outside autograd); use torch.optim."
                             f"{self._torch_name or type(self).__name__} for a differentiable step")
        self._fd_backend_name = backend
        self._fd_set_backends(backend)
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
        """Public name of the backend the kernels run on: that of CPU tensors (CUDA tensors always
        run on ``cuda``), or ``"cuda"`` for an optimizer made with ``backend="cuda"``."""
        return "cuda" if self._fd_backend is None else self._fd_backend.NAME

    def _fd_set_backends(self, backend):
        """``self._fd_backend``: the backend of CPU tensors (None when ``backend`` is ``"cuda"``:
        CUDA tensors only); ``self._fd_dev_ok``: whether CUDA tensors are accepted (``backend``
        None, ``"auto"`` or ``"cuda"``; a host backend named explicitly refuses them). The cuda
        backend itself is loaded when the first CUDA tensor comes (:meth:`_fd_cuda`)."""
        name = default_backend() if backend is None else backend
        self._fd_cuda_mod = None
        if name == "cuda":
            self._fd_backend = None
            self._fd_cuda()  # (raises now if numba.cuda cannot run here)
        else:
            self._fd_backend = resolve(name, device=False)
        self._fd_dev_ok = backend is None or backend in ("auto", "cuda")

    def _fd_cuda(self):
        """The cuda backend (loaded once); BackendUnavailableError saying why it cannot run."""
        mod = self._fd_cuda_mod
        if mod is None:
            mod = self._fd_cuda_mod = get_backend("cuda")
        return mod

    def _fd_be(self, p):
        """The backend that updates parameter ``p``: cuda for a CUDA tensor (and, under
        ``backend="cuda"`` in Numba's CUDA simulator, for the CPU tensors that stand in for device
        memory there), else the CPU backend."""
        if self._fd_backend is None or p.is_cuda:
            return self._fd_cuda()
        return self._fd_backend

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
        low = p.dtype in _LOW
        if low and self._rule.name not in MIXED_RULES:
            raise TypeError(f"{where}: {p.dtype} parameters are not supported by {self._name()}: "
                            "fastdescent.torch updates bfloat16/float16 parameters in "
                            f"{_SUPPORTED_LOW} only (their mixed-precision step); keep float32 "
                            f"parameters or use torch.optim.{self._torch_name or 'Adam'}")
        if not low and p.dtype not in _NP:
            raise TypeError(f"{where}: dtype {p.dtype} is not supported ({self._name()} updates "
                            "float32 and float64 parameters"
                            + (", and bfloat16 and float16 ones" if self._lowp else "") + ")")
        if p.device.type == "cuda":
            if not self._fd_dev_ok:
                raise ValueError(f"{where} is on {p.device}, but this {self._name()} was made with "
                                 f"backend={self._fd_backend_name!r}, which updates CPU tensors; "
                                 "CUDA tensors run on the 'cuda' backend (backend=None, 'auto' or "
                                 "'cuda')")
            self._fd_cuda()  # (BackendUnavailableError if numba.cuda cannot run here)
        elif p.device.type == "cpu":
            if self._fd_backend is None and not self._fd_cuda().SIM:
                if self._fd_backend_name is None:  # (use_backend('cuda'), $FASTDESCENT_BACKEND)
                    raise ValueError(f"{where} is on the CPU, but this {self._name()} was made "
                                     "with backend=None, and the default backend in force is "
                                     "'cuda' (fastdescent.use_backend or $FASTDESCENT_BACKEND), "
                                     "which updates CUDA tensors; pass backend='auto' (or a host "
                                     "backend) for CPU tensors")
                raise ValueError(f"{where} is on the CPU, but this {self._name()} was made with "
                                 "backend='cuda', which updates CUDA tensors; use backend=None "
                                 "(the default) for CPU tensors")
        else:
            raise ValueError(f"{where} is on device {p.device}: {self._name()} supports CPU and "
                             "CUDA tensors only")
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
            hp = self._fd_hp(n, group)
            if self._lowp:  # a combination with no kernel (float16 + stochastic_rounding) fails here
                names = self._rule.state_names(hp)
                for dt in {p.dtype for p in group["params"]}:
                    self._fd_spec(n, hp, dt, names)
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
            _precision.check_options(self._rule, hp)  # master_weights, state_dtype, ...
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        # a group holding tensors or lists is re-validated at every step (edited in place)
        checked[gi] = (keys, values, hp) if not mutable else None
        return hp

    def _fd_spec(self, gi, hp, dtype, names):
        """The mixed-precision step of group ``gi``'s ``dtype`` parameters with state ``names``
        (a :class:`fastdescent.optim._precision.MixedSpec`), or None for the plain kernel.
        bfloat16 parameters keep bfloat16 state unless ``state_dtype`` says otherwise (torch.optim's
        default: state in the parameter's dtype); float16 ones float32 state (fastdescent has no
        float16 state). ValueError naming the group for a combination that has no kernel."""
        if not self._lowp:
            return None
        if dtype == _BF16 and hp.get("state_dtype") is None:
            hp = dict(hp, state_dtype="bfloat16")
        try:
            return _precision.group_spec(self._rule, hp, _np_dtype(dtype), names)
        except ValueError as exc:
            raise ValueError(f"param_groups[{gi}] ({dtype} parameters): {exc}") from None

    def _fd_create_eager_state(self, gi, group):
        """torch's Adagrad creates ``step`` (0) and ``sum`` in its constructor: the same here."""
        hp = self._fd_hp(gi, group)
        names = self._rule.state_names(hp)
        for k, p in enumerate(group["params"]):
            st = self.state[p]
            if st:
                continue
            for name in names:
                st[name] = self._fd_like(p, p.dtype, name).fill_(self._rule.init_value(hp, name))
            st["step"] = self._fd_step_view(gi, k, len(group["params"]), 0)

    def _fd_like(self, p, dtype, nm):
        """:func:`_state_like` for state entry ``nm`` of ``p`` (each buffer name, and the master
        copy, at its own offset)."""
        names = self._rule.all_state
        slot = names.index(nm) if nm in names else len(names)
        return _state_like(p, dtype, slot, len(names) + 1)

    # ------------------------------------------------------------------ low-precision state
    def _fd_buf_status(self, i, nm, buf, p, st, code):
        """How a step takes ``state[i][nm]`` (``buf``, not None) of ``p``, stored as ``code`` (a
        storage code of the mixed-precision step; None: the plain kernel's, ``p``'s dtype): "ok",
        "convert" (another storage of the same values, in an optimizer with a mixed-precision step:
        converted before the step, as fastdescent's optimizers do when ``state_dtype`` changes), or
        raise ``ValueError``."""
        want = p.dtype if code is None else _STORAGE[code]
        if isinstance(buf, torch.Tensor) and buf.device == p.device and buf.shape == p.shape:
            same = buf.stride() == p.stride() or p.numel() <= 1
            if buf.dtype == want and same:
                if buf.is_neg():
                    raise ValueError(f"state[{i}][{nm!r}] is a lazily negated view (its negative "
                                     "bit is set): give it a tensor of its own (t.resolve_neg())")
                if code in _Q8:
                    self._fd_check_scale(i, nm, p, st)
                return "ok"
            if (self._lowp and buf.dtype != want
                    and (code is not None or buf.dtype in (_BF16, _F16, _U8))):
                if buf.dtype == _U8 and same and _dense(buf):
                    self._fd_check_scale(i, nm, p, st)
                    return "convert"
                if buf.dtype != _U8 and buf.is_floating_point():
                    return "convert"
        raise ValueError(
            f"state[{i}][{nm!r}] does not match params[{i}] (it is {type(buf).__name__}"
            + (f" {buf.dtype}, shape {tuple(buf.shape)}, strides {buf.stride()}"
               if isinstance(buf, torch.Tensor) else "")
            + f"; the parameter {p.dtype}, shape {tuple(p.shape)}, strides {p.stride()}"
            + (f", its state {want}" if want != p.dtype else "")
            + "): load state with load_state_dict")

    @staticmethod
    def _fd_check_scale(i, nm, p, st):
        sname = _scale_name(nm)
        sc = st.get(sname)
        if not _valid_scale(sc, p.numel(), p.device):
            got = (f"{sc.dtype} {tuple(sc.shape)} on {sc.device}" if isinstance(sc, torch.Tensor)
                   else type(sc).__name__)
            raise ValueError(f"state[{i}][{nm!r}] holds 8-bit codes (uint8), so state[{i}]"
                             f"[{sname!r}] must hold their block scales: a contiguous float32 "
                             f"tensor on {p.device} of {_P.nblocks(p.numel())} values (one per {_P.BLOCK} "
                             f"elements), got {got}")

    @staticmethod
    def _fd_master_status(i, p, st):
        """"missing", "ok" or "convert" (a float tensor of another dtype or layout) for
        ``state[i]['master_param']``; ``ValueError`` if it cannot be ``p``'s master copy."""
        m = st.get(_MASTER)
        if m is None:
            return "missing"
        if (isinstance(m, torch.Tensor) and m.device == p.device and m.shape == p.shape
                and m.is_floating_point()):
            if m.dtype == _F32 and (m.stride() == p.stride() or p.numel() <= 1) and not m.is_neg():
                return "ok"
            return "convert"
        raise ValueError(f"state[{i}][{_MASTER!r}] must be a floating-point tensor of "
                         f"params[{i}]'s shape {tuple(p.shape)} (its float32 master copy), got "
                         + (f"{m.dtype} {tuple(m.shape)} on {m.device}"
                            if isinstance(m, torch.Tensor) else type(m).__name__))

    @staticmethod
    def _fd_dequantize(codes, scale, nm):
        """float32 values of 8-bit ``codes`` (dense, blocks in memory order) with their block
        ``scale``, in the codes' layout."""
        host = codes.detach().cpu()  # (the codecs run on the CPU: a copy for device codes)
        x = torch.empty_like(host, dtype=_F32)
        sc = scale.detach().to(device="cpu", dtype=_F32).contiguous()
        _flat_np(x).reshape(-1)[...] = _P.q8_dequantize(_flat_np(host), sc.numpy(),
                                                        _P.state_map(nm))
        return x.to(codes.device)

    def _fd_storage(self, p, nm, code, old=None, old_scale=None, init=0.0):
        """State buffer ``nm`` of ``p`` stored as ``code`` (None: ``p``'s dtype), with ``p``'s
        layout, and its block scales (None unless 8-bit): filled with ``init`` if ``old`` is None,
        else ``old`` converted (a floating-point tensor of ``p``'s shape, or 8-bit codes with their
        block scales ``old_scale``; codes already in the target map and layout are copied as
        they are)."""
        if old is not None:
            old = old.detach()
            if old.dtype == _U8:
                if (code == _P.state_map(nm) and old.device == p.device
                        and (old.stride() == p.stride() or p.numel() <= 1)):
                    codes = self._fd_like(p, _U8, nm)
                    codes.copy_(old)
                    sc = torch.empty(_P.nblocks(p.numel()), dtype=_F32, device=p.device)
                    sc.copy_(old_scale.detach().reshape(-1))
                    return codes, sc
                old = self._fd_dequantize(old, old_scale, nm)
        if code in _Q8:
            codes = self._fd_like(p, _U8, nm)
            sc = torch.zeros(_P.nblocks(p.numel()), dtype=_F32, device=p.device)
            if old is not None:  # (the codecs run on the CPU: device state goes through a copy)
                x = torch.empty_like(p, dtype=_F32, device="cpu")
                x.copy_(old)
                c, scales = _P.q8_quantize(_flat_np(x), code)
                host = codes if codes.is_cpu else torch.empty_like(codes, device="cpu")
                _flat_np(host).reshape(-1)[...] = c  # (a view: C-contiguous)
                if host is not codes:
                    codes.copy_(host)
                sc.copy_(torch.from_numpy(scales))
            return codes, sc
        want = p.dtype if code is None else _STORAGE[code]
        out = self._fd_like(p, want, nm)
        if old is None:
            return out.fill_(init), None
        out.copy_(old)
        return out, None

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
            self._fd_set_backends(backend)
            self._fd_steps = {}
            self._fd_sblocks = {}
        self._fd_reset()
        self._fd_adopt_needed = True

    def load_state_dict(self, state_dict):
        """torch's ``load_state_dict`` (same format, same id mapping, tensors cast to the parameters'
        dtype), then every loaded state tensor is checked (names this optimizer keeps, the
        parameter's shape, a valid ``step``) and copied into buffers of this optimizer's own.
        Atomic: a state_dict that fails a check raises and leaves the optimizer as it was.

        SGD, Adam, AdamW and RMSprop take each state tensor as it was saved instead of torch's
        cast to the parameter's dtype (which would round float32 state, master copies and block
        scales to a bfloat16 parameter's dtype), and convert it into the storage of its group:
        bfloat16, float32 or 8-bit codes with their block scales, a float32 master copy."""
        old = (self.__dict__.get("state"), self.__dict__.get("param_groups"),
               self._fd_steps, self._fd_sblocks)
        kept = None
        if self._lowp:  # torch would cast every state tensor to its parameter's dtype
            state_dict, kept = self._fd_keep_state_tensors(state_dict)
        super().load_state_dict(state_dict)
        try:
            if kept:
                self._fd_restore_state_tensors(state_dict, kept)
            self._fd_adopt()
        except Exception:
            self.state, self.param_groups, self._fd_steps, self._fd_sblocks = old
            self._fd_reset()
            raise

    @staticmethod
    def _fd_keep_state_tensors(state_dict):
        """A shallow copy of ``state_dict`` whose per-parameter state tensors (all but ``step``)
        are None, and those tensors: ``{saved id: {name: tensor}}``."""
        states = state_dict.get("state") if isinstance(state_dict, dict) else None
        if not isinstance(states, dict):
            return state_dict, None
        kept, new = {}, {}
        for key, st in states.items():
            if isinstance(st, dict):
                ts = {nm: v for nm, v in st.items()
                      if nm != "step" and isinstance(v, torch.Tensor)}
                if ts:
                    kept[key] = ts
                    st = {nm: (None if nm in ts else v) for nm, v in st.items()}
            new[key] = st
        out = dict(state_dict)
        out["state"] = new
        return out, kept

    def _fd_restore_state_tensors(self, state_dict, kept):
        """Put the tensors :meth:`_fd_keep_state_tensors` took back into ``self.state``, under the
        parameters torch mapped their saved ids to (state of unmapped ids stays under its id, as
        torch keeps it)."""
        saved = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        id_map = dict(zip(saved, params))
        for key, ts in kept.items():
            st = self.state[id_map.get(key, key)]
            for nm, v in ts.items():
                st[nm] = v

    def _fd_adopt(self):
        """Check the state (after a load or unpickling) and move it into this optimizer's layout:
        own buffers with the parameters' strides, step tensors (and scalar state) in the groups'
        blocks. Builds everything first and swaps it in at the end."""
        rule = self._rule
        sinit = rule.scalar_state
        allowed = set(rule.all_state)
        extra_ok = (frozenset(map(_scale_name, rule.all_state)) | {_MASTER}) if self._lowp \
            else frozenset()
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
                extras = {}  # (block scales of 8-bit state, the master copy)
                raw = {}
                for name, val in st.items():
                    if name == "step":
                        if self._step_in_state:  # (SGD's torch state has no step: dropped)
                            step = _state_step(val, f"{where}['step']")
                        continue
                    if name in sinit:
                        ssvals[name][k] = rule.check_scalar_state(name, val, f"{where}[{name!r}]")
                        continue
                    if name in extra_ok:
                        if not isinstance(val, torch.Tensor) or not val.is_floating_point():
                            raise ValueError(f"{where}[{name!r}] must be a real floating-point "
                                             f"tensor, got {type(val).__name__}")
                        extras[name] = val
                        continue
                    if name not in allowed:
                        keeps = ('step',) + tuple(rule.all_state) + tuple(sinit)
                        if extra_ok:
                            keeps += tuple(sorted(extra_ok))
                        raise ValueError(f"{where} has an unknown entry {name!r}; {self._name()} "
                                         f"keeps {keeps}")
                    if val is None and name not in needed:
                        continue  # (an absent momentum buffer, as old torch versions wrote it)
                    codes8 = (extra_ok and isinstance(val, torch.Tensor) and val.dtype == _U8)
                    if not codes8 and (not isinstance(val, torch.Tensor) or val.is_complex()
                                       or not val.is_floating_point()):
                        raise ValueError(f"{where}[{name!r}] must be a real floating-point tensor"
                                         + (" (or 8-bit codes, uint8, with their block scales)"
                                            if extra_ok else "")
                                         + f", got {type(val).__name__}"
                                         + (f" {val.dtype}" if isinstance(val, torch.Tensor)
                                            else ""))
                    if tuple(val.shape) != tuple(p.shape):
                        raise ValueError(f"{where}[{name!r}] has shape {tuple(val.shape)}, "
                                         f"params[{idx + k}] has shape {tuple(p.shape)}")
                    if codes8:
                        sname = _scale_name(name)
                        sc = extras.get(sname, st.get(sname))
                        nb = _P.nblocks(p.numel())
                        if not isinstance(sc, torch.Tensor):
                            raise ValueError(f"{where}[{name!r}] holds 8-bit codes (uint8) but the "
                                             f"state has no {sname!r} (their block scales)")
                        if tuple(sc.shape) != (nb,):
                            raise ValueError(f"{where}[{sname!r}] has shape {tuple(sc.shape)}, "
                                             f"expected ({nb},) (one scale per {_P.BLOCK} "
                                             f"elements of params[{idx + k}])")
                        if not _dense(val):
                            raise ValueError(f"{where}[{name!r}]: 8-bit codes must be a dense "
                                             "tensor (their blocks are runs of memory)")
                    raw[name] = val
                for sname in extras:
                    if sname != _MASTER and not (isinstance(raw.get(sname[:-len("_scale")]),
                                                            torch.Tensor)
                                                 and raw[sname[:-len("_scale")]].dtype == _U8):
                        raise ValueError(f"{where}[{sname!r}] has no 8-bit codes "
                                         f"{sname[:-len('_scale')]!r} to go with it")
                if raw or extras:
                    spec = self._fd_spec(gi, hp, p.dtype, rule.all_state) if extra_ok else None
                    codes = dict(spec.codes) if spec is not None else {}
                    for name, val in raw.items():
                        buf, sc = self._fd_storage(p, name, codes.get(name), val,
                                                   extras.get(_scale_name(name)))
                        d[name] = buf
                        if sc is not None:
                            d[_scale_name(name)] = sc
                    m = extras.get(_MASTER)
                    if m is not None and spec is not None and spec.master:
                        if tuple(m.shape) != tuple(p.shape):
                            raise ValueError(f"{where}[{_MASTER!r}] has shape {tuple(m.shape)}, "
                                             f"params[{idx + k}] has shape {tuple(p.shape)}")
                        buf = self._fd_like(p, _F32, _MASTER)
                        buf.copy_(m.detach())
                        d[_MASTER] = buf
                missing = [nm for nm in rule.core_state if nm in needed and nm not in d]
                # (d's entries: state buffers, their scales, the master copy)
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
    def step(self, closure=None):
        """One optimization step over every parameter whose ``.grad`` is not None.

        ``closure``: re-evaluates the model and returns the loss; it runs under
        ``torch.enable_grad()`` before the update, and its loss is returned (as in torch.optim).
        Nothing is modified if a check fails (an invalid hyperparameter, a sparse or mismatched
        gradient, an unsupported dtype or device).
        """
        prev = torch.is_grad_enabled()  # (torch.no_grad(), without its per-call objects)
        _set_grad_enabled(False)
        try:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            self._fd_step()
            return loss
        finally:
            _set_grad_enabled(prev)

    def _patch_step_function(self):
        """torch's (the class's ``step`` wrapped once, for the profiler and the step hooks), then
        the wrapper it installed is replaced by :func:`_hook_step`'s, which calls torch's wrapper
        whenever it has something to do (a hook registered, the profiler on) and otherwise only
        opens the profiler range with torch's low-overhead recorder (~0.3 us instead of ~10 us)."""
        cls = type(self)
        before = cls.__dict__.get("step")
        super()._patch_step_function()
        step = cls.__dict__.get("step")
        inner = getattr(step, "__wrapped__", None)
        if (step is not before and inner is not None and getattr(step, "hooked", False)
                and not getattr(step, "_fd_hook_step", False)):
            light = _hook_step(inner)
            if light is not None:
                cls.step = light

    def _fd_step(self):
        if self._fd_adopt_needed:
            self._fd_adopt()
        groups = self.param_groups
        hps = [self._fd_hp(gi, g) for gi, g in enumerate(groups)]
        params = [p for g in groups for p in g["params"]]
        grads = list(map(_get_grad, params))
        plan = self._fd_plan
        fast = None
        if plan is not None and plan.guard is not None:
            fast = self._fd_fast(plan, params, grads, hps)
        if fast is not None:
            gs, gaddrs = fast
        else:
            have = list(map(_is_not, grads, repeat(None)))
            paddrs = list(map(_data_ptr, params))
            pshapes = list(map(_get_shape, params))
            pcontig = list(map(_is_contiguous, params))
            if (plan is None or plan.have != have or plan.paddr_list != paddrs
                    or len(plan.params) != len(params) or not all(map(_is, params, plan.params))
                    or plan.pshapes != pshapes or plan.pcontig != pcontig
                    or not all(params[i].stride() == st for i, st in plan.pnc)
                    or not self._fd_plan_current(plan, hps)):
                plan = self._fd_build(params, have, paddrs, hps)
            if plan.inference and not torch.is_inference_mode_enabled():
                raise RuntimeError(f"{self._name()}: a parameter is an inference tensor (created "
                                   "under torch.inference_mode()), which torch does not update in "
                                   "place outside inference mode; clone it into a normal tensor")
            present = list(compress(grads, have))
            gs, gaddrs = self._fd_check_grads(plan, present)
            # the gradients passed as they are: the next steps compare with what was checked now
            plain = gs is present
        # every bucket's scalars (and post-update passes) before anything is written
        rule = self._rule
        scalars, passes, mixed = [], [], []
        for b in plan.buckets:
            hp = hps[b.gi]
            t = b.step + 1
            sc = rule.step_scalars(hp, t, b.fresh, b.sstate)
            where = f"param_groups[{b.gi}]"
            scalars.append(check_scalars(sc, where, b.dtype))
            passes.append([(name, check_scalars(psc, where, b.dtype))
                           for name, psc in rule.post_passes(hp, t)])
            mixed.append(None if b.spec is None else self._fd_mixed_module(b.be))
            if b.spec is not None:
                if t >= 2 ** 32:
                    raise ValueError(f"{where}: the mixed-precision step counts steps below 2**32")
                if passes[-1]:  # (group_spec refuses l1 > 0 and gradient noise: not reached)
                    raise ValueError(f"{where}: {[n for n, _ in passes[-1]]} after the "
                                     "mixed-precision step is not supported")
        if plan is not self._fd_plan:
            self._fd_commit(plan)
        if fast is None and plain and plan.guard_tries < _GUARD_TRIES:
            self._fd_record(plan, params, gs, gaddrs)
        if not plan.buckets:
            return
        done = 0  # buckets updated so far
        try:
            for b, sc, ps, mx in zip(plan.buckets, scalars, passes, mixed):
                if b.plan is not None:
                    flat = _flat_dev if b.device_table else _flat_np
                    b.plan.set_grads([flat(gs[k]) for k in b.kidx], gaddrs[b.kidx])
                    with _ordered(b):
                        mx.mixed_step(b.plan, scalars=sc, step=b.step + 1, grad_scale=1.0)
                    done += 1
                    continue
                if b.numpy:
                    b.tab.set("grad", [gs[k].numpy() for k in b.kidx], gaddrs[b.kidx])
                elif b.kall:  # (c, numba, cuda: the addresses are what the kernel reads)
                    b.tab.set("grad", gs, gaddrs)
                else:  # (cuda's tables count the arrays; c's and numba's read only addresses)
                    b.tab.set("grad", [gs[k] for k in b.kidx] if b.device_table else gs,
                              gaddrs[b.kidx])
                with _ordered(b):
                    _launch(b, rule.name, sc, ps)
                done += 1
        finally:
            for b in plan.buckets:  # no reference to a gradient outlives the step
                if b.plan is not None:
                    b.plan.release_grads()
                else:
                    b.tab.set("grad", None)
            if done < len(plan.buckets):
                # a launch failed (the cuda backend's can: a CUDA error, an allocation): the buckets
                # updated before it count their step, so their state stays consistent
                self._fd_advance(hps, plan.buckets[:done],
                                 [plan.params[i] for b in plan.buckets[:done] for i in b.param_index])
        self._fd_advance(hps, plan.buckets, plan.ptensors)

    def _fd_advance(self, hps, buckets, ptensors):
        """After ``buckets`` were updated: their step counts and scalar state advanced, and the
        autograd versions of their parameters ``ptensors`` bumped."""
        rule = self._rule
        for b in buckets:
            b.step += 1
            b.fresh = False
            blk = self._fd_steps[b.gi][1]
            blk[b.sel] = b.step
            b.sbytes = blk[b.sel].tobytes()
            if b.sstate is not None:
                b.sstate = rule.next_scalar_state(hps[b.gi], b.step, b.sstate)
                for name, v in b.sstate.items():
                    self._fd_sblocks[(b.gi, name)][1][b.sel] = v
        _bump_versions(ptensors)

    def _fd_plan_current(self, plan, hps, addrs=True):
        """False when the state the plan's tables point at is no longer the optimizer's (replaced
        state dicts or tensors, step counts edited, an option that needs another buffer).
        ``addrs=False``: the caller has compared the state tensors' addresses."""
        state = self.state
        if (plan.state_obj is not state or len(state) != len(plan.svals)
                or not all(map(_is, state.values(), plan.svals))):
            return False
        if addrs and list(map(_data_ptr, plan.st_kern)) != plan.st_addrs:
            return False  # (a state tensor's memory moved: resize_, set_, .data = ...)
        if plan.sd_rep and not all(map(_is, map(_getitem, plan.sd_rep, plan.sn_rep), plan.st_rep)):
            return False
        steps = self._fd_steps
        for b in plan.buckets:
            hp = hps[b.gi]
            if b.hp is not hp:  # (the group changed: its options may ask for another storage)
                if b.names != self._rule.state_names(hp):
                    return False
                if self._fd_spec(b.gi, hp, b.tdtype, b.names) != b.spec:
                    return False
                b.hp = hp
            # (the bytes the last step wrote: equal values for any other bytes are rare, and only
            # cost the full comparison)
            now = steps[b.gi][1][b.sel]
            if now.tobytes() != b.sbytes and (now != b.step).any():
                return False
        return True

    def _fd_fast(self, plan, params, grads, hps):
        """The gradients to read and their addresses (as :meth:`_fd_check_grads` returns them) if
        the cached plan holds and every gradient has what the step needs, checked in a few C-level
        passes against what an earlier step checked one by one; None: take the full path, which
        decides (and raises, rebuilds or copies) exactly as before.

        One :func:`._guard.tensor_guard` call compares every parameter and gradient with the ones
        the plan was last confirmed with (type, dispatch keys: CPU, strided, no negative or zero bit;
        dtype, requires_grad, shape, strides); the parameters' and state tensors' addresses are
        compared with the plan's, the state (dicts, entries, step counts) as
        :meth:`_fd_plan_current` does; the gradients' addresses must be non-null and share no byte
        with what the step writes, which is computed once per set of addresses and remembered for
        the plan (the last few sets: torch's allocator often hands the same ones back)."""
        if len(params) != len(plan.params) or not all(map(_is, params, plan.params)):
            return None
        if plan.all_have:
            present = grads
        else:
            if any(map(_is_not, compress(grads, plan.nothave), repeat(None))):
                return None
            present = list(compress(grads, plan.have))
        if not plan.guard(*params, *present):  # (a None gradient fails it)
            return None
        if list(map(_data_ptr, plan.watch)) != plan.watch_addrs:
            return None
        if not self._fd_plan_current(plan, hps, addrs=False):
            return None
        if not present:
            return present, None
        gptrs = list(map(_data_ptr, present))
        for seen, arr in plan.gseen:
            if seen == gptrs:
                return present, arr
        arr = np.array(gptrs, dtype=np.int64)
        if not np.logical_or(arr, plan.gempty).all() or self._fd_grad_overlaps(plan, arr).any():
            return None
        plan.gseen.insert(0, (gptrs, arr))
        del plan.gseen[_SEEN:]
        return present, arr

    @staticmethod
    def _fd_record(plan, params, gs, gaddrs):
        """After a step whose plan held and whose gradients passed as they were: remember their
        metadata (a guard over the parameters and gradients) and addresses for the next steps'
        fast path. A plan whose guard keeps failing stops recording after a few tries; one with
        inference tensors (which the full path checks against the inference mode) never does."""
        plan.guard_tries += 1
        if plan.inference:
            return
        plan.guard = tensor_guard(params + gs)
        plan.gseen = [] if gaddrs is None else [(gaddrs.tolist(), gaddrs)]

    def _fd_mixed_module(self, be):
        """Backend ``be``'s mixed-precision step (``fastdescent/backends/<backend>/mixed.py``);
        ``ValueError`` if it has none."""
        mods = self.__dict__.setdefault("_fd_mixed", {})
        mod = mods.get(be.NAME)
        if mod is None:
            from ..backends._mixed import mixed_module

            mod = mods[be.NAME] = mixed_module(be, f"{self._name()}: ")
        return mod

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
            if (list(map(plan.get_meta, present)) == plan.meta
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
        plan.all_have = all(have)
        plan.nothave = [not h for h in have]
        plan.guard, plan.guard_tries, plan.gseen = None, 0, []
        plan.paddrs = np.array(paddrs, dtype=np.int64)
        keyed = {}
        pending = []
        sparams, sindex, sgroup = [], [], []
        specs = {}  # (group, dtype) -> MixedSpec or None
        i = 0
        for gi, g in enumerate(self.param_groups):
            hp = hps[gi]
            names = self._rule.state_names(hp)
            n = len(g["params"])
            blk = self._fd_steps.get(gi)  # (SGD: its step counts, kept out of the state)
            for k, p in enumerate(g["params"]):
                if not have[i]:
                    i += 1
                    continue
                where = f"params[{i}]"
                self._fd_check_param(p, where)
                skey = (gi, p.dtype)
                if skey not in specs:
                    specs[skey] = self._fd_spec(gi, hp, p.dtype, names)
                spec = specs[skey]
                codes = dict(spec.codes) if spec is not None else {}
                st = state.get(p, {})
                missing, convert = [], []
                for nm in names:
                    buf = st.get(nm)
                    if buf is None:
                        check_scalars({f"initial value of {nm!r} (from the group's lr and "
                                       "options)": rule.init_value(hp, nm)},
                                      f"param_groups[{gi}]", _NP.get(p.dtype, _NP[_F32]))
                        missing.append(nm)
                    elif self._fd_buf_status(i, nm, buf, p, st, codes.get(nm)) == "convert":
                        convert.append(nm)
                master, drop = None, []
                if self._lowp:
                    if spec is not None and spec.master:
                        master = self._fd_master_status(i, p, st)
                        if master == "ok":
                            master = None
                    elif _MASTER in st:
                        drop.append(_MASTER)  # (a group without master weights drops the copy)
                    drop += [_scale_name(nm) for nm in names
                             if codes.get(nm) not in _Q8 and nm not in convert
                             and _scale_name(nm) in st]
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
                elif blk is not None and blk[0].numel() == n:
                    step = int(blk[1][k])
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
                key = (gi, p.dtype, step, tuple(ss), bool(missing), p.device)
                keyed.setdefault(key, []).append((i, k))
                if missing or rehome or convert or master or drop:
                    pending.append((gi, k, n, p, missing, hp, step, ss, spec, convert, master,
                                    drop))
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
            spec = specs[(gi, p.dtype)]
            for nm in self._rule.state_names(hps[gi]):
                buf = st.get(nm)
                if buf is not None and buf.dtype == (p.dtype if spec is None
                                                     else _STORAGE[dict(spec.codes)[nm]]):
                    spans.append(_span(buf))
                    whats.append(f"state[{i}][{nm!r}]")
                    if buf.dtype == _U8:
                        spans.append(_span(st[_scale_name(nm)]))
                        whats.append(f"state[{i}][{_scale_name(nm)!r}]")
            if spec is not None and spec.master and self._fd_master_status(i, p, st) == "ok":
                spans.append(_span(st[_MASTER]))
                whats.append(f"state[{i}][{_MASTER!r}]")
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
        for (gi, dt, step, ss, fresh, device), members in keyed.items():
            b = _Bucket()
            b.device = device
            b.be = self._fd_be(sparams[pos_of[members[0][0]]])
            b.gpu = device.type == "cuda"  # (launches ordered with torch's current stream)
            b.numpy = b.be.NAME == "numpy"  # (its table takes NumPy arrays)
            b.device_table = bool(getattr(b.be, "DEVICE", False))  # (counts its arrays)
            b.sim = b.device_table and bool(getattr(b.be, "SIM", False))  # (one launch at a time)
            b.spec, b.plan, b.tdtype, b.hp = specs[(gi, dt)], None, dt, hps[gi]
            # (a mixed-precision bucket computes in float32: its scalars must fit float32)
            b.gi, b.dtype, b.step, b.fresh = gi, _NP[_F32] if b.spec else _NP[dt], step, fresh
            b.sstate = dict(ss) if ss else None
            b.pos = np.array([k for _, k in members], dtype=np.int64)
            b.param_index = np.array([i for i, _ in members], dtype=np.int64)
            b.kidx = np.array([pos_of[i] for i, _ in members], dtype=np.int64)
            b.kall = False
            b.sel = b.pos
            if len(b.pos) and (b.pos == np.arange(b.pos[0], b.pos[0] + len(b.pos))).all():
                b.sel = slice(int(b.pos[0]), int(b.pos[0]) + len(b.pos))  # (a view: cheaper)
            b.names = self._rule.state_names(hps[gi])
            b.sbytes = None  # (the bytes of its step counts the last step wrote)
            plan.buckets.append(b)
        if len(plan.buckets) == 1:
            plan.buckets[0].kall = True  # the bucket reads every gradient, in order
        plan.sparams, plan.sindex = sparams, sindex
        if all(p.is_cpu for p in sparams):
            plan.get_meta = _get_meta
            plan.meta = [(p.dtype, True, p.shape) for p in sparams]
        else:  # (CUDA tensors: the gradient on the parameter's device, index included)
            plan.get_meta = _get_meta_dev
            plan.meta = [(p.dtype, p.device, p.shape) for p in sparams]
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
        """Create the plan's pending state (buffers, step tensors, scalar state; low-precision
        state converted to its group's storage, master copies, stale entries dropped) and build its
        tables (mixed-precision plans for the low-precision buckets); the plan becomes the
        optimizer's."""
        from ..backends._mixed import MixedPlan

        rule = self._rule
        state = self.state
        sdt = _scalar_dtype()
        for gi, k, n, p, missing, hp, step, ss, spec, convert, master, drop in plan.pending:
            st = state[p]
            codes = dict(spec.codes) if spec is not None else {}
            for nm in missing:
                buf, sc = self._fd_storage(p, nm, codes.get(nm), init=rule.init_value(hp, nm))
                st[nm] = buf
                if sc is not None:
                    st[_scale_name(nm)] = sc
            for nm in convert:
                sname = _scale_name(nm)
                buf, sc = self._fd_storage(p, nm, codes.get(nm), st[nm], st.get(sname))
                st[nm] = buf
                if sc is not None:
                    st[sname] = sc
                else:
                    st.pop(sname, None)
            if master is not None:  # missing: the parameter's values; convert: the copy's
                m = self._fd_like(p, _F32, _MASTER)
                m.copy_(p.detach() if master == "missing" else st[_MASTER].detach())
                st[_MASTER] = m
            for key in drop:
                st.pop(key, None)
            if self._step_in_state:
                st["step"] = self._fd_step_view(gi, k, n, step)
            for nm, v in ss:
                t, a = self._fd_block(self._fd_sblocks, (gi, nm), n, sdt)
                a[k] = v
                st[nm] = t[k]
        plan.pending = None
        if not self._step_in_state:  # SGD: the step counts (stochastic rounding's bits) in a block
            for b in plan.buckets:
                n = len(self.param_groups[b.gi]["params"])
                self._fd_block(self._fd_steps, b.gi, n, sdt)[1][b.sel] = b.step
        ptensors = []
        sd_rep, sn_rep, st_rep = [], [], []
        st_kern, st_addrs, spans = [], [], []
        params = plan.params
        extra = (["step"] if self._step_in_state else []) + list(rule.scalar_state)

        def track(ps, nm, bufs, kern):
            """Remember where state entry ``nm`` of ``ps`` is (a replaced entry, or one whose
            memory moved, makes the next step rebuild the plan)."""
            if kern:
                st_kern.extend(bufs)
                st_addrs.extend(map(_data_ptr, bufs))
                spans.extend(map(_span, bufs))
            for p, buf in zip(ps, bufs):
                sd_rep.append(state[p])
                sn_rep.append(nm)
                st_rep.append(buf)

        for b in plan.buckets:
            ps = [params[i] for i in b.param_index]
            ptensors.extend(ps)
            spans.extend(map(_span, ps))
            for nm in extra:
                track(ps, nm, [state[p][nm] for p in ps], False)
            if b.spec is not None:
                # the plan's NumPy (device: DeviceSpan) views of the tensors' memory keep it alive
                # while it points at it
                flat = _flat_dev if b.device_table else _flat_np
                codes = dict(b.spec.codes)
                cols = {}
                for nm in b.names:
                    bufs = [state[p][nm] for p in ps]
                    track(ps, nm, bufs, True)
                    scs = None
                    if codes[nm] in _Q8:
                        scs = [state[p][_scale_name(nm)] for p in ps]
                        track(ps, _scale_name(nm), scs, True)
                        scs = [flat(x) for x in scs]
                    cols[nm] = ([flat(x) for x in bufs], codes[nm], scs)
                masters = None
                if b.spec.master:
                    ms = [state[p][_MASTER] for p in ps]
                    track(ps, _MASTER, ms, True)
                    masters = [flat(x) for x in ms]
                b.plan = MixedPlan(rule.name, [flat(p) for p in ps], b.spec.pcode, masters,
                                   cols, b.param_index, b.spec.seed, b.spec.stochastic)
                b.tab = None
                continue
            aliases = [p.detach() for p in ps]  # keep the memory alive while the table points at it
            tab = b.be.Table(b.dtype, [p.numel() for p in ps])
            tab.set("param", [a.numpy() for a in aliases] if b.numpy else aliases,
                    plan.paddrs[b.param_index])
            for nm in b.names:
                bufs = [state[p][nm] for p in ps]
                # aliases keep the memory alive even if a buffer's storage is swapped
                # (.data = ..., set_): its address then changes, and the next step sees it
                salias = [x.detach() for x in bufs]
                addrs = np.fromiter(map(_data_ptr, bufs), np.int64, len(bufs))
                tab.set(nm, [x.numpy() for x in salias] if b.numpy else salias, addrs)
                track(ps, nm, bufs, True)
            b.tab = tab
        plan.ptensors = ptensors
        plan.st_kern, plan.st_addrs = st_kern, st_addrs
        self._fd_set_written(plan, spans)
        plan.state_obj = state
        plan.svals = list(state.values())
        plan.watch = list(params) + st_kern  # (the fast path compares their addresses at once)
        plan.watch_addrs = plan.paddr_list + st_addrs
        plan.sd_rep, plan.sn_rep, plan.st_rep = sd_rep, sn_rep, st_rep
        self._fd_plan = plan

    def __repr__(self):
        name = type(self).__name__
        return super().__repr__().replace(f"{name} (", f"{name} (backend: {self.backend!r}", 1)
