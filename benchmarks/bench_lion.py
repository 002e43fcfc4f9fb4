"""Lion (csrc/fd_lion.c, 20 B/param): the headline layouts on every backend, next to textbook NumPy and
the roofline probe (torch.optim has no Lion: its peer cases report themselves unavailable)."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("lion",), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_lion(run_case, case):
    run_case(case)
