"""RMSprop (C). Mirrors csrc/fd_rmsprop.c and backends/*/rmsprop.py."""

from ._lib import NULL, Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_rmsprop_f32, lib.fd_rmsprop_f64


def rmsprop(tab, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("rmsprop", centered and "grad_avg", momentum > 0 and "momentum_buffer")
    avg = pk.get("grad_avg")
    buf = pk.get("momentum_buffer")
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["square_avg"], NULL if avg is None else avg,
        NULL if buf is None else buf, pk["grad"],
        lr, alpha, eps, weight_decay, momentum, centered, maximize)
    if rc:
        raise kernel_error("rmsprop", rc)
