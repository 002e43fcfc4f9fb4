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

Supported: CPU tensors of float32 and float64. Not yet: CUDA tensors, float16/bfloat16 and complex
parameters, sparse gradients, ``differentiable=True`` (each raises a clear error).
``foreach``/``fused``/``capturable`` are accepted and ignored.

Differences from torch.optim worth knowing:

- gradients are checked for what the kernels need (dense, CPU, the parameter's dtype, number of
  elements and layout; a gradient with other strides is copied for the step); a gradient aliasing
  its parameter or the optimizer state is not detected (torch does not check that either);
- NAdam's ``mu_product`` is carried in float64 between steps and stored in torch's scalar dtype
  (float32 by default): against torch's float32 product, trajectories agree to ~1e-8 relative;
- an option switched on between steps that needs a new buffer (``amsgrad``) gets a fresh one
  (torch raises a KeyError);
- like torch's optimizers, not thread-safe: one thread steps an optimizer at a time.

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
