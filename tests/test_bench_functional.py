"""The functional-API benchmark cases (``fastdescent bench --ops functional``): each is checked
against the NumPy reference like the class cases, sits in the same group as its class case, and the
2x target is evaluated against that case. Timings are never asserted."""

from __future__ import annotations

import pytest

from fastdescent.bench import cases as C
from fastdescent.bench import commands
from fastdescent.bench import report as R
from fastdescent.bench import runner


@pytest.mark.parametrize("op", C.FUNCTIONAL_OPS)
def test_functional_case_matches_the_reference(op):
    case = C.OptimizerCase(op, C.many(3), "numpy" + C.FUNCTIONAL_SUFFIX, section="functional")
    assert case.unavailable() is None and case.kind == "fastdescent"
    inst = case.build()
    check = case.check(inst)  # raises CheckError on a wrong rule or hyperparameter
    assert check["steps"] == C.CHECK_STEPS


def test_a_wrong_functional_step_fails_the_check(monkeypatch):
    case = C.OptimizerCase("adam", C.many(3), "numpy" + C.FUNCTIONAL_SUFFIX, section="functional")
    monkeypatch.setitem(C.OPTIMIZERS["adam"].kwargs, "lr", 2e-3)  # the functional call's lr only
    inst = case.build()
    monkeypatch.setitem(C.OPTIMIZERS["adam"].kwargs, "lr", 1e-3)
    with pytest.raises(C.CheckError):
        case.check(inst)


def test_unavailable_functional_cases_say_why():
    assert "no functional-API case" in C.OptimizerCase("lamb", C.many(2), "c-functional").unavailable()
    assert "host backends" in C.OptimizerCase("adam", C.many(2), "cuda-functional").unavailable()


def test_ops_functional_builds_class_and_functional_side_by_side():
    assert "functional" in commands.select_ops("functional")
    cases = commands.bench_cases(backends=["numpy", "c", "cuda"], ops=["functional"], sizes=(),
                                 counts=(), peers=False, roofline=False)
    assert {c.op for c in cases} == set(C.FUNCTIONAL_OPS)
    assert {c.impl for c in cases} == {"numpy", "numpy-functional", "c", "c-functional"}
    assert all(c.section == "functional" and c.layout.name == "100x64" for c in cases)
    only = commands.bench_cases(backends=["numpy"], ops=["adam", "lamb", "functional"], sizes=(),
                                counts=(), peers=False, roofline=False)
    assert {c.op for c in only if c.section == "functional"} == {"adam"}


def test_tiny_run_evaluates_the_target_against_the_class_case():
    cases = [C.OptimizerCase("adam", C.many(100), impl, section="functional")
             for impl in ("numpy", "numpy-functional")]
    rows = runner.run(cases, rounds=1, min_time=0.0, warmup=1)
    assert all(r["status"] == "ok" for r in rows), rows
    # the targets name c/numba; re-aim one at numpy to check the ratio is functional / class
    t = R.Target("functional adam", "adam", "100x64", "numpy-functional", "ratio", 2.0, "numpy",
                 section="functional")
    old = R.TARGETS
    try:
        R.TARGETS = (t,)
        (d,) = R.evaluate_targets(rows)
    finally:
        R.TARGETS = old
    by = {r["impl"]: r for r in rows}
    assert d["measured"] == pytest.approx(by["numpy-functional"]["time_s"] / by["numpy"]["time_s"])
