"""RMSprop (NumPy). Mirrors csrc/fd_rmsprop.c and backends/*/rmsprop.py."""

import numpy as np


def rmsprop(tab, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    tab.require("rmsprop", centered and "grad_avg", momentum > 0 and "momentum_buffer")
    cols = tab.columns
    params, grads, vs = cols["param"], cols["grad"], cols["square_avg"]
    avgs, bufs = cols.get("grad_avg"), cols.get("momentum_buffer")
    for i in range(tab.n):
        p, g, v = params[i], grads[i], vs[i]
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        v *= alpha
        v += (1 - alpha) * g * g
        if centered:
            a = avgs[i]
            a *= alpha
            a += (1 - alpha) * g
            avg = np.sqrt(v - a * a)
        else:
            avg = np.sqrt(v)
        avg += eps
        if momentum > 0:
            b = bufs[i]
            b *= momentum
            b += g / avg
            p -= lr * b
        else:
            p -= lr * (g / avg)
