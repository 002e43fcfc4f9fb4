"""Layers: ``Linear`` and the elementwise activations ``ReLU``, ``Tanh``, ``Sigmoid``, ``GELU``.

A layer only *describes* itself (its parameter shapes, how to initialise them, which kernels run it);
the :class:`~fastdescent.nn.model.Sequential` that holds it allocates every parameter of the model in
one :class:`~fastdescent.arena.ParamArena` and binds the layer's ``weight``/``bias`` to views of it.

Layout: a ``Linear`` weight is stored ``(in_features, out_features)`` -- the kernels' ``w (Bw, K, N)``
with ``Bw == 1`` -- i.e. the transpose of ``torch.nn.Linear.weight``. ``Sequential.state_dict`` and
``load_state_dict`` use this layout; to copy weights from torch use ``W.T``.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .._contract import ACT_KINDS

__all__ = ["Layer", "Linear", "Activation", "ReLU", "Tanh", "Sigmoid", "GELU", "activation", "ACT_KINDS"]

#: the ``kind`` scalar of the ``act_fwd``/``act_bwd`` kernels

#: accepted values of ``Linear(init=...)``
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
_INIT_ALIASES = {"torch": "default", "glorot_uniform": "xavier_uniform", "glorot_normal": "xavier_normal",
                 "he_uniform": "kaiming_uniform", "he_normal": "kaiming_normal"}


def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}") from None
    if v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v}")
    return v


class Layer:
    """Base class. Subclasses define :meth:`param_shapes`, :meth:`out_features` and :meth:`init`."""

    #: number of input features this layer requires (None: any, shape preserving)
    in_features = None

    def param_shapes(self):
        """Shapes of this layer's parameters, in order (may be empty)."""
        return []

    def out_features(self, in_features):
        """Number of output features given ``in_features`` inputs."""
        return in_features

    def init(self, rng, views):
        """Fill this layer's parameter ``views`` (arena views) from the numpy Generator ``rng``."""

    def _bind(self, params, grads):
        """Called by the model: the layer's parameter and gradient views of the arena."""
        self._params = list(params)
        self._grads = list(grads)

    def parameters(self):
        """This layer's parameters (views of the model's arena; empty before it joins a model)."""
        return list(getattr(self, "_params", []))

    def __repr__(self):
        return f"{type(self).__name__}()"


class Linear(Layer):
    r"""Dense layer :math:`y = x W + b` with ``W`` of shape ``(in_features, out_features)``.

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes.
    bias : bool, default True
        Learn an additive bias.
    init : str, default "default"
        ``"default"`` is torch.nn.Linear's default: ``kaiming_uniform_(a=sqrt(5))`` for the weight,
        i.e. :math:`U(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})`, and the same bound for the
        bias. ``"xavier_uniform"`` (Glorot, :math:`\pm\sqrt{6/(\text{fan\_in}+\text{fan\_out})}`),
        ``"xavier_normal"``, ``"kaiming_uniform"`` (He, :math:`\pm\sqrt{6/\text{fan\_in}}`) and
        ``"kaiming_normal"`` (:math:`\sigma=\sqrt{2/\text{fan\_in}}`) set the bias to zero.
        Aliases: ``glorot_*``, ``he_*``, ``torch``.

    Attributes
    ----------
    weight : ndarray (in_features, out_features)
        A view of the model's parameter arena (the transpose of torch's ``Linear.weight``).
    bias : ndarray (out_features,) or None
    weight_grad, bias_grad : ndarray or None
        The matching views of the arena's gradient block.

    Random numbers are drawn in float64 from the model's ``numpy.random.Generator`` and rounded to
    the model's dtype, so float32 and float64 models built with one seed hold the same weights.
    """

    def __init__(self, in_features, out_features, bias=True, init="default"):
        self.in_features = _positive_int("in_features", in_features)
        self.n_out = _positive_int("out_features", out_features)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool, got {bias!r}")
        self.has_bias = bool(bias)
        if not isinstance(init, str):
            raise TypeError(f"init must be a str, one of {INITS}, got {init!r}")
        init = _INIT_ALIASES.get(init, init)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS} (or an alias {sorted(_INIT_ALIASES)}), "
                             f"got {init!r}")
        self.init_scheme = init

    def param_shapes(self):
        shapes = [(self.in_features, self.n_out)]
        if self.has_bias:
            shapes.append((self.n_out,))
        return shapes

    def out_features(self, in_features=None):
        return self.n_out

    def init(self, rng, views):
        fan_in, fan_out = self.in_features, self.n_out
        w = views[0]
        s = self.init_scheme
        if s == "default":
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)): gain*sqrt(3/fan_in)
            w[...] = rng.uniform(-bound, bound, size=w.shape)
            if self.has_bias:
                views[1][...] = rng.uniform(-bound, bound, size=views[1].shape)
            return
        if s == "xavier_uniform":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w[...] = rng.uniform(-bound, bound, size=w.shape)
        elif s == "xavier_normal":
            w[...] = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=w.shape)
        elif s == "kaiming_uniform":
            bound = math.sqrt(6.0 / fan_in)
            w[...] = rng.uniform(-bound, bound, size=w.shape)
        else:  # kaiming_normal
            w[...] = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=w.shape)
        if self.has_bias:
            views[1][...] = 0

    @property
    def weight(self):
        return self._params[0] if hasattr(self, "_params") else None

    @property
    def bias(self):
        return self._params[1] if hasattr(self, "_params") and self.has_bias else None

    @property
    def weight_grad(self):
        return self._grads[0] if hasattr(self, "_grads") else None

    @property
    def bias_grad(self):
        return self._grads[1] if hasattr(self, "_grads") and self.has_bias else None

    def __repr__(self):
        extra = "" if self.has_bias else ", bias=False"
        if self.init_scheme != "default":
            extra += f", init={self.init_scheme!r}"
        return f"Linear({self.in_features}, {self.n_out}{extra})"


class Activation(Layer):
    """Elementwise activation run by the ``act_fwd``/``act_bwd`` kernels (shape preserving)."""

    name = None

    def __init__(self, name=None):
        name = name or self.name
        if name not in ACT_KINDS:
            raise ValueError(f"activation must be one of {sorted(ACT_KINDS)}, got {name!r}")
        self.name = name
        self.kind = ACT_KINDS[name]

    def __repr__(self):
        return f"{type(self).__name__}()" if type(self) is not Activation else f"Activation({self.name!r})"


class ReLU(Activation):
    """``max(x, 0)``."""
    name = "relu"


class Tanh(Activation):
    """``tanh(x)``."""
    name = "tanh"


class Sigmoid(Activation):
    """``1 / (1 + exp(-x))``."""
    name = "sigmoid"


class GELU(Activation):
    """Exact (erf-based) GELU, ``x * Phi(x)``, as torch.nn.GELU's default."""
    name = "gelu"


_BY_NAME = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "gelu": GELU}


def activation(spec):
    """An activation layer from a name (``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"gelu"``), a class
    or an instance."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, type) and issubclass(spec, Activation) and spec.name is not None:
        return spec()
    if isinstance(spec, str) and spec.lower() in _BY_NAME:
        return _BY_NAME[spec.lower()]()
    raise ValueError(f"activation must be one of {sorted(_BY_NAME)} (or an Activation layer), got {spec!r}")
