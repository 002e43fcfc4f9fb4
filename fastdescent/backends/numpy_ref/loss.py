"""Fused loss forward + backward (NumPy). Mirrors csrc/fd_loss.c and backends/*/loss.py.

    mse_fwd_bwd   loss = scale * sum((pred - target)**2)          returned as a float (float64 sum)
                  dpred += (2 * scale) * (pred - target)
    xent_fwd_bwd  logits (R, C), labels (R,) int64 in [0, C):
                  m_r = max_c logits[r, c];  e = exp(logits - m_r);  s_r = sum_c e (float64)
                  loss = scale * sum_r ((m_r - logits[r, labels[r]]) + log(s_r))   (float64)
                  dlogits += e * (scale / s_r);  then dlogits[r, labels[r]] -= scale

The max shift keeps exp() finite for any finite logits (softmax-stable log-sum-exp). Element work
is in the element type; the sums and the loss are float64; scale / s_r is computed in float64 and
rounded once to the element type. Arguments are checked first, by the checks every backend shares
(``backends/_dense_checks``: the c backend's exception types; KernelError FD_ERR_ARG for a label
outside [0, C), before anything is written).
"""

import numpy as np

from .._dense_checks import check, check_labels


def mse_fwd_bwd(dpred, pred, target, *, scale):
    check("mse_fwd_bwd", (dpred, pred, target), scale=scale)
    d = pred - target
    loss = scale * float(np.sum(np.square(d, dtype=np.float64)))
    dpred += (2 * scale) * d
    return loss


def xent_fwd_bwd(dlogits, logits, labels, *, scale):
    d = check("xent_fwd_bwd", (dlogits, logits, labels), scale=scale)[0]
    R, C = d["R"], d["C"]
    if R == 0:
        return 0.0
    labels = check_labels("xent_fwd_bwd", labels, C)
    if C == 0:
        return 0.0
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, dtype=np.float64)
    rows = np.arange(R)
    picked = logits[rows, labels].astype(np.float64)
    loss = scale * float(np.sum((m[:, 0].astype(np.float64) - picked) + np.log(s)))
    dlogits += e * (scale / s).astype(logits.dtype)[:, None]
    dlogits[rows, labels] -= logits.dtype.type(scale)
    return loss
