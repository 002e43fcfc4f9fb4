"""Optimizer classes (torch.optim-compatible names, defaults and update rules)."""

from . import lr_scheduler  # torch.optim.lr_scheduler's module name
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .base import Optimizer
from .lamb import LAMB
from .lion import Lion
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Lion", "LAMB", "lr_scheduler"]
