"""Backend registry.

Backends are loaded lazily by name (``numpy``, ``c``, ``numba``, ``cuda``); importing fastdescent never
compiles or imports numba. Each backend package exposes:

``NAME``      its public name;
``Table``     its :class:`~fastdescent.backends._table.TensorTable` subclass;
``KERNELS``   ``{row name: fn(table, *, scalars...)}`` for every row of ``fastdescent._contract``;
``describe()`` a short dict for :func:`fastdescent.info` (version, threads, features).

``"auto"`` resolves to the first backend of :data:`AUTO_ORDER` that loads (``cuda`` for device arrays).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading
import warnings

from ..errors import BackendUnavailableError

__all__ = [
    "BACKENDS", "AUTO_ORDER", "available_backends", "get_backend", "use_backend", "default_backend",
    "resolve", "backend_status", "collect_kernels",
]

#: public name -> module implementing it
BACKENDS = {
    "numpy": "fastdescent.backends.numpy_ref",
    "c": "fastdescent.backends.c_cffi",
    "numba": "fastdescent.backends.numba_cpu",
    "cuda": "fastdescent.backends.numba_cuda",
}
#: order in which "auto" tries the host backends
AUTO_ORDER = ("c", "numba", "numpy")

def collect_kernels(package):
    """``{row name: function}`` for every contract row implemented by ``package``.

    Row ``r`` is looked up as the attribute ``r.name`` of the module ``package.<r.stem>``; a hot path
    whose module does not exist is simply absent (``tests/test_contract.py`` reports it). A module that
    exists but fails to import raises, so broken kernels are never silently skipped.
    """
    from .._contract import KERNELS as ROWS

    out, mods = {}, {}
    for row in ROWS.values():
        if row.stem not in mods:
            modname = f"{package}.{row.stem}"
            try:
                mods[row.stem] = importlib.import_module(modname)
            except ModuleNotFoundError as exc:
                if exc.name != modname:
                    raise
                mods[row.stem] = None
        mod = mods[row.stem]
        fn = getattr(mod, row.name, None) if mod is not None else None
        if fn is not None:
            out[row.name] = fn
    return out


_lock = threading.Lock()
_loaded = {}  # name -> module
_failed = {}  # name -> exception
_default = contextvars.ContextVar("fastdescent_backend", default=None)


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(
            f"backend: unknown backend {name!r}; choose one of {sorted(BACKENDS)} or 'auto'"
        )


def _load(name):
    """Import backend ``name``; return (module, None) or (None, exception). Cached."""
    with _lock:
        if name in _loaded:
            return _loaded[name], None
        if name in _failed:
            return None, _failed[name]
        try:
            mod = importlib.import_module(BACKENDS[name])
            if not hasattr(mod, "KERNELS"):
                raise ImportError(f"{BACKENDS[name]} does not implement the kernel contract")
            check = getattr(mod, "check_available", None)
            if check is not None:
                check()
        except Exception as exc:  # any failure to load makes the backend unavailable
            _failed[name] = exc
            return None, exc
        from .. import _threads

        apply = getattr(mod, "apply_num_threads", None)
        if apply is not None and _threads.requested():
            apply(_threads.requested())  # fd.set_num_threads / FASTDESCENT_NUM_THREADS
        _loaded[name] = mod
        return mod, None


def get_backend(name):
    """Return the backend module called ``name`` (``"auto"`` resolves for host arrays).

    Raises
    ------
    ValueError
        ``name`` is not a known backend.
    BackendUnavailableError
        The backend exists but cannot be loaded here; the original error is chained.
    """
    if name is None or name == "auto":
        return resolve(None, device=False)
    _check_name(name)
    mod, exc = _load(name)
    if mod is None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {exc}") from exc
    return mod


def available_backends():
    """Names of the backends that load on this machine, in auto order (then cuda)."""
    return [n for n in (*AUTO_ORDER, "cuda") if _load(n)[0] is not None]


def backend_status():
    """``{name: None if available else 'reason it is not'}`` for every backend."""
    out = {}
    for n in BACKENDS:
        mod, exc = _load(n)
        out[n] = None if mod is not None else f"{type(exc).__name__}: {exc}"
    return out


def default_backend():
    """The backend name in force: ``use_backend`` context, then ``$FASTDESCENT_BACKEND``, then 'auto'."""
    name = _default.get()
    if name is None:
        name = os.environ.get("FASTDESCENT_BACKEND", "").strip() or "auto"
        if name != "auto":
            _check_name(name)
    return name


def resolve(name, device=False):
    """Resolve ``name`` (None means :func:`default_backend`) to a backend module.

    ``device=True`` means the arrays live on a GPU: 'auto' then picks ``cuda``, and a host backend
    named explicitly is an error.
    """
    if name is None:
        name = default_backend()
    if name == "auto":
        if device:
            return get_backend("cuda")
        for n in AUTO_ORDER:
            mod, exc = _load(n)
            if mod is not None:
                return mod
            if n == "c":
                _warn_build_failure(exc)
        raise BackendUnavailableError("no backend could be loaded")  # numpy always loads
    mod = get_backend(name)
    if device and not getattr(mod, "DEVICE", False):
        raise ValueError(
            f"backend: {name!r} works on host (NumPy) arrays, but the parameters are device arrays; "
            "use backend='cuda' or 'auto'"
        )
    if not device and getattr(mod, "DEVICE", False):
        raise ValueError(
            f"backend: {name!r} works on device arrays, but the parameters are host NumPy arrays"
        )
    return mod


_build_warned = []


def _warn_build_failure(exc):
    """Once per process: 'auto' falls back past a c backend whose extension failed to COMPILE at
    install time (pip hides the build's output; the text is kept and shown by fastdescent.info()).
    A platform without the extension by design (no compiler wanted) is not warned about."""
    if _build_warned or "failed to build at install time" not in str(exc):
        return
    _build_warned.append(True)
    warnings.warn("fastdescent: the C extension failed to compile when fastdescent was installed, "
                  "so 'auto' uses a slower backend; `fastdescent info` (or fastdescent.info()) "
                  "shows the compiler's error", RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def use_backend(name):
    """Context manager making ``name`` the default backend for optimizers and functional calls.

    >>> import fastdescent as fd
    >>> with fd.use_backend("numpy"):
    ...     opt = fd.SGD([np.zeros(3)], lr=0.1)
    """
    if name != "auto":
        _check_name(name)
        get_backend(name)  # fail early, with the cause
    token = _default.set(name)
    try:
        yield get_backend(name) if name != "auto" else resolve("auto")
    finally:
        _default.reset(token)
