"""fastdescent.distributed and fit(comm=...): scripts run under ``mpirun`` (2 ranks; 3 for one leg of
the re-sharding test), each with a hard timeout, so that a hang fails the test instead of the job.

The scripts compare against single-process runs on the averaged gradients; they exchange data with
this process through files in ``tmp_path``. Skipped (with the reason) when mpi4py or mpirun is
missing. mpi4py is never imported in the pytest process itself.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastdescent as fd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fd.__file__)))


def _mpirun_path(search_path=None, executable=sys.executable):
    """mpirun on ``search_path`` (default: PATH), else next to ``executable`` (a venv's bin)."""
    found = shutil.which("mpirun", path=search_path)
    if found:
        return found
    here = os.path.join(os.path.dirname(executable), "mpirun")
    return here if os.path.exists(here) else None


def _skip_reason(have_mpi4py, mpirun_path):
    """Why the MPI tests cannot run here (None: they can)."""
    if have_mpi4py and mpirun_path is not None:
        return None
    return ("needs mpi4py and mpirun (pip install 'fastdescent[mpi]'): "
            + ("mpi4py is not installed" if not have_mpi4py else "no mpirun on PATH"))


MPIRUN = _mpirun_path()
_HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
_SKIP = _skip_reason(_HAVE_MPI4PY, MPIRUN)
needs_mpi = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

PRELUDE = """
import os, pickle, sys
import numpy as np
import fastdescent as fd
import fastdescent.distributed as dist
from mpi4py import MPI
comm = MPI.COMM_WORLD
rank, N = comm.rank, comm.size


# fn() raises exc_type on every rank, with the same message, containing each of words; the message
def expect(fn, exc_type, *words):
    try:
        fn()
    except exc_type as exc:
        msgs = comm.allgather(str(exc))
        assert msgs[0] == msgs[1], msgs
        assert all(w in msgs[0] for w in words), (words, msgs[0])
        return msgs[0]
    raise AssertionError(f"rank {rank}: no {exc_type.__name__} for {words}")
"""


def mpirun(tmp_path, source, n=2, timeout=60, name="script.py"):
    """Run ``source`` (after PRELUDE) on ``n`` ranks; fail on a non-zero exit or after ``timeout``
    seconds (the whole process group is killed). Returns stdout + stderr."""
    path = tmp_path / name
    path.write_text(PRELUDE + textwrap.dedent(source))
    cmd = [MPIRUN, "--oversubscribe", "--bind-to", "none", "-n", str(n)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, str(path)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")  # a shared CI machine: no busy polling
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"mpirun -n {n} hung (killed after {timeout} s); output:\n{out}")
    assert proc.returncode == 0, f"mpirun -n {n} exited with {proc.returncode}:\n{out}"
    return out


def test_import_fastdescent_never_imports_mpi4py(tmp_path):
    code = textwrap.dedent("""
        import sys
        import fastdescent
        assert "mpi4py" not in sys.modules, "import fastdescent imported mpi4py"
        sys.modules["mpi4py"] = None  # as if it were not installed
        try:
            import fastdescent.distributed
        except ImportError as exc:
            assert "fastdescent[mpi]" in str(exc), exc
            print("REFUSED", exc)
        else:
            raise SystemExit("fastdescent.distributed imported without mpi4py")
        import numpy as np
        m = fastdescent.nn.MLP([2, 2], seed=0)
        try:
            fastdescent.fit(m, np.zeros((4, 2)), np.zeros(4, int), epochs=1, progress=False,
                            comm=object())
        except ImportError as exc:
            assert "fastdescent[mpi]" in str(exc), exc
        else:
            raise SystemExit("fit(comm=...) ran without mpi4py")
        try:
            fastdescent.fit(m, np.zeros((4, 2)), np.zeros(4, int), epochs=1, progress=False,
                            shard_optimizer=True)
        except ValueError as exc:
            assert "comm" in str(exc)
        else:
            raise SystemExit("shard_optimizer without comm was accepted")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REFUSED" in proc.stdout


@needs_mpi
def test_allreduce_grads_is_the_mean(tmp_path):
    out = mpirun(tmp_path, """
        def data(r):
            g = np.random.default_rng(r)
            return [g.normal(size=(3, 4)).astype(np.float32), g.normal(size=5),
                    g.normal(size=(2,)).astype(np.float32)]
        want = [np.mean([data(r)[k] for r in range(N)], axis=0) for k in range(3)]
        mine = data(rank)
        assert dist.allreduce_grads(mine, comm, bucket_bytes=12) == N  # packed, mixed dtypes
        for a, w in zip(mine, want):
            np.testing.assert_allclose(a, w, rtol=1e-6)
        arena = fd.ParamArena.from_arrays([x.astype(np.float32) for x in data(rank)])
        arena.grads[0][...] = data(rank)[0]; arena.grads[1][...] = data(rank)[1]
        arena.grads[2][...] = data(rank)[2]
        dist.allreduce_grads(arena, comm)  # one block
        for a, w in zip(arena.grads, want):
            np.testing.assert_allclose(a, w, rtol=1e-6)
        one = np.full(7, rank + 1.0)
        dist.allreduce_grads(one, comm, average=False, bucket_bytes=None)
        assert (one == N * (N + 1) / 2).all()
        # the 1/N inside the update kernel (grad_scale) instead of a pass over the gradient: for a
        # power-of-two number of ranks, the same bits as averaging in allreduce_grads
        pa, pb = fd.ParamArena([(5, 3), (4,)]), fd.ParamArena([(5, 3), (4,)])
        pa.flat_params[...] = pb.flat_params[...] = np.linspace(-1, 1, 19)
        oa, ob = fd.Adam(pa, lr=0.1), fd.Adam(pb, lr=0.1)
        for t in range(3):
            pa.flat_grads[...] = pb.flat_grads[...] = np.random.default_rng(10 * t + rank).normal(
                size=19)
            dist.allreduce_grads(pa, comm)
            oa.step()
            ob.step(grad_scale=dist.allreduce_grads(pb, comm, average=False))
        np.testing.assert_array_equal(pa.flat_params, pb.flat_params)
        print("OK", rank)
    """)
    assert out.count("OK") == 2, out


@needs_mpi
def test_allreduce_grads_hostile_inputs(tmp_path):
    """Options that differ across ranks (used to hang on MPI_ERR_TRUNCATE, or to give the ranks a
    mix of sums and means), a bucket smaller than one element (used to exceed the bound silently),
    a non-contiguous view on one rank, mixed float32/float64 lists, zero-size arrays, a NaN on one
    rank: an agreed error with nothing changed, or the mean, bit-identical on every rank."""
    out = mpirun(tmp_path, """
        def same_everywhere(arrays):
            got = comm.allgather(b"".join(a.tobytes() for a in arrays))
            assert all(g == got[0] for g in got), "the ranks ended with different bits"

        a = np.full(100, rank + 1.0, np.float32)
        before = a.copy()
        expect(lambda: dist.allreduce_grads(a, comm, bucket_bytes=8 if rank == 0 else None),
               ValueError, "bucket_bytes or algorithm")
        expect(lambda: dist.allreduce_grads(a, comm, average=rank == 0), ValueError,
               "average, bucket_bytes or algorithm")
        expect(lambda: dist.allreduce_grads(a, comm, algorithm="ring" if rank else "mpi"),
               ValueError, "bucket_bytes or algorithm")
        expect(lambda: dist.allreduce_grads(a, comm, algorithm="tree" if rank else "auto"),
               ValueError, "algorithm must be one of", "'tree'", "rank 1")
        expect(lambda: dist.allreduce_grads([a, np.ones(3)], comm, bucket_bytes=4), ValueError,
               "bucket_bytes must be at least 8", "float64")
        expect(lambda: dist.allreduce_grads(a, comm, bucket_bytes=1), ValueError,
               "bucket_bytes must be at least 4")
        # a view with a stride on one rank: refused everywhere, before anything is scaled
        b = np.full(10, rank + 1.0, np.float32)
        expect(lambda: dist.allreduce_grads([a, b[::2] if rank else b[:5]], comm), ValueError,
               "grads[1] is not C-contiguous", "rank 1")
        expect(lambda: dist.allreduce_grads(np.ones((3, 4), order="F"), comm), ValueError,
               "not C-contiguous")
        expect(lambda: dist.allreduce_grads(np.ones(3, ">f4" if rank else "<f4"), comm),
               TypeError, ">f4")
        assert np.array_equal(a, before) and (b == rank + 1.0).all()

        # one element per message: still the mean
        dist.allreduce_grads(a, comm, bucket_bytes=4)
        assert (a == 1.5).all(), a

        # mixed float32/float64 (listed in another order across dtypes on each rank: each dtype
        # is reduced as one block, in its own order), odd sizes, a 0-d array, zero-size arrays
        rng = np.random.default_rng(rank)
        mine = [rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=7),
                np.zeros(0, np.float32), np.array(rank + 2.0, np.float32), rng.normal(size=(2, 0)),
                rng.normal(size=1)]
        want = [np.mean(comm.allgather(x), axis=0) for x in mine]
        order = [0, 1, 2, 3, 4, 5] if rank == 0 else [1, 0, 4, 2, 5, 3]
        dist.allreduce_grads([mine[k] for k in order], comm, bucket_bytes=16)
        for x, w in zip(mine, want):
            np.testing.assert_allclose(x, w, rtol=1e-6)
        assert mine[3] == 2.5
        same_everywhere(mine)
        # only zero-size arrays; a ParamArena holding a zero-size tensor
        assert dist.allreduce_grads([np.zeros(0, np.float32), np.zeros((0, 3))], comm) == N
        arena = fd.ParamArena([(0,), (3,), (2, 2)])
        arena.flat_grads[...] = rank
        dist.allreduce_grads(arena, comm)
        assert (arena.flat_grads == 0.5).all()

        # a NaN on one rank: NaN there on every rank, the rest the mean, the same bits everywhere
        c = np.array([1.0, 2.0, np.nan if rank else 3.0, 4.0 + rank], np.float32)
        dist.allreduce_grads(c, comm)
        assert np.isnan(c[2]) and c[0] == 1.0 and c[1] == 2.0 and c[3] == 4.5, c
        same_everywhere([c])
        print("OK", rank)
    """)
    assert out.count("OK") == 2, out


@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_ring_reduction(tmp_path, n):
    """The ring (allreduce_grads and ShardedOptimizer's reduce-scatter), forced and in pieces of a
    few elements: uneven chunks (sizes below, at and above the number of ranks), float32 and
    float64, sums and means equal to MPI's within rounding and bit-identical on every rank (for 2
    ranks exactly (a + b) * 0.5), a NaN on one rank, the caller's gradients never written by the
    sharded step, a message of the caller's on ``comm`` with the ring's tag left alone; each with
    blocking exchanges, with every piece posted at once (what a stall switches to), and with the
    two mixed (rank 0 posting, the others blocking)."""
    out = mpirun(tmp_path, """
        dist._RING_PIECE = 16  # 2-4 elements a message: many pieces per step
        def everywhere_same(x):
            got = comm.allgather(x.tobytes())
            assert all(g == got[0] for g in got), "the ranks ended with different bits"
        for mode in ("blocking", "posted", "mixed"):
            # a stall threshold of 0 s: every exchange "stalls", the rest of the step is posted
            dist._RING_STALL = {"blocking": 1e9, "posted": 0.0, "mixed": 0.0 if rank == 0
                                else 1e9}[mode]
            # the caller's own message on comm, tag 0, pending while the ring runs
            if rank == 0:
                req = comm.isend("mine", dest=N - 1, tag=0)
            for size in (1, N - 1, N, N + 1, 17, 1000):
                for dt in (np.float32, np.float64):
                    data = [np.random.default_rng(100 * r + size).normal(size=size).astype(dt)
                            for r in range(N)]
                    total = data[0].copy()
                    for d in data[1:]:
                        total = total + d
                    for average in (True, False):
                        x = data[rank].copy()
                        dist.allreduce_grads(x, comm, average=average, algorithm="ring")
                        want = total * dt(1.0 / N) if average else total
                        tol = 1e-6 if dt == np.float32 else 1e-12  # (another sum order: N = 3)
                        np.testing.assert_allclose(x, want, rtol=tol, atol=tol)
                        everywhere_same(x)
                        if N == 2:
                            assert np.array_equal(x, want), (size, dt, average)
                        y = data[rank].copy()
                        dist.allreduce_grads(y, comm, average=average, algorithm="mpi")
                        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)
            if rank == N - 1:
                assert comm.recv(source=0, tag=0) == "mine"
            elif rank == 0:
                req.wait()
            c = np.array([1.0, 2.0, np.nan if rank == 1 else 3.0, 4.0 + rank, 5.0], np.float32)
            dist.allreduce_grads(c, comm, algorithm="ring")
            assert np.isnan(c[2]) and c[0] == 1.0 and c[1] == 2.0 and c[4] == 5.0, c
            everywhere_same(c)
            # the sharded step: ring against MPI's Reduce_scatter, whole-tensor cuts (LAMB) too
            shapes = [(7, 3), (5,), (40,), (1,), (13, 2)]
            for cls in (fd.Adam, fd.LAMB):
                res = {}
                for alg in ("ring", "mpi"):
                    ps = [np.linspace(-1, 1, int(np.prod(s))).reshape(s).astype(np.float32)
                          for s in shapes]
                    opt = dist.ShardedOptimizer(cls, ps, comm, lr=0.01, algorithm=alg)
                    for t in range(3):
                        gs = [np.random.default_rng(7 * rank + 3 * t + i).normal(size=s)
                              .astype(np.float32) for i, s in enumerate(shapes)]
                        keep = [g.copy() for g in gs]
                        assert opt.step(gs)
                        assert all(np.array_equal(a, b) for a, b in zip(gs, keep)), "written"
                    res[alg] = ps
                    for p in ps:
                        everywhere_same(p)
                for a, b in zip(res["ring"], res["mpi"]):
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        expect(lambda: dist.ShardedOptimizer(fd.Adam, [np.zeros(3, np.float32)], comm,
                                             algorithm="ring" if rank else "auto"),
               ValueError, "different parameters or options")
        print("OK", rank)
    """, n=n, timeout=120)
    assert out.count("OK") == n, out


@needs_mpi
def test_sharded_optimizer_matches_single_process(tmp_path):
    out = mpirun(tmp_path, """
        cases = [(fd.Adam, dict(lr=0.05)), (fd.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                 (fd.AdamW, dict(lr=0.05, amsgrad=True)), (fd.RMSprop, dict(lr=0.01, centered=True)),
                 (fd.NAdam, dict(lr=0.05)), (fd.Adagrad, dict(lr=0.1)),
                 (fd.LAMB, dict(lr=0.05, weight_decay=0.1))]
        shapes = [(5, 3), (7,), (0,), (2, 2), (9,)]
        rng = np.random.default_rng(0)
        for cls, kw in cases:
            for arena_params, clip in ((True, None), (False, 0.5)):
                init = [rng.normal(size=s).astype(np.float32) for s in shapes]
                grads = [[[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(N)]
                         for _ in range(3)]  # per step, per rank (different on every rank)
                ref = [a.copy() for a in init]
                opt = cls([{"params": ref[:2]}, {"params": ref[2:], "lr": kw["lr"] / 2}], **kw)
                if arena_params:
                    arena = fd.ParamArena.from_arrays(init)
                    params = [{"params": arena.params[:2]},
                              {"params": arena.params[2:], "lr": kw["lr"] / 2}]
                    mine = arena.params
                else:
                    mine = [a.copy() for a in init]
                    params = [{"params": mine[:2]}, {"params": mine[2:], "lr": kw["lr"] / 2}]
                sh = dist.ShardedOptimizer(cls, params, comm, max_grad_norm=clip, **kw)
                for t in range(3):
                    assert sh.step([g.copy() for g in grads[t][rank]]) is True
                    avg = [np.mean([grads[t][k][j] for k in range(N)], axis=0, dtype=np.float64
                                   ).astype(np.float32) for j in range(len(shapes))]
                    if clip is not None:
                        fd.clip_grad_norm_(avg, clip)
                    opt.step(avg)
                for a, b in zip(mine, ref):
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
                everyone = comm.allgather([a.copy() for a in mine])
                assert all(np.array_equal(x, y) for p in everyone for x, y in zip(p, everyone[0]))
                want = opt.state_dict()
                for to in (None, 1):
                    got = sh.state_dict(to=to)
                    if to is not None and rank != to:
                        assert got is None
                        continue
                    assert got["state"].keys() == want["state"].keys()
                    assert [g["params"] for g in got["param_groups"]] == \\
                        [g["params"] for g in want["param_groups"]]
                    assert got["param_groups"][1]["lr"] == kw["lr"] / 2
                    for i, st in want["state"].items():
                        assert st.keys() == got["state"][i].keys(), (st.keys(), got["state"][i].keys())
                        for k, v in st.items():
                            np.testing.assert_allclose(got["state"][i][k], v, rtol=1e-5, atol=1e-6,
                                                       err_msg=f"{cls.__name__} {i} {k}")
                held = sum(c for _, _, c in sh.shard_sizes)
                assert held < sum(int(np.prod(s)) for s in shapes), (cls, sh.shard_sizes)
        print("OK", rank)
    """)
    assert out.count("OK") == 2, out


@needs_mpi
def test_state_dict_reshards_across_process_counts(tmp_path):
    """1 process -> 2 ranks -> 1 rank -> 2 ranks -> 3 ranks -> 1 process: each leg loads the
    previous leg's single-process-layout state and continues; the end equals 12 uninterrupted
    steps."""
    rng = np.random.default_rng(3)
    init32 = [rng.normal(size=s).astype(np.float32) for s in [(4, 3), (5,)]]
    init64 = [rng.normal(size=(6,))]
    grads = [[rng.normal(size=p.shape).astype(p.dtype) for p in init32 + init64] for _ in range(12)]
    kw = dict(lr=0.05, amsgrad=True)

    def build(ps):
        return fd.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.02}], **kw)

    ref = [a.copy() for a in init32 + init64]
    ref_opt = build(ref)
    for g in grads:
        ref_opt.step(g)
    p = [a.copy() for a in init32 + init64]
    opt = build(p)
    for g in grads[:3]:
        opt.step(g)
    with open(tmp_path / "ckpt.pkl", "wb") as f:
        pickle.dump({"params": p, "state": opt.state_dict(), "grads": grads}, f)
    leg = """
        with open("ckpt.pkl", "rb") as f:
            ck = pickle.load(f) if rank == 0 else None
        ck = comm.bcast(ck, root=0)
        p = ck["params"]
        sh = dist.ShardedOptimizer(fd.Adam, [{"params": p[:2]}, {"params": p[2:], "lr": 0.02}], comm,
                                   lr=0.05, amsgrad=True)
        sh.load_state_dict(ck["state"] if rank == 0 else None, src=0)
        first = ck["state"]["state"][0]["step"]
        for t in range(first, first + STEPS):
            g = [x.copy() for x in ck["grads"][t]]
            for x in g:  # every rank a different gradient, the same average
                x += (rank - (N - 1) / 2) * np.asarray(0.25, x.dtype)
            sh.step(g)
        state = sh.state_dict(to=0)
        if rank == 0:
            with open("ckpt.pkl", "wb") as f:
                pickle.dump({"params": p, "state": state, "grads": ck["grads"]}, f)
            print("LEG", N, state["state"][0]["step"])
    """
    out = mpirun(tmp_path, leg.replace("STEPS", "3"), n=2, name="leg2.py")
    assert "LEG 2 6" in out, out
    out = mpirun(tmp_path, leg.replace("STEPS", "2"), n=1, name="leg1.py")
    assert "LEG 1 8" in out, out
    out = mpirun(tmp_path, leg.replace("STEPS", "1"), n=2, name="leg2b.py")
    assert "LEG 2 9" in out, out
    out = mpirun(tmp_path, leg.replace("STEPS", "1"), n=3, name="leg3.py")
    assert "LEG 3 10" in out, out
    with open(tmp_path / "ckpt.pkl", "rb") as f:
        ck = pickle.load(f)
    p = ck["params"]
    opt = build(p)
    opt.load_state_dict(ck["state"])
    for g in grads[10:]:
        opt.step(g)
    for a, b in zip(p, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for i, st in ref_opt.state_dict()["state"].items():
        for k, v in st.items():
            np.testing.assert_allclose(opt.state_dict()["state"][i][k], v, rtol=1e-5, atol=1e-6)


@needs_mpi
def test_bad_input_on_one_rank_raises_everywhere(tmp_path):
    out = mpirun(tmp_path, """
        params = [np.zeros((3, 2), np.float32), np.zeros(4, np.float32)]
        before = [a.copy() for a in params]
        msg = expect(lambda: dist.ShardedOptimizer(fd.Adam, params, comm, lr=-1.0 if rank else 0.1),
                     ValueError)
        assert "lr" in msg and "rank 1" in msg, msg
        shp = (3, 2) if rank == 0 else (2, 3)
        msg = expect(lambda: dist.ShardedOptimizer(fd.Adam, [np.zeros(shp, np.float32)], comm),
                     ValueError)
        assert "differ" in msg, msg
        sh = dist.ShardedOptimizer(fd.Adam, params, comm, lr=0.1)
        good = [np.ones((3, 2), np.float32), np.ones(4, np.float32)]
        bad = [np.ones((3, 2), np.float32), np.ones(5 if rank == 1 else 4, np.float32)]
        msg = expect(lambda: sh.step(bad), ValueError)
        assert "grads[1]" in msg and "rank 1" in msg, msg
        assert all(np.array_equal(a, b) for a, b in zip(params, before))
        msg = expect(lambda: sh.step([good[0], good[1].astype(np.float64)] if rank == 0 else good),
                     TypeError)
        assert "grads[1]" in msg and "rank 0" in msg, msg
        sd = sh.state_dict()
        msg = expect(lambda: sh.load_state_dict({"state": {}, "param_groups": []} if rank else sd),
                     ValueError)
        assert "param groups" in msg, msg
        msg = expect(lambda: dist.allreduce_grads([np.ones(3, np.float16 if rank == 0 else
                                                           np.float32)], comm), TypeError)
        assert "float16" in msg, msg
        msg = expect(lambda: dist.allreduce_grads([np.ones(3 + rank, np.float32)], comm), ValueError)
        assert "different" in msg, msg
        # the communicator still works: a good step
        assert sh.step(good) is True
        # the same list again, one array's dtype changed in place on rank 1: checked again
        if rank == 1:
            good[1].dtype = np.int32
        msg = expect(lambda: sh.step(good), TypeError)
        assert "grads[1]" in msg and "rank 1" in msg, msg
        good[1].dtype = np.float32
        assert sh.step(good) is True
        model = fd.nn.MLP([3, 4, 2], seed=0)
        X = np.zeros((10, 3)); y = np.zeros(10, int)
        if rank == 1:
            y[0] = 7  # out of range
        msg = expect(lambda: fd.fit(model, X, y, epochs=1, progress=False, comm=comm), ValueError)
        assert "rank 1" in msg, msg
        print("OK", rank)
    """)
    assert out.count("OK") == 2, out


@needs_mpi
def test_nonfinite_on_one_rank_skips_everywhere(tmp_path):
    out = mpirun(tmp_path, """
        init = [np.arange(6, dtype=np.float32).reshape(3, 2), np.arange(5, dtype=np.float32)]
        mine = [a.copy() for a in init]
        sh = dist.ShardedOptimizer(fd.Adam, mine, comm, lr=0.1, skip_nonfinite=True)
        ref = [a.copy() for a in init]
        opt = fd.Adam(ref, lr=0.1)
        g = [np.full((3, 2), 0.5, np.float32), np.full(5, -0.25, np.float32)]
        assert sh.step(g) is True
        opt.step(g)
        snap = [a.copy() for a in mine]
        state = sh.state_dict()
        bad = [x.copy() for x in g]
        if rank == 1:
            bad[1][3] = np.nan
        assert sh.step(bad) is False and sh.last_step_skipped and sh.skipped_steps == 1
        assert all(np.array_equal(a, b) for a, b in zip(mine, snap))
        assert sh.state_dict()["state"][0]["step"] == state["state"][0]["step"] == 1
        huge = [x.copy() for x in g]
        huge[0][0, 0] = 3e38  # finite on each rank, the sum overflows to inf
        assert sh.step(huge) is False and sh.skipped_steps == 2
        assert sh.step(g) is True and not sh.last_step_skipped
        opt.step(g)
        for a, b in zip(mine, ref):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        print("OK", rank)
    """)
    assert out.count("OK") == 2, out


@needs_mpi
def test_fit_with_comm_equals_single_process_fit(tmp_path):
    out = mpirun(tmp_path, """
        rng = np.random.default_rng(1)
        X = rng.normal(size=(203, 6)); y = (X[:, 0] + X[:, 1] > 0).astype(int)
        Xv = rng.normal(size=(37, 6)); yv = (Xv[:, 0] + Xv[:, 1] > 0).astype(int)

        def run(c, shard, sched_on=True):
            model = fd.nn.MLP([6, 16, 2], seed=0)
            opt = fd.Adam(model.parameters(), lr=1e-2)
            if shard == "object":
                opt = dist.ShardedOptimizer(fd.Adam, model.parameters(), c, lr=1e-2)
            sched = fd.nn.StepLR(opt, step_size=2, gamma=0.5) if sched_on else None
            h = fd.fit(model, X, y, optimizer=opt, epochs=4, batch_size=25,  # 203 = 8*25 + 3
                       validation_data=(Xv, yv), progress=False, scheduler=sched, comm=c,
                       shard_optimizer=shard is True)
            return model, h

        refs = {True: run(None, False), False: run(None, False, sched_on=False)}
        for shard in (False, True, "object"):
            sched_on = shard is not True  # fit converts a plain optimizer: no scheduler on it
            m0, h0 = refs[sched_on]
            m1, h1 = run(comm, shard, sched_on)
            for a, b in zip(m1.params, m0.params):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            for k in ("loss", "val_loss", "val_accuracy", "lr"):
                np.testing.assert_allclose(h1.history[k], h0.history[k], rtol=1e-5, err_msg=k)
            allp = comm.allgather(m1.arena.flat_params)
            assert all(np.array_equal(allp[0], q) for q in allp)
        # a callback that stops on one rank only stops both
        model = fd.nn.MLP([6, 16, 2], seed=0)
        h = fd.fit(model, X, y, epochs=5, progress=False, comm=comm,
                   callback=lambda e, logs, m: rank == 1 and e == 2)
        assert h.n_epochs == 2 and h.stop_reason == "callback"
        # each rank its own rows: trains, ranks agree
        part = slice(0, 120) if rank == 0 else slice(120, 203)
        model = fd.nn.MLP([6, 16, 2], seed=0)
        h = fd.fit(model, X[part], y[part], optimizer=fd.Adam(model.parameters(), lr=1e-2),
                   epochs=8, batch_size=32, progress=False, comm=comm, data_sharded=True,
                   validation_data=(Xv, yv))
        assert h.params["n_train"] == 203
        allp = comm.allgather(model.arena.flat_params)
        assert np.array_equal(allp[0], allp[1])
        assert h.val_accuracy[-1] > 0.8, h.val_accuracy
        print("OK", rank)
    """, timeout=90)
    assert out.count("OK") == 2, out


@needs_mpi
def test_plain_and_sharded_optimizers_equal_single_process(tmp_path):
    """SGD with momentum and LAMB (per-tensor trust ratios), plain (allreduce_grads) and sharded,
    through fit and through a hand-written loop, equal a single process; a gradient that is
    non-finite on one rank only is skipped by a plain optimizer with skip_nonfinite on every rank."""
    out = mpirun(tmp_path, """
        rng = np.random.default_rng(2)
        X = rng.normal(size=(203, 6)); y = (X[:, 0] - X[:, 2] > 0).astype(int)
        cases = [(fd.SGD, dict(lr=0.05, momentum=0.9)), (fd.LAMB, dict(lr=0.02, weight_decay=0.1)),
                 (fd.Adam, dict(lr=0.01, weight_decay=0.01, amsgrad=True))]
        for cls, kw in cases:
            def run(c, shard):
                model = fd.nn.MLP([6, 16, 8, 2], seed=0)
                h = fd.fit(model, X, y, optimizer=cls(model.parameters(), **kw), epochs=3,
                           batch_size=25, progress=False, comm=c, shard_optimizer=shard)
                return model, h
            m0, h0 = run(None, False)
            for shard in (False, True):
                m1, h1 = run(comm, shard)
                for a, b in zip(m1.params, m0.params):
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                               err_msg=f"{cls.__name__} shard={shard}")
                np.testing.assert_allclose(h1.loss, h0.loss, rtol=1e-5)
                allp = comm.allgather(m1.arena.flat_params.tobytes())
                assert allp[0] == allp[1], (cls.__name__, shard)

            # a hand-written loop: allreduce_grads on the arena, then the plain step
            arena = fd.ParamArena([(4, 3), (3,), (5,)])
            arena.flat_params[...] = np.linspace(-1, 1, arena.flat_params.size)
            ref = [p.copy() for p in arena.params]
            opt, ref_opt = cls(arena, **kw), cls(ref, **kw)
            for t in range(4):
                per_rank = [[np.random.default_rng(100 * t + r).normal(size=p.shape).astype(
                    np.float32) for p in ref] for r in range(N)]
                for g, mine in zip(arena.grads, per_rank[rank]):
                    g[...] = mine
                dist.allreduce_grads(arena, comm)
                opt.step()
                ref_opt.step([np.mean([pr[j] for pr in per_rank], axis=0) for j in range(len(ref))])
            for a, b in zip(arena.params, ref):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=cls.__name__)

        # early stopping, restore_best and ReduceLROnPlateau on the validation loss: the ranks stop
        # at the single process's epoch with its history and its best parameters
        Xv = rng.normal(size=(41, 6)); yv = (Xv[:, 0] - Xv[:, 2] > 0).astype(int)

        def stop_early(c, shard):
            model = fd.nn.MLP([6, 16, 2], seed=0)
            opt = fd.Adam(model.parameters(), lr=0.05)
            h = fd.fit(model, X, y, optimizer=opt, epochs=40, batch_size=32, progress=False,
                       validation_data=(Xv, yv), tol=0.02, n_iter_no_change=3, restore_best=True,
                       scheduler=fd.nn.ReduceLROnPlateau(opt, factor=0.5, patience=0), comm=c,
                       shard_optimizer=shard)
            return model, h
        m0, h0 = stop_early(None, False)
        assert h0.n_epochs < 40 and h0.stop_reason == "converged" and h0.lr[-1] < 0.05, h0.lr
        for shard in (False, True):
            m1, h1 = stop_early(comm, shard)
            assert (h1.n_epochs, h1.stop_reason) == (h0.n_epochs, h0.stop_reason), (h1.stop_reason,
                                                                                     h0.stop_reason)
            for k in ("val_loss", "lr"):
                np.testing.assert_allclose(h1.history[k], h0.history[k], rtol=1e-5, err_msg=k)
            for a, b in zip(m1.params, m0.params):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

        # a NaN in rank 1's gradient only: the averaged gradient is non-finite on every rank, so
        # every rank's plain optimizer (skip_nonfinite) skips that step alike, then goes on
        arena = fd.ParamArena([(4, 3), (5,)])
        arena.flat_params[...] = 0.5
        opt = fd.Adam(arena, lr=0.1, skip_nonfinite=True)
        for t in range(3):
            arena.flat_grads[...] = 1.0 + rank
            if t == 1 and rank == 1:
                arena.grads[1][2] = np.nan
            dist.allreduce_grads(arena, comm)
            opt.step()
        skipped = comm.allgather((opt.skipped_steps, opt.state_dict()["state"][0]["step"]))
        assert skipped == [(1, 2)] * N, skipped
        assert np.isfinite(arena.flat_params).all()
        allp = comm.allgather(arena.flat_params.tobytes())
        assert allp[0] == allp[1]
        print("OK", rank)
    """, timeout=120)
    assert out.count("OK") == 2, out


@needs_mpi
def test_example_and_progress_on_rank_zero_only(tmp_path):
    """examples/mpi_digits.py reaches its accuracy target on 2 ranks (plain and sharded Adam), and
    fit(progress=True, comm=...) draws its progress bar on rank 0 only."""
    pytest.importorskip("sklearn")
    # next to tests/, not next to the package: CI tests an installed (non-editable) package
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                           "mpi_digits.py")
    if not os.path.isfile(example):
        pytest.skip("examples/ is not next to tests/ here")
    for extra in ("", ", '--shard'"):
        out = mpirun(tmp_path, f"""
            sys.argv = [{example!r}, "--epochs", "12"{extra}]
            sys.path.insert(0, {os.path.dirname(example)!r})
            import runpy
            try:
                runpy.run_path({example!r}, run_name="__main__")
            except SystemExit as exc:
                assert exc.code in (0, None), f"rank {{rank}}: exit status {{exc.code}}"
            print("RAN", rank)
        """, timeout=120, name="example.py")
        assert out.count("RAN") == 2 and "test accuracy" in out, out
    out = mpirun(tmp_path, """
        sys.stderr = open(f"err{rank}.txt", "w")
        X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
        fd.fit(fd.nn.MLP([3, 4, 2], seed=0), X, y, epochs=3, progress=True, comm=comm)
        sys.stderr.close()
        print("OK", rank)
    """)
    assert out.count("OK") == 2, out
    bar = (tmp_path / "err0.txt").read_text()
    assert "3/3" in bar and "epoch" in bar, bar
    assert (tmp_path / "err1.txt").read_text() == ""


def test_mpi_tests_skip_with_a_reason_without_mpirun(tmp_path):
    """No mpirun on PATH nor next to the interpreter: the marker skips, naming what is missing."""
    assert _mpirun_path(search_path=str(tmp_path), executable=str(tmp_path / "python")) is None
    reason = _skip_reason(True, None)
    assert "no mpirun on PATH" in reason and "fastdescent[mpi]" in reason
    assert "mpi4py is not installed" in _skip_reason(False, None)
    assert _skip_reason(True, "/usr/bin/mpirun") is None
    fake = tmp_path / "mpirun"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert _mpirun_path(search_path=str(tmp_path), executable="/nonexistent/python") == str(fake)


@needs_mpi
def test_ranks_that_disagree_never_hang_or_diverge(tmp_path):
    """Arguments that differ across ranks (collective roots, step options), errors raised on one
    rank only inside fit (callback, per-step scheduler), a size-1 communicator."""
    out = mpirun(tmp_path, """
        p = [np.ones((3, 2), np.float32), np.ones(4, np.float32)]
        g = [np.ones((3, 2), np.float32), np.ones(4, np.float32)]
        sh = dist.ShardedOptimizer(fd.Adam, p, comm, lr=0.1)
        sh.step(g)
        # collectives rooted at different ranks used to hang
        expect(lambda: sh.state_dict(to=rank), ValueError, "to must be the same", "[0, 1]")
        expect(lambda: sh.load_state_dict(sh.state_dict(), src=rank), ValueError, "src must be")
        # options that differ at step time: refused (reduce differing used to diverge silently;
        # skip_nonfinite / max_grad_norm on one rank used to hang)
        before = [a.copy() for a in p]
        expect(lambda: sh.step(g, reduce="sum" if rank else "mean"), ValueError, "different options")
        sh.skip_nonfinite = rank == 0
        expect(lambda: sh.step(g), ValueError, "different options")
        sh.skip_nonfinite = False
        sh.max_grad_norm = 1.0 if rank else None
        expect(lambda: sh.step(g), ValueError, "different options")
        assert all(np.array_equal(a, b) for a, b in zip(p, before))
        expect(lambda: setattr(sh, "max_grad_norm", -1.0), ValueError, "max_grad_norm")
        sh.max_grad_norm = None
        assert sh.step(g) is True

        # a communicator of size 1 is the plain optimizer, bit for bit (clipping included)
        rng = np.random.default_rng(0)
        init = [rng.normal(size=s).astype(np.float32) for s in [(5, 3), (7,), (2, 2)]]
        for cls, kw in ((fd.Adam, dict(lr=0.05)), (fd.LAMB, dict(lr=0.05, weight_decay=0.1))):
            a = [x.copy() for x in init]; b = [x.copy() for x in init]
            one = dist.ShardedOptimizer(cls, a, MPI.COMM_SELF, max_grad_norm=0.3, **kw)
            plain = cls(b, **kw)
            for _ in range(3):
                gs = [rng.normal(size=x.shape).astype(np.float32) for x in init]
                one.step([x.copy() for x in gs])
                fd.clip_grad_norm_(gs, 0.3)
                plain.step(gs)
            assert all(np.array_equal(x, y) for x, y in zip(a, b)), cls

        # errors raised on one rank inside fit are raised on every rank (used to hang)
        X = rng.normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)

        class Boom(Exception):
            pass

        def cb(epoch, logs, model):
            if rank == 0 and epoch == 2:
                raise Boom("callback failed")
        for shard in (False, True):
            expect(lambda: fd.fit(fd.nn.MLP([4, 8, 2], seed=0), X, y, epochs=4, progress=False,
                                  comm=comm, callback=cb, shard_optimizer=shard),
                   RuntimeError, "Boom: callback failed", "rank 0")

        def last(epoch, logs, model):
            if rank == 1 and epoch == 3:
                raise KeyError("at the last epoch")
        expect(lambda: fd.fit(fd.nn.MLP([4, 8, 2], seed=0), X, y, epochs=3, progress=False,
                              comm=comm, callback=last), KeyError, "at the last epoch", "rank 1")

        class Flaky(fd.nn.StepLR):
            def step(self, *args):
                if rank == 1 and self.last_epoch == 5:
                    raise RuntimeError("scheduler failed")
                return super().step(*args)

        m = fd.nn.MLP([4, 8, 2], seed=0)
        opt = fd.Adam(m.parameters(), lr=1e-2)
        expect(lambda: fd.fit(m, X, y, optimizer=opt, epochs=3, batch_size=16, progress=False,
                              scheduler=Flaky(opt, 2), scheduler_interval="step", comm=comm),
               RuntimeError, "scheduler failed", "rank 1")
        # and the communicator still works
        h = fd.fit(fd.nn.MLP([4, 8, 2], seed=0), X, y, epochs=2, progress=False, comm=comm)
        assert h.n_epochs == 2
        print("OK", rank)
    """, timeout=90)
    assert out.count("OK") == 2, out


@needs_mpi
def test_fit_conversion_schedulers_empty_ranks_and_checkpoints(tmp_path):
    """fit(shard_optimizer=True) with a scheduler on the caller's optimizer; a data_sharded rank
    with no rows; save_checkpoint/load_checkpoint with a ShardedOptimizer."""
    out = mpirun(tmp_path, """
        rng = np.random.default_rng(1)
        X = rng.normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)

        def run(c, shard):
            m = fd.nn.MLP([4, 8, 2], seed=0)
            opt = fd.Adam(m.parameters(), lr=1e-2)
            sched = fd.nn.StepLR(opt, step_size=1, gamma=0.5)
            h = fd.fit(m, X, y, optimizer=opt, epochs=3, batch_size=16, progress=False,
                       scheduler=sched, comm=c, shard_optimizer=shard)
            return m, h, opt
        m0, h0, o0 = run(None, False)
        m1, h1, o1 = run(comm, True)
        assert h1.lr == h0.lr == [0.01, 0.005, 0.0025], (h1.lr, h0.lr)
        for a, b in zip(m1.params, m0.params):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        # the caller's optimizer holds the trained state and the scheduler's last lr
        s0, s1 = o0.state_dict(), o1.state_dict()
        assert s1["param_groups"][0]["lr"] == s0["param_groups"][0]["lr"] == 0.00125
        for i, st in s0["state"].items():
            assert s1["state"][i]["step"] == st["step"]
            np.testing.assert_allclose(s1["state"][i]["exp_avg"], st["exp_avg"], rtol=1e-5, atol=1e-7)

        # data_sharded: rank 0 holds no rows at all -> the single-process run on rank 1's rows
        mine = slice(0, 0) if rank == 0 else slice(0, 60)
        m = fd.nn.MLP([4, 8, 2], seed=0)
        h = fd.fit(m, X[mine], y[mine], epochs=2, batch_size=8, progress=False, comm=comm,
                   data_sharded=True, validation_data=(X[mine], y[mine]))
        ref = fd.nn.MLP([4, 8, 2], seed=0)
        hr = fd.fit(ref, X, y, epochs=2, batch_size=8, progress=False, validation_data=(X, y))
        np.testing.assert_allclose(h.loss, hr.loss, rtol=1e-6)
        np.testing.assert_allclose(h.val_loss, hr.val_loss, rtol=1e-6)
        for a, b in zip(m.params, ref.params):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        try:
            fd.fit(fd.nn.MLP([4, 8, 2], seed=0), X[:0], y[:0], epochs=1, progress=False,
                   comm=comm, data_sharded=True)
        except ValueError as exc:
            assert "no rows on any rank" in str(exc), exc
        else:
            raise AssertionError("fit on no rows at all was accepted")

        # checkpoints: gathered on rank 0 into the single-process file; loadable by a plain
        # optimizer and re-sharded by a ShardedOptimizer; a failure on one rank changes nothing
        model = fd.nn.MLP([3, 4, 2], seed=0)
        sh = dist.ShardedOptimizer(fd.Adam, model.parameters(), comm, lr=0.1)
        sh.step([np.full(a.shape, 0.5, a.dtype) for a in model.params])
        sh.param_groups[0]["lr"] = 0.05
        fd.save_checkpoint("ck.npz", optimizer=sh, model=model, extra={"epoch": 1})
        comm.Barrier()
        plain_model = fd.nn.MLP([3, 4, 2], seed=5)
        plain = fd.Adam(plain_model.parameters(), lr=0.3)
        assert fd.load_checkpoint("ck.npz", optimizer=plain, model=plain_model) == {"epoch": 1}
        assert plain.param_groups[0]["lr"] == 0.05
        want = sh.state_dict()
        for i, st in want["state"].items():
            assert plain.state_dict()["state"][i]["step"] == st["step"] == 1
            np.testing.assert_array_equal(plain.state_dict()["state"][i]["exp_avg"], st["exp_avg"])
        m3 = fd.nn.MLP([3, 4, 2], seed=7)
        sh3 = dist.ShardedOptimizer(fd.Adam, m3.parameters(), comm, lr=0.3)
        assert fd.load_checkpoint("ck.npz", optimizer=sh3, model=m3) == {"epoch": 1}
        assert np.array_equal(m3.arena.flat_params, model.arena.flat_params)
        got = sh3.state_dict()
        assert got["param_groups"][0]["lr"] == 0.05
        for i, st in want["state"].items():
            np.testing.assert_array_equal(got["state"][i]["exp_avg_sq"], st["exp_avg_sq"])
        m4 = fd.nn.MLP([3, 4, 2], seed=9)
        snap = m4.arena.flat_params.copy()
        sh4 = dist.ShardedOptimizer(fd.Adam, m4.parameters(), comm, lr=0.3)
        try:
            fd.load_checkpoint("ck.npz" if rank else "missing.npz", optimizer=sh4, model=m4)
        except (FileNotFoundError, RuntimeError) as exc:
            msgs = comm.allgather(str(exc))
            assert msgs[0] == msgs[1] and "missing.npz" in msgs[0], msgs
        else:
            raise AssertionError("a checkpoint missing on rank 0 was loaded")
        assert np.array_equal(m4.arena.flat_params, snap)  # rank 1 had loaded it: put back
        assert sh4.state_dict()["state"] == {} and sh4.param_groups[0]["lr"] == 0.3
        print("OK", rank)
    """, timeout=90)
    assert out.count("OK") == 2, out


def test_rank_holding_nothing_of_a_mixed_dtype_group(tmp_path):
    """A float64 group and a one-element float32 group on 2 ranks: rank 1 holds nothing of the
    float32 group; its placeholder gradient has that group's dtype (was the model's first dtype:
    a TypeError on rank 1 only, inside the step, and a hang), and the result equals one process."""
    out = mpirun(tmp_path, """
        init = [np.arange(6.0).reshape(2, 3), np.array([0.5], np.float32)]
        grads = [[np.full((2, 3), 0.1 * (r + 1)), np.array([r + 1.0], np.float32)] for r in range(N)]
        ref = [a.copy() for a in init]
        opt = fd.Adam([{"params": [ref[0]]}, {"params": [ref[1]]}], lr=0.1)
        mine = [a.copy() for a in init]
        sh = dist.ShardedOptimizer(fd.Adam, [{"params": [mine[0]]}, {"params": [mine[1]]}], comm,
                                   lr=0.1)
        for _ in range(2):
            opt.step([sum(g[i] for g in grads) / N for i in range(2)])
            assert sh.step([g.copy() for g in grads[rank]]) is True
        for a, b in zip(mine, ref):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        print("ok", rank)
    """)
    assert out.count("ok") == 2, out
