"""Gradient noise (csrc/fd_noise.c): SGD with noise_std > 0, i.e. the SGD update then the noise pass
(Philox4x32-10 and Box-Muller per pair of elements: compute-bound where the update is memory-bound),
the headline layouts on every backend, next to textbook NumPy and the roofline probe (torch.optim has no
gradient noise)."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("sgd_noise",), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_sgd_noise(run_case, case):
    run_case(case)
