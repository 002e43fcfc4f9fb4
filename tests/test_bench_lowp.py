"""The low-precision benchmark cases (fastdescent/bench/lowp.py, ``fastdescent bench --ops lowp``):
bytes per parameter from the formats, the checks that catch a wrong result, the derived figures
(roofline fraction from bandwidths, ratio to torch fused across groups) and the JSON/Markdown output
of a tiny run on the numba backend. Timings are never asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastdescent.bench import cases as C
from fastdescent.bench import lowp as L
from fastdescent.bench import report as R
from fastdescent.bench import runner

ONE = C.single(2 ** 20)
#: three tensors: a partial 8-bit block (300 = 256 + 44) and tensors under one block
SMALL = C.Layout("3 tensors", ((7, 5), (5,), (300,)))


def _numba():
    if C.backend_unavailable("numba") is not None:
        pytest.skip(f"numba backend: {C.backend_unavailable('numba')}")
    reason = L.LowpCase("adam-bf16-sr", SMALL, "numba").unavailable()
    if reason is not None:
        pytest.skip(reason)


# ---------------------------------------------------------------------------- bytes per parameter
@pytest.mark.parametrize("config, want", [
    ("adam-fp32", 28), ("adam-bf16-sr", 24), ("adam-bf16-sr-bf16", 16),
    ("adam-int8", 16 + 16 / 256), ("adam-bf16-sr-int8", 12 + 16 / 256), ("adam-bf16-master", 32)])
def test_bytes_per_param_from_the_formats(config, want):
    case = L.LowpCase(config, ONE, "numba")
    assert case.bytes_per_step == want * 2 ** 20
    assert case.row_info["bytes_per_param"] == want


def test_bytes_count_every_block_scale_and_the_peers_own_formats():
    # p 8 + g 4 + two 8-bit moments 2 x (1 B read + 1 B written) per element, + 2 x 8 B per block
    n = 35 + 5 + 300
    blocks = 1 + 1 + 2
    assert L.bytes_per_step(SMALL, "float32", "float32", "int8", False) == 16 * n + 16 * blocks
    # torchao's bf16 AdamW reads a bf16 gradient (torch needs the parameter's dtype)
    assert L.LowpCase("adam-bf16-sr", ONE, "torchao-bf16-sr").bytes_per_step == 22 * 2 ** 20
    assert L.LowpCase("adam-fp32", ONE, "roofline").bytes_per_step == 28 * 2 ** 20
    with pytest.raises(ValueError, match="state must be one of"):
        L.bytes_per_step(SMALL, "float32", "float32", "int4", False)


def test_case_list_groups_and_peer_placement():
    cases = L.lowp_cases((ONE,), ("numpy", "c", "numba"))
    assert {c.impl for c in cases} == {"c", "numba", "roofline"} | set(L.LOWP_PEERS)
    for c in cases:
        assert c.unavailable() != f"unknown implementation {c.impl!r}"
        assert c.ref_group == "lowp 1x2^20"
        assert c.group == c.ref_group + (" (slow peers)" if c.impl in L.SLOW_PEERS else "")
        if c.kind == "peer":
            assert L.PEER_CONFIG[c.impl] == c.config
    assert [c.impl for c in cases if c.impl in L.SLOW_PEERS] == list(L.SLOW_PEERS)
    with pytest.raises(ValueError, match="unknown peers"):
        L.lowp_cases((ONE,), peers=("torch-foreach",))
    # a peer asked for in another configuration says why it is not run
    assert "stores the formats of adam-int8" in L.LowpCase("adam-fp32", ONE, "bnb-8bit").unavailable()


# ---------------------------------------------------------------------------- checks
def test_backend_check_is_bit_exact_and_catches_one_flipped_bit():
    _numba()
    case = L.LowpCase("adam-bf16-sr-int8", SMALL, "numba")
    inst = case.build()
    out = case.check(inst)
    assert out["bit_identical_to"] == "numpy"
    assert out["elements_compared"] > 3 * 340  # params, codes and scales of every tensor

    bad = case.build()
    inner = bad._result

    def corrupted():
        got = inner()
        got["params"][2].reshape(-1).view(np.uint16)[299] ^= 1  # last element of the partial block
        return got

    bad._result = corrupted
    with pytest.raises(C.CheckError, match="not bit-identical.*first at 299"):
        case.check(bad)


def test_peer_check_needs_the_float32_update_in_the_mean():
    rng = np.random.default_rng(0)
    p0 = [rng.random(4096, dtype=np.float32) - 0.5]
    ref = [p0[0] - 2e-3 * np.sign(rng.random(4096) - 0.5)]
    out = L.check_update("x", ref, p0, ref, p0, bf16=False)
    assert out["direction"] == pytest.approx(1.0) and out["mean_rel_err"] == 0.0
    with pytest.raises(C.CheckError, match="does not follow float32 Adam"):
        L.check_update("x", p0, p0, ref, p0, bf16=True)  # no update
    with pytest.raises(C.CheckError, match="does not follow float32 Adam"):
        L.check_update("x", [2 * p0[0] - ref[0]], p0, ref, p0, bf16=True)  # the wrong sign
    with pytest.raises(C.CheckError, match="non-finite"):
        L.check_update("x", [np.full(4096, np.nan)], p0, ref, p0, bf16=True)


# ---------------------------------------------------------------------------- derived figures
def test_roofline_fraction_is_a_bandwidth_ratio_and_the_baseline_crosses_groups():
    class Inst:
        flops_per_step, note = 0, None

        def __init__(self, nbytes):
            self.bytes_per_step = nbytes

    from fastdescent.bench.timing import Timing

    def row(group, impl, t, nbytes):
        r = {"group": group, "impl": impl, "status": None, "ref_group": "lowp X",
             "baseline": "torch-fused"}
        return runner._finish(r, Inst(nbytes), Timing(t, [t]), True)

    rows = [row("lowp X", "roofline", 1e-3, 28e6), row("lowp X", "torch-fused", 2e-3, 28e6),
            row("lowp X", "c", 1e-3, 12e6), row("lowp X (slow peers)", "bnb-8bit", 0.5, 16e6)]
    runner._derive(rows[3:])  # alone, the slow-peer group has neither probe nor baseline
    assert "roofline_fraction" not in rows[3] and "time_vs_baseline" not in rows[3]
    runner._derive(rows)
    assert rows[2]["roofline_fraction"] == pytest.approx(12 / 28)  # 12 GB/s of a 28 GB/s probe
    assert rows[2]["roofline_gbps"] == pytest.approx(28.0)
    assert rows[2]["time_vs_baseline"] == pytest.approx(0.5)
    assert rows[3]["time_vs_baseline"] == pytest.approx(250.0)
    assert rows[3]["roofline_fraction"] == pytest.approx(0.032 / 28)
    assert rows[1]["time_vs_baseline"] == 1.0


# ---------------------------------------------------------------------------- a tiny run end to end
def test_tiny_run_writes_bytes_roofline_and_ratio_fields(tmp_path):
    _numba()
    peers = ("torch-fused",) if C.torch_unavailable() is None else ()
    cases = L.lowp_cases((SMALL,), ("numba",), peers=peers)
    rows = runner.run(cases, rounds=1, min_time=0.0, warmup=1)
    report = {"schema": "fastdescent-bench/1", "command": "test", "settings": {}, "machine": {},
              "results": rows, "targets": R.evaluate_targets(rows)}
    R.write_json(tmp_path / "o.json", report)
    R.write_markdown(tmp_path / "o.md", report)
    got = json.loads((tmp_path / "o.json").read_text())["results"]
    by = {(r["op"], r["impl"]): r for r in got}
    for config in L.LOWP_CONFIGS:
        r = by[(config, "numba")]
        assert r["status"] == "ok", r
        assert r["bytes_per_param"] == pytest.approx(r["bytes_per_step"] / r["elements"])
        assert r["gbps"] == pytest.approx(r["bytes_per_step"] / r["time_s"] / 1e9)
        assert r["params"] == LOWP_PARAMS[config] and r["ref_group"] == "lowp 3 tensors"
        # the probe takes under 50 us at 340 elements: no fraction, and the row says why
        assert "roofline_fraction" not in r and "under 50 us" in r["roofline_note"]
        if peers:
            assert r["time_vs_baseline"] > 0
    assert by[("adam-fp32", "roofline")]["status"] == "ok"
    md = (tmp_path / "o.md").read_text()
    assert "## Low-precision Adam step" in md
    assert "| config | impl | params / grads / state | B/param | median | GB/s | roofline |" in md
    assert "| adam-bf16-sr-int8 | numba | bfloat16 / float32 / int8 | 12.19 |" in md
    assert "## Results" not in md  # (no other section: no empty generic tables)
    # the targets are listed once lowp rows exist (their layouts were not run here)
    assert any(t["what"].startswith("Adam bf16+SR, int8 state") for t in report["targets"])
    assert not any(t["what"].startswith("Adam bf16") for t in R.evaluate_targets(
        [r for r in rows if r["section"] != "lowp"]))
    if peers:
        pytest.importorskip("matplotlib")
        assert R.plot(str(tmp_path / "o.png"), report) and (tmp_path / "o.png").stat().st_size > 0


LOWP_PARAMS = {name: cfg.params for name, cfg in L.LOWP_CONFIGS.items()}


def test_cli_lists_lowp_and_picks_its_layouts():
    from fastdescent.__main__ import build_parser
    from fastdescent.bench import commands

    p = build_parser()
    sub = p._subparsers._group_actions[0].choices["bench"]
    assert "lowp" in sub.format_help()
    assert commands.select_ops("lowp") == ["lowp"]
    assert [lay.name for lay in commands.lowp_layouts(None, False)] == ["1x2^25", "resnet50"]
    assert [lay.name for lay in commands.lowp_layouts(None, True)] == ["1x2^22", "linear50"]
    assert [lay.name for lay in commands.lowp_layouts("2^10", True)] == ["1x2^10", "linear50"]
    cases = commands.bench_cases(backends=["numpy", "numba"], ops=["lowp"], sizes=(), counts=(),
                                 lowp_layouts=(SMALL,), peers=False)
    assert {c.impl for c in cases} == {"numba", "roofline"}
    assert L.RESNET50.n_tensors == 161 and L.RESNET50.elements == 25_557_032


def test_pytest_benchmark_file_takes_the_shared_cases(monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_lowp.py"
    if not path.is_file():
        pytest.skip("benchmarks/ is not next to tests/ here")
    monkeypatch.delenv("FASTDESCENT_BENCH_LOWP_FULL", raising=False)
    spec = importlib.util.spec_from_file_location("_fd_bench_lowp", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.CASES == L.lowp_cases(L.BENCH_LOWP_LAYOUTS)  # small sizes unless asked
