"""Batched dense-layer matmul, forward and backward (NumPy). Mirrors csrc/fd_matmul.c and
backends/*/matmul.py.

Shapes (C-contiguous, one dtype): x (B, M, K), w (Bw, K, N) with Bw in {1, B}, b (Bw, N) or None,
y / dy (B, M, N); dx like x, dw like w, db like b. Item i uses weight 0 if Bw == 1, else weight i.

    matmul_fwd    y[i]   = x[i] @ w[j] (+ b[j], broadcast over the M rows)     (overwrites y)
    matmul_bwd_x  dx[i] += dy[i] @ w[j].T                                       (accumulates)
    matmul_bwd_w  dw[j] += sum over the items i using weight j of x[i].T @ dy[i]
                  db[j] += the column sums of those dy[i]                       (accumulates)

The products go through ``np.matmul`` (BLAS); the backward temporaries are the reference's only
allocations. Arguments are checked first, by the checks every backend shares
(``backends/_dense_checks``: the c backend's exception types), so a bad call writes nothing.
"""

import numpy as np

from .._dense_checks import check


def matmul_fwd(y, x, w, b):
    check("matmul_fwd", (y, x, w, b))
    np.matmul(x, w, out=y)  # w of shape (1, K, N) broadcasts over the batch
    if b is not None:
        y += b[:, None, :]


def matmul_bwd_x(dx, dy, w):
    check("matmul_bwd_x", (dx, dy, w))
    dx += np.matmul(dy, np.swapaxes(w, 1, 2))


def matmul_bwd_w(dw, db, x, dy):
    check("matmul_bwd_w", (dw, db, x, dy))
    B, M, K = x.shape
    N = dy.shape[2]
    if dw.shape[0] == 1:  # one weight for the whole batch: a reduction over all B*M rows
        x2 = x.reshape(B * M, K)
        dy2 = dy.reshape(B * M, N)
        dw[0] += x2.T @ dy2
        if db is not None:
            db[0] += dy2.sum(axis=0)
    else:
        dw += np.matmul(np.swapaxes(x, 1, 2), dy)
        if db is not None:
            db += dy.sum(axis=1)
