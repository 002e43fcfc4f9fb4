"""Proximal L1 step (NumPy). Mirrors csrc/fd_prox.c and backends/*/prox.py."""

import numpy as np


def prox(tab, *, threshold):
    tab.require("prox")  # ValueError naming a missing column
    thr = tab.dtype.type(threshold)
    for p in tab.columns["param"]:
        a = np.abs(p)
        a -= thr
        small = a <= 0  # (False for NaN: a NaN stays NaN)
        np.copysign(a, p, out=p)
        np.copyto(p, 0, where=small)  # exactly +0.0, never -0.0
