"""SGD with momentum, dampening, Nesterov momentum and coupled weight decay."""

from ..rules.sgd import SGD as _RULE
from .base import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum — torch.optim.SGD's rule.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad g \leftarrow g + \lambda p \text{ if } \lambda \ne 0\\
        b &\leftarrow g \text{ (first step)}, \quad b \leftarrow \mu b + (1-\tau) g \text{ (after)}\\
        g &\leftarrow g + \mu b \text{ if nesterov, else } g \leftarrow b \quad(\text{if } \mu \ne 0)\\
        p &\leftarrow p - \eta\, g

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 1e-3
        Learning rate :math:`\eta`.
    momentum : float, default 0
        Momentum factor :math:`\mu`; state ``momentum_buffer`` exists only when it is non-zero.
    dampening : float, default 0
        Dampening :math:`\tau` for momentum (not applied on the first step).
    weight_decay : float, default 0
        Coupled L2 penalty :math:`\lambda`.
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0 and dampening == 0).
    maximize : bool, default False
        Maximize the objective instead of minimizing.
    backend : str, optional
        See :class:`~fastdescent.optim.base.Optimizer`.
    skip_nonfinite : bool, default False
        Skip steps whose gradients hold a NaN/Inf.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.ones(3, np.float32)
    >>> opt = fd.SGD([w], lr=0.1, momentum=0.9, nesterov=True)
    >>> _ = opt.step([np.ones(3, np.float32)])
    >>> w
    array([0.81, 0.81, 0.81], dtype=float32)
    """

    _rule = _RULE
    _step_in_state = False  # torch's SGD state has no step; the momentum buffer says it all

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, backend=None, skip_nonfinite=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
