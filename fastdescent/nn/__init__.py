"""Dense networks on fastdescent's kernels: layers, losses, models, a training loop, lr schedulers.

>>> import numpy as np, fastdescent as fd
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(256, 8)).astype(np.float32); y = (X[:, :2].sum(1) > 0).astype(int)
>>> model = fd.nn.MLP([8, 32, 2], activation="relu", seed=0)      # float32 by default
>>> opt = fd.Adam(model.parameters(), lr=1e-2)                     # one flat update over the arena
>>> hist = fd.nn.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=20, batch_size=32,
...                  seed=0, progress=False)
>>> model.predict(X[:3]).shape                                     # logits
(3, 2)
>>> bool(model.score(X, y) > 0.9)
True

Everything here imports only NumPy; backends load when a model is built, tqdm when a progress bar
is shown and matplotlib in :meth:`History.plot`.
"""

from .layers import GELU, Activation, Layer, Linear, ReLU, Sigmoid, Tanh
from .losses import cross_entropy, get_loss, mse
from .model import MLP, Sequential
from .schedulers import (CosineAnnealingLR, ExponentialLR, LinearLR, LRScheduler, ReduceLROnPlateau,
                         StepLR)
from .training import History, fit

__all__ = [
    "Layer", "Linear", "Activation", "ReLU", "Tanh", "Sigmoid", "GELU", "Sequential", "MLP",
    "mse", "cross_entropy", "get_loss", "fit", "History",
    "LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "ReduceLROnPlateau",
]
