"""NAdam / NAdamW (NumPy). Mirrors csrc/fd_nadam.c and backends/*/nadam.py."""

import numpy as np


def nadam(tab, *, beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay,
          step_size_grad, step_size_exp_avg, eps_scaled, maximize):
    tab.require("nadam")  # ValueError naming a missing column
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
        denom = np.sqrt(v)
        denom += eps_scaled
        num = step_size_grad * g
        num += step_size_exp_avg * m
        p -= num / denom
