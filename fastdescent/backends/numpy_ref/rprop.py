"""Rprop (NumPy). Mirrors csrc/fd_rprop.c and backends/*/rprop.py.

torch.optim.Rprop's for-loop implementation, one whole-array operation at a time, in the element
type: the sign of ``g*prev`` picks the step-size factor (``sign(NaN) = 0``), step sizes are clamped,
``g`` is zeroed where the factor is etaminus, ``p -= sign(g)*step_size``, ``prev = g``.
"""

import numpy as np

from ..._contract import kernel_scalars


def _sign(x):
    """torch.sign: 1, -1, or 0 for +-0 and NaN (np.sign keeps NaN), in x's dtype."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def rprop(tab, *, etaminus, etaplus, step_size_min, step_size_max, maximize):
    tab.require("rprop")  # ValueError naming a missing column
    etam, etap, smin, smax, maximize = kernel_scalars(
        "rprop", dict(etaminus=etaminus, etaplus=etaplus, step_size_min=step_size_min,
                      step_size_max=step_size_max, maximize=maximize), tab.dtype)
    cols = tab.columns
    params, grads, prevs, steps = cols["param"], cols["grad"], cols["prev"], cols["step_size"]
    for i in range(tab.n):
        # 1-D views (a 0-d tensor's products would be NumPy scalars, not arrays)
        p, g, prev, ss = (a.reshape(-1) for a in (params[i], grads[i], prevs[i], steps[i]))
        if maximize:
            g = -g
        with np.errstate(invalid="ignore"):  # inf*0 = NaN is part of the rule: sign(NaN) = 0
            f = _sign(g * prev)
        f[f > 0] = etap
        f[f < 0] = etam
        f[f == 0] = 1
        ss *= f
        np.maximum(ss, smin, out=ss)  # clamp (NaN propagates, as torch.clamp)
        np.minimum(ss, smax, out=ss)
        g = np.where(f == etam, g.dtype.type(0), g)
        p -= _sign(g) * ss
        prev[...] = g
