"""SGD with momentum, dampening, Nesterov momentum and coupled weight decay."""

from .base import Optimizer, _check_flag, check_hyper

__all__ = ["SGD", "sgd_scalars", "check_sgd"]


def check_sgd(lr, momentum, dampening, weight_decay, nesterov, maximize):
    check_hyper("lr", lr, lo=0.0)
    check_hyper("momentum", momentum, lo=0.0)
    check_hyper("dampening", dampening)
    check_hyper("weight_decay", weight_decay, lo=0.0)
    _check_flag("nesterov", nesterov)
    _check_flag("maximize", maximize)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov=True requires momentum > 0 and dampening == 0 "
                         f"(got momentum={momentum!r}, dampening={dampening!r})")


def sgd_scalars(lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    return dict(lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                weight_decay=float(weight_decay), nesterov=int(bool(nesterov)),
                maximize=int(bool(maximize)), first_step=int(bool(first_step)))


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

    _kernel = "sgd"
    _all_state_names = ("momentum_buffer",)
    _step_in_state = False  # torch's SGD state has no step; the momentum buffer says it all

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, backend=None, skip_nonfinite=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)

    def _check_group(self, g):
        check_sgd(g["lr"], g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"], g["maximize"])

    def _state_names(self, g):
        return ("momentum_buffer",) if g["momentum"] != 0 else ()

    def _scalars(self, g, step, fresh):
        return sgd_scalars(g["lr"], g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"],
                           g["maximize"], fresh)
