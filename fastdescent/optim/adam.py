"""Adam and AdamW."""

import math

from .base import Optimizer, _check_flag, check_hyper

__all__ = ["Adam", "AdamW", "adam_scalars", "check_adam"]


def check_adam(lr, betas, eps, weight_decay, amsgrad, maximize):
    check_hyper("lr", lr, lo=0.0)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    check_hyper("betas[0]", betas[0], lo=0.0, hi=1.0, hi_open=True)
    check_hyper("betas[1]", betas[1], lo=0.0, hi=1.0, hi_open=True)
    check_hyper("eps", eps, lo=0.0)
    check_hyper("weight_decay", weight_decay, lo=0.0)
    _check_flag("amsgrad", amsgrad)
    _check_flag("maximize", maximize)


def adam_scalars(lr, betas, eps, weight_decay, amsgrad, maximize, decoupled, step):
    """Per-step kernel scalars (float64) for Adam (decoupled=False) or AdamW (decoupled=True)."""
    beta1, beta2 = float(betas[0]), float(betas[1])
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    lr, wd = float(lr), float(weight_decay)
    return dict(
        beta1=beta1, beta2=beta2, eps=float(eps),
        weight_decay=0.0 if decoupled else wd,
        decay=1.0 - lr * wd if decoupled else 1.0,
        step_size=lr / bc1,
        bias_correction2_sqrt=math.sqrt(bc2),
        amsgrad=int(bool(amsgrad)), maximize=int(bool(maximize)),
    )


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

    _kernel = "adam"
    _all_state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _core_state_names = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False, backend=None,
                 skip_nonfinite=False):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)

    def _check_group(self, g):
        check_adam(g["lr"], g["betas"], g["eps"], g["weight_decay"], g["amsgrad"], g["maximize"])
        _check_flag("decoupled_weight_decay", g["decoupled_weight_decay"])

    def _state_names(self, g):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if g["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def _scalars(self, g, step, fresh):
        return adam_scalars(g["lr"], g["betas"], g["eps"], g["weight_decay"], g["amsgrad"],
                            g["maximize"], g["decoupled_weight_decay"], step)


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): ``p <- p*(1 - lr*wd)`` before the update.

    Same parameters as :class:`Adam`, except ``weight_decay`` defaults to 1e-2. Its groups have
    ``decoupled_weight_decay=True``, and ``load_state_dict`` keeps it so (an Adam state_dict loaded
    into AdamW stays AdamW), as torch's AdamW does.
    """

    _decoupled = True
    _forced_on_load = {"decoupled_weight_decay": True}  # torch's AdamW.__setstate__ does the same

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, backend=None, skip_nonfinite=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True,
                         backend=backend, skip_nonfinite=skip_nonfinite)
