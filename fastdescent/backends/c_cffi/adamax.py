"""Adamax (C). Mirrors csrc/fd_adamax.c and backends/*/adamax.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_adamax_f32, lib.fd_adamax_f64


def adamax(tab, *, lerp_weight, lerp_from_grad, beta2, eps, weight_decay, clr, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("adamax")  # ValueError naming a missing column
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["exp_avg"], pk["exp_inf"], pk["grad"], lerp_weight,
        lerp_from_grad, beta2, eps, weight_decay, clr, maximize)
    if rc:
        raise kernel_error("adamax", rc)
