"""NAdam / NAdamW (C). Mirrors csrc/fd_nadam.c and backends/*/nadam.py."""

from ._lib import Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_nadam_f32, lib.fd_nadam_f64


def nadam(tab, *, beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay,
          step_size_grad, step_size_exp_avg, eps_scaled, maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("nadam")  # ValueError naming a missing column
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["exp_avg"], pk["exp_avg_sq"], pk["grad"],
        beta1, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay, step_size_grad,
        step_size_exp_avg, eps_scaled, maximize)
    if rc:
        raise kernel_error("nadam", rc)
