"""LAMB (NumPy). Mirrors csrc/fd_lamb.c and backends/*/lamb.py.

Each tensor is one pass of whole-array operations: m and v updated in place, r built as a temporary
(``r = (m * inv_bc1) / (sqrt(v * inv_bc2) + eps) + wd * p``), the norms of p and r summed in float64
(NumPy's pairwise summation), then p updated with lr * trust rounded once to the element type.
"""

import math

import numpy as np


def _sq_norm(x):
    x = x.astype(np.float64)
    return float(np.sum(x * x))


def lamb(tab, *, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
         inv_bias_correction1, inv_bias_correction2, maximize):
    tab.require("lamb")  # ValueError naming a missing column
    cols = tab.columns
    params, grads, ms, vs = cols["param"], cols["grad"], cols["exp_avg"], cols["exp_avg_sq"]
    T = tab.dtype.type
    for i in range(tab.n):
        # flat views (a 0-d tensor would turn the temporaries below into NumPy scalars)
        p, g, m, v = (a.reshape(-1) for a in (params[i], grads[i], ms[i], vs[i]))
        if maximize:
            g = -g
        m *= beta1
        m += one_minus_beta1 * g
        v *= beta2
        v += (one_minus_beta2 * g) * g
        r = m * inv_bias_correction1
        d = v * inv_bias_correction2
        np.sqrt(d, out=d)
        d += eps
        r /= d
        if weight_decay != 0:
            r += weight_decay * p
        pn, rn = math.sqrt(_sq_norm(p)), math.sqrt(_sq_norm(r))
        trust = pn / rn if pn > 0 and rn > 0 else 1.0
        p -= T(lr * trust) * r
