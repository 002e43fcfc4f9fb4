"""Adagrad (csrc/fd_adagrad.c, 20 B/param): the headline layouts on every backend, next to torch.optim
(for-loop, foreach, fused), textbook NumPy and the roofline probe."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("adagrad",), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_adagrad(run_case, case):
    run_case(case)
