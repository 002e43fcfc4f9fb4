"""RMSprop (plain or centered, with optional momentum)."""

from ..rules.rmsprop import RMSPROP as _RULE
from ._precision import document as _document
from ._precision import options as _options
from .base import Optimizer

__all__ = ["RMSprop"]


@_document
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
    l1 : float, default 0
        Proximal L1 strength (group option): after the update,
        :math:`p \leftarrow \operatorname{sign}(p)\max(|p| - \eta\,\text{l1}, 0)`, which sets small
        weights exactly to zero.
    %(low_precision)s
    seed : int, default 0
        Keys the stochastic rounding.
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

    _rule = _RULE

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False, l1=0.0, master_weights=False,
                 stochastic_rounding=False, state_dtype=None, seed=0, backend=None,
                 skip_nonfinite=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize, l1=l1)
        defaults.update(_options(master_weights, stochastic_rounding, state_dtype, seed))
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
