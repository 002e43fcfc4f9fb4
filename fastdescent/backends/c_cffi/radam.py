"""RAdam / RAdamW (C). Mirrors csrc/fd_radam.c and backends/*/radam.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_radam_f32, lib.fd_radam_f64


def radam(tab, *, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay,
          step_size, rectify, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("radam")  # ValueError naming a missing column
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["exp_avg"], pk["exp_avg_sq"], pk["grad"],
        beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay, step_size,
        rectify, maximize)
    if rc:
        raise kernel_error("radam", rc)
