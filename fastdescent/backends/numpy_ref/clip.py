"""Gradient-norm reduction, scaling, the finiteness check and clipping by value (NumPy). Mirrors
csrc/fd_clip.c."""

import math

import numpy as np


def norm_pow_sum(tab, *, norm_type):
    tab.require("norm_pow_sum")
    grads = tab.columns["grad"]
    if math.isinf(norm_type):
        parts = [float(np.max(np.abs(g))) for g in grads if g.size]
        return math.nan if any(math.isnan(x) for x in parts) else max(parts, default=0.0)
    total = 0.0
    for g in grads:
        a = np.abs(g.astype(np.float64).reshape(-1))
        if norm_type == 2:
            total += float(np.dot(a, a))
        elif norm_type == 1:
            total += float(a.sum())
        else:
            total += float(np.sum(a ** norm_type))
    return total


def scale(tab, *, factor):
    tab.require("scale")
    for g in tab.columns["grad"]:
        g *= factor


def all_finite(tab):
    tab.require("all_finite")
    return bool(all(np.isfinite(g).all() for g in tab.columns["grad"]))


def clip_value(tab, *, clip_value):
    tab.require("clip_value")
    hi = tab.dtype.type(clip_value)
    lo = -hi
    for g in tab.columns["grad"]:
        np.copyto(g, lo, where=g < lo)  # (comparisons are False for NaN: a NaN stays NaN)
        np.copyto(g, hi, where=g > hi)
