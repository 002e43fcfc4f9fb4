"""Proximal L1 step (C). Mirrors csrc/fd_prox.c and backends/*/prox.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _PROX = (lib.fd_prox_f32, lib.fd_prox_f64)


def prox(tab, *, threshold):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("prox")  # ValueError naming a missing column
    rc = _PROX[tab.c_f64](tab.n, tab.c_sizes, pk["param"], threshold)
    if rc:
        raise kernel_error("prox", rc)
