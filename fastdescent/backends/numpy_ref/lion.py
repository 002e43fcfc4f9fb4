"""Lion (NumPy). Mirrors csrc/fd_lion.c and backends/*/lion.py."""

import numpy as np


def lion(tab, *, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, maximize):
    tab.require("lion")  # ValueError naming a missing column
    cols = tab.columns
    params, grads, ms = cols["param"], cols["grad"], cols["exp_avg"]
    for i in range(tab.n):
        p, g, m = params[i], grads[i], ms[i]
        if maximize:
            g = -g
        c = m * beta1
        c += one_minus_beta1 * g
        if decay != 1:
            p *= decay
        p -= lr * np.sign(c)  # np.sign: +-0 -> +0, NaN -> NaN
        m *= beta2
        m += one_minus_beta2 * g
