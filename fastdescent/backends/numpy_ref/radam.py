"""RAdam / RAdamW (NumPy). Mirrors csrc/fd_radam.c and backends/*/radam.py."""

import numpy as np


def radam(tab, *, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay,
          step_size, rectify, maximize):
    tab.require("radam")  # ValueError naming a missing column
    cols = tab.columns
    params, grads, ms, vs = cols["param"], cols["grad"], cols["exp_avg"], cols["exp_avg_sq"]
    for i in range(tab.n):
        p, g, m, v = params[i], grads[i], ms[i], vs[i]
        if maximize:
            g = -g
        if decay != 1:
            p *= decay
        if weight_decay != 0:
            g = g + weight_decay * p
        m *= beta1
        m += one_minus_beta1 * g
        v *= beta2
        v += one_minus_beta2 * g * g
        if rectify:
            denom = np.sqrt(v)
            denom += eps
            p -= step_size * (m / denom)
        else:
            p -= step_size * m
