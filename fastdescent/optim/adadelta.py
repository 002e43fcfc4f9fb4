"""Adadelta."""

from ..rules.adadelta import ADADELTA as _RULE
from .base import Optimizer

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler 2012), torch.optim.Adadelta's rule.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad g \leftarrow g + \lambda p\\
        v &\leftarrow \rho v + (1-\rho) g^2\\
        \Delta &= \frac{\sqrt{a + \epsilon}}{\sqrt{v + \epsilon}}\, g\\
        a &\leftarrow \rho a + (1-\rho) \Delta^2\\
        p &\leftarrow p - \eta\, \Delta

    (``a`` in :math:`\Delta` is the value before this step's update). No bias correction and no
    per-step schedule: :math:`1-\rho` is computed once per step in float64.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 1.0
        Scales the delta before it is applied to the parameters.
    rho : float, default 0.9
        Decay of both running averages, in [0, 1] (``rho=1`` keeps them at zero, as in torch).
    eps : float, default 1e-6
        Added inside both square roots.
    weight_decay : float, default 0
        Coupled (L2) weight decay: ``g <- g + weight_decay*p``.
    maximize : bool, default False
    l1 : float, default 0
        Proximal L1 group option (see docs/update-rules.md); carried in the param groups.
    backend : str, optional
    skip_nonfinite : bool, default False

    State per parameter: ``step``, ``square_avg``, ``acc_delta`` (torch's names: state_dicts load
    both ways).

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.ones(2)
    >>> opt = fd.Adadelta([w], lr=1.0, rho=0.9, eps=1e-6)
    >>> _ = opt.step([np.array([1.0, -1.0])])
    >>> w.round(6)  # first step: sqrt(eps) / sqrt(0.1 + eps) = 0.003162...
    array([0.996838, 1.003162])
    """

    _rule = _RULE

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False,
                 backend=None, skip_nonfinite=False, l1=0.0):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, l1=l1)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
