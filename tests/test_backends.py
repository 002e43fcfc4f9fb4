"""The backend registry: names, loading, failures with their cause, defaults, 'auto', info()."""

from __future__ import annotations

import json
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastdescent as fd
from fastdescent import backends as reg
from fastdescent import functional as F
from fastdescent.errors import BackendUnavailableError, FastDescentError

CHOICES = ("numpy", "c", "numba", "cuda")


@pytest.fixture
def registry(monkeypatch):
    """The registry with private, restorable caches and module table (the real ones come back)."""
    monkeypatch.setattr(reg, "BACKENDS", dict(reg.BACKENDS))
    monkeypatch.setattr(reg, "_loaded", dict(reg._loaded))
    monkeypatch.setattr(reg, "_failed", dict(reg._failed))

    def forget(name):
        reg._loaded.pop(name, None)
        reg._failed.pop(name, None)

    def fake(name, available=True, kernels=True, error=None):
        """Point backend ``name`` at a fake module (registered in sys.modules for the test)."""
        modname = f"_fastdescent_test_fake_{name}"
        mod = types.ModuleType(modname)
        mod.NAME = name
        mod.DEVICE = False
        mod.Table = fd.get_backend("numpy").Table
        if kernels:
            mod.KERNELS = dict(fd.get_backend("numpy").KERNELS)
        if not available:
            def check_available():
                raise error or ImportError(f"fake {name} cannot run here")
            mod.check_available = check_available
        mod.describe = lambda: {"fake": True}
        monkeypatch.setitem(sys.modules, modname, mod)
        reg.BACKENDS[name] = modname
        forget(name)
        return mod

    def missing(name):
        """Point backend ``name`` at a module that does not exist."""
        reg.BACKENDS[name] = f"_fastdescent_test_no_such_module_{name}"
        forget(name)

    return types.SimpleNamespace(fake=fake, missing=missing, forget=forget)


# ------------------------------------------------------------------------------ names and loading
def test_known_names_and_auto_order():
    assert set(reg.BACKENDS) == set(CHOICES)
    assert tuple(reg.AUTO_ORDER) == ("c", "numba", "numpy")


def test_available_backends():
    avail = fd.available_backends()
    assert "numpy" in avail
    assert avail == [n for n in ("c", "numba", "numpy", "cuda") if n in avail]  # auto order, then cuda
    status = reg.backend_status()
    assert set(status) == set(CHOICES)
    for name in CHOICES:
        if name in avail:
            assert status[name] is None
            mod = fd.get_backend(name)
            assert mod.NAME == name
            assert mod is fd.get_backend(name)  # cached
        else:
            assert isinstance(status[name], str) and status[name]
            with pytest.raises(BackendUnavailableError):
                fd.get_backend(name)


@pytest.mark.parametrize("name", ["bogus", "", "NUMPY", "numpy ", "np"])
def test_unknown_name_lists_the_choices(name):
    with pytest.raises(ValueError) as ei:
        fd.get_backend(name)
    msg = str(ei.value)
    assert "backend" in msg
    for choice in CHOICES:
        assert repr(choice) in msg
    with pytest.raises(ValueError):
        with fd.use_backend(name):
            pass  # pragma: no cover
    with pytest.raises(ValueError):
        fd.SGD([np.zeros(2)], lr=0.1, backend=name)


def test_get_backend_auto_and_none():
    first = next(n for n in reg.AUTO_ORDER if n in fd.available_backends())
    assert fd.get_backend("auto").NAME == first
    assert fd.get_backend(None).NAME == first
    assert reg.resolve("auto").NAME == first
    assert fd.SGD([np.zeros(2)], lr=0.1).backend == first


# ------------------------------------------------------------------------------ unavailable backends
def test_missing_module_raises_backend_unavailable_with_cause(registry):
    registry.missing("numba")
    with pytest.raises(BackendUnavailableError) as ei:
        fd.get_backend("numba")
    err = ei.value
    assert isinstance(err, FastDescentError) and isinstance(err, RuntimeError)
    assert "numba" in str(err)
    assert isinstance(err.__cause__, ModuleNotFoundError)
    # cached: the same failure again, without a new import attempt
    assert "numba" in reg._failed
    with pytest.raises(BackendUnavailableError) as ei2:
        fd.get_backend("numba")
    assert ei2.value.__cause__ is err.__cause__
    assert "numba" not in fd.available_backends()
    assert "ModuleNotFoundError" in reg.backend_status()["numba"]
    with pytest.raises(BackendUnavailableError):
        fd.Adam([np.zeros(3)], backend="numba")
    with pytest.raises(BackendUnavailableError):
        with fd.use_backend("numba"):
            pass  # pragma: no cover
    with pytest.raises(BackendUnavailableError):
        F.sgd([np.zeros(3)], [np.ones(3)], lr=0.1, backend="numba")


def test_check_available_failure_is_chained(registry):
    cause = ImportError("no CUDA driver in this test")
    registry.fake("c", available=False, error=cause)
    with pytest.raises(BackendUnavailableError) as ei:
        fd.get_backend("c")
    assert ei.value.__cause__ is cause
    assert "no CUDA driver in this test" in str(ei.value)
    assert reg.backend_status()["c"] == "ImportError: no CUDA driver in this test"


def test_module_without_kernels_is_unavailable(registry):
    registry.fake("c", kernels=False)
    with pytest.raises(BackendUnavailableError) as ei:
        fd.get_backend("c")
    assert "contract" in str(ei.value.__cause__)


def test_auto_falls_back_quietly_in_order(registry):
    c = registry.fake("c")
    numba = registry.fake("numba")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reg.resolve("auto") is c
        assert fd.available_backends()[:3] == ["c", "numba", "numpy"]
        registry.fake("c", available=False)
        assert reg.resolve("auto") is numba
        assert fd.SGD([np.zeros(2)], lr=0.1).backend == "numba"
        registry.fake("numba", available=False)
        assert reg.resolve("auto").NAME == "numpy"
        assert fd.SGD([np.zeros(2)], lr=0.1).backend == "numpy"
        registry.missing("c")
        registry.missing("numba")
        assert reg.resolve("auto").NAME == "numpy"
        assert fd.info()["auto"] == "numpy"


# ------------------------------------------------------------------------------ defaults
def test_use_backend_nests_and_restores():
    assert reg.default_backend() == "auto"
    with fd.use_backend("numpy") as mod:
        assert mod.NAME == "numpy"
        assert reg.default_backend() == "numpy"
        assert fd.SGD([np.zeros(2)], lr=0.1).backend == "numpy"
        with fd.use_backend("auto"):
            assert reg.default_backend() == "auto"
        assert reg.default_backend() == "numpy"
        with pytest.raises(KeyError):
            with fd.use_backend("numpy"):
                raise KeyError("boom")
        assert reg.default_backend() == "numpy"
    assert reg.default_backend() == "auto"


def test_explicit_backend_beats_the_default(host_backend):
    with fd.use_backend("numpy"):
        assert fd.Adam([np.zeros(2)], backend=host_backend).backend == host_backend


def test_use_backend_sets_the_functional_default(monkeypatch):
    calls = []
    numpy_mod = fd.get_backend("numpy")
    real = numpy_mod.KERNELS["sgd"]

    def spy(tab, **kw):
        calls.append(kw)
        return real(tab, **kw)

    monkeypatch.setitem(numpy_mod.KERNELS, "sgd", spy)
    p = [np.ones(3)]
    with fd.use_backend("numpy"):
        F.sgd(p, [np.ones(3)], lr=0.5)
    assert len(calls) == 1 and calls[0]["lr"] == 0.5
    np.testing.assert_array_equal(p[0], 0.5)


def test_env_var_is_read_lazily(monkeypatch):
    monkeypatch.setenv("FASTDESCENT_BACKEND", "numpy")
    assert reg.default_backend() == "numpy"
    assert fd.Adam([np.zeros(2)]).backend == "numpy"
    assert fd.info()["default"] == "numpy"
    monkeypatch.setenv("FASTDESCENT_BACKEND", "  numpy \n")
    assert reg.default_backend() == "numpy"
    monkeypatch.setenv("FASTDESCENT_BACKEND", "")
    assert reg.default_backend() == "auto"
    monkeypatch.setenv("FASTDESCENT_BACKEND", "auto")
    assert reg.default_backend() == "auto"
    monkeypatch.setenv("FASTDESCENT_BACKEND", "numpy")
    with fd.use_backend("auto"):  # the context manager beats the environment
        assert reg.default_backend() == "auto"
    assert reg.default_backend() == "numpy"


def test_env_var_unknown_name(monkeypatch):
    monkeypatch.setenv("FASTDESCENT_BACKEND", "bogus")
    with pytest.raises(ValueError) as ei:
        fd.SGD([np.zeros(2)], lr=0.1)
    for choice in CHOICES:
        assert repr(choice) in str(ei.value)
    assert fd.SGD([np.zeros(2)], lr=0.1, backend="numpy").backend == "numpy"  # explicit still works


def test_env_var_unavailable_backend(monkeypatch, registry):
    registry.missing("numba")
    monkeypatch.setenv("FASTDESCENT_BACKEND", "numba")
    with pytest.raises(BackendUnavailableError):
        fd.SGD([np.zeros(2)], lr=0.1)


# ------------------------------------------------------------------------------ info()
def test_info_is_json_and_consistent(registry):
    registry.missing("numba")
    info = fd.info()
    back = json.loads(json.dumps(info))
    assert back == info
    for key in ("version", "default", "auto", "backends", "cpu", "python", "numpy"):
        assert key in info
    assert info["version"] == fd.__version__
    assert info["default"] == "auto"
    assert set(info["backends"]) == set(CHOICES)
    for name, entry in info["backends"].items():
        assert entry["available"] == (name in fd.available_backends())
        assert (entry["reason"] is None) == entry["available"]
        assert "describe_error" not in entry, f"{name}.describe() failed: {entry.get('describe_error')}"
    assert info["backends"]["numba"]["available"] is False
    assert "ModuleNotFoundError" in info["backends"]["numba"]["reason"]
    assert info["auto"] == reg.resolve("auto").NAME
    with fd.use_backend("numpy"):
        assert fd.info()["default"] == "numpy"


def test_describe_is_json_for_every_backend(backend):
    json.dumps(fd.get_backend(backend).describe())


# ------------------------------------------------------------------------------ import cost
def test_import_does_not_load_numba_or_backends():
    """Part of the 'import under 0.3 s' target: importing fastdescent must not import numba (or cffi's
    extension, or any backend) -- the cause of a slow import, tested instead of a flaky timing."""
    root = str(Path(fd.__file__).resolve().parent.parent)
    code = (
        "import sys, os\n"
        f"sys.path.insert(0, {root!r})\n"
        "import fastdescent\n"
        f"assert fastdescent.__file__.startswith({root!r}), fastdescent.__file__\n"
        "bad = sorted(m for m in sys.modules if m == 'numba' or m.startswith('numba.')\n"
        "             or m.startswith('fastdescent.backends.') or m == 'fastdescent._fastdescent_c'\n"
        "             or m in ('torch', 'llvmlite', 'scipy', 'sklearn', 'ml_dtypes'))\n"
        "print(','.join(bad))\n"
    )
    for env_backend in ("", "numba", "c"):
        env = {"PATH": "/usr/bin:/bin", "FASTDESCENT_BACKEND": env_backend}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "", f"import fastdescent loaded: {out.stdout.strip()}"
