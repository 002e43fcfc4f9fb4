"""The benchmark machinery (fastdescent.bench): shared case definitions, correctness checks that catch a
wrong kernel, timing, the roofline probe, targets, and the report writers. Timings are never asserted."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

import fastdescent as fd
from fastdescent.bench import cases as C
from fastdescent.bench import report as R
from fastdescent.bench import runner, timing
from fastdescent.bench.commands import UsageError, parse_size, parse_sizes

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
SMALL = C.Layout("3 tensors", ((7, 5), (5,), (300,)))


def compiled_backend():
    """A compiled CPU backend that loads here and implements the optimizer kernels, or skip."""
    for name in ("c", "numba"):
        if C.backend_unavailable(name) is None and "adam" in fd.get_backend(name).KERNELS:
            return name
    pytest.skip("no compiled CPU backend (c, numba) is available here")


# ---------------------------------------------------------------------------- shared definitions
BENCH_FILES = {
    "bench_adam.py": lambda: C.optimizer_cases(("adam", "adamw"), C.HEADLINE_LAYOUTS),
    "bench_sgd.py": lambda: C.optimizer_cases(("sgd", "sgd_momentum"), C.HEADLINE_LAYOUTS),
    "bench_rmsprop.py": lambda: C.optimizer_cases(("rmsprop",), C.HEADLINE_LAYOUTS),
    "bench_adagrad.py": lambda: C.optimizer_cases(("adagrad",), C.HEADLINE_LAYOUTS),
    "bench_lion.py": lambda: C.optimizer_cases(("lion",), C.HEADLINE_LAYOUTS),
    "bench_lamb.py": lambda: C.optimizer_cases(("lamb",), C.HEADLINE_LAYOUTS),
    "bench_rprop.py": lambda: C.optimizer_cases(("rprop",), C.HEADLINE_LAYOUTS),
    "bench_prox.py": lambda: C.optimizer_cases(("sgd_l1",), C.HEADLINE_LAYOUTS),
    "bench_noise.py": lambda: C.optimizer_cases(("sgd_noise",), C.HEADLINE_LAYOUTS),
    "bench_clip.py": lambda: C.optimizer_cases(("clip_value",), C.HEADLINE_LAYOUTS),
    "bench_nadam.py": lambda: C.optimizer_cases(("nadam",), C.HEADLINE_LAYOUTS),
    "bench_radam.py": lambda: C.optimizer_cases(("radam",), C.HEADLINE_LAYOUTS),
    "bench_adamax.py": lambda: C.optimizer_cases(("adamax",), C.HEADLINE_LAYOUTS),
    "bench_adadelta.py": lambda: C.optimizer_cases(("adadelta",), C.HEADLINE_LAYOUTS),
    "bench_matmul.py": lambda: C.matmul_cases(),
    "bench_mlp.py": lambda: C.mlp_cases(("numpy", "c", "numba") + C.MLP_PEERS),
    "bench_mnist.py": lambda: C.mnist_cases(("numpy", "c", "numba") + C.MLP_PEERS),
}


def _load(path):
    spec = importlib.util.spec_from_file_location(f"_fd_bench_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not BENCH_DIR.is_dir(), reason="benchmarks/ is not next to tests/ here")
@pytest.mark.parametrize("fname", sorted(BENCH_FILES))
def test_benchmark_files_use_the_shared_cases(fname):
    path = BENCH_DIR / fname
    tree = ast.parse(path.read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "fastdescent.bench" in imported, f"{fname} must take its cases from fastdescent.bench.cases"
    mod = _load(path)
    assert mod.CASES == BENCH_FILES[fname](), f"{fname} measures something else than the CLI"
    assert all(type(c) in (C.OptimizerCase, C.MatmulCase, C.MlpCase) for c in mod.CASES)


@pytest.mark.skipif(not BENCH_DIR.is_dir(), reason="benchmarks/ is not next to tests/ here")
def test_every_optimizer_and_hot_path_has_a_benchmark_file():
    ops = set()
    for fname, make in BENCH_FILES.items():
        assert (BENCH_DIR / fname).is_file()
        ops |= {c.op for c in make()}
    assert set(C.OPS) <= ops
    assert {"matmul_fwd", "matmul_bwd_x", "matmul_bwd_w", "matmul_fwd_bwd", "mlp", "mnist"} <= ops


def test_bytes_per_element_count_the_traffic():
    per = {n: s.bytes_per_element(np.float32) for n, s in C.OPTIMIZERS.items()}
    assert per == {"adam": 28, "adamw": 28, "sgd": 12, "sgd_momentum": 20, "rmsprop": 20, "adagrad": 20,
                   "sgd_l1": 12, "sgd_noise": 12, "clip_value": 8, "nadam": 28, "radam": 28,
                   "adamax": 28, "adadelta": 28, "rprop": 28,
                   "lion": 20, "lamb": 40}
    assert C.OPTIMIZERS["adam"].bytes_per_element(np.float64) == 56
    case = C.OptimizerCase("adam", C.single(2 ** 25), "roofline")
    assert case.bytes_per_step == 28 * 2 ** 25


def test_layouts_of_issue_2():
    one, mixed, small = C.HEADLINE_LAYOUTS
    assert one.shapes == ((2 ** 25,),) and one.name == "1x2^25"
    assert mixed.n_tensors == 400
    assert sum(s == (256, 256) for s in mixed.shapes) == 200 and sum(s == (256,) for s in mixed.shapes) == 200
    assert small.n_tensors == 1000 and small.elements == 64000
    assert [s.name for s in C.MATMUL_SHAPES] == ["4096x(16x16)", "64x(128x128)", "1x(1024x1024)"]
    assert C.MatmulCase("fwd_bwd", C.MATMUL_SHAPES[2], "numpy").flops_per_step == 3 * 2 * 1024 ** 3


def test_sweeps_cover_the_documented_ranges():
    assert min(C.SWEEP_SIZES) == 2 ** 10 and max(C.SWEEP_SIZES) == 2 ** 26 and 2 ** 25 in C.SWEEP_SIZES
    assert min(C.SWEEP_COUNTS) == 1 and max(C.SWEEP_COUNTS) == 4096 and 1000 in C.SWEEP_COUNTS
    assert set(C.QUICK_SIZES) <= set(C.SWEEP_SIZES)


# ---------------------------------------------------------------------------- correctness checks
@pytest.mark.parametrize("op", C.OPS)
def test_numpy_backend_and_textbook_pass_the_check(op):
    for impl in ("numpy", "numpy-textbook"):
        case = C.OptimizerCase(op, SMALL, impl)
        inst = case.build()
        info = case.check(inst)
        assert info["max_abs_err"] <= info["atol"] + info["rtol"]
        inst.close()


@pytest.mark.parametrize("op", C.OPS)
def test_compiled_backend_passes_the_check(op):
    name = compiled_backend()
    case = C.OptimizerCase(op, SMALL, name)
    inst = case.build()
    case.check(inst)
    inst.close()


@pytest.mark.parametrize("impl", ["torch-forloop", "torch-foreach", "torch-fused"])
@pytest.mark.parametrize("op", C.OPS)
def test_torch_peers_pass_the_check(op, impl):
    case = C.OptimizerCase(op, SMALL, impl)
    reason = case.unavailable()
    if reason is not None:
        pytest.skip(reason)
    inst = case.build()
    case.check(inst)
    inst.close()


def _wrong(kernel):
    def bad(tab, **kw):
        kernel(tab, **kw)
        p = tab.columns["param"][0]
        p.reshape(-1)[3] += 1e-3  # one element off by 1e-3: must be caught
    return bad


def test_check_catches_a_wrong_backend_kernel(monkeypatch):
    name = compiled_backend()
    mod = fd.get_backend(name)
    monkeypatch.setitem(mod.KERNELS, "adam", _wrong(fd.get_backend("numpy").KERNELS["adam"]))
    case = C.OptimizerCase("adam", SMALL, name)
    inst = case.build()
    with pytest.raises(C.CheckError, match="differs from the NumPy reference"):
        case.check(inst)


def test_check_catches_a_wrong_textbook_peer(monkeypatch):
    real = C._textbook

    def wrong(spec, params, grads):
        step = real(spec, params, grads)

        def bad():
            step()
            params[-1][0] *= 1.01
        return bad

    monkeypatch.setattr(C, "_textbook", wrong)
    case = C.OptimizerCase("sgd", SMALL, "numpy-textbook")
    with pytest.raises(C.CheckError):
        case.check(case.build())


def test_runner_does_not_time_a_wrong_kernel(monkeypatch):
    name = compiled_backend()
    mod = fd.get_backend(name)
    monkeypatch.setitem(mod.KERNELS, "adam", _wrong(fd.get_backend("numpy").KERNELS["adam"]))
    group = [C.OptimizerCase("adam", SMALL, impl) for impl in ("numpy", name)]
    rows = runner.run_group(group, rounds=1, min_time=0.0)
    assert rows[0]["status"] == "ok" and rows[0]["time_s"] > 0
    assert rows[1]["status"] == "check-failed" and "time_s" not in rows[1]
    assert "NumPy reference" in rows[1]["reason"]


def _mm_backend(row_names):
    for name in ("c", "numba", "numpy"):
        if C.backend_unavailable(name) is None and all(r in fd.get_backend(name).KERNELS for r in row_names):
            return name
    pytest.skip("no backend implements the matmul kernels yet")


@pytest.mark.parametrize("kernel", C.MATMUL_KERNELS)
def test_matmul_cases_pass_the_check(kernel):
    shape = C.MatmulShape("3x(5x7x4)", 3, 5, 7, 4)
    impls = ["np.matmul", "torch.bmm", "torch-autograd"]
    for name in ("numpy", "c", "numba"):
        impls.append(name)
    ran = 0
    for impl in impls:
        case = C.MatmulCase(kernel, shape, impl)
        if case.unavailable() is not None:
            continue
        case.check(case.build())
        ran += 1
    assert ran >= 1


def test_matmul_check_catches_a_wrong_kernel(monkeypatch):
    name = _mm_backend(["matmul_fwd"])
    mod = fd.get_backend(name)
    real = mod.KERNELS["matmul_fwd"]

    def bad(y, x, w, b):
        real(y, x, w, b)
        y.reshape(-1)[0] += 1.0

    monkeypatch.setitem(mod.KERNELS, "matmul_fwd", bad)
    case = C.MatmulCase("fwd", C.MatmulShape("2x(4x4)", 2, 4, 4, 4), name)
    with pytest.raises(C.CheckError):
        case.check(case.build())


def test_unavailable_cases_say_why():
    assert "unknown" in C.OptimizerCase("adam", SMALL, "nope").unavailable()
    assert C.OptimizerCase("rmsprop", SMALL, "torch-fused").unavailable()  # no fused RMSprop in torch
    row = runner.run_group([C.OptimizerCase("adam", SMALL, "nope")], rounds=1, min_time=0)[0]
    assert row["status"] == "skipped" and "unknown implementation" in row["reason"]


# ---------------------------------------------------------------------------- timing and roofline
def test_measure_takes_the_median_of_rounds():
    calls = []
    t = timing.measure(lambda: calls.append(1), rounds=5, min_time=0.0, warmup=2)
    assert len(t.rounds) == 5 and t.median == sorted(t.rounds)[2] and t.inner >= 1
    assert len(calls) >= 2 + 5


def test_interleaved_rotates_the_order():
    order = []
    fns = [lambda i=i: order.append(i) for i in range(3)]
    timing.measure_interleaved(fns, rounds=3, min_time=0.0, warmup=0)
    tail = order[-9:]  # three rounds of one call each
    assert tail == [0, 1, 2, 1, 2, 0, 2, 0, 1]


def test_stream_probe_moves_the_same_bytes():
    from fastdescent.bench.roofline import StreamProbe, probe_provider

    if probe_provider()[0] is None:
        pytest.skip(probe_provider()[1])
    spec = C.OPTIMIZERS["adam"]
    probe = StreamProbe(1000, spec.reads, spec.writes)
    assert probe.bytes == 28 * 1000
    p, g = probe.arrays[0].copy(), probe.arrays[1].copy()
    probe()
    assert not np.array_equal(probe.arrays[0], p)  # param, exp_avg, exp_avg_sq are written in place
    np.testing.assert_array_equal(probe.arrays[1], g)  # the gradient is only read
    with pytest.raises(ValueError):
        StreamProbe(10, ("param", "grad"), ("exp_avg",))
    # a second pass (LAMB's update over a tensor larger than the cache) is streamed and counted
    spec = C.OPTIMIZERS["lamb"]
    probe = StreamProbe(1000, spec.reads, spec.writes, passes=spec.passes)
    assert probe.bytes == 40 * 1000 == spec.bytes_per_element() * 1000
    p = probe.arrays[0].copy()
    probe()
    assert not np.array_equal(probe.arrays[0], p)  # only the second pass writes the param
    with pytest.raises(ValueError):
        StreamProbe(10, ("param", "grad"), ("param",), passes=((("exp_avg",), ("exp_avg",)),))


# ---------------------------------------------------------------------------- targets and reports
def _row(op, layout, impl, t, section="headline", **kw):
    r = {"id": f"{op}-{layout}-{impl}", "section": section, "group": f"{op} {layout}", "op": op,
         "impl": impl, "kind": "fastdescent" if impl in C.BACKENDS else "peer", "status": "ok",
         "reason": None, "layout": layout, "time_s": t, "elements": 2 ** 25, "n_tensors": 1,
         "gbps": 28 * 2 ** 25 / t / 1e9}
    r.update(kw)
    return r


def test_targets_are_evaluated_from_one_run():
    rows = [_row("adam", "1x2^25", "c", 0.09, roofline_fraction=0.95),
            _row("adam", "1x2^25", "numba", 0.12, roofline_fraction=0.7),
            _row("adam", "1x2^25", "torch-fused", 0.10),
            _row("rmsprop", "1x2^25", "c", 0.05), _row("rmsprop", "1x2^25", "torch-foreach", 0.3),
            _row("adam", "1000x64", "c", 2e-4), _row("adam", "1000x64", "torch-fused", 2e-3)]
    t = {(d["what"], d["impl"], d["metric"]): d for d in R.evaluate_targets(rows)}
    assert t[("Adam 2^25", "c", "ratio")]["met"] is True
    assert math.isclose(t[("Adam 2^25", "c", "ratio")]["measured"], 0.9)
    assert t[("Adam 2^25", "c", "roofline")]["met"] is True
    assert t[("Adam 2^25", "numba", "ratio")]["met"] is False  # 1.2 > 1.15
    assert math.isclose(t[("RMSprop 2^25", "c", "speedup")]["measured"], 6.0)
    assert t[("Adam 1000 x 64", "c", "ms")]["met"] is True
    assert t[("Adam 1000 x 64", "c", "speedup")]["met"] is False  # 10x < 20x
    missing = t[("AdamW 2^25", "c", "ratio")]
    assert missing["measured"] is None and missing["met"] is None and "not run" in missing["why_missing"]


def test_markdown_json_and_plot_from_rows(tmp_path):
    rows = [_row("adam", "1x2^25", impl, t, section="size") for impl, t in
            (("c", 0.1), ("numba", 0.11), ("torch-fused", 0.1), ("roofline", 0.09))]
    rows[0]["roofline_fraction"] = 0.9
    rows.append(dict(_row("adam", "1x2^10", "c", 1e-5, section="size"), elements=1024))
    rows.append({"id": "x", "section": "size", "group": "adam 1x2^25", "op": "adam", "impl": "cuda",
                 "kind": "fastdescent", "status": "skipped", "reason": "no GPU", "layout": "1x2^25"})
    report = {"command": "fastdescent bench", "machine": {"cpu_model": "cpu", "logical_cores": 2,
                                                         "loadavg_start": [9.0, 1, 1]},
              "loadavg_end": [1.0, 1, 1], "results": rows, "targets": R.evaluate_targets(rows)}
    md = R.to_markdown(report)
    assert "## Performance targets" in md and "| case | c | numba | cuda | torch-fused | roofline |" in md
    assert "| 1x2^25 |" in md and "90%" in md and "no GPU" in md and "busy" in md
    R.write_json(tmp_path / "r.json", report)
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["impl"] == "c"
    pytest.importorskip("matplotlib")
    R.plot(tmp_path / "r.png", report)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_size_parsing():
    assert parse_size("2^10") == 1024 and parse_size("2**4") == 16 and parse_size("64k") == 65536
    assert parse_sizes("1,2^3, 1M") == (1, 8, 1 << 20)
    for bad in ("abc", "0", "-4", "2^x"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_roofline_is_the_best_probe_round_and_never_exceeded():
    """The probe row's time is its best round (an upper bound on speed); a kernel whose median beats
    it marks its group 'probe disturbed' (no fraction anywhere in the group, never "2149% of
    roofline"); otherwise fraction = probe best / kernel median."""
    from fastdescent.bench import runner
    from fastdescent.bench.report import _cell
    from fastdescent.bench.timing import Timing

    class Inst:
        bytes_per_step, flops_per_step, note = 28 * 2**20, 0, None

    def row(group, impl, rounds):
        r = {"group": group, "impl": impl, "status": None}
        return runner._finish(r, Inst(), Timing(sorted(rounds)[len(rounds) // 2], rounds), True)

    rows = [row("g1", "roofline", [2e-3, 1e-3, 3e-3]), row("g1", "c", [1.2e-3, 1.25e-3, 1.3e-3]),
            row("g2", "roofline", [2e-3, 1e-3, 3e-3]), row("g2", "c", [0.8e-3, 0.9e-3, 0.95e-3]),
            row("g2", "numba", [2e-3, 2e-3, 2e-3])]
    runner._derive(rows)
    assert rows[0]["time_s"] == 1e-3  # best round, not the median (2e-3)
    assert rows[1]["roofline_fraction"] == pytest.approx(1e-3 / 1.25e-3)
    for r in rows[3:]:
        assert "roofline_fraction" not in r and "disturbed" in r["roofline_note"]
        assert "probe disturbed" in _cell(r) and "roof" not in _cell(r).replace("disturbed", "")


def test_case_budget_cuts_rounds_and_says_so():
    """A case slower than its time budget is timed for fewer rounds (at least one), never stalls the
    run, and its row says it ran over."""
    import time as _time

    from fastdescent.bench import runner
    from fastdescent.bench.timing import measure_interleaved

    calls = []

    def slow():
        calls.append(1)
        _time.sleep(0.02)

    t0 = _time.perf_counter()
    (tm,) = measure_interleaved([slow], rounds=50, min_time=0.05, warmup=1, budget=0.1)
    assert _time.perf_counter() - t0 < 1.0
    assert 1 <= len(tm.rounds) < 50 and tm.over_budget and tm.asked == 50
    (fast,) = measure_interleaved([lambda: None], rounds=3, min_time=0.001, budget=5.0)
    assert not fast.over_budget and len(fast.rounds) == 3

    class Inst:
        bytes_per_step, flops_per_step, note = 0, 0, None

    row = runner._finish({"group": "g", "impl": "c", "status": None}, Inst(), tm, True)
    assert row["note"].startswith("over its time budget") and row["timing"]["rounds_asked"] == 50


def test_run_deadline_reports_the_rest_as_not_run():
    """Past the run's deadline no group starts: its cases come back 'skipped' with the reason."""
    import time as _time

    from fastdescent.bench import cases as BC
    from fastdescent.bench import runner

    cases = BC.optimizer_cases(["sgd"], [BC.single(1024)], ("numpy",), section="size")
    seen = []
    rows = runner.run(cases, rounds=1, min_time=0.0, deadline=_time.perf_counter() - 1,
                      on_row=lambda c, r: seen.append(r))
    assert rows and all(r["status"] == "skipped" and "time budget" in r["reason"] for r in rows)
    assert len(seen) == len(rows)


def test_mnist_shaped_case_trains_and_checks_on_a_small_copy(monkeypatch):
    """The MNIST-shaped MLP case on a small copy of its data (8,000 rows): the data are deterministic
    and learnable, a fastdescent backend passes the check against the NumPy backend for both
    optimizers, and the case ids/row keys name data set and optimizer."""
    from fastdescent.bench import mlp
    from fastdescent.bench.runner import _base_row

    monkeypatch.setattr(C, "MNIST_TRAIN", 8000)
    monkeypatch.setattr(C, "MNIST_TEST", 500)
    C.mnist_shaped_split.cache_clear()
    mlp._reference_params.cache_clear()
    try:
        a, b = C.mnist_shaped_split(), C.mnist_shaped_split.__wrapped__()
        assert a[0].shape == (8000, 784) and a[0].dtype == np.float32 and a[2].shape == (500, 784)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert 0.0 <= a[0].min() and a[0].max() <= 1.0 and set(np.unique(a[1])) == set(range(10))
        cases = {(c.optimizer, c.impl): c for c in C.mnist_cases(("c",))}
        assert set(cases) == {("adam", "c"), ("sgd", "c")}
        for opt in ("adam", "sgd"):
            case = cases[(opt, "c")]
            assert case.id == f"mlp-784-128-10-mnist-shaped-{opt}-c"
            assert _base_row(case)["layout"] == f"mnist-shaped 784-128-10 {opt}"
            inst = case.build()
            out = case.check(inst)
            assert out["test_accuracy"] >= mlp.MIN_ACCURACY and "max_abs_err" in out
            inst.close()
        assert C.MlpCase("c").id == "mlp-64-256-10-c" and C.MlpCase("c").name == "digits 64-256-10"
    finally:
        C.mnist_shaped_split.cache_clear()
        mlp._reference_params.cache_clear()


def _each_exits_2(mod, argvs):
    """A benchmark script's main refuses each argv with exit status 2 (argparse's usage error)."""
    for bad in argvs:
        with pytest.raises(SystemExit) as ei:
            mod.main(bad)
        assert ei.value.code == 2, bad


@pytest.mark.skipif(not BENCH_DIR.is_dir(), reason="benchmarks/ is not next to tests/ here")
def test_threads_busy_script_times_each_thread_count(capsys):
    from conftest import require_backend

    require_backend("c")
    mod = _load(BENCH_DIR / "threads_busy.py")
    med = mod.main(["digits", "--rounds", "1", "--threads", "1,2"])
    assert set(med) == {1, 2} and all(v > 0 for v in med.values())
    out = capsys.readouterr().out
    assert out.startswith("digits rows=1437 c: 1t ") and "2t/1t" in out and "back-off {" in out
    _each_exits_2(mod, (["digits", "--threads", "0"], ["digits", "--threads", "1,x"],
                        ["mnist", "--rows", "0"], ["digits", "--rounds", "0"]))
    assert "--threads" in capsys.readouterr().err


@pytest.mark.skipif(not BENCH_DIR.is_dir(), reason="benchmarks/ is not next to tests/ here")
def test_mnist_vs_torch_script_refuses_bad_arguments(capsys):
    mod = _load(BENCH_DIR / "mnist_vs_torch.py")
    _each_exits_2(mod, (["--threads", "0"], ["--rounds", "0"], ["--optimizer", "lion"]))
    assert "--threads and --rounds must be >= 1" in capsys.readouterr().err


@pytest.mark.skipif(not BENCH_DIR.is_dir(), reason="benchmarks/ is not next to tests/ here")
@pytest.mark.parametrize("fname", ["mnist_gemms.py", "gemm_shapes.py"])
def test_gemm_scripts_refuse_bad_thread_counts(fname, capsys):
    mod = _load(BENCH_DIR / fname)
    _each_exits_2(mod, (["--threads", "0"], ["--threads", "-2"]))
    assert "--threads must be >= 1" in capsys.readouterr().err


@pytest.mark.skipif(not BENCH_DIR.is_dir(), reason="benchmarks/ is not next to tests/ here")
def test_mnist_gemms_script_times_every_gemm_of_the_step(capsys):
    from conftest import require_backend

    require_backend("c")
    mod = _load(BENCH_DIR / "mnist_gemms.py")
    out = mod.main(["--threads", "1"])
    assert set(out) == {"fwd1", "bwd_w1", "fwd2", "bwd_w2", "bwd_x2"}
    assert all(ours > 0 for ours, _ in out.values())
    assert "128x784x128" in capsys.readouterr().out


@pytest.mark.skipif(not BENCH_DIR.is_dir(), reason="benchmarks/ is not next to tests/ here")
def test_gemm_shapes_script_runs_at_the_thread_count_asked(capsys):
    from conftest import require_backend

    C = require_backend("c")
    mod = _load(BENCH_DIR / "gemm_shapes.py")
    shape = (1, 1, 300, 280, 270)  # 22.7M multiply-adds: threaded on 2 threads
    mod.SHAPES = [shape]  # (a module global)
    C.set_gemm_backoff(False)  # every GEMM gets the threads it is allowed, busy machine or not
    try:
        before = C.gemm_backoff()["parallel_calls"]
        out = mod.main(["--threads", "1"])
        assert C.gemm_backoff()["parallel_calls"] == before  # one thread: no region
        assert set(out[shape]) == {"fwd", "bwd_x", "bwd_w"} and min(out[shape].values()) > 0
        C.set_num_threads(2)
        two = C.get_num_threads() == 2  # (not in a fork child or a build without OpenMP)
        C.set_num_threads(0)
        if two:
            mod.main(["--threads", "2"])
            assert C.gemm_backoff()["parallel_calls"] > before
    finally:
        C.set_gemm_backoff(True)
    assert "1x1x300x280x270:" in capsys.readouterr().out


@pytest.mark.skipif(not BENCH_DIR.is_dir(), reason="benchmarks/ is not next to tests/ here")
def test_gpu_step_script_runs_its_rows(tmp_path, capsys):
    """benchmarks/gpu_step.py (the GPU session's step timings) on a tiny layout in the simulator:
    a float32 row and a bfloat16 row run through the backend (no FAILED row) and land in the JSON."""
    from conftest import require_backend

    require_backend("cuda")
    mod = _load(BENCH_DIR / "gpu_step.py")
    out = tmp_path / "rows.json"
    assert mod.main(["--simulator", "--layouts", "tiny", "--rounds", "1", "--inner", "1",
                     "--rows", "sgd-momentum,adam-bf16-sr", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FAILED" not in text, text
    rows = json.loads(out.read_text())
    got = {(r["rule"], r["impl"]) for r in rows}
    assert {("sgd-momentum", "fastdescent cuda"), ("adam-bf16-sr", "fastdescent cuda"),
            ("sgd-momentum", "roofline (d2d copy)")} <= got, got
    assert all(r["bytes"] > 0 and r["ms"] > 0 for r in rows)
