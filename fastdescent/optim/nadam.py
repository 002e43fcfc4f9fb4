"""NAdam (and NAdamW: ``decoupled_weight_decay=True``)."""

from ..rules.nadam import NADAM as _RULE
from .base import Optimizer

__all__ = ["NAdam"]


class NAdam(Optimizer):
    r"""NAdam (Dozat, Adam with Nesterov momentum), torch.optim.NAdam's rule.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad
            p \leftarrow p(1-\eta\lambda) \text{ (decoupled) or } g \leftarrow g + \lambda p\\
        \mu_t &= \beta_1\bigl(1 - \tfrac12\, 0.96^{t\psi}\bigr),\quad
            \mu_{t+1} = \beta_1\bigl(1 - \tfrac12\, 0.96^{(t+1)\psi}\bigr),\quad
            \Pi_t = \Pi_{t-1}\,\mu_t \;(\Pi_0 = 1)\\
        m &\leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2\\
        p &\leftarrow p - \eta\,\frac{1-\mu_t}{1-\Pi_t}\,\frac{g}{d}
            - \eta\,\frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,\frac{m}{d},\qquad
            d = \sqrt{v/(1-\beta_2^t)} + \epsilon

    with :math:`t` the step count (1 on the first step) and :math:`\psi` the momentum decay. Every
    per-step factor is computed in float64. :math:`\Pi_t` (``mu_product``) is state: a float per
    parameter, since it depends on the history of :math:`\beta_1` (a scheduler may change betas);
    ``state`` and ``state_dict()`` hold it next to ``step``, and a torch NAdam state_dict (where it
    is a 0-d tensor) loads and goes on along torch's trajectory. It is kept in float64; torch keeps
    it in its default dtype (float32 unless ``torch.set_default_dtype(torch.float64)``), so a float64
    run agrees with a default-dtype torch run to ~1e-8 relative only, and to float64 precision with a
    float64 default dtype.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 2e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
        Added after bias correction, outside the square root.
    weight_decay : float, default 0
    momentum_decay : float, default 4e-3
        :math:`\psi` above.
    decoupled_weight_decay : bool, default False
        Decoupled weight decay (NAdamW): ``p <- p*(1 - lr*wd)`` before the moments, as AdamW.
    maximize : bool, default False
    backend : str, optional
    skip_nonfinite : bool, default False
    l1 : float, default 0
        Proximal L1 strength (group option of the base class).

    State per parameter: ``step``, ``mu_product`` (a float), ``exp_avg``, ``exp_avg_sq``.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.zeros(3)
    >>> opt = fd.NAdam([w], lr=0.01)
    >>> _ = opt.step([np.ones(3)])
    >>> w.round(6)
    array([-0.010565, -0.010565, -0.010565])
    >>> round(opt.state[0]["mu_product"], 6)
    0.450073
    """

    _rule = _RULE

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, maximize=False, backend=None,
                 skip_nonfinite=False, l1=0.0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, l1=l1)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
