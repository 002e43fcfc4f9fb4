"""LAMB."""

from ..rules.lamb import LAMB as _RULE
from .base import Optimizer

__all__ = ["LAMB"]


class LAMB(Optimizer):
    r"""LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning"), optax.lamb's rule.

    torch.optim has no LAMB; the rule is docs/update-rules.md's:

    .. math::
        g &\leftarrow -g \text{ if maximize}\\
        m &\leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2\\
        \hat m &= m / (1-\beta_1^t),\quad \hat v = v / (1-\beta_2^t)
            \quad (\hat m = m,\ \hat v = v \text{ without bias correction})\\
        r &= \hat m / (\sqrt{\hat v} + \epsilon) + \lambda p\\
        \tau &= \lVert p\rVert_2 / \lVert r\rVert_2 \text{ if both norms are } > 0
            \text{, else } 1 \quad\text{(per tensor)}\\
        p &\leftarrow p - \eta\,\tau\, r

    The norms are taken per parameter tensor, in float64, inside the same multi-tensor kernel call
    that applies the update (deterministic for a given backend and thread count); ``lr * trust`` is
    computed in float64 and rounded once to the parameters' dtype. The bias corrections are applied
    as multipliers (:math:`1/(1-\beta^t)` in float64, rounded once), which keeps the update
    memory-bound and differs from dividing by about an ulp. Because the norms are per tensor,
    a :class:`~fastdescent.ParamArena` is never coalesced into one flat tensor here.

    Cost: a tensor's norms are needed before any of its elements moves, so each tensor takes two
    passes. A tensor small enough to sit in cache (within one chunk of the kernel's split) takes the
    second pass from cache, moving Adam's 28 bytes per float32 parameter from memory; a large one
    moves 40 (Adam's 28 plus a second read of p, m and v).

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-6
        Added after bias correction, outside the square root.
    weight_decay : float, default 0
        Decoupled, inside the trust-ratio-scaled direction: ``r += weight_decay * p``.
    bias_correction : bool, default True
    maximize : bool, default False
    backend : str, optional
    skip_nonfinite : bool, default False
    l1 : float, default 0
        Group option of the proximal L1 step (carried in the param groups).

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.array([3.0, 4.0])
    >>> opt = fd.LAMB([w], lr=0.1)
    >>> _ = opt.step([np.array([1.0, -1.0])])
    >>> w.round(6)          # r = (1, -1), ||w|| / ||r|| = 5 / sqrt(2)
    array([2.646447, 4.353553])
    """

    _rule = _RULE
    _coalesce = False  # per-tensor trust ratios

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 bias_correction=True, *, maximize=False, backend=None, skip_nonfinite=False,
                 l1=0.0):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                        weight_decay=weight_decay, bias_correction=bias_correction,
                        maximize=maximize, l1=l1)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
