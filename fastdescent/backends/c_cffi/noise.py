"""Gradient noise (C). Mirrors csrc/fd_noise.c and backends/*/noise.py."""

import numpy as np

from ._lib import Table, adopt, ffi, kernel_error, lib

if lib is not None:
    _NOISE = (lib.fd_noise_f32, lib.fd_noise_f64)


def noise(tab, *, param_index, sigma, seed, step):
    if not isinstance(tab, Table):
        tab = adopt(tab)
    pk = tab.require("noise")  # ValueError naming a missing column
    index = np.ascontiguousarray(param_index, dtype=np.int64)
    if index.shape != (tab.n,):
        raise ValueError(f"noise: param_index must hold {tab.n} values (one per tensor), got shape "
                         f"{index.shape}")
    rc = _NOISE[tab.c_f64](tab.n, tab.c_sizes, pk["param"], ffi.from_buffer("int64_t[]", index),
                           sigma, seed, step)
    if rc:
        raise kernel_error("noise", rc)
