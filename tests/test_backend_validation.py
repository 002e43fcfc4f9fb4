"""Argument checks shared by every backend.

* dense kernels (the contract rows of kind "array"): the same bad call raises the same exception type
  (and, for :class:`KernelError`, the same C status code) on numpy, c, numba and cuda (Numba's CUDA
  simulator), before anything is written; the checks live in ``backends/_dense_checks.py`` (c is
  the reference: its fast checks, cffi's ``from_buffer`` and the C library's status codes);
* multi-tensor kernels: a required column that is ``None`` or missing (the contract row's
  non-optional columns, and optional ones the call's scalars need, e.g. ``max_exp_avg_sq`` with
  ``amsgrad``) raises ``ValueError`` naming it on every backend (``TensorTable.require``), before
  anything is written (numba: before any compile).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ALL_BACKENDS, require_backend

import fastdescent as fd
from fastdescent import functional as F
from fastdescent._contract import KERNELS as ROWS
from fastdescent.backends._table import TensorTable, required_columns
from fastdescent.errors import KernelError


# ------------------------------------------------------------------------------- array builders
def _z(*shape, dt=np.float32):
    # a C-contiguous prefix of a larger zeroed buffer: kernels that did not check shapes read and
    # wrote out of bounds; the padding keeps that inside the allocation, so such code fails these
    # tests instead of crashing the test process
    n = int(np.prod(shape))
    return np.zeros(n + 256, dt)[:n].reshape(shape)


def _labels(values, dt=np.int64):
    lab = np.zeros(len(values) + 64, dt)[:len(values)]  # padded too (see _z)
    lab[:] = values
    return lab


def _ro(a):
    a.flags.writeable = False
    return a


def _strided(*shape, dt=np.float32):
    big = np.zeros((*shape[:-1], 2 * shape[-1]), dt)
    return big[..., ::2]


def _misaligned(*shape, dt=np.float32):
    """C-contiguous and writable, but starting one byte past an element boundary."""
    n = int(np.prod(shape))
    size = np.dtype(dt).itemsize
    buf = np.zeros((n + 64) * size + 1, np.uint8)
    return buf[1:1 + n * size].view(dt).reshape(shape)


F64 = np.float64
I32 = np.int32
_ERR_ARG, _ERR_SHAPE, _ERR_ALIGN = 3, 4, 6

#: (id, kernel, args builder, kwargs, expected type, KernelError code or None)
DENSE_CASES = [
    ("fwd-K-mismatch", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 3), _z(1, 4, 5), None), {},
     ValueError, None),
    ("fwd-y-shape", "matmul_fwd", lambda: (_z(2, 3, 6), _z(2, 3, 4), _z(1, 4, 5), None), {},
     ValueError, None),
    ("fwd-x-ndim", "matmul_fwd", lambda: (_z(2, 3, 5), _z(6, 4), _z(1, 4, 5), None), {},
     ValueError, None),
    ("fwd-w-ndim", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 4), _z(4, 5), None), {},
     ValueError, None),
    ("fwd-b-shape", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 4), _z(1, 4, 5), _z(1, 4)), {},
     ValueError, None),
    ("fwd-x-dtype", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 4, dt=F64), _z(1, 4, 5), None), {},
     ValueError, None),
    ("fwd-b-dtype", "matmul_fwd",
     lambda: (_z(2, 3, 5), _z(2, 3, 4), _z(1, 4, 5), _z(1, 5, dt=F64)), {}, ValueError, None),
    ("fwd-int", "matmul_fwd",
     lambda: (_z(2, 3, 5, dt=I32), _z(2, 3, 4, dt=I32), _z(1, 4, 5, dt=I32), None), {},
     TypeError, None),
    ("fwd-y-list", "matmul_fwd", lambda: (_z(2, 3, 5).tolist(), _z(2, 3, 4), _z(1, 4, 5), None),
     {}, TypeError, None),
    ("fwd-x-list", "matmul_fwd", lambda: (_z(2, 3, 5), [[[0.0] * 4] * 3] * 2, _z(1, 4, 5), None),
     {}, ValueError, None),
    ("fwd-x-strided", "matmul_fwd", lambda: (_z(2, 3, 5), _strided(2, 3, 4), _z(1, 4, 5), None), {},
     ValueError, None),
    ("fwd-y-readonly", "matmul_fwd", lambda: (_ro(_z(2, 3, 5)), _z(2, 3, 4), _z(1, 4, 5), None), {},
     ValueError, None),
    ("fwd-Bw", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 4), _z(3, 4, 5), None), {},
     KernelError, _ERR_SHAPE),
    ("fwd-x-misaligned", "matmul_fwd",
     lambda: (_z(2, 3, 5), _misaligned(2, 3, 4), _z(1, 4, 5), None), {}, KernelError, _ERR_ALIGN),
    ("bwdx-K-mismatch", "matmul_bwd_x", lambda: (_z(2, 3, 4), _z(2, 3, 5), _z(1, 3, 5)), {},
     ValueError, None),
    ("bwdx-dy-shape", "matmul_bwd_x", lambda: (_z(2, 3, 4), _z(2, 2, 5), _z(1, 4, 5)), {},
     ValueError, None),
    ("bwdx-dtype", "matmul_bwd_x", lambda: (_z(2, 3, 4), _z(2, 3, 5), _z(1, 4, 5, dt=F64)), {},
     ValueError, None),
    ("bwdx-strided", "matmul_bwd_x", lambda: (_z(2, 3, 4), _strided(2, 3, 5), _z(1, 4, 5)), {},
     ValueError, None),
    ("bwdx-readonly", "matmul_bwd_x", lambda: (_ro(_z(2, 3, 4)), _z(2, 3, 5), _z(1, 4, 5)), {},
     ValueError, None),
    ("bwdx-Bw", "matmul_bwd_x", lambda: (_z(2, 3, 4), _z(2, 3, 5), _z(3, 4, 5)), {},
     KernelError, _ERR_SHAPE),
    ("bwdw-K-mismatch", "matmul_bwd_w", lambda: (_z(1, 4, 5), None, _z(2, 3, 3), _z(2, 3, 5)), {},
     ValueError, None),
    ("bwdw-dy-shape", "matmul_bwd_w", lambda: (_z(1, 4, 5), None, _z(2, 3, 4), _z(2, 3, 6)), {},
     ValueError, None),
    ("bwdw-db-shape", "matmul_bwd_w",
     lambda: (_z(1, 4, 5), _z(1, 6), _z(2, 3, 4), _z(2, 3, 5)), {}, ValueError, None),
    ("bwdw-dtype", "matmul_bwd_w",
     lambda: (_z(1, 4, 5), None, _z(2, 3, 4, dt=F64), _z(2, 3, 5)), {}, ValueError, None),
    ("bwdw-db-readonly", "matmul_bwd_w",
     lambda: (_z(1, 4, 5), _ro(_z(1, 5)), _z(2, 3, 4), _z(2, 3, 5)), {}, ValueError, None),
    ("bwdw-Bw", "matmul_bwd_w", lambda: (_z(3, 4, 5), None, _z(2, 3, 4), _z(2, 3, 5)), {},
     KernelError, _ERR_SHAPE),
    ("act-size", "act_fwd", lambda: (_z(5), _z(6)), dict(kind=0), ValueError, None),
    ("act-dtype", "act_fwd", lambda: (_z(5), _z(5, dt=F64)), dict(kind=1), ValueError, None),
    ("act-int", "act_fwd", lambda: (_z(5, dt=I32), _z(5, dt=I32)), dict(kind=0), TypeError, None),
    ("act-strided", "act_fwd", lambda: (_strided(5), _z(5)), dict(kind=2), ValueError, None),
    ("act-readonly", "act_fwd", lambda: (_ro(_z(5)), _z(5)), dict(kind=0), ValueError, None),
    ("act-kind", "act_fwd", lambda: (_z(5), _z(5)), dict(kind=9), KernelError, _ERR_ARG),
    ("act-misaligned", "act_fwd", lambda: (_misaligned(5), _z(5)), dict(kind=1), KernelError,
     _ERR_ALIGN),
    ("actb-size", "act_bwd", lambda: (_z(5), _z(5), _z(5), _z(4)), dict(kind=1), ValueError, None),
    ("actb-dtype", "act_bwd", lambda: (_z(5), _z(5, dt=F64), _z(5), _z(5)), dict(kind=1),
     ValueError, None),
    ("actb-strided", "act_bwd", lambda: (_z(5), _strided(5), _z(5), _z(5)), dict(kind=1),
     ValueError, None),
    ("actb-kind", "act_bwd", lambda: (_z(5), _z(5), _z(5), _z(5)), dict(kind=-1), KernelError,
     _ERR_ARG),
    ("mse-size", "mse_fwd_bwd", lambda: (_z(5), _z(5), _z(6)), dict(scale=1.0), ValueError, None),
    ("mse-dtype", "mse_fwd_bwd", lambda: (_z(5), _z(5, dt=F64), _z(5)), dict(scale=1.0),
     ValueError, None),
    ("mse-int", "mse_fwd_bwd", lambda: (_z(5, dt=I32), _z(5, dt=I32), _z(5, dt=I32)),
     dict(scale=1.0), TypeError, None),
    ("mse-strided", "mse_fwd_bwd", lambda: (_z(5), _z(5), _strided(5)), dict(scale=1.0),
     ValueError, None),
    ("mse-readonly", "mse_fwd_bwd", lambda: (_ro(_z(5)), _z(5), _z(5)), dict(scale=1.0),
     ValueError, None),
    ("mse-misaligned", "mse_fwd_bwd", lambda: (_z(5), _misaligned(5), _z(5)), dict(scale=1.0),
     KernelError, _ERR_ALIGN),
    ("mse-scale-nan", "mse_fwd_bwd", lambda: (_z(5), _z(5), _z(5)), dict(scale=float("nan")),
     KernelError, _ERR_ARG),
    ("xent-labels-len", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), _labels([0, 0])),
     dict(scale=1.0), ValueError, None),
    ("xent-logits-shape", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 5), _labels([0, 0, 0])),
     dict(scale=1.0), ValueError, None),
    ("xent-logits-ndim", "xent_fwd_bwd", lambda: (_z(3, 4), _z(12), _labels([0, 0, 0])),
     dict(scale=1.0), ValueError, None),
    ("xent-dtype", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4, dt=F64), _labels([0, 0, 0])),
     dict(scale=1.0), ValueError, None),
    ("xent-float-labels", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), np.zeros(3, np.float32)),
     dict(scale=1.0), TypeError, None),
    ("xent-strided", "xent_fwd_bwd", lambda: (_z(3, 4), _strided(3, 4), _labels([0, 0, 0])),
     dict(scale=1.0), ValueError, None),
    ("xent-labels-strided", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), np.zeros(6, np.int64)[::2]),
     dict(scale=1.0), ValueError, None),
    # c converts non-int64 labels with np.ascontiguousarray, so it accepted strided int32 labels
    # until its patch (the report of this change): every argument must be C-contiguous
    ("xent-labels-strided-i32", "xent_fwd_bwd",
     lambda: (_z(3, 4), _z(3, 4), np.zeros(6, np.int32)[::2]), dict(scale=1.0), ValueError, None),
    ("xent-scale-inf", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), _labels([0, 0, 0])),
     dict(scale=float("inf")), KernelError, _ERR_ARG),
    ("xent-misaligned", "xent_fwd_bwd", lambda: (_z(3, 4), _misaligned(3, 4), _labels([0, 0, 0])),
     dict(scale=1.0), KernelError, _ERR_ALIGN),
    # out-of-range labels (row 0 only, so that the unchecked old code stayed inside the buffer)
    ("xent-label-C", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), _labels([4, 0, 0])),
     dict(scale=1.0), KernelError, _ERR_ARG),
    ("xent-label-neg", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), _labels([-1, 0, 0])),
     dict(scale=1.0), KernelError, _ERR_ARG),
    ("xent-label-i32", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), _labels([0, 7, 0], I32)),
     dict(scale=1.0), KernelError, _ERR_ARG),
    ("xent-no-classes", "xent_fwd_bwd", lambda: (_z(3, 0), _z(3, 0), _labels([0, 0, 0])),
     dict(scale=1.0), KernelError, _ERR_ARG),
]


# ------------------------------------------------------------------------------- device arrays
def _cuda_sim():
    from fastdescent.backends.numba_cuda import SIM
    return SIM


def _to_device(a):
    """A device array with ``a``'s layout (strides, read-only flag, misalignment).

    Under the simulator, "device" memory is host memory: the device array wraps ``a`` itself, so
    "nothing was written" is checked on ``a``. On a GPU, layouts that cannot be uploaded as they are
    (read-only, misaligned, strided) skip the case; the rest are copied.
    """
    if not isinstance(a, np.ndarray):
        return a
    if _cuda_sim():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(a)
    if not (a.flags.c_contiguous and a.flags.writeable and a.flags.aligned):
        pytest.skip("this layout is only built under the CUDA simulator")
    from numba import cuda
    return cuda.to_device(a)


def _host_copy(a):
    if a is None or isinstance(a, list):
        return None
    return np.array(a, copy=True) if isinstance(a, np.ndarray) else a.copy_to_host()


def _call(backend, kernel, build, kwargs):
    args = build()
    if backend == "cuda":
        args = tuple(_to_device(a) for a in args)
    before = [_host_copy(a) for a in args]
    fn = fd.get_backend(backend).KERNELS[kernel]
    with pytest.raises(Exception) as ei:
        fn(*args, **kwargs)
    for a, b in zip(args, before):  # nothing was written
        if b is not None:
            np.testing.assert_array_equal(_host_copy(a), b)
    return ei.value


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("case", DENSE_CASES, ids=[c[0] for c in DENSE_CASES])
def test_dense_kernels_validate_alike(case, backend):
    """The same bad call raises the same exception type on every backend (a KernelError with the
    same C status code), names the kernel, and writes nothing."""
    _id, kernel, build, kwargs, exc, code = case
    require_backend(backend)
    e = _call(backend, kernel, build, kwargs)
    assert type(e) is exc or (exc is not KernelError and isinstance(e, exc)
                              and not isinstance(e, KernelError)), \
        f"{backend}: expected {exc.__name__}, got {type(e).__name__}: {e}"
    if exc is KernelError:
        assert e.code == code, f"{backend}: status {e.code}, expected {code}: {e}"
    if backend != "c":  # c's messages come from its own fast checks and cffi
        assert kernel in str(e), e


@pytest.mark.parametrize("backend", ["numpy", "numba", "cuda"])
@pytest.mark.parametrize("what, name", [("strided", "x"), ("readonly", "y"), ("list", "x")])
def test_dense_messages_name_the_argument(backend, what, name):
    require_backend(backend)
    y, x, w = _z(2, 3, 5), _z(2, 3, 4), _z(1, 4, 5)
    if what == "strided":
        x = _strided(2, 3, 4)
    elif what == "readonly":
        _ro(y)
    else:
        x = x.tolist()
    args = (y, x, w, None)
    if backend == "cuda":
        args = tuple(_to_device(a) for a in args)
    with pytest.raises(ValueError) as ei:
        fd.get_backend(backend).KERNELS["matmul_fwd"](*args)
    assert f"{name} " in str(ei.value) or f"{name}:" in str(ei.value), ei.value


@pytest.mark.parametrize("backend", ["numpy", "numba", "c"])
def test_device_arrays_on_host_backends_and_host_arrays_on_cuda(backend):
    """A host backend refuses device arrays, the cuda backend host arrays (first array: TypeError,
    any other: ValueError), before writing anything."""
    require_backend(backend)
    require_backend("cuda")
    K = fd.get_backend(backend).KERNELS
    KC = fd.get_backend("cuda").KERNELS
    y, x = _z(5), _z(5)
    if backend != "c":  # c leaves this to cffi (TypeError for any argument)
        with pytest.raises(ValueError, match="x must be a NumPy array"):
            K["act_fwd"](y, _to_device(x), kind=0)
    with pytest.raises(TypeError):
        K["act_fwd"](_to_device(y), x, kind=0)
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        KC["act_fwd"](y, _to_device(x), kind=0)
    with pytest.raises(ValueError, match="x must be a device array"):
        KC["act_fwd"](_to_device(y), x, kind=0)


def test_dense_checks_keep_valid_calls_working():
    """Valid calls (empty dims, Bw == B, int32 labels converted) still match the numpy reference."""
    require_backend("numba")
    nb = fd.get_backend("numba").KERNELS
    ref = fd.get_backend("numpy").KERNELS
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    w = rng.standard_normal((3, 5, 2))
    b = rng.standard_normal((3, 2))
    for K in (nb, ref):
        y = np.zeros((3, 4, 2))
        K["matmul_fwd"](y, x, w, b)
        if K is nb:
            y_nb = y
    np.testing.assert_allclose(y_nb, y, rtol=1e-12)
    for K in (nb, ref):
        K["matmul_fwd"](np.zeros((0, 4, 2)), np.zeros((0, 4, 5)), np.zeros((1, 5, 2)), None)
    lg = rng.standard_normal((3, 4)).astype(np.float32)
    d1, d2, d3 = np.zeros_like(lg), np.zeros_like(lg), np.zeros_like(lg)
    l1 = nb["xent_fwd_bwd"](d1, lg, np.array([0, 3, 1], np.int32), scale=1 / 3)
    l2 = ref["xent_fwd_bwd"](d2, lg, np.array([0, 3, 1], np.int64), scale=1 / 3)
    l3 = ref["xent_fwd_bwd"](d3, lg, np.array([0, 3, 1], np.int32), scale=1 / 3)
    assert l1 == pytest.approx(l2, rel=1e-6) and l3 == l2
    np.testing.assert_allclose(d1, d2, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(d3, d2)
    for K in (nb, ref):
        assert K["xent_fwd_bwd"](np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0, np.int64),
                                 scale=1.0) == 0.0


def test_cuda_xent_labels_checked_on_device_then_valid_call():
    """cuda: a bad label leaves dlogits untouched (the flag is read on the device), and the next
    valid call on the same scratch buffer gives the reference result (int32 labels too)."""
    require_backend("cuda")
    from numba import cuda

    KC = fd.get_backend("cuda").KERNELS
    ref = fd.get_backend("numpy").KERNELS
    rng = np.random.default_rng(3)
    lg = rng.standard_normal((3, 4))
    g = cuda.to_device(np.ones((3, 4)))
    with pytest.raises(KernelError) as ei:
        KC["xent_fwd_bwd"](g, cuda.to_device(lg), cuda.to_device(np.array([0, 1, 4])), scale=1.0)
    assert ei.value.code == _ERR_ARG
    np.testing.assert_array_equal(g.copy_to_host(), np.ones((3, 4)))
    lab = np.array([3, 1, 0], np.int32)
    loss = KC["xent_fwd_bwd"](g, cuda.to_device(lg), cuda.to_device(lab), scale=0.5)
    g_ref = np.ones((3, 4))
    loss_ref = ref["xent_fwd_bwd"](g_ref, lg, lab, scale=0.5)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(g.copy_to_host(), g_ref, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------- required columns
_SCALARS = {
    "sgd": dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=0, maximize=0,
                first_step=0),
    "adam": dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay=1.0, step_size=0.1,
                 bias_correction2_sqrt=1.0, amsgrad=0, maximize=0),
    "rmsprop": dict(lr=0.1, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=0,
                    maximize=0),
    "adagrad": dict(clr=0.1, eps=1e-10, weight_decay=0.0, maximize=0),
    "lion": dict(lr=0.1, beta1=0.9, one_minus_beta1=0.1, beta2=0.99, one_minus_beta2=0.01,
                 decay=1.0, maximize=0),
    "lamb": dict(lr=0.1, beta1=0.9, one_minus_beta1=0.1, beta2=0.999, one_minus_beta2=0.001,
                 eps=1e-6, weight_decay=0.0, inv_bias_correction1=10.0, inv_bias_correction2=1000.0,
                 maximize=0),
    "rprop": dict(etaminus=0.5, etaplus=1.2, step_size_min=1e-6, step_size_max=50.0, maximize=0),
    "nadam": dict(beta1=0.9, one_minus_beta1=0.1, beta2=0.999, one_minus_beta2=0.001,
                  weight_decay=0.0, decay=1.0, step_size_grad=0.1, step_size_exp_avg=0.1,
                  eps_scaled=1e-8, maximize=0),
    "radam": dict(beta1=0.9, one_minus_beta1=0.1, beta2=0.999, one_minus_beta2=0.001, eps=1e-8,
                  weight_decay=0.0, decay=1.0, step_size=0.1, rectify=1, maximize=0),
    "adamax": dict(lerp_weight=0.1, lerp_from_grad=0, beta2=0.999, eps=1e-8, weight_decay=0.0,
                   clr=0.02, maximize=0),
    "adadelta": dict(lr=1.0, rho=0.9, one_minus_rho=0.1, eps=1e-6, weight_decay=0.0, maximize=0),
    "norm_pow_sum": dict(norm_type=2.0),
    "scale": dict(factor=0.5),
    "all_finite": {},
    "clip_value": dict(clip_value=1.0),
    "prox": dict(threshold=0.1),
    "noise": dict(param_index=np.array([0, 1]), sigma=0.1, seed=0, step=1),  # (tables of 2 tensors)
}
#: (kernel, column, scalar changes): the non-optional columns, then optional ones that a flag needs
_REQUIRED = [(r.name, c, {}) for r in ROWS.values() if r.kind == "multi"
             for c in r.columns if c not in r.optional]
_REQUIRED += [("sgd", "momentum_buffer", dict(momentum=0.9)),
              ("adam", "max_exp_avg_sq", dict(amsgrad=1)),
              ("rmsprop", "grad_avg", dict(centered=1)),
              ("rmsprop", "momentum_buffer", dict(momentum=0.9))]
_IDS = [f"{k}-{c}" + ("-flag" if s else "") for k, c, s in _REQUIRED]


def _numba_dispatchers():
    """Every numba dispatcher of the multi-tensor kernels, to see that nothing gets compiled."""
    import numba

    from fastdescent.backends.numba_cpu import (adadelta, adagrad, adam, adamax, clip, lamb, lion,
                                                nadam, radam, rmsprop, rprop, sgd)

    out = []
    for mod in (adadelta, adagrad, adam, adamax, clip, lamb, lion, nadam, radam, rmsprop, rprop, sgd):
        for v in vars(mod).values():
            v = getattr(v, "parallel", v)
            if isinstance(v, numba.core.registry.CPUDispatcher):
                out.append(v)
    return out


@pytest.mark.parametrize("how", ["none", "missing"])
@pytest.mark.parametrize("kernel, column, flags", _REQUIRED, ids=_IDS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_required_column_none(backend, kernel, column, flags, how):
    """A required column set to None (or never set) raises ValueError naming it and the kernel on
    every backend, and writes nothing (numba: compiles nothing; it used to be a TypingError after a
    failed compile; c: cffi's TypeError or a NULL status; numpy: 'NoneType' is not subscriptable)."""
    mod = require_backend(backend)
    put = _to_device if backend == "cuda" else (lambda a: a)
    row = ROWS[kernel]
    tab = mod.Table(np.float64, [3, 2])
    arrays = {}
    for c in row.columns:
        if c == column:
            if how == "none":
                tab.set(c, None)
        elif c not in row.optional:
            arrays[c] = [np.ones(3), np.ones(2)]
            tab.set(c, [put(a) for a in arrays[c]])
    disp = _numba_dispatchers() if backend == "numba" else []
    sigs = [len(d.signatures) for d in disp]
    before = {c: [a.copy() for a in v] for c, v in arrays.items()}
    with pytest.raises(ValueError) as ei:
        mod.KERNELS[kernel](tab, **{**_SCALARS[kernel], **flags})
    assert repr(column) in str(ei.value) and kernel in str(ei.value), ei.value
    assert [len(d.signatures) for d in disp] == sigs, "a kernel was compiled"
    for c, v in arrays.items():
        for a, b in zip(v, before[c]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_required_column_plain_table(backend):
    """A plain TensorTable (not the backend's own) with a None column: the same ValueError."""
    mod = require_backend(backend)
    tab = TensorTable.from_columns(np.float64, {"param": [np.ones(3)], "grad": None,
                                                "sum": [np.zeros(3)]})
    with pytest.raises(ValueError, match="adagrad: the column 'grad' is required, but it is None"):
        mod.KERNELS["adagrad"](tab, **_SCALARS["adagrad"])


def test_require_api():
    tab = TensorTable(np.float64, [2])
    tab.set("param", [np.ones(2)]).set("grad", [np.ones(2)]).set("exp_avg", [np.ones(2)])
    tab.set("exp_avg_sq", [np.ones(2)]).set("max_exp_avg_sq", None)
    assert tab.require("adam") is tab.packed
    assert tab.require("adam", 0 and "max_exp_avg_sq", None, "") is tab.packed  # falsy: skipped
    with pytest.raises(ValueError, match=r"adam: the column 'max_exp_avg_sq' is required \(by this "
                                         r"call's scalars\), but it is None"):
        tab.require("adam", "max_exp_avg_sq")
    with pytest.raises(ValueError, match="sgd: the column 'momentum_buffer' is required.*missing"):
        TensorTable(np.float64, [2]).set("param", [np.ones(2)]).set("grad", [np.ones(2)]) \
            .require("sgd", "momentum_buffer")
    with pytest.raises(KeyError):
        tab.require("matmul_fwd")
    assert required_columns("adam") == ("param", "exp_avg", "exp_avg_sq", "grad")


@pytest.mark.parametrize("slot, column", [(1, "grad"), (2, "exp_avg"), (3, "exp_avg_sq")])
def test_functional_required_none_on_numba(slot, column):
    """Through the functional API: ``F.adam(params, grads, None, ...)`` on numba raises a ValueError
    naming the argument, and nothing is modified. (A guard: the functional layer itself rejects a
    None required list; the kernel-level test above is the regression test.)"""
    require_backend("numba")
    params = [np.ones(4), np.ones(3)]
    lists = [params, [np.ones(4), np.ones(3)], [np.zeros(4), np.zeros(3)],
             [np.zeros(4), np.zeros(3)]]
    lists[slot] = None
    with pytest.raises(ValueError) as ei:
        F.adam(*lists, step=1, lr=0.1, backend="numba")
    assert column in str(ei.value), ei.value
    np.testing.assert_array_equal(params[0], np.ones(4))
