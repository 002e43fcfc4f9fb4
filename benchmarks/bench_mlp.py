"""The digits MLP (64-256-10, ReLU, Adam lr=1e-3, batch 64): one training epoch with fastdescent.nn on
every CPU backend, next to the same model in torch and scikit-learn's MLPClassifier."""

import pytest

from fastdescent.bench import cases as C

CASES = C.mlp_cases(("numpy", "c", "numba") + C.MLP_PEERS)


@pytest.mark.parametrize("case", CASES, ids=C.MlpCase.__str__)
def test_mlp(run_case, case):
    run_case(case)
