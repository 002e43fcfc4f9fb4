"""The c backend's dense-layer kernels (csrc/fd_matmul.c, fd_activation.c, fd_loss.c) against NumPy.

Matmul parity on shapes at the edges of every block size of the GEMM engine (micro-tile 6 x 16 /
6 x 8 / 6 x 4, KC = 256, MC, the k-split of a shared weight's gradient), Bw == 1 and Bw == B, with
and without bias, accumulation, both code paths (AVX2+FMA and portable), float32 and float64;
bit-identical results run to run and for 1 vs 2 threads; activations and losses against NumPy and
finite differences; error cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastdescent.errors import KernelError

from conftest import require_backend


@pytest.fixture(scope="module")
def c():
    return require_backend("c")


@pytest.fixture(params=["avx512-gemm", "avx2-fma", "generic"])
def path(request, c):
    """Each code path of the GEMMs: avx2-fma with its AVX-512 micro-kernel, avx2-fma alone, generic."""
    try:
        c.set_simd_path("generic" if request.param == "generic" else "avx2-fma")
        c.set_gemm_avx512(request.param == "avx512-gemm")
    except KernelError:
        c.set_simd_path("auto")
        pytest.skip(f"code path {request.param} not available on this CPU/build")
    yield request.param
    c.set_simd_path("auto")
    if "avx512f" in c.describe()["cpu_features"]:
        c.set_gemm_avx512(True)


@pytest.fixture
def threads(c):
    """Restore the thread count after a test that changes it."""
    yield c
    c.set_num_threads(0)


@pytest.fixture(autouse=True, scope="module")
def _no_backoff(c):
    """The GEMMs' busy-machine back-off off in this module, so that the threaded paths run whatever
    the machine's load (a back-off would run them on one thread: same results, less coverage)."""
    c.set_gemm_backoff(False)
    yield
    c.set_gemm_backoff(True)


TOL = {np.float32: 1e-6, np.float64: 1e-14}  # relative to sqrt(len) * sum |terms|


def _close(got, want, mag, length, dtype, what):
    tol = 4 * TOL[dtype] * math.sqrt(length + 2) * mag + 1e-300
    err = np.abs(got.astype(np.float64) - want)
    bad = err > tol
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} elements off, worst "
                           f"{np.max(err / tol):.3g} x tol")


def _data(B, Bw, M, K, N, dtype, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.uniform(-1, 1, s).astype(dtype)  # noqa: E731
    return dict(x=f(B, M, K), w=f(Bw, K, N), b=f(Bw, N), dy=f(B, M, N), dx0=f(B, M, K),
                dw0=f(Bw, K, N), db0=f(Bw, N))


def _run(c, d, bias):
    K = c.KERNELS
    y = np.full(d["dy"].shape, 7, d["x"].dtype)
    dx, dw, db = d["dx0"].copy(), d["dw0"].copy(), d["db0"].copy()
    K["matmul_fwd"](y, d["x"], d["w"], d["b"] if bias else None)
    K["matmul_bwd_x"](dx, d["dy"], d["w"])
    K["matmul_bwd_w"](dw, db if bias else None, d["x"], d["dy"])
    return y, dx, dw, db


def _check_matmul(c, B, Bw, M, K, N, dtype, bias, seed=0):
    d = _data(B, Bw, M, K, N, dtype, seed)
    y, dx, dw, db = _run(c, d, bias)
    x, w, b, dy = (d[k].astype(np.float64) for k in ("x", "w", "b", "dy"))
    wb = np.broadcast_to(w, (B, K, N)) if Bw == 1 else w
    ref = x @ wb + (b[:, None, :] if bias else 0)
    mag = np.abs(x) @ np.abs(wb) + (np.abs(b[:, None, :]) if bias else 0)
    _close(y, ref, mag, K, dtype, "fwd")
    ref = d["dx0"] + dy @ wb.transpose(0, 2, 1)
    mag = np.abs(d["dx0"]) + np.abs(dy) @ np.abs(wb).transpose(0, 2, 1)
    _close(dx, ref, mag, N, dtype, "bwd_x")
    g = x.transpose(0, 2, 1) @ dy
    gm = np.abs(x).transpose(0, 2, 1) @ np.abs(dy)
    if Bw == 1:
        g, gm = g.sum(0, keepdims=True), gm.sum(0, keepdims=True)
    _close(dw, d["dw0"] + g, np.abs(d["dw0"]) + gm, B * M, dtype, "bwd_w")
    if bias:
        s = dy.sum(1) if Bw == B else dy.sum((0, 1))[None]
        sm = np.abs(dy).sum(1) if Bw == B else np.abs(dy).sum((0, 1))[None]
        _close(db, d["db0"] + s, np.abs(d["db0"]) + sm, B * M, dtype, "bwd_w db")
    else:
        assert np.array_equal(db, d["db0"])
    return d, (y, dx, dw, db)


EDGE = [1, 7, 17, 33]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M", EDGE)
@pytest.mark.parametrize("N", EDGE)
def test_matmul_parity_odd_shapes(c, path, dtype, M, N):
    for i, K in enumerate(EDGE):
        _check_matmul(c, 3, 3, M, K, N, dtype, bias=(i + M + N) % 2 == 0)
        _check_matmul(c, 2, 1, M, K, N, dtype, bias=(i + M + N) % 2 == 1)


BIG = [
    (1, 1, 257, 257, 257),   # one past KC and every micro-tile
    (1, 1, 145, 513, 33),    # one past MC (144), two KC blocks + 1
    (2, 2, 150, 256, 200),   # few large items: each GEMM split over threads
    (3, 1, 41, 300, 70),
    (64, 64, 16, 16, 16),    # batch-parallel small matrices
    (64, 1, 40, 16, 16),     # shared-weight gradient over 2560 rows: k-split
    (1, 1, 12, 3000, 512),   # threaded over units of column strips (few row panels), packed
    (5, 5, 0, 4, 3), (5, 5, 4, 0, 3), (5, 1, 4, 3, 0), (0, 1, 4, 3, 2),  # empty dimensions
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BIG, ids=lambda s: "x".join(map(str, s)))
def test_matmul_parity_blocks(c, path, dtype, shape):
    _check_matmul(c, *shape, dtype, bias=True)
    _check_matmul(c, *shape, dtype, bias=False, seed=1)


def test_backward_accumulates(c):
    d = _data(4, 1, 9, 5, 6, np.float64)
    dx, dw, db = np.zeros_like(d["dx0"]), np.zeros_like(d["dw0"]), np.zeros_like(d["db0"])
    K = c.KERNELS
    for _ in range(2):
        K["matmul_bwd_x"](dx, d["dy"], d["w"])
        K["matmul_bwd_w"](dw, db, d["x"], d["dy"])
    dx1, dw1, db1 = np.zeros_like(dx), np.zeros_like(dw), np.zeros_like(db)
    K["matmul_bwd_x"](dx1, d["dy"], d["w"])
    K["matmul_bwd_w"](dw1, db1, d["x"], d["dy"])
    np.testing.assert_allclose(dx, 2 * dx1, rtol=1e-14)
    np.testing.assert_allclose(dw, 2 * dw1, rtol=1e-14)
    np.testing.assert_allclose(db, 2 * db1, rtol=1e-14)


DET = [(1, 1, 300, 280, 270), (64, 64, 16, 16, 16), (2, 1, 512, 16, 16), (8, 1, 64, 64, 256),
       (1, 1, 12, 600, 600),    # two row panels: the threads take units of column strips, direct
       (1, 1, 12, 3000, 512),   # the same, packed
       (1, 1, 2000, 2048, 256)]  # fwd, bwd_w: too big for whole-operand packing, blocked static split


@pytest.mark.parametrize("shape", DET, ids=lambda s: "x".join(map(str, s)))
def test_matmul_deterministic_across_runs_and_threads(c, threads, shape):
    d = _data(*shape, np.float32)
    c.set_num_threads(2)
    first = _run(c, d, True)
    again = _run(c, d, True)
    c.set_num_threads(1)
    single = _run(c, d, True)
    for a, b2, s in zip(first, again, single):
        assert np.array_equal(a, b2)
        assert np.array_equal(a, s)


def test_matmul_concurrent_callers(c):
    """Python threads calling the kernels at once (cffi releases the GIL): same results as alone."""
    from concurrent.futures import ThreadPoolExecutor
    shapes = [(1, 1, 200, 300, 150), (64, 64, 16, 16, 16), (8, 1, 64, 64, 256), (3, 3, 50, 70, 90)]
    data = [_data(*s, np.float32, seed=i) for i, s in enumerate(shapes)]
    alone = [_run(c, d, True) for d in data]
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(lambda d: _run(c, d, True), data * 3))
    for i, got in enumerate(together):
        for a, b2 in zip(got, alone[i % len(data)]):
            assert np.array_equal(a, b2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avx512_gemm_gives_the_avx2_bits(c, dtype):
    """The AVX-512 micro-kernel runs the same multiply-add chains as the AVX2 one: same bits, on one
    and on two threads (shapes on the packed, direct and threaded paths, partial strips)."""
    try:
        c.set_simd_path("avx2-fma")
        c.set_gemm_avx512(True)
    except KernelError:
        c.set_simd_path("auto")
        pytest.skip("no AVX-512 GEMM on this CPU/build")
    try:
        for shape in [(1, 1, 128, 784, 128), (1, 1, 70, 300, 100), (8, 1, 64, 64, 256),
                      (1, 1, 12, 3000, 512), (3, 3, 33, 40, 47)]:
            d = _data(*shape, dtype)
            got = {}
            for avx512 in (True, False):
                c.set_gemm_avx512(avx512)
                for nt in (1, 2):
                    c.set_num_threads(nt)
                    got[avx512, nt] = _run(c, d, True)
            for key, res in got.items():
                for a, b2 in zip(res, got[False, 1]):
                    assert np.array_equal(a, b2), (shape, key)
    finally:
        c.set_num_threads(0)
        c.set_simd_path("auto")
        c.set_gemm_avx512(True)


def test_gemm_avx512_switch(c):
    assert c.describe()["gemm_avx512"] == c.gemm_avx512()
    for bad in (1, None, "on"):
        with pytest.raises(ValueError, match="enabled"):
            c.set_gemm_avx512(bad)
    assert c.lib.fd_gemm_avx512(7) == c.lib.FD_ERR_ARG
    if "avx512f" not in c.describe()["cpu_features"]:
        with pytest.raises(KernelError):
            c.set_gemm_avx512(True)
        assert c.gemm_avx512() is False
        return
    c.set_gemm_avx512(False)
    try:
        assert c.gemm_avx512() is False
    finally:
        c.set_gemm_avx512(True)
    assert c.gemm_avx512() is (c.get_simd_path() == "avx2-fma")
    c.set_simd_path("generic")
    try:
        assert c.gemm_avx512() is False  # on, but not in use on the generic path
    finally:
        c.set_simd_path("auto")


def test_gemm_backoff_switch_and_counters(c):
    bo = c.gemm_backoff()
    assert set(bo) == {"enabled", "parallel_calls", "stalls", "stalled_s", "single_thread_calls",
                       "left_s"}
    assert bo["enabled"] is False  # this module's fixture
    c.set_gemm_backoff(True)
    try:
        assert c.gemm_backoff()["enabled"] is True
        assert c.describe()["gemm_backoff"]["enabled"] is True
        for bad in (1, 0, None, "yes"):
            with pytest.raises(ValueError, match="enabled"):
                c.set_gemm_backoff(bad)
            assert c.gemm_backoff()["enabled"] is True  # unchanged
    finally:
        c.set_gemm_backoff(False)
    assert c.lib.fd_gemm_backoff(3) == c.lib.FD_ERR_ARG
    assert c.lib.fd_gemm_backoff(-1) == 0
    # a threaded GEMM is counted (the back-off off: it always gets its threads)
    c.set_num_threads(2)
    try:
        if c.get_num_threads() < 2:
            return  # no OpenMP in this build, or a fork child: nothing runs in parallel
        before = c.gemm_backoff()["parallel_calls"]
        d = _data(1, 1, 300, 280, 270, np.float32)
        _run(c, d, True)
        assert c.gemm_backoff()["parallel_calls"] >= before + 3
    finally:
        c.set_num_threads(0)


def test_matmul_errors(c):
    K = c.KERNELS
    x = np.ones((2, 3, 4), np.float32)
    w = np.ones((3, 4, 5), np.float32)  # Bw = 3: neither 1 nor B = 2
    y = np.full((2, 3, 5), 7, np.float32)
    with pytest.raises(KernelError) as ei:
        K["matmul_fwd"](y, x, w, None)
    assert ei.value.code == 4  # FD_ERR_SHAPE
    assert (y == 7).all()
    with pytest.raises(ValueError):
        K["matmul_fwd"](y, x, np.ones((1, 5, 5), np.float32), None)
    with pytest.raises((TypeError, ValueError)):
        K["matmul_fwd"](y, x.astype(np.float64), w[:1], None)
    with pytest.raises(TypeError):
        K["matmul_fwd"](y.astype(np.int32), x, w[:1], None)
    with pytest.raises(ValueError):  # not C-contiguous
        K["matmul_fwd"](y, np.ones((2, 4, 3), np.float32).transpose(0, 2, 1), w[:1], None)
    ro = np.ones((1, 4, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError):  # read-only output
        K["matmul_bwd_w"](ro, None, x, y)


# ---------------------------------------------------------------------------------------- activations
def _erf(a):
    return np.frompyfunc(math.erf, 1, 1)(a.astype(np.float64)).astype(np.float64)


def _act_ref(kind, x):
    x = x.astype(np.float64)
    if kind == 0:
        return np.maximum(x, 0), (x > 0).astype(np.float64)
    if kind == 1:
        t = np.tanh(x)
        return t, 1 - t * t
    if kind == 2:
        s = 1 / (1 + np.exp(-x))
        return s, s * (1 - s)
    cdf = 0.5 * (1 + _erf(x / math.sqrt(2)))
    return x * cdf, cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", [0, 1, 2, 3], ids=["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("n", [1, 33, 70001])
def test_activation_parity(c, path, dtype, kind, n):
    rng = np.random.default_rng(kind)
    x = (rng.standard_normal(n) * 4).astype(dtype)
    x[0] = 0.0 if n > 1 else x[0]
    if n > 3:
        x[1:3] = [30, -30]
    K = c.KERNELS
    y = np.empty_like(x)
    K["act_fwd"](y, x, kind=kind)
    fy, fp = _act_ref(kind, x)
    # element-type arithmetic: gelu's 1 + erf(x/sqrt 2) cancels for x < 0 (as in torch), so the
    # error is relative to |x|, not to |f(x)|
    eps = 4e-6 if dtype == np.float32 else 1e-13
    ax = np.abs(x.astype(np.float64))
    assert (np.abs(y - fy) <= eps * (np.abs(fy) + ax * (kind == 3)) + 1e-300).all()
    dy = rng.standard_normal(n).astype(dtype)
    dx0 = rng.standard_normal(n).astype(dtype)
    dx = dx0.copy()
    K["act_bwd"](dx, dy, x, y, kind=kind)
    want = dx0 + dy.astype(np.float64) * fp
    tol = 4 * eps * (np.abs(dx0) + np.abs(dy) * (1 + ax))
    assert (np.abs(dx - want) <= tol).all()
    z = x.copy()
    K["act_fwd"](z, z, kind=kind)  # in place
    assert np.array_equal(z, y)


@pytest.mark.parametrize("kind", [1, 2, 3])
def test_activation_backward_finite_differences(c, kind):
    rng = np.random.default_rng(5)
    x = rng.uniform(-3, 3, 200)
    x = x[np.abs(x) > 1e-3]
    K = c.KERNELS
    h = 1e-6
    yp, ym, y = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    K["act_fwd"](yp, x + h, kind=kind)
    K["act_fwd"](ym, x - h, kind=kind)
    K["act_fwd"](y, x, kind=kind)
    dx = np.zeros_like(x)
    K["act_bwd"](dx, np.ones_like(x), x, y, kind=kind)
    np.testing.assert_allclose(dx, (yp - ym) / (2 * h), rtol=1e-6, atol=1e-8)


def test_activation_errors(c):
    K = c.KERNELS
    x = np.ones(4, np.float32)
    with pytest.raises(KernelError) as ei:
        K["act_fwd"](np.empty_like(x), x, kind=9)
    assert ei.value.code == 3  # FD_ERR_ARG
    with pytest.raises(ValueError):
        K["act_fwd"](np.empty(3, np.float32), x, kind=0)


# ---------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 1000, 300001])
def test_mse(c, dtype, n):
    rng = np.random.default_rng(n)
    p, t = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    g0 = rng.standard_normal(n).astype(dtype)
    g = g0.copy()
    scale = 1.0 / n
    loss = c.KERNELS["mse_fwd_bwd"](g, p, t, scale=scale)
    d = p.astype(np.float64) - t
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    assert isinstance(loss, float)
    assert loss == pytest.approx(scale * np.sum(d * d), rel=rtol)
    np.testing.assert_allclose(g, g0 + 2 * scale * d, rtol=rtol, atol=rtol * scale)


def _xent_ref(logits, labels, scale):
    z = logits.astype(np.float64)
    m = z.max(1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(1, keepdims=True)
    lse = (m + np.log(s))[:, 0]
    R = len(labels)
    loss = scale * np.sum(lse - z[np.arange(R), labels])
    g = e / s
    g[np.arange(R), labels] -= 1
    return loss, scale * g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("R,C", [(1, 1), (64, 10), (257, 33), (3000, 40)])
def test_xent(c, path, dtype, R, C):
    rng = np.random.default_rng(R)
    logits = (rng.standard_normal((R, C)) * 3).astype(dtype)
    labels = rng.integers(0, C, R)
    g0 = rng.standard_normal((R, C)).astype(dtype)
    g = g0.copy()
    loss = c.KERNELS["xent_fwd_bwd"](g, logits, labels, scale=1.0 / R)
    rl, rg = _xent_ref(logits, labels, 1.0 / R)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    assert loss == pytest.approx(rl, rel=rtol, abs=rtol)
    np.testing.assert_allclose(g, g0 + rg, rtol=rtol * 4, atol=rtol / R)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_xent_huge_logits(c, dtype):
    big = 3e38 if dtype == np.float32 else 1e300
    logits = np.array([[big, 0.0, -big], [1e4, 1e4 - 1, 1e4 - 50], [-1e4, -1e4, -1e4]], dtype)
    labels = np.array([0, 1, 2])
    g = np.zeros_like(logits)
    loss = c.KERNELS["xent_fwd_bwd"](g, logits, labels, scale=1.0)
    assert np.isfinite(loss) and np.isfinite(g).all()
    l1 = math.log1p(math.exp(-1) + math.exp(-50))
    expect = 0.0 + (1 + l1) + math.log(3)
    assert loss == pytest.approx(expect, rel=1e-6)
    np.testing.assert_allclose(g[0], [0, 0, 0], atol=1e-30)
    np.testing.assert_allclose(g[2], [1 / 3, 1 / 3, -2 / 3], rtol=1e-6)


def test_xent_label_out_of_range(c):
    logits = np.zeros((4, 3), np.float32)
    g = np.full((4, 3), 5.0, np.float32)
    for bad in ([0, 1, 3, 2], [0, -1, 1, 2]):
        with pytest.raises(KernelError) as ei:
            c.KERNELS["xent_fwd_bwd"](g, logits, np.array(bad), scale=0.25)
        assert ei.value.code == 3  # FD_ERR_ARG
        assert (g == 5.0).all()  # nothing written


def test_losses_deterministic_across_threads(c, threads):
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal(10**6).astype(np.float32), rng.standard_normal(10**6).astype(np.float32)
    logits = rng.standard_normal((20000, 50)).astype(np.float32)
    labels = rng.integers(0, 50, 20000)
    out = []
    for n in (2, 1, 2):
        c.set_num_threads(n)
        g, gl = np.zeros_like(p), np.zeros_like(logits)
        a = c.KERNELS["mse_fwd_bwd"](g, p, t, scale=1e-6)
        b = c.KERNELS["xent_fwd_bwd"](gl, logits, labels, scale=1 / 20000)
        out.append((a, b, g, gl))
    for o in out[1:]:
        assert o[0] == out[0][0] and o[1] == out[0][1]
        assert np.array_equal(o[2], out[0][2]) and np.array_equal(o[3], out[0][3])


# ---------------------------------------------------------------------------------------- vs torch
def test_training_step_matches_torch(c):
    """One Linear -> GELU -> Linear -> cross-entropy step against torch autograd (float64)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    R, D, H, O = 37, 19, 33, 7  # noqa: E741 (rows, input, hidden, output widths)
    x = rng.standard_normal((1, R, D))
    w1, b1 = rng.standard_normal((1, D, H)) * 0.3, rng.standard_normal((1, H)) * 0.1
    w2, b2 = rng.standard_normal((1, H, O)) * 0.3, rng.standard_normal((1, O)) * 0.1
    lab = rng.integers(0, O, R)
    K = c.KERNELS
    h = np.empty((1, R, H))
    K["matmul_fwd"](h, x, w1, b1)
    a = np.empty_like(h)
    K["act_fwd"](a, h, kind=3)
    z = np.empty((1, R, O))
    K["matmul_fwd"](z, a, w2, b2)
    dz = np.zeros((R, O))
    loss = K["xent_fwd_bwd"](dz, z.reshape(R, O), lab, scale=1 / R)
    dz = dz.reshape(1, R, O)
    gw2, gb2, da = np.zeros_like(w2), np.zeros_like(b2), np.zeros_like(a)
    K["matmul_bwd_w"](gw2, gb2, a, dz)
    K["matmul_bwd_x"](da, dz, w2)
    dh = np.zeros_like(h)
    K["act_bwd"](dh, da, h, a, kind=3)
    gw1, gb1 = np.zeros_like(w1), np.zeros_like(b1)
    K["matmul_bwd_w"](gw1, gb1, x, dh)

    T = {k: torch.tensor(v, requires_grad=True) for k, v in
         dict(w1=w1[0], b1=b1[0], w2=w2[0], b2=b2[0]).items()}
    tz = torch.nn.functional.gelu(torch.tensor(x[0]) @ T["w1"] + T["b1"]) @ T["w2"] + T["b2"]
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(lab))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    for name, got in dict(w1=gw1[0], b1=gb1[0], w2=gw2[0], b2=gb2[0]).items():
        np.testing.assert_allclose(got, T[name].grad.numpy(), rtol=1e-10, atol=1e-13)
