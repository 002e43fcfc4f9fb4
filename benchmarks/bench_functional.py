"""The functional API (``fastdescent.functional``, state kept by the caller) next to the class API on
the same 100 tensors of 64 elements, per host backend: the per-call cost of validating and caching
the caller's lists (target: at most 2x the class step). ``fastdescent bench --ops functional`` runs
the same cases and evaluates the target."""

import pytest

from fastdescent.bench import cases as C

CASES = C.functional_cases(C.FUNCTIONAL_OPS, ("numpy", "c", "numba"))


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_functional(run_case, case):
    run_case(case)
