"""Adamax."""

from ..rules.adamax import ADAMAX as _RULE
from .base import Optimizer

__all__ = ["Adamax"]


class Adamax(Optimizer):
    r"""Adamax (Kingma & Ba, the infinity-norm variant of Adam), torch.optim.Adamax's rule.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad g \leftarrow g + \lambda p\\
        m &\leftarrow \beta_1 m + (1-\beta_1) g
            \quad\text{(as torch's } m.\mathrm{lerp\_}(g, 1-\beta_1)\text{)}\\
        u &\leftarrow \max(\beta_2 u,\ |g| + \epsilon)\\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\,\frac{m}{u}

    with :math:`t` the step count (1 on the first step) and :math:`\eta/(1-\beta_1^t)` computed in
    float64. The max propagates NaN (``torch.maximum``): a NaN gradient makes ``exp_inf`` NaN for
    good, as in torch; ``skip_nonfinite=True`` skips such steps instead.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 2e-3
    betas : (float, float), default (0.9, 0.999)
        Coefficients of the running average of the gradient and of the decay of the infinity norm,
        each in [0, 1).
    eps : float, default 1e-8
        Added to ``|g|`` inside the max.
    weight_decay : float, default 0
        Coupled (L2) weight decay: ``g <- g + weight_decay*p``.
    maximize : bool, default False
    l1 : float, default 0
        Proximal L1 group option (see docs/update-rules.md); carried in the param groups.
    backend : str, optional
    skip_nonfinite : bool, default False

    State per parameter: ``step``, ``exp_avg``, ``exp_inf`` (torch's names: state_dicts load both
    ways).

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.ones(2, np.float32)
    >>> opt = fd.Adamax([w], lr=0.1)
    >>> _ = opt.step([np.array([1.0, -2.0], np.float32)])
    >>> w
    array([0.9, 1.1], dtype=float32)
    """

    _rule = _RULE

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 maximize=False, backend=None, skip_nonfinite=False, l1=0.0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, maximize=maximize, l1=l1)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
