"""Lion (C). Mirrors csrc/fd_lion.c and backends/*/lion.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_lion_f32, lib.fd_lion_f64


def lion(tab, *, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("lion")  # ValueError naming a column
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["exp_avg"], pk["grad"],
        lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay, maximize)
    if rc:
        raise kernel_error("lion", rc)
