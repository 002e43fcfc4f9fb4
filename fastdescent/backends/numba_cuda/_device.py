"""Device plumbing of the ``cuda`` backend: pointer tables, the chunk walker, launch configuration,
device state hooks.

Design
------
A kernel never receives a list of arrays. A :class:`DeviceTable` packs each column into the *data
addresses* of its arrays (read once from ``__cuda_array_interface__`` when the column is set, which
the optimizer does once per bucket, and again only when the gradient arrays change identity), held on
the device as a small ``int64`` array: a device-side pointer table, as torch's fused optimizers and
apex's ``multi_tensor_apply`` use. It is uploaded on first launch and kept while the addresses stay
the same.

Every table-wide operation is ONE kernel that walks a *chunk plan* (:meth:`DeviceTable.plan`): the
table's tensors cut into chunks of at most ``chunk`` elements, a tensor's chunks consecutive, zero-size
tensors none. Blocks grid-stride over chunks, threads stride within a chunk (coalesced), so many small
tensors share a launch and a large one is spread over the whole GPU. A table of one tensor (a bucket
coalesced into one flat tensor, or a single parameter) is just a plan of one tensor; its chunks are
computed, not listed, so its plan does not grow with the tensor. Every kernel has the same loop::

    for c in range(cuda.blockIdx.x, plan[0], cuda.gridDim.x):
        t, start, end = _chunk(plan, c)          # tensor and element range of chunk c
        p = _ptr(ap[t], end, like)               # one address load per column and chunk
        for j in range(start + cuda.threadIdx.x, end, cuda.blockDim.x):
            _xxx_elem(p, ..., j, *scalars)       # the rule's per-element arithmetic

:func:`launch` runs an element-wise kernel over a table with a chunk size from the
:class:`LaunchConfig` (:func:`elementwise_chunk`); the reductions (``clip``, ``lamb``) walk plans of
their own fixed chunk sizes, for fixed summation orders.

Inside a kernel, :func:`_ptr` turns an address into something indexable: on a GPU an ``@intrinsic``
that emits ``inttoptr`` into the global address space (``ld.global``/``st.global``); under Numba's
CUDA simulator, where "device" memory is host memory (a simulator device array wraps a NumPy array,
and :func:`_install_simulator_cai` gives it a ``__cuda_array_interface__`` reporting that host
address), the same call builds a NumPy view over the address. The kernel source is identical in
both; only these two helpers (and :func:`_sqrt`, whose simulator version keeps float32 in float32,
and :func:`_cast`, one rounding to the element type) differ. Compared with passing tuples of device
arrays, launch cost does not grow with the number of tensors (no per-array argument marshalling, no
4 KiB kernel-parameter limit, one launch per bucket).

Every launch goes to Numba's default stream (the legacy default stream), which is ordered with the
default streams of CuPy and torch; work queued on other streams must be synchronised by the caller.
"""

from __future__ import annotations

import ctypes
import inspect
import math
from dataclasses import dataclass

import numpy as np
from numba import cuda

from ... import _arrays
from .._table import TensorTable

__all__ = [
    "SIM", "REDUCE_THREADS", "LaunchConfig", "config", "set_launch_config", "DeviceTable", "launch",
    "elementwise_chunk",
    "zeros", "to_host", "from_host", "copy_", "flat_view", "DeviceSpan", "address_of", "describe",
]


def _is_simulator():
    try:
        from numba.core import config
        if getattr(config, "ENABLE_CUDASIM", 0):
            return True
    except ImportError:  # pragma: no cover - numba layout changed
        pass
    return "simulator" in getattr(cuda.jit, "__module__", "")


#: True when numba.cuda is Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).
SIM = _is_simulator()


def _inline_kwargs(jit):
    """How ``jit`` (``numba.cuda.jit``) is asked to inline a device function into its callers at
    the NVVM IR level: ``inline=True`` in the numba.cuda that ships with Numba, ``forceinline=True``
    in NVIDIA's numba-cuda package (which replaces it), where ``inline=True`` means inlining at the
    Numba IR level instead: every call site of the small helpers re-typed in the front end, which
    took ~15 s for the mixed-precision kernel against ~2.5 s with ``forceinline`` (numba-cuda
    0.30.4). The kernels are written for NVVM-level inlining (what the PTX tests check)."""
    try:
        params = inspect.signature(jit).parameters
    except (TypeError, ValueError):  # pragma: no cover - a jit without a signature
        return {"inline": True}
    return {"forceinline": True} if "forceinline" in params else {"inline": True}


#: the keyword arguments of every ``@cuda.jit(device=True, **INLINE)`` helper of the backend
INLINE = _inline_kwargs(cuda.jit)

#: threads per block of the reduction kernels: a compile-time constant (shared-memory size).
REDUCE_THREADS = 4 if SIM else 256


# ----------------------------------------------------------------------------- launch configuration
@dataclass
class LaunchConfig:
    """Launch shapes. ``threads`` per block of the element-wise kernels; ``chunk`` elements per chunk
    of a chunk plan (at most: see :func:`elementwise_chunk`); ``max_blocks`` caps element-wise grids
    (blocks grid-stride over chunks beyond); ``reduce_blocks`` is the stage-1 grid of reductions (a
    fixed number, for determinism)."""

    threads: int
    chunk: int
    max_blocks: int
    reduce_blocks: int


def _default_config():
    if SIM:
        # The simulator runs every thread as a Python thread: tiny launches.
        return LaunchConfig(threads=4, chunk=16, max_blocks=2, reduce_blocks=2)
    sms = 80
    try:
        sms = int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # pragma: no cover - attribute missing on an exotic driver
        pass
    return LaunchConfig(threads=256, chunk=8192, max_blocks=32 * sms, reduce_blocks=min(1024, 4 * sms))


_config = None


def config():
    """The :class:`LaunchConfig` in force (created on first use, from the current device)."""
    global _config
    if _config is None:
        _config = _default_config()
    return _config


def set_launch_config(**changes):
    """Change launch shapes (tests, tuning); returns the previous config. Results do not depend on
    them except the rounding of reductions (deterministic for a given config)."""
    old = config()
    new = LaunchConfig(**{**old.__dict__, **changes})
    if new.threads < 1 or new.chunk < 1 or new.max_blocks < 1 or new.reduce_blocks < 1:
        raise ValueError(f"launch config values must be >= 1, got {new}")
    global _config
    _config = new
    return old


# ----------------------------------------------------------------------------- address -> pointer
if SIM:
    def _ptr(addr, n, like):
        """NumPy view of ``n`` elements of ``like``'s type at host address ``addr`` (simulator)."""
        dt = np.dtype(type(like))
        addr, n = int(addr), int(n)
        if addr == 0 or n <= 0:
            return np.empty(0, dt)
        return np.frombuffer((ctypes.c_char * (n * dt.itemsize)).from_address(addr), dtype=dt)

    def _sqrt(x):
        # math.sqrt returns a Python float; np.sqrt keeps float32 in float32 as the GPU does.
        return np.sqrt(x)

    def _cast(x, like):
        """``x`` rounded once to ``like``'s float type (simulator)."""
        return type(like)(x)

else:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def _ptr(typingctx, addr, n, like):
        """Typed global-memory pointer (``CPointer(typeof(like))``, a float or integer element type)
        from an int64 address."""
        if not isinstance(addr, types.Integer) or not isinstance(like, (types.Float, types.Integer)):
            return None
        sig = types.CPointer(like)(addr, n, like)

        def codegen(context, builder, signature, args):
            elty = context.get_data_type(signature.args[2])
            gptr = builder.inttoptr(args[0], ir.PointerType(elty, addrspace=1))
            # back to a generic pointer: NVVM infers the global space for every load and store
            return builder.addrspacecast(gptr, ir.PointerType(elty))

        return sig, codegen

    @cuda.jit(device=True, **INLINE)
    def _sqrt(x):
        return math.sqrt(x)

    @intrinsic
    def _cast(typingctx, x, like):
        """``x`` rounded once to ``like``'s float type (e.g. a float64 value computed in a float32
        kernel, as numba_cpu's ``like``)."""
        if not isinstance(x, types.Number) or not isinstance(like, types.Float):
            return None
        sig = like(x, like)

        def codegen(context, builder, signature, args):
            return context.cast(builder, args[0], signature.args[0], signature.return_type)

        return sig, codegen


@cuda.jit(device=True, **INLINE)
def _nanmax(a, b):
    """max(a, b) propagating NaN from either side (np.maximum's rule)."""
    if a != a or a >= b:
        return a
    return b


# ----------------------------------------------------------------------------- the chunk walker
@cuda.jit(device=True, **INLINE)
def _chunk(plan, c):
    """(t, start, end): chunk ``c`` of ``plan`` (:meth:`DeviceTable.plan`) is elements [start, end)
    of tensor ``t``. A plan of one tensor lists no chunks: chunk ``c`` starts at ``c * chunk``."""
    chunk = plan[1]
    ntens = plan[2]
    if ntens == 1:
        t = 0
        start = c * chunk
    else:
        k = 3 + ntens + 2 * c
        t = plan[k]
        start = plan[k + 1]
    end = start + chunk
    n = plan[3 + t]
    if end > n:
        end = n
    return t, start, end


# ----------------------------------------------------------------------------- helper kernels
@cuda.jit(cache=True)
def _fill_flat(addr, n, value):
    x = _ptr(addr, n, value)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        x[j] = value


@cuda.jit(cache=True)
def _copy_flat(dst, src, n, like):
    d = _ptr(dst, n, like)
    s = _ptr(src, n, like)
    for j in range(cuda.grid(1), n, cuda.gridsize(1)):
        d[j] = s[j]


def flat_grid(n):
    cfg = config()
    return max(1, min(cfg.max_blocks, -(-n // cfg.threads))), cfg.threads


# ----------------------------------------------------------------------------- addresses
if SIM:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _FakeCUDAArray

    def _install_simulator_cai():
        """Give the simulator's device arrays a ``__cuda_array_interface__``.

        Real Numba device arrays expose it; the simulator's (which wrap a NumPy array) do not, so
        fastdescent's validation would not recognise them as device arrays. The interface reports
        the wrapped array's host address, which is what simulated kernels dereference.
        """
        if "__cuda_array_interface__" in vars(_FakeCUDAArray):
            return

        def __cuda_array_interface__(self):
            a = self._ary
            return {
                "shape": tuple(a.shape),
                "typestr": a.dtype.str,
                "data": (a.__array_interface__["data"][0], not a.flags.writeable),
                "strides": None if a.flags.c_contiguous else tuple(a.strides),
                "version": 3,
            }

        _FakeCUDAArray.__cuda_array_interface__ = property(__cuda_array_interface__)

    _install_simulator_cai()

_REAL_GPU_MODULES = ("torch", "cupy", "jax", "jaxlib", "cudf")


def address_of(a, what="array"):
    """Data address of a device array (``__cuda_array_interface__``), with a clear error otherwise."""
    if isinstance(a, np.ndarray):
        raise TypeError(f"{what}: the cuda backend works on device arrays, got a host numpy.ndarray")
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is None:
        raise TypeError(f"{what} must expose __cuda_array_interface__, got {type(a).__name__}")
    if SIM and type(a).__module__.startswith(_REAL_GPU_MODULES):
        raise TypeError(f"{what}: a {type(a).__module__}.{type(a).__name__} lives in real GPU memory, "
                        "which Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) cannot access")
    return int(cai["data"][0] or 0)


# ----------------------------------------------------------------------------- tables
class _Column:
    __slots__ = ("host", "_dev")

    def __init__(self, host):
        self.host = host  # int64 numpy array of addresses
        self._dev = None

    def dev(self):
        """The addresses on the device (uploaded on first use)."""
        if self._dev is None:
            self._dev = cuda.to_device(self.host)
        return self._dev


class RecentUploads(dict):
    """The last few uploads of small host arrays, by the host bytes they were made from (most
    recent last): address tables that come back (each step's gradients, which torch's allocator
    often puts at a recent step's addresses) are not uploaded again, and an upload from pageable
    memory waits for the device."""

    KEEP = 4

    def take(self, key, upload):
        """The upload kept under ``key`` (bytes), else ``upload()``'s result, kept from now on."""
        hit = self.pop(key, None)
        if hit is None:
            hit = upload()
        self[key] = hit
        while len(self) > self.KEEP:
            del self[next(iter(self))]
        return hit


class DeviceTable(TensorTable):
    """Tensor table over device arrays: each column packed to its arrays' data addresses, uploaded as
    an ``int64`` device array on first launch; chunk plans built on first use and cached.
    """

    device = True

    def __init__(self, dtype, sizes):
        super().__init__(dtype, sizes)
        self._plans = {}
        self._recent = RecentUploads()  # address bytes -> _Column (cleared columns included)
        self._zero_addrs = None
        self._scratch = None

    def _pack(self, arrays, addrs):
        if len(arrays) != self.n:
            raise ValueError(f"expected {self.n} arrays, got {len(arrays)}")
        if addrs is None:
            addrs = [address_of(a, f"tensor {i}") for i, a in enumerate(arrays)]
        host = np.array(addrs, dtype=np.int64)
        for col in self.packed.values():  # the same addresses (a column set again): no new upload
            if col is not None and np.array_equal(col.host, host):
                return col
        return self._recent.take(host.tobytes(), lambda: _Column(host))

    def plan(self, chunk):
        """(plan, nchunks): the table cut into chunks of at most ``chunk`` elements, as one ``int64``
        device array ``[nchunks, chunk, n, sizes[0..n), (tensor, start) of each chunk]`` (the chunk
        list only when n > 1), read by :func:`_chunk`; built once per table and chunk size."""
        hit = self._plans.get(chunk)
        if hit is None:
            sizes = self.sizes
            counts = -(-sizes // chunk)  # zero-size tensors get no chunk
            nchunks = int(counts.sum())
            chunks = np.zeros((0, 2), np.int64)
            if self.n > 1:
                first = np.cumsum(counts) - counts
                chunks = np.empty((nchunks, 2), np.int64)
                chunks[:, 0] = np.repeat(np.arange(self.n), counts)
                chunks[:, 1] = (np.arange(nchunks) - np.repeat(first, counts)) * chunk
            host = np.concatenate([[nchunks, chunk, self.n], sizes, chunks.ravel()]).astype(np.int64)
            hit = self._plans[chunk] = (cuda.to_device(host), nchunks)
        return hit

    def column(self, name):
        """Packed column ``name``: a device array of addresses (zeros if the column is absent)."""
        col = self.packed.get(name)
        if col is None:
            if self._zero_addrs is None:
                self._zero_addrs = cuda.to_device(np.zeros(max(self.n, 1), dtype=np.int64))
            return self._zero_addrs
        return col.dev()

    def scratch(self, nblocks):
        """Per-table float64 buffers of the two-stage reductions: (partials[nblocks], out[1])."""
        if self._scratch is None or self._scratch[0].shape[0] < nblocks:
            self._scratch = (cuda.device_array(nblocks, dtype=np.float64),
                             cuda.device_array(1, dtype=np.float64))
        return self._scratch


def elementwise_chunk(total):
    """Elements per chunk of an element-wise launch over ``total`` elements: ``config().chunk``, or,
    for a table that would give fewer than ``max_blocks`` such chunks, the smallest multiple of
    ``threads`` with which ``max_blocks`` chunks cover it (at least ``threads``), so that a mid-size
    flat tensor keeps the whole grid busy as a grid-stride loop would. Element-wise results do not
    depend on it."""
    cfg = config()
    per_block = -(-total // cfg.max_blocks)
    return max(cfg.threads, min(cfg.chunk, -(-per_block // cfg.threads) * cfg.threads))


def launch(tab, kernel, columns, scalars):
    """Launch the element-wise ``kernel(*address_tables, plan, *scalars)`` over ``tab``."""
    if tab.total == 0:
        return
    cfg = config()
    plan, nchunks = tab.plan(elementwise_chunk(tab.total))
    grid = max(1, min(cfg.max_blocks, nchunks))
    kernel[grid, cfg.threads](*[tab.column(c) for c in columns], plan, *scalars)


# ----------------------------------------------------------------------------- device state hooks
def zeros(n, dtype, fill=0.0):
    """A new 1-D device array of ``n`` elements set to ``fill`` (the optimizer's state blocks)."""
    dtype = np.dtype(dtype)
    out = cuda.device_array(int(n), dtype=dtype)
    if n:
        grid, threads = flat_grid(n)
        _fill_flat[grid, threads](address_of(out), int(n), dtype.type(fill))
    return out


def to_host(a):
    """A host NumPy copy of device array ``a`` (same shape)."""
    if hasattr(a, "copy_to_host"):
        return _arrays.device_to_host(a)
    cai = a.__cuda_array_interface__
    if SIM:
        shape = tuple(cai["shape"])
        dt = np.dtype(cai["typestr"])
        n = int(np.prod(shape, dtype=np.int64))
        if cai.get("strides") is not None:
            raise ValueError("to_host: only C-contiguous device arrays are supported")
        return _ptr(cai["data"][0], n, dt.type(0)).reshape(shape).copy()
    dev = cuda.from_cuda_array_interface(cai, owner=a)
    if dev.dtype.kind == "V":  # '<V2': bfloat16 (torch's bfloat16 CUDA tensors)
        dev = dev.view(_arrays.inspect(a, "to_host: a").dtype)
    return _arrays.device_to_host(dev)


def from_host(host):
    """A new device array holding a copy of the host array ``host`` (same shape and dtype; bfloat16
    travels as its 16-bit words: :func:`fastdescent._arrays.wire_dtype`)."""
    host = np.require(host, requirements="C")  # (ascontiguousarray makes 0-d 1-d)
    w = _arrays.wire_dtype(host.dtype)
    if w == host.dtype:
        return cuda.to_device(host)
    return cuda.to_device(host.view(w)).view(host.dtype)


def copy_from_host(dst, host):
    """Copy the host array ``host`` into the device array ``dst`` (same size and dtype)."""
    host = np.require(host, dtype=dst.dtype, requirements="C")
    w = _arrays.wire_dtype(host.dtype)
    if w == host.dtype:
        dst.copy_to_device(host)
    else:
        dst.view(w).copy_to_device(host.view(w))


def copy_(dst, src):
    """Device-to-device copy of ``src`` into ``dst`` (same number of elements and dtype)."""
    d, s = dst.__cuda_array_interface__, src.__cuda_array_interface__
    dt = np.dtype(d["typestr"])
    if np.dtype(s["typestr"]) != dt:
        raise TypeError(f"copy_: dtype {np.dtype(s['typestr'])} into {dt}")
    n = int(np.prod(d["shape"], dtype=np.int64))
    if int(np.prod(s["shape"], dtype=np.int64)) != n:
        raise ValueError(f"copy_: {s['shape']} into {d['shape']}")
    if n:
        grid, threads = flat_grid(n)
        _copy_flat[grid, threads](address_of(dst), address_of(src), n, dt.type(0))


class DeviceSpan:
    """A flat 1-D device array over adjacent device arrays (a coalesced bucket).

    Exposes ``__cuda_array_interface__`` and keeps the arrays it spans alive.
    """

    __slots__ = ("shape", "size", "dtype", "_addr", "_readonly", "_owners")

    def __init__(self, addr, size, dtype, owners, readonly=False):
        self.shape = (int(size),)
        self.size = int(size)
        self.dtype = np.dtype(dtype)
        self._addr = int(addr)
        self._readonly = bool(readonly)
        self._owners = owners

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self._addr, self._readonly),
                "strides": None, "version": 3}

    def __repr__(self):
        return f"DeviceSpan({self.size} x {self.dtype} at {self._addr:#x}, over {len(self._owners)} arrays)"


def flat_view(arrays, infos):
    """One flat device array over ``arrays`` if they are adjacent in memory, in order; else None.

    ``infos`` are :class:`fastdescent._arrays.ArrayInfo` of the arrays (same dtype, contiguous).
    Adjacent arrays need not share an allocation: an element-wise update of their union touches
    exactly their bytes.
    """
    if len(arrays) < 2:
        return None
    for k in range(1, len(infos)):
        if infos[k].dtype != infos[0].dtype or not infos[k].addr or \
                infos[k].addr != infos[k - 1].addr + infos[k - 1].nbytes:
            return None
    if not infos[0].addr:
        return None
    total = sum(i.size for i in infos)
    readonly = any(not i.writeable for i in infos)
    return DeviceSpan(infos[0].addr, total, infos[0].dtype, list(arrays), readonly)


def describe():
    out = {"simulator": SIM, "implementation": getattr(cuda, "implementation", "unknown")}
    try:
        import numba
        out["numba"] = numba.__version__
    except Exception:  # pragma: no cover
        pass
    if not SIM:
        try:
            dev = cuda.get_current_device()
            out["device"] = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
            out["compute_capability"] = ".".join(map(str, dev.compute_capability))
        except Exception as exc:  # pragma: no cover - describe never raises
            out["device_error"] = repr(exc)
    out["launch"] = dict(config().__dict__, reduce_threads=REDUCE_THREADS)
    return out
