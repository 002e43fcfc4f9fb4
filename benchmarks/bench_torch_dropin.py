"""fastdescent.torch (the torch.optim drop-in): one optimizer step over ResNet-50's and 50 x
Linear(64, 64)'s parameter shapes with fresh gradient tensors every step, next to torch.optim fused and
foreach, the NumPy-facing fastdescent class on the same tensors and the roofline probe
(fastdescent/bench/torch_dropin.py)."""

import pytest

from fastdescent.bench import torch_dropin as T

CASES = T.torch_dropin_cases(ops=("adam", "rmsprop"), models=("resnet50", "linear50"))


@pytest.mark.parametrize("case", CASES, ids=T.TorchStepCase.__str__)
def test_torch_dropin(run_case, case):
    run_case(case)
