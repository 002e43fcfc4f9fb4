"""Rprop (resilient backpropagation)."""

from ..rules.rprop import RPROP as _RULE
from .base import Optimizer

__all__ = ["Rprop"]


class Rprop(Optimizer):
    r"""Rprop, torch.optim.Rprop's rule (resilient backpropagation, Riedmiller & Braun 1993).

    Each element has its own step size, grown while the gradient keeps its sign and shrunk when it
    flips; only the gradient's sign moves the parameter:

    .. math::
        g &\leftarrow -g \text{ if maximize}\\
        f &= \eta_+ \text{ if } g\,g_{prev} > 0,\quad \eta_- \text{ if } g\,g_{prev} < 0,
            \quad 1 \text{ otherwise}\\
        \delta &\leftarrow \min(\max(\delta f, \Gamma_{min}), \Gamma_{max})\\
        g &\leftarrow 0 \text{ where } f = \eta_-\\
        p &\leftarrow p - \operatorname{sign}(g)\,\delta,\qquad g_{prev} \leftarrow g

    with :math:`(\eta_-, \eta_+)` = ``etas``, :math:`(\Gamma_{min}, \Gamma_{max})` = ``step_sizes``,
    :math:`\delta` (``step_size``) starting at ``lr`` and :math:`g_{prev}` (``prev``) at 0 when a
    parameter's state is created (its first step). As torch: the products and comparisons are done
    in the parameters' dtype, and ``sign(0) = sign(NaN) = 0``, so a NaN gradient leaves its
    parameter and step size unchanged and is kept in ``prev`` (the next step then keeps the step
    size too). There is no weight decay.

    Parameters
    ----------
    params : list of arrays, list of dicts, or ParamArena
    lr : float, default 1e-2
        The initial step size (used only when a parameter's state is created).
    etas : (float, float), default (0.5, 1.2)
        (etaminus, etaplus), with 0 < etaminus < 1 < etaplus.
    step_sizes : (float, float), default (1e-6, 50)
        (step_size_min, step_size_max), with 0 <= step_size_min <= step_size_max.
    maximize : bool, default False
    l1 : float, default 0
        Proximal L1 strength (a group option of every optimizer).
    backend : str, optional
    skip_nonfinite : bool, default False

    State: ``step``, ``prev``, ``step_size``.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> w = np.ones(2)
    >>> opt = fd.Rprop([w], lr=0.1)
    >>> _ = opt.step([np.array([1.0, -1.0])])
    >>> _ = opt.step([np.array([1.0, 1.0])])
    >>> w.round(4)  # w[0]: two steps, 0.1 then 0.12; w[1]: the sign flipped, no move
    array([0.78, 1.1 ])
    >>> opt.state[0]["step_size"].round(4)
    array([0.12, 0.05])
    """

    _rule = _RULE

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, maximize=False,
                 l1=0.0, backend=None, skip_nonfinite=False):
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize, l1=l1)
        super().__init__(params, defaults, backend=backend, skip_nonfinite=skip_nonfinite)
