"""The optimizers' low-precision options (``docs/low-precision.md``): checks, the storage of each
bucket's state, and the conversions between state formats.

Group options (absent keys take the defaults; a group only carries the keys a user set):

- ``master_weights`` (False): keep a float32 copy of each bfloat16/float16 parameter in the state
  (``master_param``), update it, write the parameter as the copy rounded to nearest-even. No effect
  on float32/float64 parameters.
- ``stochastic_rounding`` (False): round bfloat16 parameters (and bfloat16 state) stochastically
  instead of to nearest, with random bits from ``seed``.
- ``state_dtype`` (None: the parameter's dtype for float32/float64 parameters, float32 for
  bfloat16/float16 ones): ``"float32"``, ``"bfloat16"`` or ``"int8"`` (8-bit block-quantized:
  per state buffer ``name`` the codes (uint8, the parameter's shape) and ``name + "_scale"``
  (float32, one per 256-element block)).
- ``seed`` (0): keys the stochastic rounding's random bits (an int in [0, 2**63)).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import precision as P
from .._validate import check_flag
from ..precision import MIXED_RULES, state_columns, state_map

__all__ = ["options", "OPTION_KEYS", "STATE_DTYPES", "MixedSpec", "check_options", "group_spec",
           "convert_state", "MASTER", "scale_name", "check_param_dtype", "DeviceRef", "plan_arrays"]

OPTION_KEYS = ("master_weights", "stochastic_rounding", "state_dtype", "seed")
STATE_DTYPES = (None, "float32", "bfloat16", "int8")
MASTER = "master_param"
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_SUPPORTED = "SGD, Adam, AdamW and RMSprop"


def scale_name(name):
    """The state entry holding the block scales of 8-bit state buffer ``name``."""
    return name + "_scale"


class MixedSpec(NamedTuple):
    pcode: int  # the parameters' storage code (F32, BF16, F16)
    master: bool
    codes: tuple  # ((state name, storage code), ...) in column order
    stochastic: bool
    seed: int


def options(master_weights=False, stochastic_rounding=False, state_dtype=None, seed=0):
    """The group defaults an optimizer's constructor adds for its low-precision arguments: only
    those that differ from the defaults (so a float32 optimizer's groups and state_dict keep
    torch's keys), and ``seed`` with ``stochastic_rounding``."""
    out = {}
    if master_weights is not False:
        out["master_weights"] = master_weights
    if stochastic_rounding is not False:
        out["stochastic_rounding"] = stochastic_rounding
        out["seed"] = seed
    if state_dtype is not None:
        out["state_dtype"] = state_dtype
    if seed != 0:
        out["seed"] = seed
    return out


def _opts(group):
    return (bool(group.get("master_weights", False)), bool(group.get("stochastic_rounding", False)),
            group.get("state_dtype", None), group.get("seed", 0))


def check_options(rule, group):
    """Validate a group's low-precision options (TypeError/ValueError naming the option)."""
    from ..rules.sgd import check_seed

    if "master_weights" in group:
        check_flag("master_weights", group["master_weights"])
    if "stochastic_rounding" in group:
        check_flag("stochastic_rounding", group["stochastic_rounding"])
    if "seed" in group:
        check_seed(group["seed"])
    sd = group.get("state_dtype", None)
    if sd is not None and (not isinstance(sd, str) or sd not in STATE_DTYPES):
        raise ValueError(f"state_dtype must be None, 'float32', 'bfloat16' or 'int8', got {sd!r}")
    master, sr, sd, _ = _opts(group)
    if master and sr:
        raise ValueError("master_weights and stochastic_rounding are two ways to keep the precision "
                         "of bfloat16 parameters: choose one")
    if (master or sr or sd in ("bfloat16", "int8")) and rule.name not in MIXED_RULES:
        raise ValueError(f"master_weights, stochastic_rounding and state_dtype="
                         f"'bfloat16'/'int8' are supported by {_SUPPORTED}, not by this optimizer "
                         f"(rule {rule.name!r})")
    if (master or sr or sd in ("bfloat16", "int8")) and float(group.get("l1", 0.0)) > 0.0:
        raise ValueError("l1 > 0 is not supported together with master_weights, "
                         "stochastic_rounding or state_dtype='bfloat16'/'int8'")


def check_param_dtype(rule, dtype, what):
    """TypeError unless ``dtype`` is one the optimizer can update (float32/float64; bfloat16 and
    float16 for the rules with a mixed-precision step)."""
    dt = np.dtype(dtype)
    if dt in (_F32, _F64):
        return
    code = P.code_of_dtype(dt)
    if code is None:
        raise TypeError(f"{what} has dtype {dt}; supported: float32, float64, bfloat16, float16")
    if rule.name not in MIXED_RULES:
        raise TypeError(f"{what} has dtype {dt}: bfloat16/float16 parameters are supported by "
                        f"{_SUPPORTED}, not by this optimizer (rule {rule.name!r})")


def group_spec(rule, group, dtype, names):
    """The :class:`MixedSpec` of a bucket of ``dtype`` parameters in ``group`` with state buffers
    ``names``, or None for the plain float32/float64 kernel. ValueError for a combination that has
    no kernel."""
    master, sr, sd, seed = _opts(group)
    dt = np.dtype(dtype)
    pcode = P.code_of_dtype(dt)
    if dt == _F64:
        if sr or sd in ("bfloat16", "int8") or sd == "float32":
            raise ValueError("float64 parameters keep float64 state: state_dtype and "
                             "stochastic_rounding apply to float32, bfloat16 and float16 parameters")
        return None
    if pcode == P.F32 and sd in (None, "float32"):
        return None  # (master_weights and stochastic_rounding change nothing here)
    if pcode == P.F16 and sr:
        raise ValueError("stochastic_rounding rounds to bfloat16; float16 parameters keep their "
                         "precision with master_weights=True")
    if rule.name not in MIXED_RULES:
        raise ValueError(f"rule {rule.name!r} has no mixed-precision step")
    if rule.name == "sgd" and float(group.get("noise_std", 0.0)) > 0.0:
        raise ValueError("SGD's gradient noise (noise_std > 0) is not supported with bfloat16/"
                         "float16 parameters or bfloat16/int8 state")
    if float(group.get("l1", 0.0)) > 0.0:
        raise ValueError("l1 > 0 is not supported with bfloat16/float16 parameters or "
                         "bfloat16/int8 state")
    codes = []
    for name in state_columns(rule.name):
        if name not in names:
            continue
        if sd == "int8":
            codes.append((name, state_map(name)))
        elif sd == "bfloat16":
            codes.append((name, P.BF16))
        else:
            codes.append((name, P.F32))
    return MixedSpec(pcode, bool(master) and pcode != P.F32, tuple(codes), bool(sr), int(seed))


def convert_state(old, old_scale, name, code, shape):
    """State buffer ``name`` in storage ``code``: (values, scales or None), from ``old`` (None:
    zeros; a float array of any width; or uint8 codes with their block scales ``old_scale``)."""
    n = int(np.prod(shape, dtype=np.int64))
    q8 = code in (P.Q8S, P.Q8U)
    if old is None:
        vals = np.zeros(shape, dtype=P.storage_dtype(code))
        return vals, (np.zeros(P.nblocks(n), np.float32) if q8 else None)
    old = np.asarray(old)
    if old.dtype == np.uint8:
        if q8 and state_map(name) == code:
            return old.reshape(shape).copy(), np.asarray(old_scale, np.float32).copy()
        x32 = P.q8_dequantize(old, old_scale, state_map(name))
    else:
        x32 = old.astype(np.float32).reshape(-1)
    if q8:
        codes, scales = P.q8_quantize(x32, code)
        return codes.reshape(shape), scales
    return P.encode(x32, code).reshape(shape), None


class DeviceRef:
    """A caller's device array as a mixed-precision plan holds it (``backends._mixed.MixedPlan``
    reads ``size`` and ``dtype``, the kernels its address): ``shape``, ``size``, the NumPy ``dtype``
    (bfloat16 for the typestr ``'<V2'``) and ``__cuda_array_interface__`` from its
    :class:`fastdescent._arrays.ArrayInfo`, whatever the array's type (a torch CUDA tensor's
    ``size`` is a method and its ``dtype`` a torch dtype). Keeps the array alive (``obj``)."""

    __slots__ = ("obj", "shape", "size", "dtype", "_cai")

    def __init__(self, info):
        self.obj = info.obj
        self.shape = tuple(info.shape)
        self.size = int(info.size)
        self.dtype = info.dtype
        self._cai = {"shape": self.shape, "typestr": info.dtype.str,
                     "data": (int(info.addr), not info.writeable), "strides": None, "version": 3}

    @property
    def __cuda_array_interface__(self):
        return self._cai


def plan_arrays(infos):
    """The arrays of ``infos`` for a mixed-precision plan: host arrays as they are, device arrays
    as :class:`DeviceRef`."""
    return [DeviceRef(i) if i.device else i.obj for i in infos]


#: the low-precision options' entries of an optimizer's docstring (``%(low_precision)s``)
PARAMS_DOC = """master_weights : bool, default False
        bfloat16/float16 parameters: keep a float32 copy in the state (``master_param``), update it
        and write the parameter as the copy rounded to nearest (``docs/low-precision.md``).
    stochastic_rounding : bool, default False
        bfloat16 parameters (and bfloat16 state): round each new value stochastically, with random
        bits keyed by ``seed``, so that updates below bfloat16's resolution accumulate.
    state_dtype : {None, "float32", "bfloat16", "int8"}, default None
        Storage of the state buffers (None: the parameter's dtype, float32 for bfloat16/float16
        parameters); ``"int8"``: 8-bit block-quantized (codes plus ``<name>_scale``)."""


def document(cls):
    """Class decorator: fill ``%(low_precision)s`` in the docstring with :data:`PARAMS_DOC`."""
    if cls.__doc__:
        cls.__doc__ = cls.__doc__.replace("%(low_precision)s", PARAMS_DOC)
    return cls
