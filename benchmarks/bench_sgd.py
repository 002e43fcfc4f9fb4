"""SGD, plain (12 B/param) and with momentum 0.9 (20 B/param) (csrc/fd_sgd.c): the headline layouts on
every backend, next to torch.optim (for-loop, foreach, fused), textbook NumPy and the roofline probe."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("sgd", "sgd_momentum"), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_sgd(run_case, case):
    run_case(case)
