"""RAdam (and RAdamW: ``decoupled_weight_decay=True``)."""

from ..rules.radam import RADAM as _RULE
from .base import Optimizer

__all__ = ["RAdam"]


class RAdam(Optimizer):
    r"""RAdam (Liu et al., rectified Adam), torch.optim.RAdam's rule.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad
            p \leftarrow p(1-\eta\lambda) \text{ (decoupled) or } g \leftarrow g + \lambda p\\
        m &\leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2\\
        \rho_\infty &= \frac{2}{1-\beta_2} - 1,\quad
            \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t}\\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\, m\, r_t\,
            \frac{\sqrt{1-\beta_2^t}}{\sqrt v + \epsilon},\quad
            r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
            \quad\text{if } \rho_t > 5\\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\, m \quad\text{otherwise}

    with :math:`t` the step count (1 on the first step); :math:`\rho_t`, :math:`r_t` and the choice
    are per-step float64 scalars. The moments are updated on every step. Note that :math:`\epsilon`
    is added to :math:`\sqrt v` before the bias correction (unlike Adam), as in torch.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    decoupled_weight_decay : bool, default False
        Decoupled weight decay (RAdamW): ``p <- p*(1 - lr*wd)`` before the moments, as AdamW.
    maximize : bool, default False
    backend : str, optional
    skip_nonfinite : bool, default False
    l1 : float, default 0
        Proximal L1 strength (group option of the base class).

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.zeros(2)
    >>> opt = fd.RAdam([w], lr=0.1)
    >>> _ = opt.step([np.ones(2)])   # rho_1 = 1: not rectified, p -= lr * m / (1 - beta1)
    >>> w
    array([-0.1, -0.1])
    """

    _rule = _RULE

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, *, maximize=False, backend=None,
                 skip_nonfinite=False, l1=0.0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                        maximize=maximize, l1=l1)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
