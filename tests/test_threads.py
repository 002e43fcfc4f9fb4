"""fd.set_num_threads / get_num_threads / FASTDESCENT_NUM_THREADS for the c and numba kernels, and
what fd.info() reports about threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastdescent as fd
from conftest import require_backend


@pytest.fixture
def restore_threads():
    yield
    fd.set_num_threads(0)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, None])
def test_bad_thread_counts_are_refused(bad, restore_threads):
    before = fd.get_num_threads()
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        fd.set_num_threads(bad)
    assert fd.get_num_threads() == before


def test_set_num_threads_reaches_both_backends_and_results_do_not_change(restore_threads):
    C, N = require_backend("c"), require_backend("numba")
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(300_000).astype(np.float32), rng.standard_normal(7).astype(np.float32)]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in init] for _ in range(3)]
    out = {}
    for n in (1, 2, 0):
        fd.set_num_threads(n)
        assert fd.get_num_threads() == (n or fd.get_backend("c").default_num_threads())
        if n:
            assert C.get_num_threads() == n and N.describe()["threads"] == n
        assert fd.info()["threads"]["requested"] == n
        for be in ("c", "numba"):
            params = [a.copy() for a in init]
            opt = fd.Adam(params, lr=1e-2, backend=be)
            for gs in grads:
                opt.step(gs)
            out[(be, n)] = params
    for be in ("c", "numba"):
        for n in (2, 0):
            for a, b in zip(out[(be, n)], out[(be, 1)]):
                np.testing.assert_array_equal(a, b)  # the chunking does not depend on threads


def _child(code, **env):
    # cwd: not the source tree, whose fastdescent/ (no compiled extension in a fresh clone) would
    # shadow the installed package for ``python -c``
    e = dict(os.environ, **env)
    r = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    return r


def test_environment_variable_sets_the_initial_count():
    r = _child("import json, fastdescent as fd; c = fd.get_backend('c'); n = fd.get_backend('numba');"
               "print(json.dumps([fd.get_num_threads(), c.get_num_threads(),"
               " n.describe()['threads'], fd.info()['threads']]))", FASTDESCENT_NUM_THREADS="1")
    n, c, nb, info = json.loads(r.stdout)
    assert (n, c, nb) == (1, 1, 1) and info["requested"] == 1


def test_bad_environment_variable_warns_and_is_ignored():
    r = _child("import fastdescent as fd; print(fd.get_num_threads() >= 1,"
               " fd.info()['threads']['wait_policy'].get('env_error'))", FASTDESCENT_NUM_THREADS="lots")
    assert "FASTDESCENT_NUM_THREADS='lots' ignored" in r.stderr
    assert r.stdout.startswith("True") and "lots" in r.stdout


def test_info_reports_the_openmp_wait_policy_in_force():
    r = _child("import json, fastdescent as fd; print(json.dumps(fd.info()['threads']['wait_policy']))",
               OMP_WAIT_POLICY="PASSIVE")
    assert json.loads(r.stdout)["policy"] == "PASSIVE"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    r = subprocess.run([sys.executable, "-c", "import json, os, fastdescent as fd; print(json.dumps("
                        "[fd.info()['threads']['wait_policy'], os.environ.get('OMP_WAIT_POLICY')]))"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    wait, env_after = json.loads(r.stdout)
    assert wait["policy"] is None and env_after is None  # fastdescent does not change the environment


def test_numpy_integer_counts_are_accepted(restore_threads):
    fd.set_num_threads(np.int64(1))
    assert fd.get_num_threads() == 1 and type(fd.info()["threads"]["requested"]) is int


def test_thread_count_reaches_the_c_library_imported_directly():
    """An embedder importing the c backend module itself (not through fd.get_backend) still gets
    FASTDESCENT_NUM_THREADS and later fd.set_num_threads calls."""
    code = ("import fastdescent as fd; from fastdescent.backends import c_cffi as c;"
            "from fastdescent.backends import _loaded; a = c.get_num_threads();"
            "fd.set_num_threads(1); b = c.get_num_threads(); print(a, b, 'c' in _loaded)")
    r = _child(code, FASTDESCENT_NUM_THREADS="1")
    a, b, registered = r.stdout.split()
    assert (a, b) == ("1", "1"), r.stdout
    r = _child(code.replace("a = c.get_num_threads();", "a = 0;"), FASTDESCENT_NUM_THREADS="2")
    assert r.stdout.split()[1] == "1", r.stdout  # the later set_num_threads reached it too
    assert registered == "False"  # (the case this test is about: not loaded through the registry)
