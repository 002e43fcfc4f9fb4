"""Proximal L1 (csrc/fd_prox.c): SGD with l1 > 0, i.e. the SGD update then the prox pass (12 B/param
for the update + 8 B for the pass; the roofline probe streams the update's 12 B), the headline layouts
on every backend, next to textbook NumPy and the roofline probe (torch.optim has no L1 option)."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("sgd_l1",), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_sgd_l1(run_case, case):
    run_case(case)
