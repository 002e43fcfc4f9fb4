"""Hardening of the numba backend.

* fork after a threaded step: a forked child runs the serial kernels and finishes with the right
  results (GNU OpenMP would kill it); ``spawn`` children work too. Subprocesses, hard timeouts.
* the ``workqueue`` threading layer: two Python threads running threaded kernels concurrently no
  longer abort the process (calls are serialised by a lock; ``omp``/``tbb`` keep full concurrency).

The argument checks of every backend (dense kernels validated like the c backend, required columns)
are tested in ``tests/test_backend_validation.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from _subproc import run_script

pytest.importorskip("numba")

TIMEOUT = 120  # seconds per subprocess: a hang fails the test instead of the CI job


def _run_script(tmp_path, source, *args, env=None):
    """Run ``source`` with numba's threads on for small arrays and the default threading layer."""
    return run_script(tmp_path, source, *args, unset=("NUMBA_THREADING_LAYER",), timeout=TIMEOUT,
                      env={"NUMBA_NUM_THREADS": "2", "FASTDESCENT_NUMBA_PARALLEL_MIN": "0",
                           **(env or {})})


# ---------------------------------------------------------------------------------------- fork
_FORK_SCRIPT = """
import sys

import numpy as np
import numba

import fastdescent as fd
from _subproc import run_child

try:
    from fastdescent.backends.numba_cpu._threads import state
except ImportError:  # code without the fork handling: report nothing
    def state():
        return {}

METHOD = sys.argv[1]
ADAM = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay=1.0, step_size=1e-2,
            bias_correction2_sqrt=1.0, amsgrad=0, maximize=0)


def arrays():
    rng = np.random.default_rng(1)
    sizes = (3000, 17, 0, 5000, 1)
    cols = {"param": [rng.standard_normal(n).astype(np.float32) for n in sizes],
            "grad": [rng.standard_normal(n).astype(np.float32) for n in sizes],
            "exp_avg": [np.zeros(n, np.float32) for n in sizes],
            "exp_avg_sq": [np.zeros(n, np.float32) for n in sizes]}
    x = rng.standard_normal((2, 64, 64)).astype(np.float32)
    w = rng.standard_normal((1, 64, 64)).astype(np.float32)
    return cols, x, w


def run(backend):
    # three adam steps on a table, a dense forward and an activation: big enough for the threads
    cols, x, w = arrays()
    tab = backend.Table.from_columns(np.float32, {**cols, "max_exp_avg_sq": None})
    for _ in range(3):
        backend.KERNELS["adam"](tab, **ADAM)
    y = np.zeros((2, 64, 64), np.float32)
    backend.KERNELS["matmul_fwd"](y, x, w, None)
    z = np.empty_like(y)
    backend.KERNELS["act_fwd"](z, y, kind=1)
    return getattr(tab, "parallel", None), cols["param"], z


def check(tag):
    nb = fd.get_backend("numba")
    parallel, params, z = run(nb)
    ref_parallel, ref_params, ref_z = run(fd.get_backend("numpy"))
    assert parallel, "the table should take the threaded variant (PARALLEL_MIN=0)"
    for a, b in zip(params, ref_params):
        np.testing.assert_array_equal(a, b)  # element-wise kernels: exactly NumPy's bits
    np.testing.assert_allclose(z, ref_z, rtol=1e-5, atol=1e-5)
    print(f"{tag} OK {state()}", flush=True)


def child():
    check("CHILD")


if __name__ == "__main__":
    check("PARENT")
    print("LAYER", numba.threading_layer(), flush=True)  # the pool has started in the parent
    code = run_child(METHOD, child, timeout=90)
    sys.exit(0 if code == 0 else 2)
"""


@pytest.mark.parametrize("method", ["os.fork", "fork", "spawn"])
def test_fork_after_threaded_step(tmp_path, method):
    """A child forked after the parent ran threaded kernels (default layer: omp here) computes the
    same results; with the fix it runs the serial variants (spawn: a fresh process, threaded)."""
    if method != "spawn" and not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    out = _run_script(tmp_path, _FORK_SCRIPT, method)
    assert "PARENT OK" in out and "CHILD OK" in out and "CHILD EXIT 0" in out, out


@pytest.mark.parametrize("layer", ["omp", "workqueue"])
def test_fork_after_threaded_step_each_layer(tmp_path, layer):
    """The same, forcing each layer available here (omp is the one that is not fork-safe)."""
    import numba

    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    if layer == "omp":
        try:
            from numba.np.ufunc import omppool  # noqa: F401
        except ImportError:
            pytest.skip("numba's omp threading layer is not available here")
    del numba
    out = _run_script(tmp_path, _FORK_SCRIPT, "os.fork", env={"NUMBA_THREADING_LAYER": layer})
    assert f"LAYER {layer}" in out and "CHILD OK" in out, out
    if layer == "omp":  # the child must have switched to the serial kernels
        assert "'serial_only': True" in out.split("CHILD OK", 1)[1], out


# ------------------------------------------------------------------------- workqueue concurrency
_THREADS_SCRIPT = """
import threading

import numpy as np
import numba

import fastdescent as fd

nb = fd.get_backend("numba")
SGD = dict(lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=0, maximize=0,
           first_step=0)


def work(seed, steps, out):
    rng = np.random.default_rng(seed)
    sizes = (2000, 3, 4000)
    cols = {"param": [rng.standard_normal(n) for n in sizes],
            "grad": [rng.standard_normal(n) for n in sizes],
            "momentum_buffer": [np.zeros(n) for n in sizes]}
    tab = nb.Table.from_columns(np.float64, cols)
    x = rng.standard_normal((1, 64, 64))
    w = rng.standard_normal((1, 64, 64))
    y = np.zeros((1, 64, 64))
    for _ in range(steps):
        nb.KERNELS["sgd"](tab, **SGD)
        nb.KERNELS["matmul_fwd"](y, x, w, None)
        nb.KERNELS["norm_pow_sum"](tab, norm_type=2.0)
    out[seed] = (np.concatenate(cols["param"]), y.copy())


if __name__ == "__main__":
    sequential = {}
    for seed in (0, 1):
        work(seed, 150, sequential)
    assert numba.threading_layer() == "workqueue", numba.threading_layer()
    for rnd in range(3):
        concurrent = {}
        threads = [threading.Thread(target=work, args=(seed, 150, concurrent)) for seed in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for seed in (0, 1):
            np.testing.assert_array_equal(concurrent[seed][0], sequential[seed][0])
            np.testing.assert_array_equal(concurrent[seed][1], sequential[seed][1])
    print("THREADS OK", flush=True)
"""


def test_workqueue_layer_two_threads(tmp_path):
    """Two threads running threaded kernels at once under ``workqueue`` (not thread-safe): the
    process used to abort ("Terminating: Nested parallel kernel launch detected"); now the calls
    are serialised and the results equal the sequential runs."""
    out = _run_script(tmp_path, _THREADS_SCRIPT, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert "THREADS OK" in out, out


def test_thread_safe_layer_runs_without_the_lock():
    """Under omp/tbb the threaded kernels are not serialised (once the layer is known)."""
    import numba

    from fastdescent.backends.numba_cpu import _threads
    from fastdescent.backends.numba_cpu import activation as nb_act

    x = np.linspace(-1, 1, 1000)
    y = np.empty_like(x)
    nb_act._FWD[1](y, x, 1, 64)  # a threaded call chooses the layer
    layer = numba.threading_layer()
    if layer not in ("omp", "tbb"):
        pytest.skip(f"threading layer {layer!r} is not thread-safe: the lock stays")
    assert _threads.state() == {"layer": layer, "serial_only": False, "lock": False}
    np.testing.assert_allclose(y, np.tanh(x), rtol=1e-14)
