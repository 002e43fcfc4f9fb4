"""Dense-layer kernels (contract rows matmul_fwd / matmul_bwd_x / matmul_bwd_w, act_fwd / act_bwd,
mse_fwd_bwd / xent_fwd_bwd) on every backend that loads: numpy, c, numba and cuda (Numba's CUDA
simulator unless FASTDESCENT_TEST_GPU=1).

* finite differences (float64, central, along random directions) of every backward kernel against
  the same backend's forward: Bw == 1 and Bw == B, with and without bias;
* accumulation: backward kernels add into their outputs (twice gives twice);
* parity with the NumPy backend (float32 and float64), on shapes that reach both GEMM forms and the
  serial and threaded variants of the numba backend; the NumPy backend itself against einsum;
* softmax cross-entropy stays finite and shift-invariant for logits ~ 1e4;
* determinism: CPU backends give the same bits run to run, and numba the same bits with 1 or 2
  threads.

CUDA runs use tiny shapes (the simulator runs every GPU thread as a Python thread).
"""

from __future__ import annotations

import os

if os.environ.get("FASTDESCENT_TEST_GPU", "").strip() != "1":  # before anything imports numba.cuda
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastdescent as fd  # noqa: E402
from fastdescent import backends as registry  # noqa: E402

BACKENDS = ["numpy", "c", "numba", "cuda"]
HOST = ["numpy", "c", "numba"]
DTYPES = [np.float32, np.float64]
KINDS = {0: "relu", 1: "tanh", 2: "sigmoid", 3: "gelu"}


# ------------------------------------------------------------------------------------ helpers
def simulator_subset(be, dtype=np.float32, first=True):
    """Under Numba's CUDA simulator (each GPU thread in Python, every barrier a thread switch) the
    cuda rows of the costlier checks run float32 and the first shape only: the float64 kernels are
    the same source compiled for another type, and every shape still runs on the host backends."""
    if be.device and (dtype != np.float32 or not first):
        pytest.skip("cuda (simulator): float32, first shape only; the rest on the host backends")


class Be:
    """A backend's dense-layer kernels plus moving arrays to where it wants them and back."""

    def __init__(self, name):
        self.name = name
        self.mod = fd.get_backend(name)
        self.device = name == "cuda"

    def k(self, row):
        fn = self.mod.KERNELS.get(row)
        if fn is None:
            pytest.skip(f"backend {self.name!r} does not implement {row!r} yet")
        return fn

    def put(self, a):
        if a is None:
            return None
        a = np.array(a, order="C", copy=True)
        if not self.device:
            return a
        from numba import cuda
        return cuda.to_device(a)

    def get(self, a):
        return a.copy_to_host() if self.device else np.array(a, copy=True)

    # whole-layer helpers, host arrays in, host arrays out
    def fwd(self, x, w, b):
        B, M, _ = x.shape
        y = self.put(np.full((B, M, w.shape[2]), np.nan, x.dtype))
        self.k("matmul_fwd")(y, self.put(x), self.put(w), self.put(b))
        return self.get(y)

    def bwd(self, x, w, dy, with_db, dx0=None, dw0=None, db0=None):
        Bw, _, N = w.shape
        dx = self.put(np.zeros_like(x) if dx0 is None else dx0)
        dw = self.put(np.zeros_like(w) if dw0 is None else dw0)
        db = self.put(np.zeros((Bw, N), x.dtype) if db0 is None else db0) if with_db else None
        self.k("matmul_bwd_x")(dx, self.put(dy), self.put(w))
        self.k("matmul_bwd_w")(dw, db, self.put(x), self.put(dy))
        return self.get(dx), self.get(dw), (self.get(db) if with_db else None)

    def act(self, x, kind):
        y = self.put(np.full_like(x, np.nan))
        self.k("act_fwd")(y, self.put(x), kind=kind)
        return self.get(y)

    def act_grad(self, dy, x, y, kind, dx0=None):
        dx = self.put(np.zeros_like(x) if dx0 is None else dx0)
        self.k("act_bwd")(dx, self.put(dy), self.put(x), self.put(y), kind=kind)
        return self.get(dx)

    def mse(self, pred, target, scale, g0=None):
        g = self.put(np.zeros_like(pred) if g0 is None else g0)
        loss = self.k("mse_fwd_bwd")(g, self.put(pred), self.put(target), scale=scale)
        return loss, self.get(g)

    def xent(self, logits, labels, scale, g0=None):
        g = self.put(np.zeros_like(logits) if g0 is None else g0)
        loss = self.k("xent_fwd_bwd")(g, self.put(logits), self.put(labels), scale=scale)
        return loss, self.get(g)


def _load(name):
    reason = registry.backend_status()[name]
    if reason is not None:
        pytest.skip(f"backend {name!r} is not available here: {reason}")
    return Be(name)


@pytest.fixture(params=BACKENDS)
def be(request):
    return _load(request.param)


@pytest.fixture(params=HOST)
def host(request):
    return _load(request.param)


@pytest.fixture(scope="module")
def ref():
    return Be("numpy")


def _data(shape, dtype, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _layer(B, Bw, M, K, N, dtype, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, M, K)).astype(dtype)
    w = (rng.standard_normal((Bw, K, N)) / np.sqrt(max(K, 1))).astype(dtype)
    b = rng.standard_normal((Bw, N)).astype(dtype) if bias else None
    dy = rng.standard_normal((B, M, N)).astype(dtype)
    return x, w, b, dy


def _close(got, want, dtype, mag=1.0, length=1):
    """|got - want| <= tol * sqrt(length) * mag, with a dtype-aware tol (sums of `length` terms)."""
    tol = {np.float32: 4e-6, np.float64: 1e-13}[dtype]
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    lim = tol * np.sqrt(length + 1) * mag + 1e-300
    err = np.abs(got - want)
    assert np.all(err <= lim), f"max error {err.max():.3g} > {np.max(lim):.3g}"


def _fd(f, theta, v, eps):
    """Central difference of scalar f at theta along v."""
    return (f(theta + eps * v) - f(theta - eps * v)) / (2 * eps)


# shapes (B, Bw, M, K, N): tiny ones for every backend (cuda included), bigger for host backends
TINY = [(2, 1, 3, 5, 4), (3, 3, 2, 4, 3), (1, 1, 4, 7, 2)]
HOST_SHAPES = [
    (1, 1, 64, 64, 256),  # MLP layer 1: axpy form, threaded
    (1, 1, 64, 256, 10),  # MLP layer 2: dot form on a packed w.T; bwd_x axpy on w.T; bwd_w via dw.T
    (2, 1, 33, 70, 40),  # odd sizes, bwd_x dot form, B folded into rows
    (5, 5, 16, 16, 16),  # a stack of small independent layers
    (3, 3, 9, 48, 6),  # Bw == B with the short-row forms (per-item packing)
    (2, 2, 7, 300, 37),  # reduction longer than one panel (K > 256)
    (3, 1, 5, 3, 600),  # long rows, short reduction
    (2, 1, 1, 9, 1),
]


def _mm_ref(x, w, b):
    y = np.einsum("bmk,bkn->bmn", x.astype(np.float64), np.broadcast_to(w, (x.shape[0],) + w.shape[1:]))
    if b is not None:
        y = y + np.broadcast_to(b, (x.shape[0], b.shape[1]))[:, None, :]
    return y


# ------------------------------------------------------------------------------------ matmul
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", TINY, ids=str)
def test_matmul_grad_finite_differences(be, shape, bias):
    simulator_subset(be, first=shape == TINY[0])
    B, Bw, M, K, N = shape
    x, w, b, g = _layer(B, Bw, M, K, N, np.float64, seed=1, bias=bias)
    dx, dw, db = be.bwd(x, w, g, bias)
    rng = np.random.default_rng(2)

    def L(x_, w_, b_):  # sum(g * y): its gradient is the backward of dy = g
        return float(np.sum(g * be.fwd(x_, w_, b_)))

    eps = 1e-6
    vx, vw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    fd_x = _fd(lambda t: L(t, w, b), x, vx, eps)
    fd_w = _fd(lambda t: L(x, t, b), w, vw, eps)
    assert np.isclose(fd_x, np.sum(dx * vx), rtol=1e-7, atol=1e-8)
    assert np.isclose(fd_w, np.sum(dw * vw), rtol=1e-7, atol=1e-8)
    if bias:
        vb = rng.standard_normal(b.shape)
        fd_b = _fd(lambda t: L(x, w, t), b, vb, eps)
        assert np.isclose(fd_b, np.sum(db * vb), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", TINY, ids=str)
def test_matmul_parity_tiny(be, ref, shape, dtype):
    B, Bw, M, K, N = shape
    x, w, b, dy = _layer(B, Bw, M, K, N, dtype, seed=3)
    _close(be.fwd(x, w, b), _mm_ref(x, w, b), dtype, length=K)
    _check_backward(be, ref, x, w, dy, dtype, with_db=True)


def _check_backward(be, ref, x, w, dy, dtype, with_db):
    B, M, K = x.shape
    Bw, _, N = w.shape
    dx0, dw0, db0 = _data(x.shape, dtype, 7), _data(w.shape, dtype, 8), _data((Bw, N), dtype, 9)
    got = be.bwd(x, w, dy, with_db, dx0, dw0, db0)
    want = ref.bwd(x, w, dy, with_db, dx0, dw0, db0)
    red = B * M if Bw == 1 else M
    _close(got[0], want[0], dtype, mag=2.0, length=N)
    _close(got[1], want[1], dtype, mag=2.0 * np.sqrt(red), length=red)
    if with_db:
        _close(got[2], want[2], dtype, mag=2.0 * np.sqrt(red), length=red)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", HOST_SHAPES, ids=str)
def test_matmul_parity_host(host, ref, shape, dtype):
    B, Bw, M, K, N = shape
    x, w, b, dy = _layer(B, Bw, M, K, N, dtype, seed=4)
    _close(host.fwd(x, w, b), _mm_ref(x, w, b), dtype, mag=2.0, length=K)
    _close(host.fwd(x, w, None), _mm_ref(x, w, None), dtype, mag=2.0, length=K)
    _check_backward(host, ref, x, w, dy, dtype, with_db=True)
    _check_backward(host, ref, x, w, dy, dtype, with_db=False)


def test_numpy_reference_backward_against_einsum(ref):
    x, w, b, dy = _layer(3, 1, 4, 5, 6, np.float64, seed=5)
    dx, dw, db = ref.bwd(x, w, dy, True)
    np.testing.assert_allclose(dx, np.einsum("bmn,kn->bmk", dy, w[0]), rtol=1e-13)
    np.testing.assert_allclose(dw[0], np.einsum("bmk,bmn->kn", x, dy), rtol=1e-13)
    np.testing.assert_allclose(db[0], dy.sum(axis=(0, 1)), rtol=1e-13)
    x, w, b, dy = _layer(3, 3, 4, 5, 6, np.float64, seed=6)
    dx, dw, db = ref.bwd(x, w, dy, True)
    np.testing.assert_allclose(dw, np.einsum("bmk,bmn->bkn", x, dy), rtol=1e-13)
    np.testing.assert_allclose(db, dy.sum(axis=1), rtol=1e-13)


@pytest.mark.parametrize("Bw", ["1", "B"])
def test_matmul_backward_accumulates(be, Bw):
    B, M, K, N = 2, 3, 4, 5
    x, w, b, dy = _layer(B, 1 if Bw == "1" else B, M, K, N, np.float64, seed=10)
    once = be.bwd(x, w, dy, True)
    twice = be.bwd(x, w, dy, True, *once)
    for a, t in zip(once, twice):
        np.testing.assert_allclose(t, 2 * a, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("shape", [(2, 1, 0, 3, 4), (2, 2, 3, 0, 4), (1, 1, 3, 4, 0), (0, 1, 3, 4, 5)],
                         ids=str)
def test_matmul_empty_dimensions(host, ref, shape):
    B, Bw, M, K, N = shape
    x, w, b, dy = _layer(B, Bw, M, K, N, np.float64, seed=11)
    np.testing.assert_array_equal(host.fwd(x, w, b), _mm_ref(x, w, b))  # K == 0: y = b
    _check_backward(host, ref, x, w, dy, np.float64, with_db=True)


# ------------------------------------------------------------------------------------ activations
def _act_input(n, dtype, seed):
    x = _data(n, dtype, seed, scale=2.5)
    x[np.abs(x) < 1e-3] = 0.5  # keep central differences away from relu's kink
    return x


@pytest.mark.parametrize("kind", KINDS, ids=KINDS.get)
def test_activation_grad_finite_differences(be, kind):
    x = _act_input(23, np.float64, 12)
    g = _data(23, np.float64, 13)
    y = be.act(x, kind)
    dx = be.act_grad(g, x, y, kind)
    v = np.random.default_rng(14).standard_normal(x.shape)
    fd_ = _fd(lambda t: float(np.sum(g * be.act(t, kind))), x, v, 1e-6)
    assert np.isclose(fd_, np.sum(dx * v), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", KINDS, ids=KINDS.get)
def test_activation_parity(be, ref, kind, dtype):
    n = 41 if be.device else 70001  # host: several chunks, threaded variant
    shape = (n,) if be.device else (7, 10001)
    x = _act_input(shape, dtype, 15)
    x.flat[:4] = [0.0, -0.0, 40.0, -40.0]
    dy = _data(shape, dtype, 16)
    y = be.act(x, kind)
    want = ref.act(x, kind)
    # a few ulp of the terms (gelu's 1 + erf cancels for x << 0: absolute error ~ eps |x|)
    _close(y, want, dtype, mag=np.abs(want) + (np.abs(x) if kind == 3 else 0), length=8)
    dx0 = _data(shape, dtype, 17)
    _close(be.act_grad(dy, x, want, kind, dx0), ref.act_grad(dy, x, want, kind, dx0), dtype,
           mag=np.abs(dy) * (1 + np.abs(x)) + np.abs(dx0), length=16)


@pytest.mark.parametrize("kind", KINDS, ids=KINDS.get)
def test_activation_in_place_and_nan(host, kind):
    x = _act_input(9, np.float64, 18)
    x[3] = np.nan
    want = host.act(x, kind)
    assert np.isnan(want[3]) and np.isfinite(np.delete(want, 3)).all()
    buf = x.copy()
    host.k("act_fwd")(buf, buf, kind=kind)  # y may be x
    np.testing.assert_array_equal(buf, want)


# ------------------------------------------------------------------------------------ losses
def test_loss_grad_finite_differences(be):
    rng = np.random.default_rng(19)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    scale = 1 / 12
    loss, g = be.mse(pred, target, scale)
    np.testing.assert_allclose(loss, scale * np.sum((pred - target) ** 2), rtol=1e-13)
    v = rng.standard_normal(pred.shape)
    fd_ = _fd(lambda t: be.mse(t, target, scale)[0], pred, v, 1e-6)
    assert np.isclose(fd_, np.sum(g * v), rtol=1e-7, atol=1e-9)

    logits = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    loss, g = be.xent(logits, labels, 0.2)
    lse = np.log(np.sum(np.exp(logits), axis=1))
    np.testing.assert_allclose(loss, 0.2 * np.sum(lse - logits[np.arange(5), labels]), rtol=1e-13)
    v = rng.standard_normal(logits.shape)
    fd_ = _fd(lambda t: be.xent(t, labels, 0.2)[0], logits, v, 1e-6)
    assert np.isclose(fd_, np.sum(g * v), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_loss_parity_and_accumulation(be, ref, dtype):
    simulator_subset(be, dtype)
    shape = (6, 5) if be.device else (300, 257)  # host: several row chunks
    R, C = shape
    pred, target = _data(shape, dtype, 20), _data(shape, dtype, 21)
    g0 = _data(shape, dtype, 22)
    lb, gb = be.mse(pred, target, 1 / pred.size, g0)
    lr, gr = ref.mse(pred, target, 1 / pred.size, g0)
    assert isinstance(lb, float)
    np.testing.assert_allclose(lb, lr, rtol=1e-11)  # float64 sums either way
    _close(gb, gr, dtype, mag=np.abs(g0) + 1, length=2)
    logits = _data(shape, dtype, 23, scale=4)
    labels = np.random.default_rng(24).integers(0, C, R)
    lb, gb = be.xent(logits, labels, 1 / R, g0)
    lr, gr = ref.xent(logits, labels, 1 / R, g0)
    assert isinstance(lb, float)
    np.testing.assert_allclose(lb, lr, rtol={np.float32: 2e-6, np.float64: 1e-12}[dtype])
    _close(gb, gr, dtype, mag=np.abs(g0) + 1, length=C)
    # accumulation: a second call adds the same gradient again
    _, g1 = be.xent(logits, labels, 1 / R)
    _, g2 = be.xent(logits, labels, 1 / R, g1)
    _close(g2, 2 * g1, dtype, mag=np.abs(g1) + 1e-6, length=2)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_xent_is_stable_for_huge_logits(be, dtype):
    simulator_subset(be, dtype)
    R, C = 4, 6
    base = _data((R, C), dtype, 25, scale=2)
    labels = np.array([0, 5, 2, 3])
    l0, g0 = be.xent(base, labels, 1 / R)
    for shift in (1e4, -1e4):
        big = (base.astype(np.float64) + shift).astype(dtype)
        loss, g = be.xent(big, labels, 1 / R)
        assert np.isfinite(loss) and np.isfinite(g).all()
        # softmax is shift-invariant (up to rounding the shifted logits to dtype)
        tol = 1e-9 if dtype == np.float64 else 2e-2
        np.testing.assert_allclose(loss, l0, rtol=tol, atol=tol)
        np.testing.assert_allclose(g, g0, rtol=tol, atol=tol)
    # one dominant logit: loss ~ 1e4 for a wrong label, 0 for the right one, no overflow
    z = np.zeros((2, 3), dtype)
    z[:, 1] = 1e4
    loss, g = be.xent(z, np.array([1, 0]), 1.0)
    np.testing.assert_allclose(loss, 1e4, rtol=1e-6)
    np.testing.assert_allclose(g, [[0, 0, 0], [-1, 1, 0]], atol=1e-6)


# ------------------------------------------------------------------------------------ determinism
def _run_all(be, dtype):
    out = []
    # big enough for numba's threaded variant (>= 2**18 multiply-adds), every GEMM form and tiling:
    # shared weight (row blocks; column blocks when rows are few; short rows), Bw == B (whole items;
    # per-slot packing)
    for B, Bw, M, K, N in [(3, 1, 50, 70, 40), (1, 1, 256, 256, 10), (1, 1, 4, 256, 256),
                           (64, 64, 16, 16, 16), (16, 16, 32, 64, 8)]:
        x, w, b, dy = _layer(B, Bw, M, K, N, dtype, seed=26)
        out += [be.fwd(x, w, b), *be.bwd(x, w, dy, True)]
    x = _data((300, 301), dtype, 27)
    for kind in KINDS:
        y = be.act(x, kind)
        out += [y, be.act_grad(x, x, y, kind)]
    loss, g = be.mse(x, x[::-1].copy(), 1e-3)
    out += [np.array(loss), g]
    loss, g = be.xent(x, np.arange(300) % 301, 1e-3)
    out += [np.array(loss), g]
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_cpu_backends_are_deterministic(host, dtype):
    first, second = _run_all(host, dtype), _run_all(host, dtype)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_numba_results_do_not_depend_on_thread_count():
    be = _load("numba")
    import numba
    n = numba.config.NUMBA_NUM_THREADS
    if n < 2:
        pytest.skip("Numba has a single thread here")
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = _run_all(be, np.float32)
        numba.set_num_threads(n)
        threaded = _run_all(be, np.float32)
    finally:
        numba.set_num_threads(old)
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)
