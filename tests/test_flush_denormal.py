"""``fd.set_flush_denormal``: the c backend's opt-in flush of subnormal floats (fastdescent/_flush.py).

Off by default (IEEE subnormals, bit for bit with the NumPy reference); when on, the c kernels' results
below FLT_MIN become zero and subnormal inputs read as zero, on one thread and on several, in the
optimizer updates and the GEMMs; the calling thread's own floating-point mode is left as it was.
"""

import contextlib
import threading

import numpy as np
import pytest

import fastdescent as fd
from conftest import require_backend

TINY = np.float32(2e-38)  # normal (FLT_MIN = 1.18e-38)
SUB = np.float32(5e-39)  # subnormal
BIG = 1 << 18  # above the optimizer updates' threading grain: two threads take part


@pytest.fixture(autouse=True)
def flush_off_after():
    require_backend("c")
    assert fd.get_flush_denormal() is False  # the default (and every test leaves it off)
    yield
    fd.set_flush_denormal(False)


def _sgd(n, p0, g0, backend="c"):
    """One SGD step (lr 1) of an n-element tensor filled with p0, gradient g0: p0 - g0."""
    p = np.full(n, p0, np.float32)
    fd.SGD([p], lr=1.0, backend=backend).step([np.full(n, g0, np.float32)])
    return p


def _subnormal_result_ok():
    """NumPy on this thread still computes a subnormal (the thread's MXCSR is untouched)."""
    return np.float32(2e-38) - np.float32(1.5e-38) > 0


@contextlib.contextmanager
def _toggling():
    """Another thread flips fd.set_flush_denormal as fast as it can while the block runs."""
    stop = threading.Event()

    def toggle():
        on = False
        while not stop.is_set():
            on = not on
            fd.set_flush_denormal(on)

    t = threading.Thread(target=toggle)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


@pytest.mark.parametrize("n", [7, BIG], ids=["one-thread", "threaded"])
def test_updates_flush_results_and_inputs_only_when_asked(n):
    old = fd.get_num_threads()
    fd.set_num_threads(2)
    try:
        off = _sgd(n, TINY, np.float32(1.5e-38))
        assert off[0] > 0 and off[0] < np.finfo(np.float32).tiny  # a subnormal, as IEEE says
        np.testing.assert_array_equal(off, _sgd(n, TINY, np.float32(1.5e-38), backend="numpy"))
        assert fd.set_flush_denormal(True) is True
        assert fd.get_flush_denormal() is True and fd.info()["flush_denormal"] is True
        on = _sgd(n, TINY, np.float32(1.5e-38))
        assert not on.any()  # FTZ: the subnormal result is zero, in every thread's share
        daz = _sgd(n, np.float32(0.0), -SUB)  # 0 - (-sub): DAZ reads the input as zero
        assert not daz.any()
        assert _subnormal_result_ok()  # the caller's thread got its MXCSR back
        assert fd.set_flush_denormal(False) is True
        np.testing.assert_array_equal(_sgd(n, TINY, np.float32(1.5e-38)), off)
    finally:
        fd.set_num_threads(old)


def test_gemm_flushes_in_every_thread():
    """The dense-layer GEMM (packed, two threads): products below FLT_MIN."""
    from fastdescent.backends.c_cffi import matmul as c

    old = fd.get_num_threads()
    fd.set_num_threads(2)
    try:
        x = np.full((1, 256, 256), 1e-20, np.float32)
        w = np.full((1, 256, 256), 1e-20, np.float32)  # each product 1e-40: subnormal; sum 2.56e-38
        y = np.empty((1, 256, 256), np.float32)
        c.matmul_fwd(y, x, w, None)
        assert (y > 0).all()
        fd.set_flush_denormal(True)
        c.matmul_fwd(y, x, w, None)
        assert not y.any()
        assert _subnormal_result_ok()
    finally:
        fd.set_num_threads(old)


def test_other_threads_and_backends_keep_subnormals():
    """Only the c kernels flush: NumPy in another thread and the numpy backend keep IEEE results."""
    fd.set_flush_denormal(True)
    seen = []

    def other():
        seen.append(bool(_subnormal_result_ok()))
        seen.append(float(_sgd(5, TINY, np.float32(1.5e-38), backend="numpy")[0]))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen[0] is True and 0 < seen[1] < np.finfo(np.float32).tiny


@pytest.mark.parametrize("bad", [1, 0, "yes", None, 1.0])
def test_mode_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="set_flush_denormal: mode must be a bool"):
        fd.set_flush_denormal(bad)
    assert fd.get_flush_denormal() is False


def test_q8_codecs_flush_too():
    """The c backend's 8-bit state codecs (fd_q8_quantize / fd_q8_dequantize) are c kernels too: a
    decoded value below FLT_MIN is zero (FTZ) and a subnormal input encodes as zero (DAZ)."""
    from fastdescent import precision as P
    from fastdescent.backends.c_cffi import mixed as c

    codes = np.array([1, 2, 3, 0x81], np.uint8)  # the smallest magnitudes, one negative
    scales = np.array([2e-38], np.float32)  # normal; code * scale is subnormal
    off = c.q8_dequantize(codes, scales, P.Q8S)
    assert (np.abs(off) > 0).all() and (np.abs(off) < np.finfo(np.float32).tiny).all()
    x = np.array([127 * 2e-38, 1e-39, -3e-39], np.float32)  # a normal block maximum, two subnormals
    assert c.q8_quantize(x, P.Q8S)[0][1:].any()
    fd.set_flush_denormal(True)
    assert not c.q8_dequantize(codes, scales, P.Q8S).any()
    qcodes, qscales = c.q8_quantize(x, P.Q8S)
    assert qcodes[0] != 0 and not (qcodes[1:] & 0x7F).any()  # the subnormals read as zero
    assert _subnormal_result_ok()


def test_a_call_never_mixes_flushed_and_unflushed_work_while_another_thread_toggles():
    """The setting is read once per kernel call: a GEMM whose threads run while another Python
    thread toggles the flush either flushes every product or none (each GEMM region's threads used
    to read the setting again for themselves, so one output could hold zeros and subnormal sums).
    Timing-based: before the fix a mixed output showed up within ~0.5 s here, on 2 cores."""
    import time

    from fastdescent.backends.c_cffi import matmul as c

    old = fd.get_num_threads()
    fd.set_num_threads(2)
    x = np.full((1, 256, 256), 1e-20, np.float32)
    w = np.full((1, 256, 256), 1e-20, np.float32)  # each product 1e-40: subnormal; sum 2.56e-38
    y = np.empty((1, 256, 256), np.float32)
    mixed = []
    try:
        with _toggling():
            end = time.perf_counter() + 2.0
            while time.perf_counter() < end and not mixed:
                c.matmul_fwd(y, x, w, None)
                zeros = int((y == 0).sum())
                if 0 < zeros < y.size:
                    mixed.append(zeros)
    finally:
        fd.set_num_threads(old)
    assert not mixed, f"one GEMM call flushed {mixed[0]} of {y.size} outputs and not the others"
    assert _subnormal_result_ok()


def test_lamb_passes_agree_while_another_thread_toggles():
    """fd_lamb runs two passes over a tensor that spans reduction chunks (norms, then the update
    scaled by the trust ratio); both must use the same reading of the setting. A subnormal parameter
    gives distinct results flushed (trust from a zero norm) and not (a subnormal lr * trust); before
    the fix, a toggle between the passes gave a third (all zeros) within ~1 s. Timing-based."""
    import time

    n = 40000  # three reduction chunks: the tensor takes the second pass

    def run():
        p = [np.full(n, 5e-39, np.float32)]
        fd.functional.lamb(p, [np.ones(n, np.float32)], [np.zeros(n, np.float32)],
                           [np.zeros(n, np.float32)], step=1, lr=0.1, backend="c")
        return p[0]

    fd.set_flush_denormal(True)
    flushed = run()
    fd.set_flush_denormal(False)
    ieee = run()
    assert not np.array_equal(flushed, ieee)
    odd = []
    with _toggling():
        end = time.perf_counter() + 3.0
        while time.perf_counter() < end and not odd:
            p = run()
            if not (np.array_equal(p, flushed) or np.array_equal(p, ieee)):
                odd.append(np.unique(p)[:3])
    assert not odd, f"one lamb call mixed a flushed and an unflushed pass: values {odd[0]}"


_BORN_FLUSHED = r"""
import numpy as np, fastdescent as fd
from fastdescent.backends.c_cffi import matmul as c
fd.set_num_threads(2)
assert fd.set_flush_denormal(True)
x = np.full((1, 256, 256), 1e-20, np.float32)
y = np.empty_like(x)
c.matmul_fwd(y, x, x, None)  # the process's first parallel region: its threads start here
assert not y.any()
fd.set_flush_denormal(False)
c.matmul_fwd(y, x, x, None)
p = np.full(1 << 18, 2e-38, np.float32)
fd.SGD([p], lr=1.0, backend="c").step([np.full(1 << 18, 1.5e-38, np.float32)])
print(int((y == 0).sum()), int((p == 0).sum()))
"""


def test_threads_started_during_a_flushed_call_do_not_keep_flushing():
    """OpenMP starts its threads when a region first needs them, and a new thread inherits its
    creator's MXCSR: a pool started inside a flushed GEMM call used to be born with FTZ|DAZ as its
    threads' own mode, so after fd.set_flush_denormal(False) their shares of every kernel kept
    flushing (half a GEMM's outputs and an SGD step's results zero). A fresh process: in this one
    the pool exists already."""
    import subprocess
    import sys

    if not fd.set_flush_denormal(True):
        pytest.skip("no MXCSR flush here")
    fd.set_flush_denormal(False)
    import tempfile

    # cwd outside the checkout: there `import fastdescent` would find the source tree, which in an
    # installed (non-editable) test run has no compiled extension
    r = subprocess.run([sys.executable, "-c", _BORN_FLUSHED], capture_output=True, text=True,
                       timeout=120, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr[-2000:]
    gemm_zeros, sgd_zeros = map(int, r.stdout.split())
    assert (gemm_zeros, sgd_zeros) == (0, 0), "threads born in a flushed call keep flushing"
