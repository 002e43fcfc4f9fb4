"""Proximal L1 step (NumPy). Mirrors csrc/fd_prox.c and backends/*/prox.py."""

import numpy as np


def prox(tab, *, threshold):
    tab.require("prox")  # ValueError naming a missing column
    thr = tab.dtype.type(threshold)
    for p in tab.columns["param"]:
        small = np.abs(p) <= thr  # (False for NaN: a NaN stays NaN)
        q = np.where(p > 0, p - thr, p + thr)
        np.copyto(q, 0, where=small)  # exactly +0.0, never -0.0
        p[...] = q
