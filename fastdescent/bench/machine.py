"""Machine and software description recorded with every benchmark run."""

from __future__ import annotations

import datetime
import importlib
import os
import platform

__all__ = ["machine_info", "versions", "loadavg"]

#: display name -> (import name, distribution name)
_PACKAGES = {"numpy": ("numpy", "numpy"), "numba": ("numba", "numba"), "cffi": ("cffi", "cffi"),
             "torch": ("torch", "torch"), "sklearn": ("sklearn", "scikit-learn"),
             "matplotlib": ("matplotlib", "matplotlib"), "rich": ("rich", "rich"),
             "tqdm": ("tqdm", "tqdm"), "ml_dtypes": ("ml_dtypes", "ml_dtypes"),
             "torchao": ("torchao", "torchao"), "bitsandbytes": ("bitsandbytes", "bitsandbytes")}


def versions():
    """``{package: version or None}`` for fastdescent's dependencies and benchmark peers
    (None: not installed). Only looks at installed metadata; imports nothing heavy."""
    from importlib import metadata

    out = {}
    for name, (mod, dist) in _PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            try:
                out[name] = getattr(importlib.import_module(mod), "__version__", "?")
            except Exception:  # noqa: BLE001 - absent or broken: None
                out[name] = None
    return out


def loadavg():
    """The 1/5/15-minute load averages (None where /proc/loadavg is missing)."""
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except (OSError, ValueError):
        return None


def _mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info():
    """CPU, cores, memory, OS, library versions, thread settings and ``fastdescent.info()``."""
    import fastdescent as fd

    info = fd.info()
    out = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": info.get("cpu", {}).get("model"),
        "cpu_features": info.get("cpu", {}).get("features"),
        "logical_cores": os.cpu_count(),
        "memory_bytes": _mem_total(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": dict(versions(), fastdescent=fd.__version__),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                                           "FASTDESCENT_BACKEND", "NUMBA_ENABLE_CUDASIM")
                if k in os.environ},
        "loadavg_start": loadavg(),
        "fastdescent_info": info,
    }
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    return out
