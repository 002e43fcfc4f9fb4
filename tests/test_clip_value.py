"""``fd.clip_grad_value_`` (the ``clip_value`` kernel, csrc/fd_clip.c) against
``torch.nn.utils.clip_grad_value_``: values (NaN, +-inf, +-0, subnormals, clip_value 0), dtypes,
multi-tensor tables on every backend, and the arguments torch accepts but we refuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastdescent as fd
from conftest import Device, require_backend

SPECIAL = [-3.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 3.0, np.nan, np.inf, -np.inf, 1e-45, -1e-310,
           0.1, -0.1, 0.30000001, 1e30, -1e30]


def _torch_clip(arrays, clip_value):
    torch = pytest.importorskip("torch")
    out = []
    params = []
    for a in arrays:
        p = torch.nn.Parameter(torch.zeros(a.shape, dtype=torch.from_numpy(a).dtype))
        p.grad = torch.from_numpy(a.copy())
        params.append(p)
    torch.nn.utils.clip_grad_value_(params, clip_value)
    for p in params:
        out.append(p.grad.numpy())
    return out


def _same(got, want):
    """Bitwise equality (so -0.0 vs +0.0 and NaN count)."""
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want)), (got, want)


@pytest.mark.parametrize("clip_value", [1.0, 0.0, 0.1, 2.5, 1e-40, 3.0e38])
def test_matches_torch(backend, clip_value):
    dev = Device(backend)
    host = [np.array(SPECIAL, np.float32), np.array(SPECIAL, np.float64),
            np.array(SPECIAL[:6], np.float32).reshape(2, 3), np.zeros(0, np.float64),
            np.array(0.7, np.float64)]
    rng = np.random.default_rng(0)
    host.append((rng.standard_normal(300) * 2).astype(np.float32))
    want = _torch_clip(host, clip_value)
    arrs = [dev.put(a) for a in host]
    assert fd.clip_grad_value_(arrs, clip_value, backend=backend) is None
    for a, w in zip(arrs, want):
        _same(dev.get(a), w)


def test_large_tables_match_torch(host_backend):
    """Tables big enough for the threaded paths (c, numba), tensors of odd sizes."""
    rng = np.random.default_rng(1)
    host = [(rng.standard_normal(n) * 3).astype(dt) for n, dt in
            [(200_003, np.float32), (1, np.float32), (70_001, np.float64), (0, np.float64)]]
    host[0][::1000] = np.nan
    want = _torch_clip(host, 1.5)
    arrs = [a.copy() for a in host]
    fd.clip_grad_value_(arrs, 1.5, backend=host_backend)
    for a, w in zip(arrs, want):
        _same(a, w)


def test_numba_chunk_plans():
    """The numba kernel with chunks that start and end inside tensors, serial and threaded."""
    mod = require_backend("numba")
    rng = np.random.default_rng(2)
    sizes = [1, 7, 1001, 0, 3, 517]
    for dtype in (np.float32, np.float64):
        host = [(rng.standard_normal(n) * 2).astype(dtype) for n in sizes]
        want = _torch_clip(host, 0.75)
        for chunk, parallel in ((3, False), (3, True), (64, True), (1000, True)):
            arrs = [a.copy() for a in host]
            tab = mod.Table(np.dtype(dtype), sizes)
            tab.set("grad", arrs)
            tab.plan(chunk=chunk, parallel=parallel)
            mod.KERNELS["clip_value"](tab, clip_value=0.75)
            for a, w in zip(arrs, want):
                _same(a, w)


def test_infinite_clip_value_is_a_no_op(backend, monkeypatch):
    """clip_value = +inf leaves the gradients as they are (torch too), without a kernel call."""
    dev = Device(backend)
    host = np.array(SPECIAL, np.float64)
    a = dev.put(host)
    monkeypatch.setitem(fd.get_backend(backend).KERNELS, "clip_value",
                        lambda *x, **k: pytest.fail("kernel called for clip_value=inf"))
    fd.clip_grad_value_([a], math.inf, backend=backend)
    _same(dev.get(a), host)
    _same(_torch_clip([host], math.inf)[0], host)


@pytest.mark.parametrize("value,exc,torch_does", [
    (-1.0, ValueError, "sets every gradient to -1"),
    (math.nan, ValueError, "makes every gradient NaN"),
    (-math.inf, ValueError, "sets every gradient to -inf"),
    (True, TypeError, "takes it as 1.0"),
    ("1", TypeError, "takes float('1')"),
    (None, TypeError, "raises"),
])
def test_refused_clip_values(backend, value, exc, torch_does):
    """What torch does with these is never what the caller meant (``torch_does``): refused with an
    error naming the argument, the gradients untouched."""
    dev = Device(backend)
    host = np.array(SPECIAL, np.float32)
    a = dev.put(host)
    with pytest.raises(exc, match="clip_value"):
        fd.clip_grad_value_([a], value, backend=backend)
    _same(dev.get(a), host)


def test_float32_overflowing_clip_value_is_refused_as_torch_does():
    """A finite clip_value beyond float32's range with float32 gradients: torch's foreach path
    raises ("cannot be converted to type float without overflow"); so do we, before writing."""
    a64, a32 = np.array([1e300, -1e300]), np.array([3.0, -3.0], np.float32)
    with pytest.raises(ValueError, match="clip_value"):
        fd.clip_grad_value_([a64, a32], 1e39)
    np.testing.assert_array_equal(a64, [1e300, -1e300])
    fd.clip_grad_value_([a64], 1e39)  # float64 only: fine
    np.testing.assert_array_equal(a64, [1e39, -1e39])
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="overflow"):
        _torch_clip([a32], 1e39)
    del torch


def test_array_checks():
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        fd.clip_grad_value_([ro], 1.0)
    a = np.ones(4)
    with pytest.raises(ValueError, match="shares memory"):
        fd.clip_grad_value_([a, a[1:3]], 1.0)
    with pytest.raises(TypeError, match="grads"):
        fd.clip_grad_value_(3.0, 1.0)
    b = np.array([5.0, -5.0])
    fd.clip_grad_value_(b, 1.0)  # a single array is taken as [array]
    np.testing.assert_array_equal(b, [1.0, -1.0])
    assert fd.clip_grad_value_ is fd.functional.clip_grad_value_
    assert "clip_grad_value_" in fd.__all__ and "clip_grad_value_" in fd.functional.__all__
