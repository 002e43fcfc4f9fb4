"""Adagrad (NumPy). Mirrors csrc/fd_adagrad.c and backends/*/adagrad.py."""

import numpy as np


def adagrad(tab, *, clr, eps, weight_decay, maximize):
    tab.require("adagrad")  # ValueError naming a missing column
    cols = tab.columns
    params, grads, sums = cols["param"], cols["grad"], cols["sum"]
    for i in range(tab.n):
        p, g, s = params[i], grads[i], sums[i]
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        s += g * g
        std = np.sqrt(s)
        std += eps
        p -= clr * (g / std)
