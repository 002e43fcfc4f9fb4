"""Adadelta (NumPy). Mirrors csrc/fd_adadelta.c and backends/*/adadelta.py.

The expression order is torch.optim.Adadelta's (for-loop implementation):
``v = v*rho + ((1-rho)*g)*g; d = sqrt(a + eps) / sqrt(v + eps) * g; a = a*rho + ((1-rho)*d)*d;
p = p - lr*d``.
"""

import numpy as np

from ..._contract import kernel_scalars


def adadelta(tab, *, lr, rho, one_minus_rho, eps, weight_decay, maximize):
    tab.require("adadelta")  # ValueError naming a missing column
    lr_, rho_, omr, ep, wd, neg = kernel_scalars(
        "adadelta", dict(lr=lr, rho=rho, one_minus_rho=one_minus_rho, eps=eps,
                         weight_decay=weight_decay, maximize=maximize), tab.dtype)
    cols = tab.columns
    params, grads, vs, accs = cols["param"], cols["grad"], cols["square_avg"], cols["acc_delta"]
    for i in range(tab.n):
        p, g, v, a = params[i], grads[i], vs[i], accs[i]
        if neg:
            g = -g
        if weight_decay != 0:
            g = g + wd * p
        v *= rho_
        v += (omr * g) * g
        std = np.sqrt(v + ep)
        d = np.sqrt(a + ep) / std * g
        a *= rho_
        a += (omr * d) * d
        p -= lr_ * d
