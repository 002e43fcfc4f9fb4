"""Threads, fork and spawn with every CPU backend.

1. two threads stepping two different optimizers at once give the sequential results, with the
   backends' own threading forced on small arrays;
2. ``os.fork`` / multiprocessing ``fork`` / ``spawn`` children use the backend after the parent
   stepped from two threads (subprocesses with hard timeouts: a hang fails the test);
3. an optimizer over 10,000+ small tensors matches the numpy reference and steps quickly;
4. ONE optimizer stepped from two threads loses no step (the per-optimizer lock of optim/base.py).
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from _subproc import run_script
from conftest import require_backend

from fastdescent.optim import SGD, Adam, RMSprop

CPU_BACKENDS = ["numpy", "c", "numba"]
TIMEOUT = 60  # seconds; a hang fails the test


@pytest.fixture
def threaded(request, monkeypatch):
    """Force the backend's own multi-threading on small arrays, for the duration of a test."""
    name = request.param
    mod = require_backend(name)
    if name == "c":
        old = mod.get_parallel_grain()
        mod.set_parallel_grain(64)
        yield name
        mod.set_parallel_grain(old)
    else:
        if name == "numba":
            from fastdescent.backends.numba_cpu import _config
            monkeypatch.setattr(_config, "PARALLEL_MIN", 0)  # read when a table is planned
        yield name


def _problem(seed, sizes=(1500, 7, 0, 2500, 1), dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [[rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(4)]
    return params, grads


def _train(make_opt, seed, steps, backend):
    params, grads = _problem(seed)
    opt = make_opt(params, backend)
    for t in range(steps):
        opt.step(grads[t % len(grads)])
    return params


_OPTS = [
    lambda p, b: SGD(p, lr=0.01, momentum=0.9, nesterov=True, backend=b),
    lambda p, b: Adam(p, lr=0.01, backend=b),
    lambda p, b: RMSprop(p, lr=0.01, momentum=0.5, centered=True, backend=b),
]


@pytest.mark.parametrize("threaded", CPU_BACKENDS, indirect=True)
def test_two_threads_two_optimizers(threaded):
    """Different optimizers stepped concurrently from two Python threads give exactly the
    sequential results (the c and numba kernels release the GIL, so the steps really overlap)."""
    backend = threaded
    steps = 60
    want = [_train(_OPTS[i], i, steps, backend) for i in range(3)]
    for _ in range(3):
        got = [None] * 3
        errors = []

        def work(i):
            try:
                got[i] = _train(_OPTS[i], i, steps, backend)  # noqa: B023 (joined in this iteration)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)  # noqa: B023

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert not any(t.is_alive() for t in threads), "a stepping thread hung"
        assert not errors, errors
        for a, b in zip(got, want):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------ fork / spawn children
_CHILD_SCRIPT = """
import sys
import threading

import numpy as np

import fastdescent as fd
from fastdescent.optim import Adam

from _subproc import run_child

BACKEND, METHOD = sys.argv[1], sys.argv[2]


def force_threads():
    if BACKEND == "c":
        fd.get_backend("c").set_parallel_grain(64)


def train(backend, seed, steps=5):
    rng = np.random.default_rng(seed)
    sizes = (3000, 5, 4000, 1)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    opt = Adam(params, lr=0.01, backend=backend)
    for _ in range(steps):
        opt.step(grads)
    return params


def check(tag):
    force_threads()
    ref = train("numpy", 3)
    got = train(BACKEND, 3)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print(tag, "OK", flush=True)


def child():
    check("CHILD")


if __name__ == "__main__":
    force_threads()
    out = []
    threads = [threading.Thread(target=lambda s=s: out.append(train(BACKEND, s, 20))) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 2
    check("PARENT")
    code = run_child(METHOD, child, timeout=30)
    sys.exit(0 if code == 0 else 2)
"""


@pytest.mark.parametrize("method", ["os.fork", "fork", "spawn"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_child_process_after_threads(tmp_path, backend, method):
    """A child (os.fork, multiprocessing fork or spawn) of a process that stepped optimizers from
    two threads, with the backend's own threads on, steps correctly and does not hang or die."""
    require_backend(backend)
    if method != "spawn" and not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    out = run_script(tmp_path, _CHILD_SCRIPT, backend, method, name="child_script.py",
                     unset=("NUMBA_THREADING_LAYER",), timeout=TIMEOUT, what="the script",
                     env={"FASTDESCENT_NUMBA_PARALLEL_MIN": "0", "NUMBA_NUM_THREADS": "2",
                          "OMP_NUM_THREADS": "2"})
    assert "PARENT OK" in out and "CHILD OK" in out, out


# ------------------------------------------------------------------------ many small tensors
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ten_thousand_small_tensors(backend):
    """10,000+ small tensors (sizes 0..7) in one optimizer: a few Adam steps match the numpy
    reference (speed is the benchmarks' business: ``fastdescent bench``)."""
    require_backend(backend)
    rng = np.random.default_rng(7)
    sizes = rng.integers(0, 8, size=10_240)
    init = [rng.standard_normal(int(n)).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(int(n)).astype(np.float32) for n in sizes]

    def run(name):
        params = [p.copy() for p in init]
        opt = Adam(params, lr=0.01, weight_decay=0.01, backend=name)
        for _ in range(4):
            opt.step(grads)
        return params

    got = run(backend)
    ref = run("numpy")
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(ref), rtol=1e-5, atol=1e-6)


