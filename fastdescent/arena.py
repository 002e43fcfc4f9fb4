"""A flat parameter buffer: parameters and gradients as views of two contiguous blocks.

An optimizer built on an arena (or on its ``params``) sees adjacent views and coalesces each dtype
bucket into one flat tensor, so a whole model's update is a single pass over memory with no
per-tensor work at all.
"""

from __future__ import annotations

import numpy as np

from .precision import BF16, F16, code_of_dtype

__all__ = ["ParamArena"]


class ParamArena:
    """Hands out parameter and gradient views backed by one contiguous block each.

    Parameters
    ----------
    shapes : sequence of tuple
        Shape of each parameter.
    dtype : numpy dtype, default float32
        float32 or float64, or bfloat16 (``ml_dtypes.bfloat16``) / float16: low-precision parameters,
        whose gradient block is float32 (the optimizers of ``docs/low-precision.md`` take them).

    Attributes
    ----------
    flat_params, flat_grads : ndarray
        The two 1-D blocks.
    params, grads : list of ndarray
        Views of the blocks, one per shape, in order.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> arena = fd.ParamArena([(3, 2), (2,)])
    >>> arena.params[0][...] = 1.0
    >>> opt = fd.SGD(arena, lr=0.5)
    >>> arena.grads[0][...] = 1.0
    >>> _ = opt.step()            # uses arena.grads
    >>> float(arena.flat_params[0])
    0.5
    """

    def __init__(self, shapes, dtype=np.float32):
        dtype = np.dtype(dtype)
        low = code_of_dtype(dtype) in (BF16, F16)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)) and not low:
            raise TypeError(f"dtype must be float32, float64, bfloat16 or float16, got {dtype}")
        self.shapes = [(int(s),) if isinstance(s, (int, np.integer)) else tuple(int(d) for d in s)
                       for s in shapes]
        if not self.shapes:
            raise ValueError("shapes: an arena needs at least one parameter shape")
        for i, s in enumerate(self.shapes):
            if any(d < 0 for d in s):
                raise ValueError(f"shapes[{i}] has a negative dimension: {s}")
        self.dtype = dtype
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.flat_params = np.zeros(total, dtype)
        self.flat_grads = np.zeros(total, np.float32 if low else dtype)
        self.params = self._views(self.flat_params)
        self.grads = self._views(self.flat_grads)

    def _views(self, flat):
        return [flat[self.offsets[i]:self.offsets[i + 1]].reshape(s) for i, s in enumerate(self.shapes)]

    @classmethod
    def from_arrays(cls, arrays, dtype=None):
        """An arena holding copies of ``arrays`` (use ``arena.params`` from then on)."""
        arrays = [np.asarray(a) for a in arrays]
        arena = cls([a.shape for a in arrays], dtype or arrays[0].dtype)
        for dst, src in zip(arena.params, arrays):
            dst[...] = src
        return arena

    def zero_grad(self):
        """Set every gradient to zero (one memset)."""
        self.flat_grads.fill(0)

    def __len__(self):
        return len(self.shapes)

    @property
    def size(self):
        return int(self.flat_params.size)

    def __repr__(self):
        return f"ParamArena({len(self)} tensors, {self.size} elements, {self.dtype})"
