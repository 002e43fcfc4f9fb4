"""The ``numpy`` backend: vectorised NumPy, in place. Always importable; the readable reference.

Each kernel loops over the tensors of the table in Python and does whole-array NumPy operations.
Derived scalars such as ``1 - beta1`` are computed in float64 by Python and rounded once to the element
type (NumPy's weak-scalar rule), exactly as the compiled backends do.
"""

import numpy as np

from .. import collect_kernels
from .._table import TensorTable

NAME = "numpy"
DEVICE = False
Table = TensorTable

KERNELS = collect_kernels(__name__)


def describe():
    return {"numpy": np.__version__}
