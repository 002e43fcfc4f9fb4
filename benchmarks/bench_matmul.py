"""Dense-layer kernels (csrc/fd_matmul.c): forward, backward to x, backward to w, and the whole layer
step, on a batch of 4096 16x16 products, 64 of 128x128 and one 1024x1024 GEMM; every backend next to
np.matmul, torch.bmm and torch autograd (GFLOP/s in extra_info)."""

import pytest

from fastdescent.bench import cases as C

CASES = C.matmul_cases()


@pytest.mark.parametrize("case", CASES, ids=C.MatmulCase.__str__)
def test_matmul(run_case, case):
    run_case(case)
