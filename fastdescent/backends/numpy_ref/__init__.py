"""The ``numpy`` backend: vectorised NumPy, in place. Always importable; the readable reference.

Each kernel loops over the tensors of the table in Python and does whole-array NumPy operations.
Derived scalars such as ``1 - beta1`` are computed in float64 by Python and rounded once to the element
type (NumPy's weak-scalar rule), exactly as the compiled backends do.

Every kernel runs under ``np.errstate(all="ignore")``: a NaN or inf gradient produces the IEEE results
that the rule defines (the compiled backends' results, bit for bit) without a RuntimeWarning that the
other backends would not give.
"""

import functools

import numpy as np

from .. import collect_kernels
from .._table import TensorTable

NAME = "numpy"
DEVICE = False
Table = TensorTable



def _ieee(fn):
    @functools.wraps(fn)
    def kernel(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return kernel


KERNELS = {name: _ieee(fn) for name, fn in collect_kernels(__name__).items()}


def describe():
    return {"numpy": np.__version__}
