"""Optimizer classes (torch.optim-compatible names, defaults and update rules)."""

from . import lr_scheduler  # torch.optim.lr_scheduler's module name
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .lamb import LAMB
from .lion import Lion
from .base import Optimizer
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax",
           "Adadelta", "Rprop", "Lion",
           "LAMB", "lr_scheduler"]
