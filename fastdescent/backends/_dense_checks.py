"""Argument checks of the dense-layer kernels (the contract rows of kind ``"array"``), shared by every
backend, run in Python before anything is launched or written.

The c backend is the reference (``backends/c_cffi``: its Python fast checks, cffi's
``from_buffer`` and the C library's status codes); the numpy, numba and cuda backends call
:func:`check` so that the same bad call raises the same exception type everywhere, in the same
order, with a message naming the kernel and the argument:

1. ``TypeError``: the first written array (which decides the element type) is not a float32 /
   float64 array of the kind the backend takes; ``labels`` of ``xent_fwd_bwd`` not integers.
2. ``ValueError``: another argument that is not such an array, or shapes, ranks or dtypes that do
   not fit together (the shape letters of :data:`SPECS`).
3. ``ValueError``: an array that is not C-contiguous, a read-only written array.
4. :class:`~fastdescent.errors.KernelError` with the C status code, as the C library reports it:
   ``FD_ERR_SHAPE`` for a weight batch ``Bw`` other than 1 or ``B``; ``FD_ERR_ARG`` for an unknown
   activation ``kind`` or a non-finite loss ``scale``; ``FD_ERR_ALIGN`` for a non-empty array whose
   data is not aligned to its element size; ``FD_ERR_ARG`` for a label outside ``[0, C)``
   (:func:`check_labels` on the host; the cuda backend checks the labels on the device).

"The kind the backend takes" is a NumPy ``ndarray`` for host backends and, for the cuda backend
(``device=True``), an object exposing ``__cuda_array_interface__``, inspected through that interface
(shape, dtype, strides, read-only flag and address; never copied to the host; see
:func:`fastdescent._arrays.inspect`).
"""

from __future__ import annotations

import math

import numpy as np

from .._arrays import inspect as _inspect
from .._contract import ACT_KINDS
from .._contract import KERNELS as _ROWS
from ..errors import KernelError

__all__ = [
    "check", "check_kind", "check_overlap", "check_labels", "kernel_error", "SPECS", "FLOATS",
    "ERR_ARG", "ERR_SHAPE", "ERR_ALIGN",
]

FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
_I64 = np.dtype(np.int64)

#: status codes and texts of csrc/fastdescent.h / fd_strerror, for the errors the C library reports
ERR_ARG = 3
ERR_SHAPE = 4
ERR_ALIGN = 6
_STRERROR = {ERR_ARG: "an argument is outside its domain",
             ERR_SHAPE: "shapes or batch sizes do not fit together",
             ERR_ALIGN: "an array is not aligned to its element type"}

#: kernel -> ((argument, axes), ...) in call order. Axes are letters shared between the arguments
#: (W is the weight batch Bw); "*" means any shape, of the same size as every other "*" argument.
SPECS = {
    "matmul_fwd": (("y", "BMN"), ("x", "BMK"), ("w", "WKN"), ("b", "WN")),
    "matmul_bwd_x": (("dx", "BMK"), ("dy", "BMN"), ("w", "WKN")),
    "matmul_bwd_w": (("dw", "WKN"), ("db", "WN"), ("x", "BMK"), ("dy", "BMN")),
    "act_fwd": (("y", "*"), ("x", "*")),
    "act_bwd": (("dx", "*"), ("dy", "*"), ("x", "*"), ("y", "*")),
    "mse_fwd_bwd": (("dpred", "*"), ("pred", "*"), ("target", "*")),
    "xent_fwd_bwd": (("dlogits", "RC"), ("logits", "RC"), ("labels", "R")),
}

_LETTER = {"W": "Bw"}
_ACT_KINDS = tuple(ACT_KINDS.values())


def _expected(kernel):
    parts = []
    for name, axes in SPECS[kernel]:
        if axes == "*":
            parts.append(name)
        else:
            parts.append(f"{name} ({', '.join(_LETTER.get(a, a) for a in axes)})")
    tail = "one size and one float dtype" if SPECS[kernel][0][1] == "*" else "one float dtype"
    if kernel == "xent_fwd_bwd":
        tail = "one float dtype, integer labels"
    if any("W" in axes for _, axes in SPECS[kernel]):
        tail = "Bw in (1, B), " + tail
    return ", ".join(parts) + "; " + tail


_EXPECTED = {k: _expected(k) for k in SPECS}
_WRITES = {k: len(_ROWS[k].writes) for k in SPECS}
_OPTIONAL = {k: frozenset(_ROWS[k].optional) for k in SPECS}


def kernel_error(kernel, code):
    """The :class:`KernelError` the c backend raises for C status ``code``."""
    return KernelError(kernel, code, _STRERROR[code])


class _Host:
    """What the checks need of a host ndarray (a light :class:`fastdescent._arrays.ArrayInfo`)."""

    __slots__ = ("shape", "dtype", "contiguous", "writeable", "aligned", "size")

    def __init__(self, a):
        flags = a.flags
        self.shape = a.shape
        self.dtype = a.dtype
        self.contiguous = flags.c_contiguous
        self.writeable = flags.writeable
        self.aligned = flags.aligned  # data at a multiple of the dtype's alignment (its size here)
        self.size = a.size


def _aligned(info):
    if type(info) is _Host:
        return info.aligned
    return info.addr % info.dtype.itemsize == 0


def _describe(a, device):
    """The array description of ``a``, or None if it is not an array of the kind wanted."""
    if isinstance(a, np.ndarray):
        return None if device else _Host(a)
    if not device:
        return None
    try:
        return _inspect(a, "array")  # __cuda_array_interface__; never touches the data
    except TypeError:
        return None


def _kind_name(device):
    return "device array (__cuda_array_interface__)" if device else "NumPy array"


def _desc(names, args, infos):
    out = []
    for name, a, info in zip(names, args, infos):
        if a is None:
            continue
        if info is None:
            out.append(f"{name} {type(a).__name__}")
        else:
            out.append(f"{name} {tuple(info.shape)} {info.dtype}")
    return ", ".join(out)


#: host calls that passed, keyed by everything :func:`_check` looks at (kernel, kind, whether scale
#: is finite, and per argument its shape, dtype, contiguity, writeability and alignment): a training
#: loop makes the same few calls every minibatch, and a lookup costs half of a full check
_MEMO = {}
_MEMO_MAX = 512


def check(kernel, args, *, device=False, kind=None, scale=None):
    """Validate the arguments ``args`` (in call order) of dense kernel ``kernel``.

    Returns ``(dims, infos)`` (see :func:`_check`); on host arrays, a call whose arguments have
    the same layout as an earlier call that passed is answered from a memo.
    """
    if kernel in ("act_fwd", "act_bwd"):
        kind = check_kind(kernel, kind)
    if device:
        dims, infos = _check(kernel, args, device=True, kind=kind, scale=scale)
        spec = SPECS[kernel]
        for k in range(_WRITES[kernel]):
            for j, info in enumerate(infos):
                if j != k and infos[k] is not None and info is not None and infos[k].overlaps(info):
                    if kernel == "act_fwd" and (infos[k].addr, infos[k].nbytes) == (info.addr, info.nbytes):
                        continue  # y may be x exactly
                    raise ValueError(f"{kernel}: {spec[k][0]} shares memory with {spec[j][0]}: "
                                     "a written array must not overlap any other argument")
        return dims, infos
    key = [kernel, kind, scale is None or math.isfinite(scale)]
    for a in args:
        if a is None:
            key.append(None)
        elif type(a) is np.ndarray:
            f = a.flags
            key.append((a.shape, a.dtype, f.c_contiguous, f.writeable, f.aligned))
        else:  # not a plain ndarray: the full check says what is wrong
            out = _check(kernel, args, kind=kind, scale=scale)
            check_overlap(kernel, args)
            return out
    key = tuple(key)
    hit = _MEMO.get(key)
    if hit is None:
        hit = _check(kernel, args, kind=kind, scale=scale)
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = hit
    check_overlap(kernel, args)
    return hit


def check_kind(kernel, kind):
    """The activation ``kind`` as an int: ``TypeError`` for anything but an integer (bools and
    floats included), ``KernelError`` FD_ERR_ARG for an unknown one (as the C library)."""
    if isinstance(kind, (bool, np.bool_)) or not isinstance(kind, (int, np.integer)):
        raise TypeError(f"{kernel}: kind must be an int (an activation kind), got "
                        f"{type(kind).__name__} {kind!r}")
    if int(kind) not in _ACT_KINDS:
        raise kernel_error(kernel, ERR_ARG)
    return int(kind)


def _bounds(a):
    return a.__array_interface__["data"][0], a.nbytes


def check_overlap(kernel, args):
    """``ValueError`` if a written argument of ``kernel`` shares memory with any other argument:
    outputs must not overlap inputs (``csrc/fastdescent.h``), or results depend on the backend's
    loop order. ``act_fwd`` may run in place (``y`` exactly ``x``). Host arrays only
    (``np.shares_memory``: exact, ~0.2 us a pair for contiguous
    arrays); device arrays are compared by address range in :func:`_check`."""
    spec = SPECS[kernel]
    for k in range(_WRITES[kernel]):
        w = args[k]
        if w is None or not isinstance(w, np.ndarray):
            continue
        for j, a in enumerate(args):
            if j != k and isinstance(a, np.ndarray) and np.shares_memory(w, a):
                if kernel == "act_fwd" and _bounds(w) == _bounds(a):
                    continue  # y may be x exactly (an element-wise map in place)
                raise ValueError(f"{kernel}: {spec[k][0]} shares memory with {spec[j][0]}: "
                                 "a written array must not overlap any other argument")


def _check(kernel, args, *, device=False, kind=None, scale=None):
    """Validate the arguments ``args`` (in call order) of dense kernel ``kernel``.

    ``kind`` (activations) and ``scale`` (losses) are checked as the C library checks them.
    Returns ``(dims, infos)``: ``dims`` maps the axis letters of :data:`SPECS` to their sizes
    (``"*"`` to the common size), ``infos`` the argument descriptions (None for absent optional
    arguments). Raises as the module docstring says; the labels' values are not looked at (see
    :func:`check_labels`).
    """
    spec = SPECS[kernel]
    infos = [None if a is None else _describe(a, device) for a in args]
    first = infos[0]
    if first is None or first.dtype not in FLOATS:
        if first is not None:
            got = first.dtype
        elif device and isinstance(args[0], np.ndarray):
            got = "a host numpy.ndarray"
        else:
            got = type(args[0]).__name__
        raise TypeError(f"{kernel}: {spec[0][0]} must be a float32 or float64 "
                        f"{_kind_name(device)}, got {got}")
    dt = first.dtype
    optional = _OPTIONAL[kernel]
    names = [name for name, _ in spec]
    dims = {}
    ok = True
    not_array = None
    for (name, axes), a, info in zip(spec, args, infos):
        if a is None:
            if name not in optional:
                ok = False
            continue
        if info is None:
            ok = False
            if not_array is None:
                not_array = name
            continue
        if name == "labels":
            # as c: integer labels are required once logits is a 2-D array of the right kind
            lg = infos[1]
            if info.dtype.kind not in "iu" and lg is not None and len(lg.shape) == 2:
                raise TypeError(f"{kernel}: labels must be integers, got {info.dtype}")
        elif info.dtype != dt:
            ok = False
        if axes == "*":
            axes, shape = "*", (info.size,)
        else:
            shape = info.shape
            if len(shape) != len(axes):
                ok = False
                continue
        for letter, n in zip(axes, shape):
            n = int(n)
            if dims.setdefault(letter, n) != n:
                ok = False
    if not ok:
        if not_array is not None:
            a = args[names.index(not_array)]
            raise ValueError(f"{kernel}: {not_array} must be a {_kind_name(device)}, got "
                             f"{type(a).__name__}")
        raise ValueError(f"{kernel}: arrays do not fit together ({_desc(names, args, infos)}); "
                         f"expected {_EXPECTED[kernel]}")
    nw = _WRITES[kernel]
    for k, (name, info) in enumerate(zip(names, infos)):
        if info is None:
            continue
        if not info.contiguous:
            raise ValueError(f"{kernel}: {name} is not C-contiguous")
        if k < nw and not info.writeable:
            raise ValueError(f"{kernel}: {name} is read-only")
    # what the C library checks, in its order
    if "W" in dims and dims["W"] != 1 and dims["W"] != dims["B"]:
        raise kernel_error(kernel, ERR_SHAPE)
    if kind is not None and kind not in _ACT_KINDS:
        raise kernel_error(kernel, ERR_ARG)
    if scale is not None and kernel == "xent_fwd_bwd" and not math.isfinite(scale):
        raise kernel_error(kernel, ERR_ARG)
    if kernel != "xent_fwd_bwd" or dims["R"]:
        for name, info in zip(names, infos):
            if info is None or not info.size:
                continue
            if name == "labels" and not device and info.dtype != _I64:
                continue  # converted to a fresh int64 array by the host backends
            if not _aligned(info):
                raise kernel_error(kernel, ERR_ALIGN)
    if scale is not None and kernel != "xent_fwd_bwd" and not math.isfinite(scale):
        raise kernel_error(kernel, ERR_ARG)
    return dims, infos


def check_labels(kernel, labels, C):
    """``labels`` as a C-contiguous int64 host array, after checking that every label is in
    [0, C) (``KernelError`` ``FD_ERR_ARG`` otherwise, as the C library; nothing is written)."""
    if labels.dtype != _I64:
        labels = labels.astype(_I64)
    if labels.size and (C == 0 or labels.min() < 0 or labels.max() >= C):
        raise kernel_error(kernel, ERR_ARG)
    return labels
