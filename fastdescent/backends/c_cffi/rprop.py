"""Rprop (C). Mirrors csrc/fd_rprop.c and backends/*/rprop.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_rprop_f32, lib.fd_rprop_f64


def rprop(tab, *, etaminus, etaplus, step_size_min, step_size_max, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("rprop")  # ValueError naming a missing column
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["prev"], pk["step_size"], pk["grad"], etaminus, etaplus,
        step_size_min, step_size_max, maximize)
    if rc:
        raise kernel_error("rprop", rc)
