"""Array inspection shared by the validation code: host NumPy arrays and device arrays alike.

Device arrays are anything exposing ``__cuda_array_interface__`` (Numba device arrays, CuPy arrays,
torch CUDA tensors); they are described from that interface without touching their data.
"""

from __future__ import annotations

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class ArrayInfo:
    __slots__ = ("obj", "shape", "dtype", "addr", "nbytes", "contiguous", "writeable", "device", "size")

    def __init__(self, obj, shape, dtype, addr, contiguous, writeable, device, size=None):
        self.obj = obj
        self.shape = shape
        self.dtype = dtype
        if size is None:
            size = 1
            for d in shape:
                size *= int(d)
        self.size = size
        self.addr = addr
        self.nbytes = self.size * dtype.itemsize
        self.contiguous = contiguous
        self.writeable = writeable
        self.device = device

    def overlaps(self, other):
        if self.nbytes == 0 or other.nbytes == 0 or self.device != other.device:
            return False
        return self.addr < other.addr + other.nbytes and other.addr < self.addr + self.nbytes


def _cuda_interface(a):
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is None and getattr(a, "__cuda_ndarray__", False):
        # a Numba CUDA-simulator array: its interface is added when the cuda backend loads
        from .backends import get_backend

        get_backend("cuda")
        cai = getattr(a, "__cuda_array_interface__", None)
    return cai


def wire_dtype(dtype):
    """The dtype a host<->device copy of ``dtype`` travels as: ``dtype`` itself where NumPy's buffer
    protocol can describe it, else the unsigned integer of its size. ml_dtypes' bfloat16 (kind 'V',
    buffer format 'E') has no buffer format: ``memoryview`` refuses it, and so do Numba's driver
    copies (``to_device``/``copy_to_host``/``copy_to_device`` take the host side as a buffer);
    Numba's simulator copies with NumPy and does not notice."""
    dtype = np.dtype(dtype)
    if dtype.kind == "V" and dtype.fields is None and dtype.itemsize in (1, 2, 4, 8):
        return np.dtype(f"u{dtype.itemsize}")
    return dtype


def device_to_host(a):
    """A host NumPy copy of the Numba device array ``a`` (anything with ``copy_to_host``), bfloat16
    included (copied as its 16-bit words, see :func:`wire_dtype`)."""
    w = wire_dtype(a.dtype)
    if w == a.dtype:
        return a.copy_to_host()
    return a.view(w).copy_to_host().view(a.dtype)


def is_device_array(a):
    return not isinstance(a, np.ndarray) and (
        hasattr(a, "__cuda_array_interface__") or getattr(a, "__cuda_ndarray__", False))


def find_overlap(infos):
    """(i, j), i < j, of two entries of ``infos`` whose memory overlaps (or that are the same object);
    None if there is none. O(n log n): a sweep over the address-sorted non-empty ranges."""
    order = sorted(range(len(infos)), key=lambda k: (infos[k].device, infos[k].addr))
    seen = {}
    reach, owner, dev = -1, None, None
    for k in order:
        info = infos[k]
        if id(info.obj) in seen:
            return tuple(sorted((seen[id(info.obj)], k)))
        seen[id(info.obj)] = k
        if info.nbytes == 0:
            continue
        if info.device != dev:
            reach, owner, dev = -1, None, info.device
        if owner is not None and info.addr < reach:
            return tuple(sorted((owner, k)))
        if info.addr + info.nbytes > reach:
            reach, owner = info.addr + info.nbytes, k
    return None


def inspect(a, what):
    """Describe ``a``; ``what`` names the argument in error messages (e.g. ``"params[3]"``).

    ndarray subclasses are described by a plain ``ndarray`` view of the same memory (``info.obj``),
    so that no kernel ever sees subclass arithmetic (``np.matrix`` makes ``g * g`` a matrix
    product); masked arrays are refused, since a kernel would silently ignore their mask.
    """
    if isinstance(a, np.ndarray):
        if type(a) is not np.ndarray:
            if isinstance(a, np.ma.MaskedArray):
                raise TypeError(f"{what} is a masked array: kernels would ignore its mask; pass "
                                "a plain array (e.g. np.ma.filled(x, 0))")
            a = a.view(np.ndarray)
        flags = a.flags
        return ArrayInfo(a, a.shape, a.dtype, a.__array_interface__["data"][0],
                         flags.c_contiguous, flags.writeable, False, a.size)
    cai = _cuda_interface(a)
    if cai is None:
        raise TypeError(
            f"{what} must be a numpy.ndarray or a device array exposing __cuda_array_interface__, "
            f"got {type(a).__name__}"
        )
    shape = tuple(int(d) for d in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    if dtype.kind == "V" and dtype.itemsize == 2 and dtype.fields is None:
        # '<V2': bfloat16, as torch's CUDA tensors and ml_dtypes arrays spell it (the interface
        # has no typestr of its own for it)
        from .precision import bfloat16

        dtype = bfloat16()
    strides = cai.get("strides")
    if strides is None:
        contiguous = True
    else:
        expect, contiguous = dtype.itemsize, True
        for n, s in zip(reversed(shape), reversed(strides)):
            if n > 1 and s != expect:
                contiguous = False
            expect *= n
    addr, readonly = cai["data"]
    return ArrayInfo(a, shape, dtype, int(addr or 0), contiguous, not readonly, True)


def check_param(info, what, low_precision=False):
    """Raise if ``info`` cannot be updated in place by a kernel (``low_precision``: the caller has
    checked a bfloat16/float16 dtype itself)."""
    if not low_precision and info.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{what} has dtype {info.dtype}; supported: float32, float64")
    if not info.contiguous:
        raise ValueError(f"{what} is not C-contiguous; kernels update contiguous arrays in place "
                         "(pass np.ascontiguousarray(x) and keep that array)")
    check_aligned(info, what)
    if not info.writeable:
        raise ValueError(f"{what} is read-only")


def check_aligned(info, what):
    """Raise if ``info``'s data is not aligned to its element size (compiled kernels would read
    it with undefined behaviour; e.g. ``np.frombuffer(buf, np.float32, offset=1)``)."""
    if info.nbytes and info.addr % info.dtype.itemsize:
        raise ValueError(f"{what} is not aligned: its data starts at an address that is not a "
                         f"multiple of {info.dtype.itemsize} bytes (its element size); pass an "
                         "aligned copy (np.array(x))")


def check_readable(info, what):
    """Raise if a kernel cannot read ``info`` as a flat array (contiguity, alignment)."""
    if not info.contiguous:
        raise ValueError(f"{what} is not C-contiguous")
    check_aligned(info, what)


def check_like(info, ref, what, ref_what):
    """Raise if ``info`` (an array read or written next to ``ref``: a gradient next to its parameter,
    a state buffer next to its parameter) differs from ``ref`` in host/device placement, shape or
    dtype, or cannot be read as a flat array. ``what``/``ref_what`` name the two in the message."""
    if info.device != ref.device:
        raise ValueError(f"{what} is a {'device' if info.device else 'host'} array but {ref_what} is "
                         f"a {'device' if ref.device else 'host'} array")
    if info.shape != ref.shape:
        raise ValueError(f"{what} has shape {info.shape}, expected {ref.shape} (the shape of "
                         f"{ref_what})")
    if info.dtype != ref.dtype:
        from .precision import BF16, F16, code_of_dtype

        also = " or float32" if code_of_dtype(ref.dtype) in (BF16, F16) else ""
        raise TypeError(f"{what} has dtype {info.dtype}, expected {ref.dtype} (the dtype of "
                        f"{ref_what}){also}")
    check_readable(info, what)


def address_array(infos):
    return np.fromiter((i.addr for i in infos), dtype=np.int64, count=len(infos))


def flat_view(arrays, infos):
    """One flat array over ``arrays`` if they are adjacent views of one contiguous block, else None.

    This is what lets a bucket whose parameters (and gradients) come from a
    :class:`~fastdescent.arena.ParamArena` be updated as a single tensor.
    """
    if len(arrays) < 2:
        return None
    root = arrays[0].base if arrays[0].base is not None else arrays[0]
    if not isinstance(root, np.ndarray) or not root.flags.c_contiguous:
        return None
    plain_root = root if type(root) is np.ndarray else root.view(np.ndarray)
    prev = None  # last non-empty array: empty ones may report any address (NumPy gives the start)
    for k, a in enumerate(arrays):
        if (a.base if a.base is not None else a) is not root:
            return None
        if infos[k].nbytes == 0:
            continue
        if prev is not None and infos[k].addr != infos[prev].addr + infos[prev].nbytes:
            return None
        if prev is None:
            first = k
        prev = k
    if prev is None:
        return None
    start = infos[first].addr - plain_root.__array_interface__["data"][0]
    nbytes = infos[prev].addr + infos[prev].nbytes - infos[first].addr
    flat = plain_root.reshape(-1).view(np.uint8)[start:start + nbytes].view(infos[0].dtype)
    if not arrays[0].flags.writeable:
        flat.flags.writeable = False
    return flat
