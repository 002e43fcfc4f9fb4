"""Rprop (csrc/fd_rprop.c, 28 B/param): the headline layouts on every backend, next to torch.optim
(for-loop, foreach; torch has no fused Rprop), textbook NumPy and the roofline probe."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("rprop",), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_rprop(run_case, case):
    run_case(case)
