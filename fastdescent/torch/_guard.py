"""One-call checks of many tensors' metadata, for the step's fast path.

A step that reuses its cached plan must know that every parameter and gradient still has the
metadata the plan was checked with: its Python type, dispatch keys (device, sparse or strided layout,
the negative, conjugate and zero-tensor bits, inference tensors), dtype, ``requires_grad``, sizes and
strides. Read from Python that is about six attribute reads per tensor (~50 ns each). torch's
``torch._C._dynamo.guards.TensorGuards`` (the guard dynamo used for graph inputs) records exactly
these fields of a list of tensors and checks a new list against them in one C++ call (~60 ns a
tensor). It is private to torch: :func:`tensor_guard` uses it only after checking on probe tensors
that it accepts a tensor of the same metadata and refuses each kind of difference the step relies on
(and it returns None, so the caller takes the per-attribute path, where it is missing, its signature
changed, or a probe disagrees). A guard keeps no reference to the tensors it was made from.

Data addresses are not part of it (they are read per tensor: ``Tensor.data_ptr``).
"""

from __future__ import annotations

import functools

import torch

__all__ = ["tensor_guard", "available"]


def _make(cls, tensors):
    return cls(*tensors, dynamic_dims_sizes=[list(t.shape) for t in tensors],
               dynamic_dims_strides=[list(t.stride()) for t in tensors])


def _probe_ok(cls):
    """True if ``cls`` made from probe tensors accepts tensors of the same metadata and refuses
    every kind of difference the fast path needs it to see."""
    a = torch.ones(3, 4)
    t = torch.ones(4, 3).t()  # (3, 4) with strides (1, 3)
    d = torch.ones(5, dtype=torch.float64)
    p = torch.nn.Parameter(torch.ones(2, 2))
    e = torch.ones(0)
    g = _make(cls, [a, t, d, p, e])

    def ok(x0=None, x1=None, x2=None, x3=None, x4=None):
        args = [torch.zeros(3, 4) if x0 is None else x0,
                torch.zeros(4, 3).t() if x1 is None else x1,
                torch.zeros(5, dtype=torch.float64) if x2 is None else x2,
                torch.nn.Parameter(torch.zeros(2, 2)) if x3 is None else x3,
                torch.zeros(0) if x4 is None else x4]
        return g.check(*args)

    class _Sub(torch.Tensor):
        pass

    with torch.inference_mode():
        inf = torch.zeros(3, 4)
    if not ok():
        return False
    refused = [
        torch.zeros(4, 3),  # same number of elements, other shape
        torch.zeros(3, 5)[:, :4],  # same shape, other strides
        torch.zeros(3, 4, dtype=torch.float64),
        torch._neg_view(torch.zeros(3, 4)),
        torch._efficientzerotensor((3, 4)),
        torch.zeros(3, 4).to_sparse(),
        torch.empty(3, 4, device="meta"),
        torch.zeros(3, 4).requires_grad_(),
        torch.nn.Parameter(torch.zeros(3, 4)),
        torch.zeros(3, 4).as_subclass(_Sub),
        inf,
    ]
    if any(ok(x) for x in refused):
        return False
    if ok(x1=torch.zeros(3, 4)) or ok(x3=torch.zeros(2, 2)) or ok(x4=torch.zeros(1)):
        return False
    return not g.check(None, t, d, p, e)


@functools.cache  # decided once per process (a concurrent first call may probe twice: harmless)
def _get():
    """torch's TensorGuards if it passes the probes, else None."""
    try:
        from torch._C._dynamo.guards import TensorGuards

        if _probe_ok(TensorGuards):
            return TensorGuards
    except Exception:  # noqa: BLE001 - any doubt: the per-attribute path
        pass
    return None


def available():
    """True if one-call guards are usable with this torch."""
    return _get() is not None


def tensor_guard(tensors):
    """A function ``check(*tensors) -> bool``: True if each argument has the Python type, dispatch
    keys, dtype, ``requires_grad``, sizes and strides of the corresponding tensor of ``tensors`` now
    (None as an argument: False; another number of arguments: TypeError). None if unavailable."""
    cls = _get()
    if cls is None:
        return None
    try:
        return _make(cls, tensors).check
    except Exception:  # noqa: BLE001 - a tensor it cannot record: no fast path for this plan
        return None
