"""Adagrad (C). Mirrors csrc/fd_adagrad.c and backends/*/adagrad.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_adagrad_f32, lib.fd_adagrad_f64


def adagrad(tab, *, clr, eps, weight_decay, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("adagrad")  # ValueError naming a missing column
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["sum"], pk["grad"], clr, eps, weight_decay, maximize)
    if rc:
        raise kernel_error("adagrad", rc)
