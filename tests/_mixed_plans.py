"""Builders shared by the mixed-precision kernel tests (host and cuda): random parameters stored in
a format, zeroed state columns of a rule in a storage, as a MixedPlan's arguments."""

from __future__ import annotations

import numpy as np

from fastdescent import precision as P
from fastdescent.backends._mixed import STATE_COLUMNS, state_map
from fastdescent.rules import get as get_rule


def pdt(code):
    """The NumPy dtype of a parameter storage code."""
    return P.storage_dtype(code)


def store(x, code):
    """float32 values ``x`` stored (rounded to nearest) in ``code``."""
    return P.encode(x, code).view(pdt(code)) if code != P.F32 else np.array(x, np.float32)


def columns(rule, hp, sizes, pcode, scode, master, rng):
    """(params, master copies or None, states) of a plan: parameters ~ N(0, 0.25) in ``pcode``,
    each state buffer the rule keeps under ``hp`` zeroed in ``scode`` ("int8": its 8-bit map)."""
    params = [store((rng.standard_normal(n) * 0.5).astype(np.float32), pcode) for n in sizes]
    mast = [P.decode(p, pcode) for p in params] if master else None
    states = {}
    for name in STATE_COLUMNS[rule]:
        if name not in get_rule(rule).state_names(hp):
            continue
        code = state_map(name) if scode == "int8" else scode
        arrays = [np.zeros(n, P.storage_dtype(code)) for n in sizes]
        scales = [np.zeros(P.nblocks(n), np.float32) for n in sizes] if code in (P.Q8S, P.Q8U) \
            else None
        states[name] = (arrays, code, scales)
    return params, mast, states


def u8(a):
    """The bytes of a host array (bit-exact comparisons, NaN payloads included)."""
    return np.ascontiguousarray(a).view(np.uint8)


def same_plans(want, got, as_bytes=u8):
    """Parameters, master copies, state arrays and block scales of two MixedPlans equal byte for
    byte (``as_bytes``: how to read an array's bytes, e.g. copying a device array to the host)."""
    for k, (x, y) in enumerate(zip(want.params, got.params)):
        np.testing.assert_array_equal(as_bytes(x), as_bytes(y), err_msg=f"param[{k}]")
    if want.master is not None:
        for k, (x, y) in enumerate(zip(want.master, got.master)):
            np.testing.assert_array_equal(as_bytes(x), as_bytes(y), err_msg=f"master[{k}]")
    for name, (arrays, _, sc) in want.states.items():
        arrays2, _, sc2 = got.states[name]
        for k, (x, y) in enumerate(zip(arrays, arrays2)):
            np.testing.assert_array_equal(as_bytes(x), as_bytes(y), err_msg=f"{name}[{k}]")
        for k, (x, y) in enumerate(zip(sc or [], sc2 or [])):
            np.testing.assert_array_equal(as_bytes(x), as_bytes(y), err_msg=f"{name} scale[{k}]")
