"""The ``fastdescent`` command: parsing, ``info``, ``bench`` (tiny sizes), ``demo``, and clean errors.

The commands run in a subprocess (``python -m fastdescent``) from a temporary directory, so they use
the installed package, as a user's shell does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastdescent.__main__ import build_parser, main
from fastdescent.bench import cases as C


def cli(*args, cwd, timeout=300):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "fastdescent", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_parser_knows_the_subcommands():
    p = build_parser()
    a = p.parse_args(["bench", "--quick", "--backends", "numpy,c", "--ops", "adam,sgd", "--json", "o.json",
                      "--md", "o.md", "--plot", "o.png", "--sizes", "2^10", "--counts", "1,4"])
    assert a.command == "bench" and a.quick and a.backends == "numpy,c" and a.plot == "o.png"
    assert p.parse_args(["demo"]).epochs == 5
    assert p.parse_args(["info", "--json"]).json
    with pytest.raises(SystemExit) as e:
        p.parse_args(["frobnicate"])
    assert e.value.code == 2


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "bench" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __import__("fastdescent").__version__
    assert main([]) == 2  # no command: help, non-zero


def test_info(tmp_path):
    r = cli("info", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("numpy", "c", "numba", "cuda"):
        assert name in r.stdout
    r = cli("info", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["backends"]["numpy"]["available"] is True
    assert set(info["backends"]) == {"numpy", "c", "numba", "cuda"}
    assert "cpu" in info and "version" in info


def test_bench_quick_tiny_writes_json_markdown_and_png(tmp_path):
    out = tmp_path / "r"
    r = cli("bench", "--quick", "--sizes", "2^10,2^12", "--counts", "1,8", "--ops",
            "adam,sgd_momentum,matmul", "--shapes", "2x8x8x8", "--rounds", "2", "--min-time", "0",
            "--json", f"{out}.json", "--md", f"{out}.md", "--plot", f"{out}.png", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["schema"] == "fastdescent-bench/1"
    m = rep["machine"]
    for key in ("cpu_model", "logical_cores", "versions", "fastdescent_info", "date_utc"):
        assert key in m
    assert m["versions"]["numpy"] and m["fastdescent_info"]["backends"]["numpy"]["available"]
    rows = rep["results"]
    ok = [x for x in rows if x["status"] == "ok"]
    assert {x["section"] for x in rows} >= {"size", "count", "matmul"}
    assert {x["op"] for x in ok} >= {"adam", "sgd_momentum"}
    for x in ok:
        assert x["time_s"] > 0 and len(x["timing"]["rounds_s"]) == 2
        if x["kind"] == "fastdescent" or x["impl"] == "numpy-textbook":
            assert x["check"]["max_abs_err"] <= x["check"]["atol"] + x["check"]["rtol"]
    numpy_rows = [x for x in ok if x["impl"] == "numpy" and x["section"] == "size"]
    assert numpy_rows and all(x["bytes_per_step"] in (28 * x["elements"], 20 * x["elements"])
                              for x in numpy_rows)
    assert all(x["status"] in ("ok", "skipped") for x in rows), \
        [(x["id"], x["status"], x["reason"]) for x in rows if x["status"] not in ("ok", "skipped")]
    assert all(x["reason"] for x in rows if x["status"] == "skipped")
    assert isinstance(rep["targets"], list) and rep["targets"]
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# fastdescent benchmark results")
    assert "| case |" in md and "1x2^10" in md and "| 1x64 |" in md
    r2 = cli("bench", "--from-json", f"{out}.json", "--md", f"{out}2.md", cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert (tmp_path / "r2.md").read_text() == md  # the reports are a pure function of the JSON
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    mpl_image = pytest.importorskip("matplotlib.image")
    img = mpl_image.imread(str(tmp_path / "r.png"))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200


def test_bench_flush_denormal_is_applied_and_reported(tmp_path):
    """--flush-denormal: the run's settings and fd.info() in the machine record say the c kernels
    flushed subnormals (a subprocess: the setting is process-wide)."""
    r = cli("bench", "--flush-denormal", "--backends", "c", "--ops", "sgd", "--sizes", "2^10",
            "--counts", "1", "--rounds", "1", "--min-time", "0", "--no-peers", "--quiet",
            "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    if r.returncode == 3 and "not available" in r.stderr:
        pytest.skip(r.stderr.strip()[-300:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["settings"]["flush_denormal"] is True
    assert rep["machine"]["fastdescent_info"]["flush_denormal"] is True
    assert any(x["status"] == "ok" and x["impl"] == "c" for x in rep["results"])


def test_bench_flush_denormal_is_undone_when_the_run_returns(tmp_path):
    """main(["bench", "--flush-denormal", ...]) called in-process (a notebook, a script) flushes for
    its run only: afterwards the process computes subnormals again, and a later run without the
    option neither flushes nor reports that it does."""
    import fastdescent as fd

    if not fd.set_flush_denormal(False) or "c" not in fd.available_backends():
        pytest.skip("no c backend here")
    common = ["--backends", "c", "--ops", "sgd", "--sizes", "2^10", "--counts", "1", "--rounds", "1",
              "--min-time", "0", "--no-peers", "--quiet"]
    try:
        assert main(["bench", "--flush-denormal", *common, "--json", str(tmp_path / "a.json")]) == 0
        assert fd.get_flush_denormal() is False
        assert json.loads((tmp_path / "a.json").read_text())["settings"]["flush_denormal"] is True
        assert main(["bench", *common, "--json", str(tmp_path / "b.json")]) == 0
        rep = json.loads((tmp_path / "b.json").read_text())
        assert rep["settings"]["flush_denormal"] is False
        assert rep["machine"]["fastdescent_info"]["flush_denormal"] is False
    finally:
        fd.set_flush_denormal(False)


@pytest.mark.parametrize("args, message", [
    (["bench", "--backends", "nope"], "unknown backend 'nope'"),
    (["bench", "--ops", "adam,frob"], "unknown op 'frob'"),
    (["bench", "--sizes", "two"], "bad size 'two'"),
    (["demo", "--epochs", "0"], "--epochs must be >= 1"),
])
def test_bad_arguments_exit_nonzero_with_a_message(tmp_path, args, message):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_unavailable_backend_names_the_cause(monkeypatch, capsys):
    real = C.backend_unavailable

    def fake(name, **kw):
        return "ImportError: the fake cause" if name == "numba" else real(name, **kw)

    monkeypatch.setattr(C, "backend_unavailable", fake)
    assert main(["bench", "--backends", "numba", "--quick"]) == 3
    err = capsys.readouterr().err
    assert "backend 'numba' is not available here: ImportError: the fake cause" in err


def test_cuda_without_a_gpu_is_refused_with_the_reason(tmp_path):
    if C.backend_unavailable("cuda") is None:
        pytest.skip("a real GPU is present: the cuda backend is available")
    r = cli("bench", "--backends", "cuda", cwd=tmp_path)
    assert r.returncode == 3
    assert "backend 'cuda' is not available here" in r.stderr and "Traceback" not in r.stderr


def test_demo_runs_small(tmp_path):
    trainable = [b for b in ("c", "numba", "numpy") if C.MlpCase(b).unavailable() is None]
    backend = trainable[0] if trainable else "numpy"
    r = cli("demo", "--epochs", "1", "--size", "2^14", "--backends", backend, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Adam kernel" in r.stdout and "roofline" in r.stdout and "Traceback" not in r.stderr
    if trainable:
        assert "test accuracy" in r.stdout
    else:
        assert "not available" in r.stdout


@pytest.mark.parametrize("flag, path, message", [
    ("--md", "missing-folder/r.md", "folder"),
    ("--json", ".", "is a directory"),
    ("--plot", "ro/r.png", "is a directory"),
    ("--json", "/proc/fastdescent-r.json", "cannot write"),  # open() fails, even as root
])
def test_output_paths_are_checked_before_the_sweep(tmp_path, monkeypatch, capsys, flag, path, message):
    """A bad output path is refused (exit 2, one line, no traceback) before any case runs, and
    leaves no file behind."""
    import fastdescent.bench.runner as runner

    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "r.png").mkdir()  # a directory where the file should go
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("the sweep started"))
    assert main(["bench", "--quick", "--quiet", "--ops", "sgd", flag, path]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]


def test_output_paths_checked_leave_a_writable_new_file_absent(tmp_path, monkeypatch):
    """The check creates nothing: a good new path does not exist until the report is written."""
    from fastdescent.bench.commands import check_output_paths

    class A:
        json, md, plot = str(tmp_path / "a.json"), str(tmp_path / "a.md"), None

    check_output_paths(A)
    assert list(tmp_path.iterdir()) == []


def test_piped_tables_stay_whole(tmp_path):
    """stdout a pipe (no terminal, no COLUMNS): Markdown tables, every column on one line, never
    rich's 80-column cut."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-m", "fastdescent", "bench", "--ops", "sgd", "--backends",
                        "numpy,c", "--sizes", "2^10", "--counts", "2", "--rounds", "1",
                        "--min-time", "0", "--quiet"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    header = [ln for ln in r.stdout.splitlines() if ln.startswith("| case |")]
    assert header, r.stdout[:2000]
    for ln in header:
        cols = [c.strip() for c in ln.strip("|").split("|")]
        assert cols[:3] == ["case", "numpy", "c"] and "roofline" in cols, ln
    assert "┃" not in r.stdout and "…" not in r.stdout
