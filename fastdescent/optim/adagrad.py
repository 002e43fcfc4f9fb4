"""Adagrad."""

from ..rules.adagrad import ADAGRAD as _RULE
from .base import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad, torch.optim.Adagrad's rule.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad g \leftarrow g + \lambda p\\
        \eta_t &= \eta / (1 + (t-1)\,\text{lr\_decay})\\
        s &\leftarrow s + g^2 \quad (s_0 = \text{initial\_accumulator\_value})\\
        p &\leftarrow p - \eta_t\, g / (\sqrt{s} + \epsilon)

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
    lr : float, default 1e-2
    lr_decay : float, default 0
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10
    maximize : bool, default False
    l1 : float, default 0
        Proximal L1 strength (group option): after the update,
        :math:`p \leftarrow \operatorname{sign}(p)\max(|p| - \eta_t\,\text{l1}, 0)`, which sets small
        weights exactly to zero.
    backend : str, optional
    skip_nonfinite : bool, default False

    State: ``step``, ``sum``.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.ones(2)
    >>> opt = fd.Adagrad([w], lr=0.1)
    >>> _ = opt.step([np.ones(2)])
    >>> w.round(4)
    array([0.9, 0.9])
    """

    _rule = _RULE

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, maximize=False, l1=0.0, backend=None, skip_nonfinite=False):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize,
                        l1=l1)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
