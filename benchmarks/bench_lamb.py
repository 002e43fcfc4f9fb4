"""LAMB (csrc/fd_lamb.c, 40 B/param for tensors larger than the cache: a moments-and-norms pass,
then the update pass): the headline layouts on every backend, next to textbook NumPy and the two-pass
roofline probe (torch.optim has no LAMB: its peer cases report themselves unavailable)."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("lamb",), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_lamb(run_case, case):
    run_case(case)
