"""SGD family (C). Mirrors csrc/fd_sgd.c and backends/*/sgd.py."""

from ._lib import NULL, Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_sgd_f32, lib.fd_sgd_f64


def sgd(tab, *, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("sgd", momentum != 0 and "momentum_buffer")  # ValueError naming a column
    buf = pk.get("momentum_buffer")
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], NULL if buf is None else buf, pk["grad"],
        lr, momentum, dampening, weight_decay, nesterov, maximize, first_step)
    if rc:
        raise kernel_error("sgd", rc)
