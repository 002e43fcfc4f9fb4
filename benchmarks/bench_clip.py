"""Gradient clipping by value (csrc/fd_clip.c, ``clip_value``: read and write each gradient, 8 B per
element in float32): fd.clip_grad_value_ on the headline layouts on every backend, next to
torch.nn.utils.clip_grad_value_ (for-loop and foreach), textbook NumPy and the roofline probe."""

import pytest

from fastdescent.bench import cases as C

CASES = C.optimizer_cases(("clip_value",), C.HEADLINE_LAYOUTS)


@pytest.mark.parametrize("case", CASES, ids=C.OptimizerCase.__str__)
def test_clip_value(run_case, case):
    run_case(case)
