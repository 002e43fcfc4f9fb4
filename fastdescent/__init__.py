"""fastdescent: compiled optimizer kernels for high-throughput training loops.

Optimizers (``SGD``, ``Adam``, ``AdamW``, ``RMSprop``, ``Adagrad``, ``NAdam``, ``RAdam``,
``Adamax``, ``Adadelta``, ``Rprop``; ``Lion`` and ``LAMB``) update NumPy arrays (or device arrays)
in place through fused multi-tensor kernels on one of four backends — ``numpy``, ``c`` (cffi),
``numba`` and ``cuda`` — following torch.optim's published update rules (Lion and LAMB, which torch
does not have: their papers' and optax's). Every optimizer takes the proximal L1 group option ``l1``
(exact zeros: the Lasso with SGD); SGD adds reproducible gradient noise (``noise_std``,
``noise_decay``, ``seed``). Gradient clipping: ``clip_grad_norm_``, ``clip_grad_value_``.

>>> import numpy as np, fastdescent as fd
>>> params = [np.zeros((256, 128), np.float32), np.zeros(128, np.float32)]
>>> opt = fd.Adam(params, lr=1e-3)
>>> _ = opt.step([np.ones_like(p) for p in params])
"""

from . import _threads

_threads.configure_wait_policy()  # recorded before any backend loads an OpenMP runtime (_threads)

from . import amp, functional  # noqa: E402
from .arena import ParamArena  # noqa: E402
from .backends import available_backends, get_backend, use_backend  # noqa: E402
from .errors import BackendUnavailableError, FastDescentError, KernelError  # noqa: E402
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from .functional import clip_grad_norm_, clip_grad_value_  # noqa: E402
from .optim import (LAMB, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, NAdam,  # noqa: E402
                    Optimizer, RAdam, RMSprop, Rprop)
from ._threads import get_num_threads, set_num_threads  # noqa: E402
from ._flush import get_flush_denormal, set_flush_denormal  # noqa: E402
from . import nn  # noqa: E402
from .nn import fit  # noqa: E402

from ._version import __version__  # noqa: E402

__all__ = [
    "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax", "Adadelta", "Rprop",
    "Lion", "LAMB", "Optimizer", "ParamArena", "functional", "clip_grad_norm_", "clip_grad_value_",
    "available_backends",
    "get_backend", "use_backend", "info", "set_num_threads", "get_num_threads",
    "set_flush_denormal", "get_flush_denormal",
    "FastDescentError", "BackendUnavailableError", "KernelError", "__version__", "nn", "fit",
    "save_checkpoint", "load_checkpoint", "CheckpointError", "amp",
]


def info():
    """What is available here and why: a JSON-serialisable dict.

    Keys: ``version``, ``default`` (the backend name in force; None, with ``default_error``
    saying why, when ``$FASTDESCENT_BACKEND`` names no backend), ``auto`` (what 'auto' resolves to for
    host arrays), ``backends`` ({name: {"available": bool, "reason": str or None, ...details}}),
    ``cpu`` (model, cores, features), ``python``, ``numpy``, ``threads`` (the CPU kernels' thread
    count asked for and in effect, and OpenMP's wait policy with where it came from).
    """
    import os
    import platform

    import numpy as np

    from . import backends as _b

    status = _b.backend_status()
    try:
        default = _b.default_backend()
    except ValueError as exc:  # e.g. FASTDESCENT_BACKEND=bogus: report it, do not raise
        default = None
        default_error = str(exc)
    else:
        default_error = None
    out = {"version": __version__, "default": default, "backends": {}}
    if default_error is not None:
        out["default_error"] = default_error
    for name, reason in status.items():
        entry = {"available": reason is None, "reason": reason}
        if reason is None:
            try:
                entry.update(_b.get_backend(name).describe())
            except Exception as exc:  # describe must never break info()
                entry["describe_error"] = repr(exc)
        out["backends"][name] = entry
    out["auto"] = _b.resolve("auto").NAME  # 'auto' never consults $FASTDESCENT_BACKEND
    from ._cpu import cpu_info
    out["cpu"] = cpu_info()
    out["python"] = platform.python_version()
    out["numpy"] = np.__version__
    out["cores"] = os.cpu_count()
    out["threads"] = _threads.state()
    out["flush_denormal"] = get_flush_denormal()
    return out
