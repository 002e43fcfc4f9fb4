"""LAMB (C). Mirrors csrc/fd_lamb.c and backends/*/lamb.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_lamb_f32, lib.fd_lamb_f64


def lamb(tab, *, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
         inv_bias_correction1, inv_bias_correction2, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("lamb")  # ValueError naming a column
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["exp_avg"], pk["exp_avg_sq"], pk["grad"],
        lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, inv_bias_correction1,
        inv_bias_correction2, maximize)
    if rc:
        raise kernel_error("lamb", rc)
