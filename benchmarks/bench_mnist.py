"""The MNIST-shaped MLP (784-128-10, ReLU, batch 128, 60,000 synthetic rows): one training epoch with
Adam and with momentum SGD, fastdescent.nn on every CPU backend next to the same model in torch and
scikit-learn's MLPClassifier."""

import pytest

from fastdescent.bench import cases as C

CASES = C.mnist_cases(("numpy", "c", "numba") + C.MLP_PEERS)


@pytest.mark.parametrize("case", CASES, ids=C.MlpCase.__str__)
def test_mnist(run_case, case):
    run_case(case)
