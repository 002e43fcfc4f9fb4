"""Hardening of the numba backend (review issue 8, findings 6, 7, 15, 16).

* fork after a threaded step: a forked child runs the serial kernels and finishes with the right
  results (GNU OpenMP would kill it); ``spawn`` children work too. Subprocesses, hard timeouts.
* the ``workqueue`` threading layer: two Python threads running threaded kernels concurrently no
  longer abort the process (calls are serialised by a lock; ``omp``/``tbb`` keep full concurrency).
* the dense kernels validate their arguments like the c backend (same exception types), before any
  jitted call.
* a ``None`` (or missing) required column raises a ValueError naming the column, before any compile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import require_backend

pytest.importorskip("numba")

import fastdescent as fd  # noqa: E402
from fastdescent import functional as F  # noqa: E402
from fastdescent._contract import KERNELS as ROWS  # noqa: E402
from fastdescent.errors import KernelError  # noqa: E402

TIMEOUT = 120  # seconds per subprocess: a hang fails the test instead of the CI job


def _run_script(tmp_path, source, *args, env=None, timeout=TIMEOUT):
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(source))
    full_env = dict(os.environ)
    full_env.pop("NUMBA_THREADING_LAYER", None)
    full_env.update({"NUMBA_NUM_THREADS": "2", "FASTDESCENT_NUMBA_PARALLEL_MIN": "0"})
    full_env.update(env or {})
    try:
        proc = subprocess.run([sys.executable, str(path), *args], env=full_env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the subprocess hung (killed after {timeout} s); output so far:\n"
                    f"{exc.stdout}\n{exc.stderr}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"subprocess exited with {proc.returncode}:\n{out}"
    return out


# ---------------------------------------------------------------------------------------- fork
_FORK_SCRIPT = """
import multiprocessing as mp
import os
import sys

import numpy as np
import numba

import fastdescent as fd

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
    if METHOD == "os.fork":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
    else:
        proc = mp.get_context(METHOD).Process(target=child)
        proc.start()
        proc.join(90)
        if proc.is_alive():
            proc.kill()
            print("CHILD HUNG", flush=True)
            sys.exit(3)
        code = proc.exitcode
    print("CHILD EXIT", code, flush=True)
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


# ------------------------------------------------------------------------ dense-kernel checks
def _z(*shape, dt=np.float32):
    # a C-contiguous prefix of a larger zeroed buffer: kernels that did not check shapes read and
    # wrote out of bounds; the padding keeps that inside the allocation, so such code fails these
    # tests instead of crashing the test process
    n = int(np.prod(shape))
    return np.zeros(n + 256, dt)[:n].reshape(shape)


def _labels(values):
    lab = np.zeros(len(values) + 64, np.int64)[:len(values)]  # padded too (see _z)
    lab[:] = values
    return lab


def _ro(a):
    a.flags.writeable = False
    return a


def _strided(*shape, dt=np.float32):
    big = np.zeros((*shape[:-1], 2 * shape[-1]), dt)
    return big[..., ::2]


F64 = np.float64
I32 = np.int32

#: (id, kernel, args builder, kwargs, expected type, numpy raises the same type too)
DENSE_CASES = [
    ("fwd-K-mismatch", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 3), _z(1, 4, 5), None), {},
     ValueError, True),
    ("fwd-y-shape", "matmul_fwd", lambda: (_z(2, 3, 6), _z(2, 3, 4), _z(1, 4, 5), None), {},
     ValueError, True),
    ("fwd-x-ndim", "matmul_fwd", lambda: (_z(2, 3, 5), _z(6, 4), _z(1, 4, 5), None), {},
     ValueError, True),
    ("fwd-w-ndim", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 4), _z(4, 5), None), {},
     ValueError, False),
    ("fwd-b-shape", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 4), _z(1, 4, 5), _z(1, 4)), {},
     ValueError, True),
    ("fwd-x-dtype", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 4, dt=F64), _z(1, 4, 5), None), {},
     ValueError, False),
    ("fwd-b-dtype", "matmul_fwd",
     lambda: (_z(2, 3, 5), _z(2, 3, 4), _z(1, 4, 5), _z(1, 5, dt=F64)), {}, ValueError, False),
    ("fwd-int", "matmul_fwd",
     lambda: (_z(2, 3, 5, dt=I32), _z(2, 3, 4, dt=I32), _z(1, 4, 5, dt=I32), None), {},
     TypeError, False),
    ("fwd-x-list", "matmul_fwd", lambda: (_z(2, 3, 5), [[[0.0] * 4] * 3] * 2, _z(1, 4, 5), None),
     {}, ValueError, False),
    ("fwd-x-strided", "matmul_fwd", lambda: (_z(2, 3, 5), _strided(2, 3, 4), _z(1, 4, 5), None), {},
     ValueError, False),
    ("fwd-y-readonly", "matmul_fwd", lambda: (_ro(_z(2, 3, 5)), _z(2, 3, 4), _z(1, 4, 5), None), {},
     ValueError, True),
    ("fwd-Bw", "matmul_fwd", lambda: (_z(2, 3, 5), _z(2, 3, 4), _z(3, 4, 5), None), {},
     KernelError, False),
    ("bwdx-K-mismatch", "matmul_bwd_x", lambda: (_z(2, 3, 4), _z(2, 3, 5), _z(1, 3, 5)), {},
     ValueError, True),
    ("bwdx-dy-shape", "matmul_bwd_x", lambda: (_z(2, 3, 4), _z(2, 2, 5), _z(1, 4, 5)), {},
     ValueError, True),
    ("bwdx-dtype", "matmul_bwd_x", lambda: (_z(2, 3, 4), _z(2, 3, 5), _z(1, 4, 5, dt=F64)), {},
     ValueError, False),
    ("bwdx-strided", "matmul_bwd_x", lambda: (_z(2, 3, 4), _strided(2, 3, 5), _z(1, 4, 5)), {},
     ValueError, False),
    ("bwdx-readonly", "matmul_bwd_x", lambda: (_ro(_z(2, 3, 4)), _z(2, 3, 5), _z(1, 4, 5)), {},
     ValueError, True),
    ("bwdx-Bw", "matmul_bwd_x", lambda: (_z(2, 3, 4), _z(2, 3, 5), _z(3, 4, 5)), {},
     KernelError, False),
    ("bwdw-K-mismatch", "matmul_bwd_w", lambda: (_z(1, 4, 5), None, _z(2, 3, 3), _z(2, 3, 5)), {},
     ValueError, True),
    ("bwdw-dy-shape", "matmul_bwd_w", lambda: (_z(1, 4, 5), None, _z(2, 3, 4), _z(2, 3, 6)), {},
     ValueError, True),
    ("bwdw-db-shape", "matmul_bwd_w",
     lambda: (_z(1, 4, 5), _z(1, 6), _z(2, 3, 4), _z(2, 3, 5)), {}, ValueError, True),
    ("bwdw-dtype", "matmul_bwd_w",
     lambda: (_z(1, 4, 5), None, _z(2, 3, 4, dt=F64), _z(2, 3, 5)), {}, ValueError, False),
    ("bwdw-db-readonly", "matmul_bwd_w",
     lambda: (_z(1, 4, 5), _ro(_z(1, 5)), _z(2, 3, 4), _z(2, 3, 5)), {}, ValueError, True),
    ("bwdw-Bw", "matmul_bwd_w", lambda: (_z(3, 4, 5), None, _z(2, 3, 4), _z(2, 3, 5)), {},
     KernelError, False),
    ("act-size", "act_fwd", lambda: (_z(5), _z(6)), dict(kind=0), ValueError, True),
    ("act-dtype", "act_fwd", lambda: (_z(5), _z(5, dt=F64)), dict(kind=1), ValueError, False),
    ("act-int", "act_fwd", lambda: (_z(5, dt=I32), _z(5, dt=I32)), dict(kind=0), TypeError, False),
    ("act-strided", "act_fwd", lambda: (_strided(5), _z(5)), dict(kind=2), ValueError, False),
    ("act-readonly", "act_fwd", lambda: (_ro(_z(5)), _z(5)), dict(kind=0), ValueError, True),
    ("actb-size", "act_bwd", lambda: (_z(5), _z(5), _z(5), _z(4)), dict(kind=1), ValueError, True),
    ("actb-dtype", "act_bwd", lambda: (_z(5), _z(5, dt=F64), _z(5), _z(5)), dict(kind=1),
     ValueError, False),
    ("actb-strided", "act_bwd", lambda: (_z(5), _strided(5), _z(5), _z(5)), dict(kind=1),
     ValueError, False),
    ("mse-size", "mse_fwd_bwd", lambda: (_z(5), _z(5), _z(6)), dict(scale=1.0), ValueError, True),
    ("mse-dtype", "mse_fwd_bwd", lambda: (_z(5), _z(5, dt=F64), _z(5)), dict(scale=1.0),
     ValueError, False),
    ("mse-int", "mse_fwd_bwd", lambda: (_z(5, dt=I32), _z(5, dt=I32), _z(5, dt=I32)),
     dict(scale=1.0), TypeError, False),
    ("mse-strided", "mse_fwd_bwd", lambda: (_z(5), _z(5), _strided(5)), dict(scale=1.0),
     ValueError, False),
    ("mse-readonly", "mse_fwd_bwd", lambda: (_ro(_z(5)), _z(5), _z(5)), dict(scale=1.0),
     ValueError, True),
    ("xent-labels-len", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), _labels([0, 0])),
     dict(scale=1.0), ValueError, False),
    ("xent-logits-shape", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 5), np.zeros(3, np.int64)),
     dict(scale=1.0), ValueError, True),
    ("xent-logits-ndim", "xent_fwd_bwd", lambda: (_z(3, 4), _z(12), np.zeros(3, np.int64)),
     dict(scale=1.0), ValueError, False),
    ("xent-dtype", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4, dt=F64), np.zeros(3, np.int64)),
     dict(scale=1.0), ValueError, False),
    ("xent-float-labels", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), np.zeros(3, np.float32)),
     dict(scale=1.0), TypeError, False),
    ("xent-strided", "xent_fwd_bwd", lambda: (_z(3, 4), _strided(3, 4), np.zeros(3, np.int64)),
     dict(scale=1.0), ValueError, False),
    # out-of-range labels (row 0 only, so that the unchecked old code stayed inside the buffer)
    ("xent-label-C", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), _labels([4, 0, 0])),
     dict(scale=1.0), KernelError, False),
    ("xent-label-neg", "xent_fwd_bwd", lambda: (_z(3, 4), _z(3, 4), _labels([-1, 0, 0])),
     dict(scale=1.0), KernelError, False),
    ("xent-no-classes", "xent_fwd_bwd", lambda: (_z(3, 0), _z(3, 0), _labels([0, 0, 0])),
     dict(scale=1.0), KernelError, False),
]


def _call(backend, kernel, build, kwargs):
    args = build()
    before = [a.copy() if isinstance(a, np.ndarray) else None for a in args]
    fn = fd.get_backend(backend).KERNELS[kernel]
    with pytest.raises(Exception) as ei:
        fn(*args, **kwargs)
    for a, b in zip(args, before):  # nothing was written
        if b is not None:
            np.testing.assert_array_equal(a, b)
    return ei.value


@pytest.mark.parametrize("case", DENSE_CASES, ids=[c[0] for c in DENSE_CASES])
def test_dense_kernels_validate_like_c(case):
    """The same bad call raises the same exception type on numba as on c (and on numpy, where the
    reference backend raises at all), and the numba message names the kernel."""
    _id, kernel, build, kwargs, exc, numpy_too = case
    require_backend("c")
    got = {"numba": _call("numba", kernel, build, kwargs), "c": _call("c", kernel, build, kwargs)}
    if numpy_too:
        got["numpy"] = _call("numpy", kernel, build, kwargs)
    for name, e in got.items():
        assert type(e) is exc or (exc is not KernelError and isinstance(e, exc)
                                  and not isinstance(e, KernelError)), \
            f"{name}: expected {exc.__name__}, got {type(e).__name__}: {e}"
    assert kernel in str(got["numba"]), got["numba"]


@pytest.mark.parametrize("what, name", [("strided", "x"), ("readonly", "y"), ("list", "x")])
def test_dense_messages_name_the_argument(what, name):
    nb = fd.get_backend("numba")
    y, x, w = _z(2, 3, 5), _z(2, 3, 4), _z(1, 4, 5)
    if what == "strided":
        x = _strided(2, 3, 4)
    elif what == "readonly":
        _ro(y)
    else:
        x = x.tolist()
    with pytest.raises(ValueError) as ei:
        nb.KERNELS["matmul_fwd"](y, x, w, None)
    assert f"{name} " in str(ei.value) or f"{name}:" in str(ei.value), ei.value


def test_dense_checks_keep_valid_calls_working():
    """Valid calls (empty dims, Bw == B, int32 labels converted) still match the numpy reference."""
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
    nb["matmul_fwd"](np.zeros((0, 4, 2)), np.zeros((0, 4, 5)), np.zeros((1, 5, 2)), None)
    lg = rng.standard_normal((3, 4)).astype(np.float32)
    d1, d2 = np.zeros_like(lg), np.zeros_like(lg)
    l1 = nb["xent_fwd_bwd"](d1, lg, np.array([0, 3, 1], np.int32), scale=1 / 3)
    l2 = ref["xent_fwd_bwd"](d2, lg, np.array([0, 3, 1], np.int64), scale=1 / 3)
    assert l1 == pytest.approx(l2, rel=1e-6)
    np.testing.assert_allclose(d1, d2, rtol=1e-5, atol=1e-7)
    assert nb["xent_fwd_bwd"](np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0, np.int64),
                              scale=1.0) == 0.0


# ------------------------------------------------------------------------- required columns
_SCALARS = {
    "sgd": dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=0, maximize=0,
                first_step=0),
    "adam": dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decay=1.0, step_size=0.1,
                 bias_correction2_sqrt=1.0, amsgrad=0, maximize=0),
    "rmsprop": dict(lr=0.1, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=0,
                    maximize=0),
    "adagrad": dict(clr=0.1, eps=1e-10, weight_decay=0.0, maximize=0),
    "norm_pow_sum": dict(norm_type=2.0),
    "scale": dict(factor=0.5),
    "all_finite": {},
}
_REQUIRED = [(r.name, c) for r in ROWS.values() if r.kind == "multi"
             for c in r.columns if c not in r.optional]


def _dispatchers():
    """Every numba dispatcher of the multi-tensor kernels, to see that nothing gets compiled."""
    import numba

    from fastdescent.backends.numba_cpu import adagrad, adam, clip, rmsprop, sgd

    out = []
    for mod in (adagrad, adam, clip, rmsprop, sgd):
        for v in vars(mod).values():
            v = getattr(v, "parallel", v)
            if isinstance(v, numba.core.registry.CPUDispatcher):
                out.append(v)
    return out


@pytest.mark.parametrize("how", ["none", "missing"])
@pytest.mark.parametrize("kernel, column", _REQUIRED, ids=[f"{k}-{c}" for k, c in _REQUIRED])
def test_required_column_none(kernel, column, how):
    """A required column set to None (or never set) raises ValueError naming it, before any
    compile (it used to be a TypingError after a failed compile)."""
    nb = fd.get_backend("numba")
    row = ROWS[kernel]
    tab = nb.Table(np.float64, [3, 2])
    arrays = {}
    for c in row.columns:
        if c == column:
            if how == "none":
                tab.set(c, None)
        elif c not in row.optional:
            arrays[c] = [np.ones(3), np.ones(2)]
            tab.set(c, arrays[c])
    disp = _dispatchers()
    sigs = [len(d.signatures) for d in disp]
    before = {c: [a.copy() for a in v] for c, v in arrays.items()}
    with pytest.raises(ValueError) as ei:
        nb.KERNELS[kernel](tab, **_SCALARS[kernel])
    assert repr(column) in str(ei.value) and kernel in str(ei.value), ei.value
    assert [len(d.signatures) for d in disp] == sigs, "a kernel was compiled"
    for c, v in arrays.items():
        for a, b in zip(v, before[c]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("slot, column", [(1, "grad"), (2, "exp_avg"), (3, "exp_avg_sq")])
def test_functional_required_none_on_numba(slot, column):
    """Through the functional API: ``F.adam(params, grads, None, ...)`` on numba raises a ValueError
    naming the argument, and nothing is modified. (A guard: the functional layer itself now rejects
    a None required list, so this passed before the numba fix too; the kernel-level test above is
    the regression test of finding 16.)"""
    params = [np.ones(4), np.ones(3)]
    lists = [params, [np.ones(4), np.ones(3)], [np.zeros(4), np.zeros(3)],
             [np.zeros(4), np.zeros(3)]]
    lists[slot] = None
    with pytest.raises(ValueError) as ei:
        F.adam(*lists, step=1, lr=0.1, backend="numba")
    assert column in str(ei.value), ei.value
    np.testing.assert_array_equal(params[0], np.ones(4))
