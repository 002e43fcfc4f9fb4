"""fastdescent's optimizers as ``torch.optim.Optimizer`` subclasses (the optional extra
``fastdescent[torch]``).

>>> import torch, fastdescent.torch as fdt
>>> model = torch.nn.Linear(4, 2)
>>> opt = fdt.Adam(model.parameters(), lr=1e-3)          # was: torch.optim.Adam(...)
>>> model(torch.ones(3, 4)).sum().backward()
>>> opt.step()
>>> opt.zero_grad()

Every class (``SGD``, ``Adam``, ``AdamW``, ``RMSprop``, ``Adagrad``, ``NAdam``, ``RAdam``, ``Adamax``,
``Adadelta``, ``Rprop``; ``Lion`` and ``LAMB``) takes torch.optim's constructor signature and defaults
(Lion and LAMB: fastdescent's), keeps its state in torch's layout and names (``state_dict()``
interchanges with torch.optim's, both ways), and runs fastdescent's kernels on the tensors' own
memory: one kernel call per (param group, dtype) bucket. Schedulers (``torch.optim.lr_scheduler``),
hooks, closures, ``zero_grad`` and ``add_param_group`` work because the base class is torch's.

Supported: CPU tensors of float32 and float64; bfloat16 and float16 too in ``SGD``, ``Adam``,
``AdamW`` and ``RMSprop`` (fastdescent's mixed-precision step: bfloat16 state by default, as torch.optim
keeps, float32 state for float16; the keyword arguments ``master_weights``, ``stochastic_rounding``,
``state_dtype`` and ``seed``: ``docs/low-precision.md``). CUDA tensors (these dtypes and options too)
run on the ``cuda`` backend (Numba kernels on the tensors' memory, ordered with torch's current stream; a
step does not wait for the GPU), whatever ``backend`` names for CPU tensors unless it names a host
backend explicitly (then a CUDA tensor is refused); ``backend="cuda"`` takes CUDA tensors only (in
Numba's CUDA simulator, CPU tensors stand in for device memory: how the tests run it without a GPU).
Not yet: complex parameters, bfloat16/float16 in the other optimizers, sparse gradients,
``differentiable=True`` (each raises a clear error). ``foreach``/``fused``/``capturable`` are
accepted and ignored.

Differences from torch.optim worth knowing:

- gradients are checked for what the kernels need (dense, on the parameter's device, with its
  dtype, shape and layout; one with other strides, a lazily negated view or a zero tensor is
  copied for the step); a gradient that shares memory with a parameter or state tensor the step
  writes (``p.grad = p.data``) is copied too, so the step reads it as it was before the step
  (torch.optim's result there depends on its implementation and the order of the parameters;
  for ``p.grad = p.data`` both agree);
- a tensor listed twice (torch warns, and steps it twice) and parameters or state tensors that share
  memory (views of one tensor; one state tensor assigned to two parameters) are refused with a
  ``ValueError``: the kernels update every tensor of a step at once, on several threads;
- ``step`` counts edited in place must stay non-negative integers; a parameter or state tensor
  whose memory, shape or strides change in place between steps (``p.data = p.data[:2]``,
  ``state[p]['exp_avg'].resize_(...)``) is followed, or refused where its state no longer fits;
- a param group that lacks a key after ``load_state_dict`` takes this optimizer's constructor
  value (torch raises a KeyError at the step);
- a float32 step whose per-step scalar overflows float32 (an ``lr`` of 1e39) and non-finite
  hyperparameters are refused before anything is written (torch writes inf/NaN);
- NAdam's ``mu_product`` is carried in float64 between steps and stored in torch's scalar dtype
  (float32 by default): against torch's float32 product, trajectories agree to ~1e-8 relative;
- an option switched on between steps that needs a new buffer (``amsgrad``) gets a fresh one
  (torch raises a KeyError);
- like torch's optimizers, not thread-safe: one thread steps an optimizer at a time (two threads
  stepping two optimizers is fine); a forked child can step (the C backend resets its thread
  pool in the child; torch.optim's own step can hang there, on torch's);
- ``GradScaler`` skips the steps with inf/NaN gradients, as for torch.optim (``fused=True`` is
  ignored, so the step never takes the scaler's scale itself).

Importing ``fastdescent`` never imports torch; importing ``fastdescent.torch`` does.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastdescent.torch needs PyTorch: pip install 'fastdescent[torch]'") from exc

from ._classes import SPECS, make_class
from ._optimizer import Optimizer

__all__ = ["Optimizer", *SPECS]

SGD = make_class("SGD")
Adam = make_class("Adam")
AdamW = make_class("AdamW")
RMSprop = make_class("RMSprop")
Adagrad = make_class("Adagrad")
NAdam = make_class("NAdam")
RAdam = make_class("RAdam")
Adamax = make_class("Adamax")
Adadelta = make_class("Adadelta")
Rprop = make_class("Rprop")
Lion = make_class("Lion")
LAMB = make_class("LAMB")
