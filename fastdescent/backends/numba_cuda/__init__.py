"""The ``cuda`` backend: ``@cuda.jit`` kernels (Numba) over device arrays.

Parameters, gradients and state are device arrays: anything exposing ``__cuda_array_interface__``
(Numba device arrays, CuPy arrays, torch CUDA tensors), updated in place with no host copy. Optimizer
state is allocated on the device through the hooks :func:`zeros`, :func:`to_host`, :func:`from_host`,
:func:`copy_from_host`, :func:`copy_` and :func:`flat_view` that :class:`fastdescent.optim.base.Optimizer`
calls.

Every multi-tensor row is one launch per table whatever the number of tensors (device-side pointer
tables, see :mod:`._device`): one kernel per operation, walking the table's chunk plan, a coalesced
bucket being a plan of one tensor. Without a GPU, the same kernels run in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported); the backend is available only when
``numba.cuda.is_available()`` (true in the simulator).
"""

from .. import collect_kernels
from ._device import (  # noqa: F401  (backend hooks used by the optimizer layer)
    SIM, DeviceTable, config, copy_, copy_from_host, flat_view, from_host, set_launch_config, to_host, zeros,
)
from ._device import describe as _describe

NAME = "cuda"
DEVICE = True
Table = DeviceTable

KERNELS = collect_kernels(__name__)


def check_available():
    """Raise ImportError unless a CUDA GPU (or Numba's CUDA simulator) can run the kernels."""
    from numba import cuda

    if not cuda.is_available():
        raise ImportError(
            "numba.cuda found no usable CUDA GPU/driver; set NUMBA_ENABLE_CUDASIM=1 (before numba "
            "is imported) to run the cuda backend in Numba's CUDA simulator"
        )
    if not SIM:
        from numba.cuda.cudadrv import nvvm

        if not nvvm.is_available():
            raise ImportError(
                "a CUDA GPU is present but NVVM (from a CUDA toolkit) was not found, so numba.cuda "
                "cannot compile kernels; install the toolkit (or the numba-cuda package with its "
                "cu12/cu13 extra) or point CUDA_HOME at one"
            )


def describe():
    return _describe()
