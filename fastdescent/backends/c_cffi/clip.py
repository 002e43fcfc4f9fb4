"""Gradient-norm reduction, scaling, the finiteness check and clipping by value (C). Mirrors
csrc/fd_clip.c."""

from ._lib import Table, adopt, ffi, kernel_error, lib

if lib is not None:
    _NORM = (lib.fd_norm_pow_sum_f32, lib.fd_norm_pow_sum_f64)
    _SCALE = (lib.fd_scale_f32, lib.fd_scale_f64)
    _FINITE = (lib.fd_all_finite_f32, lib.fd_all_finite_f64)
    _CLAMP = (lib.fd_clip_value_f32, lib.fd_clip_value_f64)


def norm_pow_sum(tab, *, norm_type):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    grad = tab.require("norm_pow_sum")["grad"]
    out = ffi.new("double *")
    rc = _NORM[tab.c_f64](tab.n, tab.c_sizes, grad, norm_type, out)
    if rc:
        raise kernel_error("norm_pow_sum", rc)
    return out[0]


def scale(tab, *, factor):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    rc = _SCALE[tab.c_f64](tab.n, tab.c_sizes, tab.require("scale")["grad"], factor)
    if rc:
        raise kernel_error("scale", rc)


def all_finite(tab):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    grad = tab.require("all_finite")["grad"]
    out = ffi.new("int *")
    rc = _FINITE[tab.c_f64](tab.n, tab.c_sizes, grad, out)
    if rc:
        raise kernel_error("all_finite", rc)
    return bool(out[0])


def clip_value(tab, *, clip_value):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    rc = _CLAMP[tab.c_f64](tab.n, tab.c_sizes, tab.require("clip_value")["grad"], clip_value)
    if rc:
        raise kernel_error("clip_value", rc)
