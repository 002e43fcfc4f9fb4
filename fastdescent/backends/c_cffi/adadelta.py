"""Adadelta (C). Mirrors csrc/fd_adadelta.c and backends/*/adadelta.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_adadelta_f32, lib.fd_adadelta_f64


def adadelta(tab, *, lr, rho, one_minus_rho, eps, weight_decay, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("adadelta")  # ValueError naming a missing column
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["square_avg"], pk["acc_delta"], pk["grad"], lr, rho,
        one_minus_rho, eps, weight_decay, maximize)
    if rc:
        raise kernel_error("adadelta", rc)
