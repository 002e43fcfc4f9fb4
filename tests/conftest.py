"""Shared fixtures: backends (parametrised, skipped with a reason when unavailable) and device I/O.

Without ``FASTDESCENT_TEST_GPU=1`` the CUDA kernels run in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, set here at import time, before anything imports ``numba.cuda``), so CI,
which has no GPU, exercises them too. Numba's simulator runs every GPU thread in Python: CUDA tests
keep their arrays tiny.
"""

from __future__ import annotations

import os

if os.environ.get("FASTDESCENT_TEST_GPU", "").strip() != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastdescent as fd  # noqa: E402
from fastdescent import backends as _registry  # noqa: E402

#: every public backend name, host ones first (the registry's auto order, then cuda)
ALL_BACKENDS = [*_registry.AUTO_ORDER[::-1], *[n for n in _registry.BACKENDS
                                              if n not in _registry.AUTO_ORDER]]
HOST_BACKENDS = [n for n in ALL_BACKENDS if n != "cuda"]


def require_backend(name):
    """Load backend ``name`` or skip the calling test, giving the registry's reason."""
    reason = _registry.backend_status()[name]
    if reason is not None:
        pytest.skip(f"backend {name!r} is not available here: {reason}")
    return fd.get_backend(name)


class Device:
    """Moves test arrays to where backend ``name`` wants them, and back.

    Host backends take NumPy arrays as they are; ``cuda`` takes device arrays
    (the backend's ``from_host``) and returns them with its ``to_host``.
    """

    def __init__(self, name):
        self.name = name
        self.is_device = name == "cuda"

    def put(self, a):
        a = np.array(a, order="C", copy=True)  # (np.ascontiguousarray would make 0-d arrays 1-d)
        if not self.is_device:
            return a
        return _registry.get_backend("cuda").from_host(a)  # (bfloat16 as 16-bit words on a GPU)

    def get(self, a):
        """A host NumPy copy of ``a`` (a host or device array)."""
        if isinstance(a, np.ndarray):
            return a.copy()
        if hasattr(a, "__cuda_array_interface__"):
            return _registry.get_backend("cuda").to_host(a)
        return np.array(a, copy=True)


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Name of a backend that loads here (every backend, cuda included)."""
    require_backend(request.param)
    return request.param


@pytest.fixture(params=HOST_BACKENDS)
def host_backend(request):
    """Name of a host (NumPy-array) backend that loads here."""
    require_backend(request.param)
    return request.param


@pytest.fixture
def dev(backend):
    return Device(backend)


@pytest.fixture(autouse=True)
def _no_default_leak(monkeypatch):
    """Tests never inherit a FASTDESCENT_BACKEND from the environment that runs them."""
    monkeypatch.delenv("FASTDESCENT_BACKEND", raising=False)


@pytest.fixture(scope="module")
def C():
    """The c backend module (the test is skipped, with the registry's reason, where it does not load)."""
    return require_backend("c")


@pytest.fixture
def c_settings(C):
    """The c backend, its thread count, code path and parallel grain put back to the defaults after
    the test."""
    yield C
    C.set_num_threads(0)
    C.set_simd_path("auto")
    C.set_parallel_grain(0)


class FusedCounter:
    """The fused steps a backend handed out while :func:`count_fused` was in force, and how many
    calls ran on the fused path (each step callable counts them in ``fused_calls``)."""

    def __init__(self):
        self.steps = []

    @property
    def calls(self):
        return sum(s.fused_calls for s in self.steps)


def count_fused(backend, mp):
    """Wrap ``backend``'s ``fused_train_step`` (through ``mp``, a pytest monkeypatch context) so that
    the step callables it returns are recorded; returns the :class:`FusedCounter`."""
    import importlib

    be = fd.get_backend(backend)
    real = importlib.import_module(be.__name__ + ".fused").fused_train_step
    counter = FusedCounter()

    def wrapper(plan):
        st = real(plan)
        if st is not None:
            counter.steps.append(st)
        return st

    mp.setattr(be, "fused_train_step", wrapper, raising=False)
    return counter
