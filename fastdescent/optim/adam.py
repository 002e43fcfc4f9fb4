"""Adam and AdamW."""

from ..rules.adam import ADAM as _RULE
from ._precision import document as _document
from ._precision import options as _options
from .base import Optimizer

__all__ = ["Adam", "AdamW"]


@_document
class Adam(Optimizer):
    r"""Adam (Kingma & Ba), torch.optim.Adam's rule; ``AdamW`` is the decoupled-decay variant.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad
            p \leftarrow p(1-\eta\lambda) \text{ (AdamW) or } g \leftarrow g + \lambda p \text{ (Adam)}\\
        m &\leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2\\
        \hat v &= \max(\hat v, v) \text{ if amsgrad, else } v\\
        p &\leftarrow p - \frac{\eta}{1-\beta_1^t}\,
            \frac{m}{\sqrt{\hat v}/\sqrt{1-\beta_2^t} + \epsilon}

    with :math:`t` the step count (1 on the first step), bias corrections computed in float64.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
        Added after bias correction, outside the square root.
    weight_decay : float, default 0 (Adam) / 1e-2 (AdamW)
    amsgrad : bool, default False
        Keep ``max_exp_avg_sq``, the running max of the raw ``exp_avg_sq``.
    maximize : bool, default False
    decoupled_weight_decay : bool, default False (Adam) / True (AdamW)
        Decoupled weight decay, as torch 2.13's ``Adam(decoupled_weight_decay=True)``: the group
        follows AdamW's rule. A per-group option, so a torch ``AdamW`` state_dict (whose groups
        carry ``decoupled_weight_decay=True``) loaded into :class:`Adam` keeps AdamW's rule, as in
        torch.
    l1 : float, default 0
        Proximal L1 strength (group option): after the update,
        :math:`p \leftarrow \operatorname{sign}(p)\max(|p| - \eta\,\text{l1}, 0)`, which sets small
        weights exactly to zero.
    %(low_precision)s
    seed : int, default 0
        Keys the stochastic rounding.
    backend : str, optional
    skip_nonfinite : bool, default False

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad).

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> params = [np.zeros((256, 128), np.float32), np.zeros(128, np.float32)]
    >>> opt = fd.Adam(params, lr=1e-3)
    >>> _ = opt.step([np.ones_like(p) for p in params])
    >>> float(params[1][0])
    -0.0010000000474974513
    """

    _rule = _RULE
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False, l1=0.0,
                 master_weights=False, stochastic_rounding=False, state_dtype=None, seed=0,
                 backend=None, skip_nonfinite=False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay, l1=l1)
        defaults.update(_options(master_weights, stochastic_rounding, state_dtype, seed))
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): ``p <- p*(1 - lr*wd)`` before the update.

    Same parameters as :class:`Adam`, except ``weight_decay`` defaults to 1e-2. Its groups have
    ``decoupled_weight_decay=True``, and ``load_state_dict`` keeps it so (an Adam state_dict loaded
    into AdamW stays AdamW), as torch's AdamW does.
    """

    _decoupled = True
    _forced_on_load = {"decoupled_weight_decay": True}  # torch's AdamW.__setstate__ does the same

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, l1=0.0, master_weights=False,
                 stochastic_rounding=False, state_dtype=None, seed=0, backend=None,
                 skip_nonfinite=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True, l1=l1,
                         master_weights=master_weights, stochastic_rounding=stochastic_rounding,
                         state_dtype=state_dtype, seed=seed, backend=backend,
                         skip_nonfinite=skip_nonfinite)
