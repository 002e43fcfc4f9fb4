"""pytest-benchmark setup for ``benchmarks/`` (run: ``pytest benchmarks/`` from the repository root).

The cases come from :mod:`fastdescent.bench.cases` -- the same definitions ``fastdescent bench`` uses
-- so the two never disagree about what is measured. Each case is skipped with its reason when it is
unavailable here, checked against the NumPy reference before it is timed (a wrong result fails the
test), warmed up (JIT compilation excluded), then timed in calibrated rounds (median reported).
Cases that compare with each other share a ``benchmark.group`` (hot path + layout), so
pytest-benchmark's tables put the backends, torch and the roofline probe side by side.

Files are named ``bench_<hotpath>.py`` (mirroring ``csrc/fd_<hotpath>.c``); this conftest makes
pytest collect them. Options: ``--fd-rounds N`` (default 5), ``--fd-min-time S`` (default 0.05).
"""

from __future__ import annotations

import pytest

from fastdescent.bench.timing import calibrate


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_addoption(parser):
    group = parser.getgroup("fastdescent")
    group.addoption("--fd-rounds", type=int, default=5, help="timed rounds per case (median reported)")
    group.addoption("--fd-min-time", type=float, default=0.05,
                    help="minimum seconds per round (calls per round are calibrated)")


def case_id(case):
    return case.id


@pytest.fixture
def run_case(benchmark, request):
    """``run_case(case)``: skip if unavailable, check against the NumPy reference, then time it."""
    rounds = request.config.getoption("--fd-rounds")
    min_time = request.config.getoption("--fd-min-time")

    def run(case):
        reason = case.unavailable()
        if reason is not None:
            pytest.skip(reason)
        inst = case.build()
        try:
            check = case.check(inst)  # raises CheckError: the test fails, nothing is timed
            inst.step()  # warm-up beyond the check steps
            benchmark.group = case.group
            benchmark.extra_info.update(impl=case.impl, kind=case.kind, check=check)
            benchmark.extra_info.update(getattr(case, "row_info", None) or {})  # (lowp: formats)
            if inst.bytes_per_step:
                benchmark.extra_info["bytes_per_step"] = inst.bytes_per_step
            if inst.flops_per_step:
                benchmark.extra_info["flops_per_step"] = inst.flops_per_step
            iterations = calibrate(inst.step, min_time)
            benchmark.pedantic(inst.step, rounds=rounds, iterations=iterations, warmup_rounds=0)
            stats = getattr(benchmark, "stats", None)
            median = getattr(getattr(stats, "stats", None), "median", None) if stats else None
            if median:
                if inst.bytes_per_step:
                    benchmark.extra_info["GB_per_s"] = inst.bytes_per_step / median / 1e9
                if inst.flops_per_step:
                    benchmark.extra_info["GFLOP_per_s"] = inst.flops_per_step / median / 1e9
        finally:
            inst.close()

    return run
