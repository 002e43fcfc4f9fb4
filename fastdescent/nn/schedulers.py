"""Learning-rate schedulers: moved to :mod:`fastdescent.optim.lr_scheduler` (torch's module name).

This module re-exports them so ``fastdescent.nn.schedulers`` and ``fastdescent.nn.StepLR`` etc.
keep working.

>>> import fastdescent.nn.schedulers as old, fastdescent.optim.lr_scheduler as new
>>> old.StepLR is new.StepLR
True
"""

from ..optim.lr_scheduler import (  # noqa: F401  (re-exports)
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiplicativeLR,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
    __all__,
    _load_scheduler_state,
)
