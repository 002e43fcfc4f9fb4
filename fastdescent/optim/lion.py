"""Lion."""

from ..rules.lion import LION as _RULE
from .base import Optimizer

__all__ = ["Lion"]


class Lion(Optimizer):
    r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), optax.lion's rule.

    torch.optim has no Lion; the rule is docs/update-rules.md's:

    .. math::
        g &\leftarrow -g \text{ if maximize}\\
        c &= \beta_1 m + (1-\beta_1) g\\
        p &\leftarrow p\,(1 - \eta\lambda) \quad\text{(decoupled weight decay, as AdamW)}\\
        p &\leftarrow p - \eta\,\operatorname{sign}(c)
            \quad (\operatorname{sign}(0) = 0,\ \operatorname{sign}(\mathrm{NaN}) = \mathrm{NaN})\\
        m &\leftarrow \beta_2 m + (1-\beta_2) g

    Every parameter moves by exactly :math:`\pm\eta` per step (before decay), so Lion wants a
    learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger. One state buffer
    (AdamW keeps two): 20 bytes of memory traffic per float32 parameter per step.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 1e-4
    betas : (float, float), default (0.9, 0.99)
        ``beta1`` interpolates the update direction, ``beta2`` the momentum kept as state.
    weight_decay : float, default 0
        Decoupled: ``p <- p*(1 - lr*weight_decay)`` before the signed step.
    maximize : bool, default False
    backend : str, optional
    skip_nonfinite : bool, default False
    l1 : float, default 0
        Group option of the proximal L1 step (carried in the param groups).

    State per parameter: ``step``, ``exp_avg``.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.ones(3)
    >>> opt = fd.Lion([w], lr=0.1)
    >>> _ = opt.step([np.array([2.0, -0.5, 0.0])])
    >>> w
    array([0.9, 1.1, 1. ])
    """

    _rule = _RULE

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False,
                 backend=None, skip_nonfinite=False, l1=0.0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                        weight_decay=weight_decay, maximize=maximize, l1=l1)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
