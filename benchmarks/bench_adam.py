"""Adam and AdamW (csrc/fd_adam.c): the headline layouts -- one tensor of 2^25, 400 model-like tensors,
1000 tensors of 64 -- on every backend, next to torch.optim (for-loop, foreach, fused), textbook NumPy
and the memory-roofline probe (28 B/param)."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("adam", "adamw"), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_adam(run_case, case):
    run_case(case)
