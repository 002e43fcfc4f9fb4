"""Adam / AdamW (NumPy). Mirrors csrc/fd_adam.c and backends/*/adam.py."""

import numpy as np


def adam(tab, *, beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad,
         maximize):
    tab.require("adam", amsgrad and "max_exp_avg_sq")  # ValueError naming a missing column
    cols = tab.columns
    params, grads, ms, vs = cols["param"], cols["grad"], cols["exp_avg"], cols["exp_avg_sq"]
    vmaxs = cols.get("max_exp_avg_sq")
    for i in range(tab.n):
        p, g, m, v = params[i], grads[i], ms[i], vs[i]
        if maximize:
            g = -g
        if decay != 1:
            p *= decay
        if weight_decay != 0:
            g = g + weight_decay * p
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        if amsgrad:
            np.maximum(vmaxs[i], v, out=vmaxs[i])
            vv = vmaxs[i]
        else:
            vv = v
        denom = np.sqrt(vv)
        denom /= bias_correction2_sqrt
        denom += eps
        p -= step_size * (m / denom)
