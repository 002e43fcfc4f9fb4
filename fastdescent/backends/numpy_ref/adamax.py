"""Adamax (NumPy). Mirrors csrc/fd_adamax.c and backends/*/adamax.py.

The expression order is torch.optim.Adamax's (for-loop implementation): ``exp_avg.lerp_(g, 1 -
beta1)`` as ``(g if lerp_from_grad else m) + lerp_weight*(g - m)``, ``exp_inf = maximum(exp_inf*beta2,
|g| + eps)`` (NaN-propagating), ``p.addcdiv_(exp_avg, exp_inf, value=-clr)`` as ``p - (clr*m)/u``.
"""

import numpy as np

from ..._contract import kernel_scalars


def adamax(tab, *, lerp_weight, lerp_from_grad, beta2, eps, weight_decay, clr, maximize):
    tab.require("adamax")  # ValueError naming a missing column
    lw, from_grad, b2, ep, wd, cl, neg = kernel_scalars(
        "adamax", dict(lerp_weight=lerp_weight, lerp_from_grad=lerp_from_grad, beta2=beta2, eps=eps,
                       weight_decay=weight_decay, clr=clr, maximize=maximize), tab.dtype)
    cols = tab.columns
    params, grads, ms, us = cols["param"], cols["grad"], cols["exp_avg"], cols["exp_inf"]
    for i in range(tab.n):
        p, g, m, u = params[i], grads[i], ms[i], us[i]
        if neg:
            g = -g
        if weight_decay != 0:
            g = g + wd * p
        d = lw * (g - m)
        if from_grad:
            np.add(g, d, out=m)
        else:
            m += d
        u *= b2
        np.maximum(u, np.abs(g) + ep, out=u)  # a NaN on either side propagates
        p -= (cl * m) / u
