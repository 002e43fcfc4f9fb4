"""RMSprop (plain or centered, with optional momentum)."""

from .base import Optimizer, _check_flag, check_hyper

__all__ = ["RMSprop", "rmsprop_scalars", "check_rmsprop"]


def check_rmsprop(lr, alpha, eps, weight_decay, momentum, centered, maximize):
    check_hyper("lr", lr, lo=0.0)
    check_hyper("alpha", alpha, lo=0.0)
    check_hyper("eps", eps, lo=0.0)
    check_hyper("weight_decay", weight_decay, lo=0.0)
    check_hyper("momentum", momentum, lo=0.0)
    _check_flag("centered", centered)
    _check_flag("maximize", maximize)


def rmsprop_scalars(lr, alpha, eps, weight_decay, momentum, centered, maximize):
    return dict(lr=float(lr), alpha=float(alpha), eps=float(eps), weight_decay=float(weight_decay),
                momentum=float(momentum), centered=int(bool(centered)), maximize=int(bool(maximize)))


class RMSprop(Optimizer):
    r"""RMSprop, torch.optim.RMSprop's rule.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad g \leftarrow g + \lambda p\\
        v &\leftarrow \alpha v + (1-\alpha) g^2\\
        d &= \sqrt{v - a^2} + \epsilon \text{ with } a \leftarrow \alpha a + (1-\alpha) g
            \text{ if centered, else } \sqrt{v} + \epsilon\\
        b &\leftarrow \mu b + g/d,\ p \leftarrow p - \eta b \text{ if } \mu > 0,
            \text{ else } p \leftarrow p - \eta\, g/d

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
    lr : float, default 1e-2
    alpha : float, default 0.99
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False
    maximize : bool, default False
    backend : str, optional
    skip_nonfinite : bool, default False

    State: ``step``, ``square_avg``, ``grad_avg`` (centered), ``momentum_buffer`` (momentum > 0).

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.ones(2)
    >>> opt = fd.RMSprop([w], lr=0.01)
    >>> _ = opt.step([np.ones(2)])
    >>> w.round(4)
    array([0.9, 0.9])
    """

    _kernel = "rmsprop"
    _all_state_names = ("square_avg", "grad_avg", "momentum_buffer")
    _core_state_names = ("square_avg",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False, backend=None, skip_nonfinite=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)

    def _check_group(self, g):
        check_rmsprop(g["lr"], g["alpha"], g["eps"], g["weight_decay"], g["momentum"], g["centered"],
                      g["maximize"])

    def _state_names(self, g):
        names = ("square_avg",)
        if g["centered"]:
            names += ("grad_avg",)
        if g["momentum"] > 0:
            names += ("momentum_buffer",)
        return names

    def _scalars(self, g, step, fresh):
        return rmsprop_scalars(g["lr"], g["alpha"], g["eps"], g["weight_decay"], g["momentum"],
                               g["centered"], g["maximize"])
