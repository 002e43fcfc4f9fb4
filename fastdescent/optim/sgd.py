"""SGD with momentum, dampening, Nesterov momentum, coupled weight decay and gradient noise."""

from ..rules.sgd import SGD as _RULE
from ._precision import document as _document
from ._precision import options as _options
from .base import Optimizer

__all__ = ["SGD"]


@_document
class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum — torch.optim.SGD's rule.

    .. math::
        g &\leftarrow -g \text{ if maximize};\quad g \leftarrow g + \lambda p \text{ if } \lambda \ne 0\\
        b &\leftarrow g \text{ (first step)}, \quad b \leftarrow \mu b + (1-\tau) g \text{ (after)}\\
        g &\leftarrow g + \mu b \text{ if nesterov, else } g \leftarrow b \quad(\text{if } \mu \ne 0)\\
        p &\leftarrow p - \eta\, g\\
        p &\leftarrow p + \sigma_t z,\quad \sigma_t = \text{noise\_std}\; t^{-\text{noise\_decay}},
            \quad z \sim \mathcal N(0, 1) \quad(\text{if noise\_std} > 0)\\
        p &\leftarrow \operatorname{sign}(p)\max(|p| - \eta\,\text{l1}, 0) \quad(\text{if l1} > 0)

    with :math:`t` the parameter's step count (1 on the first step). The noise :math:`z` is a pure
    function of (``seed``, the parameter's index in the optimizer, :math:`t`, the element's index):
    a counter-based generator (Philox4x32-10, then Box-Muller in float64), so it needs no state, is
    the same for any thread count or chunking, and continues identically after a state_dict round
    trip (which keeps :math:`t`); backends agree up to the last bits of their log/sin/cos. With
    ``noise_std=0`` no noise pass runs: exactly torch's SGD.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
        Parameters (or param groups) updated in place.
    lr : float, default 1e-3
        Learning rate :math:`\eta`.
    momentum : float, default 0
        Momentum factor :math:`\mu`; state ``momentum_buffer`` exists only when it is non-zero.
    dampening : float, default 0
        Dampening :math:`\tau` for momentum (not applied on the first step).
    weight_decay : float, default 0
        Coupled L2 penalty :math:`\lambda`.
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0 and dampening == 0).
    maximize : bool, default False
        Maximize the objective instead of minimizing.
    noise_std : float, default 0
        Standard deviation of the gradient noise at step 1 (Neelakantan et al. 2015's annealed
        Gaussian noise; 0 turns it off).
    noise_decay : float, default 0
        Decay exponent: :math:`\sigma_t = \text{noise\_std}\, t^{-\text{noise\_decay}}` (0.55 in
        the paper).
    seed : int, default 0
        Key of the noise generator, in [0, 2**63). Two optimizers with the same seed over the same
        parameter list draw the same noise; parameters and steps draw independent values.
    l1 : float, default 0
        Proximal L1 strength (group option): after the step,
        :math:`p \leftarrow \operatorname{sign}(p)\max(|p| - \eta\,\text{l1}, 0)`, which sets
        small weights exactly to zero (ISTA for a full-batch least-squares loss, i.e. the Lasso).
    %(low_precision)s
    backend : str, optional
        See :class:`~fastdescent.optim.base.Optimizer`.
    skip_nonfinite : bool, default False
        Skip steps whose gradients hold a NaN/Inf.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.ones(3, np.float32)
    >>> opt = fd.SGD([w], lr=0.1, momentum=0.9, nesterov=True)
    >>> _ = opt.step([np.ones(3, np.float32)])
    >>> w
    array([0.81, 0.81, 0.81], dtype=float32)
    >>> w = np.array([0.5, -0.05, 2.0])
    >>> _ = fd.SGD([w], lr=0.1, l1=1.0).step([np.zeros(3)])  # threshold lr*l1 = 0.1
    >>> w
    array([0.4, 0. , 1.9])
    """

    _rule = _RULE
    _step_in_state = False  # torch's SGD state has no step; the momentum buffer says it all

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, noise_std=0.0, noise_decay=0.0, seed=0, l1=0.0,
                 master_weights=False, stochastic_rounding=False, state_dtype=None,
                 backend=None, skip_nonfinite=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, noise_std=noise_std,
                        noise_decay=noise_decay, seed=seed, l1=l1)
        defaults.update(_options(master_weights, stochastic_rounding, state_dtype, seed))
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
