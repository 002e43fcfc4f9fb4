"""The mixed-precision step (NumPy): the reference the C and Numba kernels match bit for bit.

Per tensor: read every column into float32 (``fastdescent.precision``; a master copy is re-read from
the parameter where the parameter is not the master rounded to its format, i.e. was written from
outside), run the rule's float32 NumPy kernel on those arrays (the same code, hence the same bits,
as a float32 bucket), then store: the master copy as is and the parameter rounded to nearest (or
stochastically, stream 0); bfloat16 state rounded to nearest (or stochastically, stream 1 + its
column position); 8-bit state quantized per block. Gradients are divided by ``grad_scale`` in
float32 when it is not 1.
"""

import numpy as np

from ... import precision as P
from .._mixed import STATE_COLUMNS
from .._table import TensorTable

__all__ = ["mixed_step", "grads_finite"]


def _load(a, code, scales):
    if code in (P.Q8S, P.Q8U):
        return P.q8_dequantize(a, scales, code)
    return P.decode(a.reshape(-1), code)


def _store(dst, x32, code, scales, plan, i, stream, step):
    flat = dst.reshape(-1)
    if code == P.F32:
        flat[...] = x32
    elif code in (P.Q8S, P.Q8U):
        codes, sc = P.q8_quantize(x32, code)
        flat.view(np.uint8)[...] = codes
        scales[...] = sc
    elif code == P.BF16 and plan.stochastic:
        r = P.sr_random(plan.seed, plan.param_index[i], step, stream, 0, x32.shape[0])
        flat.view(np.uint16)[...] = P.bf16_round_stochastic(x32, r).view(np.uint16)
    else:
        flat.view(np.uint16)[...] = P.encode(x32, code).view(np.uint16)


def mixed_step(plan, *, scalars, step, grad_scale=1.0):
    """One step of ``plan``'s rule over its tensors (``fastdescent.backends._mixed``)."""
    from . import KERNELS

    kernel = KERNELS[plan.rule]
    cols = STATE_COLUMNS[plan.rule]
    gs = np.float32(grad_scale)
    with np.errstate(all="ignore"):
        for i in range(plan.n):
            n = int(plan.sizes[i])
            if n == 0:
                continue
            p = plan.params[i]
            if plan.master is not None:
                p32 = plan.master[i].reshape(-1)  # updated in place
                # an element whose parameter is not its master rounded was written from outside
                # (a model load, an in-place edit): the parameter wins
                pb = p.reshape(-1).view(np.uint16)
                stale = P.encode(p32, plan.pcode).view(np.uint16) != pb
                if stale.any():
                    p32[stale] = P.decode(p.reshape(-1), plan.pcode)[stale]
            elif plan.pcode == P.F32:
                p32 = p.reshape(-1)
            else:
                p32 = P.decode(p.reshape(-1), plan.pcode)
            g32 = P.decode(plan.grads[i].reshape(-1), int(plan.gcodes[i]))
            if gs != np.float32(1.0):
                g32 = g32 / gs
            staged = {}
            for name in cols:
                c = plan.states.get(name)
                if c is None:
                    continue
                arrays, code, scales = c
                a = arrays[i]
                staged[name] = (a.reshape(-1) if code == P.F32
                                else _load(a, code, None if scales is None else scales[i]))
            tab = TensorTable(np.float32, [n])
            tab.set("param", [p32])
            tab.set("grad", [g32])
            for name in cols:
                tab.set(name, [staged[name]] if name in staged else None)
            kernel(tab, **scalars)
            if plan.pcode != P.F32:  # (a float32 parameter was updated in place)
                _store(p, p32, plan.pcode, None, plan, i, 0, step)
            for k, name in enumerate(cols):
                c = plan.states.get(name)
                if c is None or c[1] == P.F32:
                    continue
                arrays, code, scales = c
                _store(arrays[i], staged[name], code, None if scales is None else scales[i], plan,
                       i, 1 + k, step)


def grads_finite(plan):
    """True if every element of every gradient of ``plan`` is finite."""
    for g, code in zip(plan.grads, plan.gcodes):
        if code == P.F32:
            if not np.isfinite(g).all():
                return False
        else:
            bits = g.reshape(-1).view(np.uint16)
            mask = 0x7F80 if code == P.BF16 else 0x7C00
            if ((bits & mask) == mask).any():
                return False
    return True
