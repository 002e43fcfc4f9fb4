"""Adam / AdamW (C). Mirrors csrc/fd_adam.c and backends/*/adam.py."""

from ._lib import NULL, Table, adopt, kernel_error, lib

if lib is not None:
    _F32, _F64 = lib.fd_adam_f32, lib.fd_adam_f64


def adam(tab, *, beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad,
         maximize):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("adam", amsgrad and "max_exp_avg_sq")  # ValueError naming a column
    vmax = pk.get("max_exp_avg_sq")
    rc = (_F64 if tab.c_f64 else _F32)(
        tab.n, tab.c_sizes, pk["param"], pk["exp_avg"], pk["exp_avg_sq"],
        NULL if vmax is None else vmax, pk["grad"],
        beta1, beta2, eps, weight_decay, decay, step_size, bias_correction2_sqrt, amsgrad, maximize)
    if rc:
        raise kernel_error("adam", rc)
