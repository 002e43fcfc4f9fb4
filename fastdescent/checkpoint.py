"""Checkpoints without pickle: optimizer state, model parameters and user metadata in one ``.npz``.

:func:`save_checkpoint` writes one NumPy ``.npz`` archive (a zip of ``.npy`` members) holding only
plain numeric arrays and a JSON header; :func:`load_checkpoint` reads it back parsing every
``.npy`` header itself (never ``np.load``, never unpickling), so loading a file from an untrusted
source never runs code, and never allocates more than the objects it loads into need (plus a
bounded JSON header and bounded read buffers), whatever sizes the file declares.

File layout (format version 2; version 1 files are read too)
------------------------------------------------------------
``header``
    uint8 array: UTF-8 JSON ``{"format": "fastdescent-checkpoint", "version": 2, "optimizer": ...,
    "model": ..., "extra": ...}``. The optimizer entry holds its class name, the parameters' shapes
    and dtypes, each param group's hyperparameters and parameter count, and per parameter the step
    count, the names of its state arrays and its scalar state (``"scalars"``: name -> float, e.g.
    NAdam's ``mu_product``; absent when there is none). Backend-independent: state is stored as host
    arrays.
``optimizer/state/<i>/<name>``
    state array ``name`` (``exp_avg``, ``momentum_buffer``, ...) of parameter ``i`` (the index in
    ``optimizer.state_dict()``). The header lists it by name when it has the parameter's shape and
    dtype, else as ``{"name", "shape", "dtype"}`` (version 2): low-precision state
    (``docs/low-precision.md``). What each entry may be, by its parameter's dtype (checked at save,
    and at load before any array is read): a buffer (``exp_avg``, ...) has the parameter's shape
    and, for a float32, bfloat16 or float16 parameter, dtype float32, bfloat16, or uint8 (8-bit
    codes, only with their ``<name>_scale``), for a float64 one float64; a ``<name>_scale`` is
    float32 of shape ``(ceil(n / 256),)``, only next to uint8 codes ``name``; a ``master_param`` is
    float32 with the shape of its bfloat16/float16 parameter. An optimizer without a mixed-precision
    step (not SGD, Adam, AdamW, RMSprop) keeps every array in its parameter's shape and dtype.
    Anything else is refused, naming the entry.
``model/<key>``
    the array ``model.state_dict()[key]``.

bfloat16 arrays (``ml_dtypes.bfloat16``, which an ``.npy`` header cannot describe) are stored as
their 16-bit words (``<u2`` members) with the dtype name ``"bfloat16"`` in the JSON header, and read
back as bfloat16 bit for bit.

Hyperparameters keep their Python types exactly: floats (``repr`` round trip), ints, bools, None,
strings, tuples (torch's ``betas``) and lists, nested dicts with string keys, NumPy scalars (their
dtype is recorded). Anything else raises :class:`CheckpointError` at save time.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import stat
import struct
import zipfile
import zlib

import numpy as np

from . import _arrays
from . import precision as _P
from .errors import FastDescentError

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "FORMAT_VERSION"]

FORMAT_NAME = "fastdescent-checkpoint"
#: the file format version this module writes; it reads this one and version 1 (whose state arrays
#: all have their parameter's shape and dtype)
FORMAT_VERSION = 2
_READ_VERSIONS = (1, 2)
#: the dtype name written for bfloat16 (``ml_dtypes.bfloat16``): NumPy cannot describe it in an
#: ``.npy`` header, so its members hold the raw 16-bit words as ``<u2``
_BF16 = "bfloat16"

_HEADER = "header"
_OPT = "optimizer/state/"
_MODEL = "model/"
#: the JSON header may be _HEADER_BASE_BYTES plus _HEADER_PER_ARRAY_BYTES per parameter (optimizer)
#: and per array (model) of the objects saved / loaded into (checked at save, enforced at load)
_HEADER_BASE_BYTES = 8 << 20
_HEADER_PER_ARRAY_BYTES = 4 << 10
_NPY_HEADER_SLACK = 1 << 16  # an .npy member is its array data plus a (small) header
_READ_CHUNK = 1 << 20  # member data is streamed in chunks of at most this many bytes
_FLOAT_DTYPES = ("float16", "float32", "float64")


class CheckpointError(FastDescentError, ValueError):
    """A checkpoint cannot be written or read: a non-serialisable value at save time, or a file
    that is not a valid fastdescent checkpoint, is corrupted or truncated, or does not match the
    optimizer/model it is loaded into. The message names the problem. When it is raised by
    :func:`load_checkpoint`, nothing (optimizer state, param groups, model parameters) was changed.
    """


# ---------------------------------------------------------------------------------------- encoding
def _encode_value(v, where):
    """A Python value -> JSON, tagging what JSON cannot say (tuples, NumPy scalars, odd floats).

    Plain dicts in the encoding are always tags: ``{"tuple": [...]}``, ``{"dict": {...}}``,
    ``{"numpy": dtype, "value": ...}``, ``{"float": "nan"|"inf"|"-inf"}``.
    """
    if v is None or isinstance(v, (bool, str)) and type(v) in (bool, str):
        return v
    if type(v) is int:
        return v
    if type(v) is float:
        if math.isfinite(v):
            return v
        return {"float": repr(v)}
    if isinstance(v, np.generic):
        dt = v.dtype
        if dt.kind == "b":
            return {"numpy": dt.str, "value": bool(v)}
        if dt.kind in "iu":
            return {"numpy": dt.str, "value": int(v)}
        if dt.kind == "f" and dt.name in _FLOAT_DTYPES:
            return {"numpy": dt.str, "value": _encode_value(float(v), where)}
        raise CheckpointError(f"{where} is a NumPy {dt} scalar, which a checkpoint cannot store")
    if type(v) is tuple:
        return {"tuple": [_encode_value(x, f"{where}[{k}]") for k, x in enumerate(v)]}
    if type(v) is list:
        return [_encode_value(x, f"{where}[{k}]") for k, x in enumerate(v)]
    if type(v) is dict:
        out = {}
        for k, x in v.items():
            if type(k) is not str:
                raise CheckpointError(f"{where} has a key {k!r} that is not a str; a checkpoint "
                                      "stores dicts with string keys only")
            out[k] = _encode_value(x, f"{where}[{k!r}]")
        return {"dict": out}
    raise CheckpointError(
        f"{where} is a {type(v).__name__} ({v!r:.80}), which a checkpoint cannot store: "
        "hyperparameters must be None, bool, int, float, str, NumPy scalars, or tuples/lists/dicts "
        "of these")


def _decode_value(v, where):
    if v is None or type(v) in (bool, int, float, str):
        return v
    if type(v) is list:
        return [_decode_value(x, f"{where}[{k}]") for k, x in enumerate(v)]
    if type(v) is dict:
        keys = set(v)
        if keys == {"tuple"} and type(v["tuple"]) is list:
            return tuple(_decode_value(x, f"{where}[{k}]") for k, x in enumerate(v["tuple"]))
        if keys == {"dict"} and type(v["dict"]) is dict:
            return {k: _decode_value(x, f"{where}[{k!r}]") for k, x in v["dict"].items()}
        if keys == {"float"} and v["float"] in ("nan", "inf", "-inf"):
            return float(v["float"])
        if keys == {"numpy", "value"} and type(v["numpy"]) is str:
            try:
                dt = np.dtype(v["numpy"])
            except TypeError:
                dt = None
            val = v["value"]
            if dt is not None and dt.kind == "b" and type(val) is bool:
                return np.bool_(val)
            if dt is not None and dt.kind in "iu" and type(val) is int:
                info = np.iinfo(dt)
                if info.min <= val <= info.max:
                    return dt.type(val)
            if dt is not None and dt.kind == "f" and dt.name in _FLOAT_DTYPES:
                f = _decode_value(val, where)
                if type(f) is float:
                    return dt.type(f)
    raise CheckpointError(f"header: {where} is not a valid encoded value: {v!r:.200}")


def _check_extra(v, where="extra"):
    """``extra`` must survive a JSON round trip unchanged (types included)."""
    if v is None or isinstance(v, (bool, str)):
        return
    if type(v) is int:
        return
    if isinstance(v, float):  # float or np.float64 (a float subclass): stored as a float;
        return  # inf/nan as JSON's NaN/Infinity extension (Python's json reads them back)
    if type(v) is list:
        for k, x in enumerate(v):
            _check_extra(x, f"{where}[{k}]")
        return
    if type(v) is dict:
        for k, x in v.items():
            if type(k) is not str:
                raise CheckpointError(f"{where} has a key {k!r} that is not a str (JSON objects have "
                                      "string keys)")
            _check_extra(x, f"{where}[{k!r}]")
        return
    hint = "; use a list" if isinstance(v, tuple) else ""
    raise CheckpointError(f"{where} is a {type(v).__name__} ({v!r:.80}), which is not JSON{hint}: "
                          "extra must hold only dicts (str keys), lists, str, int, float, bool "
                          "and None")


# ---------------------------------------------------------------------------------------- saving
def _is_bf16(dt):
    return _P.code_of_dtype(dt) == _P.BF16


def _dtype_name(dt):
    """The header's name of a dtype: NumPy's ``str`` (``<f4``), or ``bfloat16``."""
    return _BF16 if _is_bf16(dt) else np.dtype(dt).str


def _storage(a):
    """The array as the member stores it: bfloat16 as its 16-bit words."""
    return a.view(np.uint16) if _is_bf16(a.dtype) else a


def _host_array(a, where):
    if not isinstance(a, np.ndarray):
        if hasattr(a, "copy_to_host"):
            a = _arrays.device_to_host(a)
        elif hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        else:
            a = np.asarray(a)
    if (a.dtype.kind not in "biuf" or a.dtype.hasobject) and not _is_bf16(a.dtype):
        raise CheckpointError(f"{where} has dtype {a.dtype}; a checkpoint stores numeric arrays only")
    return a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)


_MASTER = "master_param"
_SCALE = "_scale"
_CODES = "|u1"  # 8-bit state codes (``optim/base.py`` state_dict: uint8, the parameter's shape)
_LOW = (_BF16, "<f2")
#: the dtypes a state buffer (``exp_avg``, ...) may have, per parameter dtype (what
#: ``state_dict()`` emits: float64 parameters keep float64 state; float32, bfloat16 and float16 ones
#: keep float32, bfloat16 or 8-bit state -- float16 state does not exist)
_STATE_DTYPES = {"<f8": ("<f8",), "<f4": ("<f4", _BF16, _CODES), _BF16: ("<f4", _BF16, _CODES),
                 "<f2": ("<f4", _BF16, _CODES)}


def _dtype_text(name):
    return {"<f8": "float64", "<f4": "float32", "<f2": "float16", _CODES: "uint8"}.get(name, name)


def _state_entry_ok(name, shape, dtype, pshape, pdtype, names, where):
    """What a state array of a parameter of (pshape, pdtype) may be (dtypes as header names,
    ``names``: {state name: header dtype name} of the parameter's arrays): a buffer with the
    parameter's shape, of a dtype ``_STATE_DTYPES`` allows for the parameter's (8-bit codes, uint8,
    only together with their ``<name>_scale``); a ``<name>_scale`` of float32, one per 256-element
    block, only next to 8-bit codes ``name``; a float32 ``master_param`` of a bfloat16/float16
    parameter. A parameter of any other dtype (a version 1 file's) may only have buffers of its own
    shape and dtype. CheckpointError otherwise, naming ``where``."""
    allowed = _STATE_DTYPES.get(pdtype, (pdtype,))
    if name == _MASTER:
        ok = shape == pshape and dtype == "<f4" and pdtype in _LOW
        want = "dtype float32 and the parameter's shape, for a bfloat16/float16 parameter"
        if pdtype not in _LOW:
            want += f" (this one is {_dtype_text(pdtype)})"
    elif name.endswith(_SCALE) and name[:-len(_SCALE)] in names:
        nb = _P.nblocks(math.prod(pshape))
        codes = name[:-len(_SCALE)]
        ok = shape == (nb,) and dtype == "<f4" and names[codes] == _CODES
        want = (f"dtype float32 and shape ({nb},) (one per 256-element block of the parameter), "
                f"next to 8-bit codes {codes!r} (uint8; the file says "
                f"{_dtype_text(names[codes])})")
    else:
        ok = shape == pshape and dtype in allowed
        want = (f"the parameter's shape {pshape} and a dtype in "
                f"{[_dtype_text(d) for d in allowed]} (the parameter is {_dtype_text(pdtype)})")
        if ok and dtype == _CODES and name + _SCALE not in names:
            ok, want = False, f"its block scales {name + _SCALE!r} next to these 8-bit codes"
    if not ok:
        raise CheckpointError(f"{where} has shape {shape} and dtype {_dtype_text(dtype)}; it must "
                              f"have {want}")


def _optimizer_section(optimizer, arrays):
    sd = optimizer.state_dict()
    if not isinstance(sd, dict) or "state" not in sd or "param_groups" not in sd:
        raise CheckpointError(f"optimizer.state_dict() of {type(optimizer).__name__} does not have "
                              "the {'state', 'param_groups'} layout")
    params_meta = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            params_meta.append({"shape": [int(n) for n in p.shape], "dtype": _dtype_name(p.dtype)})
    groups = []
    index = {}  # state_dict param key -> position
    pos = 0
    for gi, g in enumerate(sd["param_groups"]):
        keys = list(g["params"])
        for k in keys:
            index[k] = pos
            pos += 1
        hyper = {}
        for name, v in g.items():
            if name == "params":
                continue
            if type(name) is not str:
                raise CheckpointError(f"optimizer.param_groups[{gi}] has a key {name!r} that is not "
                                      "a str")
            hyper[name] = _encode_value(v, f"optimizer.param_groups[{gi}][{name!r}]")
        groups.append({"n_params": len(keys), "hyperparameters": hyper})
    if pos != len(params_meta):
        raise CheckpointError(f"optimizer.state_dict() names {pos} parameters, the optimizer has "
                              f"{len(params_meta)}")
    state = {}
    for key, st in sd["state"].items():
        if key not in index:
            raise CheckpointError(f"optimizer.state_dict()['state'] has an entry {key!r} that names "
                                  "no parameter")
        i = index[key]
        entry = {"step": None, "arrays": []}
        found = {}  # array state: name -> (shape, header dtype name, host array)
        for name, val in st.items():
            where = f"optimizer state[{i}][{name!r}]"
            if name == "step":
                s = val if type(val) is int or not hasattr(val, "item") else val.item()
                if isinstance(s, float) and s.is_integer():
                    s = int(s)
                if type(s) is not int or s < 0:
                    raise CheckpointError(f"{where} must be a non-negative int, got {val!r}")
                entry["step"] = s
                continue
            if type(name) is not str or not name or "/" in name:
                raise CheckpointError(f"{where}: state names must be non-empty strings without '/'")
            if type(val) is float:  # scalar state (NAdam's mu_product), kept in the header
                entry.setdefault("scalars", {})[name] = _encode_value(val, where)
                continue
            arr = _host_array(val, where)
            found[name] = (tuple(arr.shape), _dtype_name(arr.dtype), arr)
        meta = params_meta[i]
        dtypes = {n: dt for n, (_, dt, _) in found.items()}
        for name, (shape, dtype, arr) in found.items():
            _state_entry_ok(name, shape, dtype, tuple(meta["shape"]), meta["dtype"], dtypes,
                            f"optimizer state[{i}][{name!r}]")
            arrays[f"{_OPT}{i}/{name}"] = _storage(arr)
            same = list(shape) == meta["shape"] and dtype == meta["dtype"]
            entry["arrays"].append(name if same else {"name": name, "shape": list(shape),
                                                      "dtype": dtype})
        state[str(i)] = entry
    return {"class": type(optimizer).__name__, "params": params_meta, "param_groups": groups,
            "state": state}


def _model_section(model, arrays):
    if not (callable(getattr(model, "state_dict", None))
            and callable(getattr(model, "load_state_dict", None))):
        raise TypeError(f"model must have state_dict() and load_state_dict() (a fastdescent.nn model), "
                        f"got {type(model).__name__}")
    sd = model.state_dict()
    if not isinstance(sd, dict):
        raise CheckpointError(f"model.state_dict() returned a {type(sd).__name__}, not a dict")
    entries = []
    for key, val in sd.items():
        if type(key) is not str or not key or not key.isprintable():
            raise CheckpointError(f"model.state_dict() has a key {key!r}: keys must be non-empty "
                                  "printable strings")
        arr = _host_array(val, f"model.state_dict()[{key!r}]")
        arrays[_MODEL + key] = _storage(arr)
        entries.append({"key": key, "shape": list(arr.shape), "dtype": _dtype_name(arr.dtype)})
    return {"class": type(model).__name__, "arrays": entries}


def _fsync_dir(dirname):
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(dirname, flags)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:  # not supported by this file system
        pass
    finally:
        os.close(fd)


def _write_archive(f, members):
    """Write ``members`` ({name: ndarray}) as an uncompressed .npz into the binary file ``f``."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in members.items():
            with zf.open(name + ".npy", mode="w", force_zip64=arr.nbytes > (1 << 30)) as out:
                np.lib.format.write_array(out, arr, allow_pickle=False)


def save_checkpoint(path, *, optimizer=None, model=None, extra=None):
    """Write a checkpoint of ``optimizer`` and/or ``model`` (and ``extra``) to exactly ``path``.

    The file is a NumPy ``.npz`` archive holding only numeric arrays and a JSON header -- no pickled
    objects (see the module docstring for the layout). ``path`` is used as given: no ``.npz`` suffix
    is appended (unlike ``np.savez``).

    The write is atomic: the archive goes to a temporary file in the same directory, which is
    flushed and ``fsync``-ed, then renamed over ``path`` with ``os.replace`` (and the directory is
    ``fsync``-ed where supported). If anything fails or the process dies mid-write, an existing file
    at ``path`` is left intact, and the temporary file is removed (on an exception).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    optimizer : fastdescent Optimizer, optional
        Its ``state_dict()`` is saved: per-parameter state arrays and step counts, each param
        group's hyperparameters, and the class name and parameter shapes/dtypes (checked at load).
        Parameter *values* are not part of an optimizer's state: save them with ``model=``.
        A :class:`fastdescent.distributed.ShardedOptimizer` is saved collectively (every rank of
        its communicator calls ``save_checkpoint``): its state is gathered to rank 0, which writes
        the ordinary single-process checkpoint; the other ranks write nothing.
    model : fastdescent.nn model, optional
        Anything with ``state_dict()`` (``{str: array}``) and ``load_state_dict()``.
    extra : dict, optional
        JSON data to store alongside (epoch, RNG seeds, metrics...): dicts with str keys, lists,
        str, int, float, bool, None -- it must come back unchanged, so tuples are refused. Non-finite
        floats (e.g. ``ReduceLROnPlateau``'s ``best = inf``) are written as JSON's ``Infinity``/``NaN``
        extension, which Python's ``json`` reads back. A scheduler's ``state_dict()`` fits here.
        The whole JSON header (``extra`` included) may have at most 8 MiB + 4 KiB per parameter
        and model array, the most :func:`load_checkpoint` accepts.

    Raises
    ------
    CheckpointError
        A value cannot be stored (``extra`` not JSON, a hyperparameter of an unsupported type, a
        header larger than a load accepts); raised before anything is written.
    TypeError
        ``optimizer`` and ``model`` are both None, or ``model`` has no ``state_dict``.
    OSError
        The file cannot be written (the previous file, if any, is unchanged).

    Examples
    --------
    >>> import numpy as np, fastdescent as fd, tempfile, os
    >>> model = fd.nn.MLP([4, 8, 2], seed=0)
    >>> opt = fd.Adam(model.parameters(), lr=1e-2)
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> save_checkpoint(path, optimizer=opt, model=model, extra={"epoch": 3})
    >>> load_checkpoint(path, optimizer=opt, model=model)
    {'epoch': 3}
    """
    collective = getattr(optimizer, "_save_checkpoint", None)
    if collective is not None:  # a sharded optimizer: gathered to one rank, written there
        return collective(path, model=model, extra=extra)
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if optimizer is None and model is None:
        raise TypeError("save_checkpoint: give an optimizer=, a model= or both")
    if extra is not None:
        if type(extra) is not dict:
            raise CheckpointError(f"extra must be a dict (or None), got {type(extra).__name__}")
        try:
            _check_extra(extra)
        except RecursionError:
            raise CheckpointError("extra is nested too deeply (or contains itself)") from None
    arrays = {}
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "optimizer": None, "model": None,
              "extra": extra}
    if optimizer is not None:
        header["optimizer"] = _optimizer_section(optimizer, arrays)
    if model is not None:
        header["model"] = _model_section(model, arrays)
    try:
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # (the checks above should have caught it)
        raise CheckpointError(f"checkpoint header is not JSON: {exc}") from None
    encoded = text.encode("utf-8")
    n_arrays = (len(header["optimizer"]["params"]) if optimizer is not None else 0) + (
        len(header["model"]["arrays"]) if model is not None else 0)
    limit = _header_limit(n_arrays)
    if len(encoded) > limit:
        raise CheckpointError(f"checkpoint header would be {len(encoded)} bytes, more than the {limit} "
                              f"a load accepts ({_HEADER_BASE_BYTES} + {_HEADER_PER_ARRAY_BYTES} per "
                              "parameter/model array): keep extra small")
    members = {_HEADER: np.frombuffer(encoded, dtype=np.uint8)}
    members.update(arrays)

    if os.path.islink(path):  # write through a symlink (as open() would), not over it
        path = os.path.realpath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(dirname, f".{os.path.basename(path)[:200]}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:  # a file being replaced keeps its permissions
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except OSError:
            pass
        with os.fdopen(fd, "wb") as f:
            _write_archive(f, members)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(dirname)


# ---------------------------------------------------------------------------------------- loading
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, EOFError,
                ValueError, KeyError, IndexError, OverflowError, NotImplementedError, RuntimeError,
                UnicodeDecodeError, TypeError, OSError)


def _expect(cond, msg):
    if not cond:
        raise CheckpointError(msg)


def _is_int(v):
    return type(v) is int


def _is_shape(v):
    return type(v) is list and all(_is_int(n) and n >= 0 for n in v)


def _parse_dtype(s, where):
    """The member dtype of a header dtype name (bfloat16: its 16-bit words, ``<u2``)."""
    _expect(type(s) is str, f"header: {where} dtype must be a string")
    if s == _BF16:
        return np.dtype("<u2")
    try:
        dt = np.dtype(s)
    except TypeError:
        raise CheckpointError(f"header: {where} has an invalid dtype {s!r}") from None
    _expect(dt.kind in "biuf" and not dt.hasobject and dt.str == s,
            f"header: {where} has an unsupported dtype {s!r}")
    return dt


def _header_limit(n_arrays):
    """The most bytes a header may have, for objects holding ``n_arrays`` parameters/arrays."""
    return _HEADER_BASE_BYTES + _HEADER_PER_ARRAY_BYTES * n_arrays


def _read_header(zf, names, limit):
    _expect(_HEADER in names, "not a fastdescent checkpoint: the archive has no 'header' array")
    raw = _read_member(zf, _HEADER, np.dtype(np.uint8), None, max_len=limit)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"header: not valid JSON ({exc})") from None
    _expect(type(header) is dict, "header: must be a JSON object")
    _expect(header.get("format") == FORMAT_NAME,
            f"not a fastdescent checkpoint (header format {header.get('format')!r})")
    version = header.get("version")
    _expect(_is_int(version), f"header: format version must be an int, got {version!r}")
    _expect(version in _READ_VERSIONS,
            f"unsupported checkpoint format version {version} (this fastdescent reads versions "
            f"{', '.join(map(str, _READ_VERSIONS))})")
    unexpected = set(header) - {"format", "version", "optimizer", "model", "extra"}
    _expect(not unexpected, f"header: unexpected entries {sorted(unexpected)}")
    return header


_NPY_VERSIONS = {(1, 0): ("<H", np.lib.format.read_array_header_1_0),
                 (2, 0): ("<I", np.lib.format.read_array_header_2_0)}


def _read_exact(fh, n, name):
    data = fh.read(n)
    _expect(len(data) == n, f"array {name!r} is truncated")
    return data


def _read_member(zf, name, dtype, shape, *, load=True, max_len=None):
    """Read (``load``) or only verify member ``name`` (.npy) without unpickling, copying or trusting
    any size it declares.

    ``shape`` is the expected shape; ``None`` (the header) means 1-D with at most ``max_len``
    elements. Before anything is allocated, the zip entry's uncompressed size is checked against
    the expected data size (plus a small .npy header), and the member's own .npy header is parsed
    here (never ``np.load``) and its dtype, shape and order compared with the expected ones; the
    entry must then hold exactly the header and ``shape x itemsize`` data bytes. The data is
    streamed in chunks of at most ``_READ_CHUNK`` bytes -- into a preallocated array (``load``) or
    through the zip CRC-32 check and discarded -- so no more than the expected bytes are ever
    decompressed or held, whatever the compressed stream or the zip directory claim.
    """
    info = zf.getinfo(name + ".npy")
    _expect(info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED),
            f"array {name!r}: unsupported zip compression {info.compress_type}")
    _expect(not info.flag_bits & 0x1, f"array {name!r} is encrypted")
    if shape is not None:
        shape = tuple(shape)
        nbytes = math.prod(shape) * dtype.itemsize  # (Python ints: no overflow)
        most = nbytes + _NPY_HEADER_SLACK
    else:
        most = max_len * dtype.itemsize + _NPY_HEADER_SLACK
    _expect(info.file_size <= most, f"array {name!r} is {info.file_size} bytes, more than its "
                                    f"expected shape and dtype allow ({most})")
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
        except ValueError as exc:
            raise CheckpointError(f"array {name!r} is not an .npy array: {exc}") from None
        _expect(version in _NPY_VERSIONS, f"array {name!r} has unsupported .npy format version "
                                          f"{version}")
        fmt, read_header = _NPY_VERSIONS[version]
        len_bytes = _read_exact(fh, struct.calcsize(fmt), name)
        (hlen,) = struct.unpack(fmt, len_bytes)
        _expect(hlen <= _NPY_HEADER_SLACK - 16, f"array {name!r} has an .npy header of {hlen} bytes")
        header_bytes = _read_exact(fh, hlen, name)
        try:
            got_shape, fortran, got_dtype = read_header(io.BytesIO(len_bytes + header_bytes),
                                                        max_header_size=_NPY_HEADER_SLACK)
        except Exception as exc:  # untrusted text: any failure to parse it is a bad file
            raise CheckpointError(f"array {name!r} has a malformed .npy header: "
                                  f"{type(exc).__name__}: {exc}") from None
        _expect(isinstance(got_dtype, np.dtype) and not got_dtype.hasobject
                and got_dtype == dtype and got_dtype.str == dtype.str,
                f"array {name!r} has dtype {got_dtype}, expected {dtype}")
        _expect(type(got_shape) is tuple and all(_is_int(n) and n >= 0 for n in got_shape),
                f"array {name!r} has a malformed shape {got_shape!r}")
        if shape is None:
            _expect(len(got_shape) == 1, f"array {name!r} must be 1-D, it has shape {got_shape}")
            _expect(got_shape[0] <= max_len, f"array {name!r} has {got_shape[0]} elements, more "
                                             f"than the {max_len} allowed")
            shape = got_shape
            nbytes = got_shape[0] * dtype.itemsize
        _expect(got_shape == shape, f"array {name!r} has shape {got_shape}, expected {shape}")
        _expect(fortran is False, f"array {name!r} is stored in Fortran order")
        header_size = np.lib.format.MAGIC_LEN + len(len_bytes) + hlen
        _expect(info.file_size == header_size + nbytes,
                f"array {name!r}: its zip entry holds {info.file_size - header_size} data bytes, "
                f"its shape and dtype need {nbytes}")
        arr = np.empty(shape, dtype) if load else None  # at most what the caller expects
        view = arr.reshape(-1).view(np.uint8) if load else None
        pos = 0
        while pos < nbytes:
            chunk = fh.read(min(_READ_CHUNK, nbytes - pos))  # (checks the CRC-32 at the end)
            _expect(chunk, f"array {name!r} is truncated")
            if view is not None:
                view[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
            pos += len(chunk)
        _expect(fh.read(1) == b"", f"array {name!r} has trailing bytes")
    return arr


def _parse_optimizer(sec, version):
    """Check the header's optimizer entry; return (class, params meta, groups, state): metas and
    state arrays as (shape, header dtype name)."""
    _expect(type(sec) is dict and set(sec) == {"class", "params", "param_groups", "state"},
            "header: malformed optimizer entry")
    cls = sec["class"]
    _expect(type(cls) is str, "header: optimizer class must be a string")
    params = sec["params"]
    _expect(type(params) is list, "header: optimizer params must be a list")
    metas = []
    for i, m in enumerate(params):
        _expect(type(m) is dict and set(m) == {"shape", "dtype"} and _is_shape(m["shape"]),
                f"header: malformed optimizer params[{i}]")
        _parse_dtype(m["dtype"], f"optimizer params[{i}]")
        metas.append((tuple(m["shape"]), m["dtype"]))
    groups = []
    total = 0
    _expect(type(sec["param_groups"]) is list and sec["param_groups"],
            "header: optimizer param_groups must be a non-empty list")
    for gi, g in enumerate(sec["param_groups"]):
        _expect(type(g) is dict and set(g) == {"n_params", "hyperparameters"}
                and _is_int(g["n_params"]) and g["n_params"] > 0
                and type(g["hyperparameters"]) is dict,
                f"header: malformed optimizer param_groups[{gi}]")
        _expect("params" not in g["hyperparameters"],
                f"header: optimizer param_groups[{gi}] hyperparameters name 'params'")
        hyper = {k: _decode_value(v, f"optimizer param_groups[{gi}][{k!r}]")
                 for k, v in g["hyperparameters"].items()}
        groups.append((g["n_params"], hyper))
        total += g["n_params"]
    _expect(total == len(metas), f"header: optimizer param_groups hold {total} params, its params "
                                 f"list {len(metas)}")
    state = {}
    _expect(type(sec["state"]) is dict, "header: optimizer state must be an object")
    for key, entry in sec["state"].items():
        _expect(key.isdigit() and str(int(key)) == key and int(key) < len(metas),
                f"header: optimizer state has an entry {key!r} that names no parameter")
        _expect(type(entry) is dict
                and set(entry) in ({"step", "arrays"}, {"step", "arrays", "scalars"})
                and (entry["step"] is None or _is_int(entry["step"]) and entry["step"] >= 0)
                and type(entry["arrays"]) is list,
                f"header: malformed optimizer state[{key}]")
        pshape, pdtype = metas[int(key)]
        arrays = {}  # name -> (shape, header dtype name)
        for a in entry["arrays"]:
            if type(a) is dict and version >= 2:
                _expect(set(a) == {"name", "shape", "dtype"} and _is_shape(a["shape"]),
                        f"header: malformed optimizer state[{key}] array entry")
                n, meta = a["name"], (tuple(a["shape"]), a["dtype"])
                _parse_dtype(meta[1], f"optimizer state[{key}][{n!r}]")
            else:
                n, meta = a, (pshape, pdtype)
            _expect(type(n) is str and n and "/" not in n and n not in arrays,
                    f"header: malformed optimizer state[{key}]")
            arrays[n] = meta
        dtypes = {n: dt for n, (_, dt) in arrays.items()}
        for n, (shape, dt) in arrays.items():
            _state_entry_ok(n, shape, dt, pshape, pdtype, dtypes,
                            f"checkpoint optimizer state[{key}][{n!r}]")
        scalars = entry.get("scalars", {})
        _expect(type(scalars) is dict and not set(scalars) & set(arrays),
                f"header: malformed optimizer state[{key}] scalars")
        scalars = {n: _decode_value(v, f"optimizer state[{key}][{n!r}]") for n, v in scalars.items()}
        _expect(all(type(v) is float for v in scalars.values()),
                f"header: optimizer state[{key}] scalars must be floats")
        state[int(key)] = (entry["step"], arrays, scalars)
    return cls, metas, groups, state


def _parse_model(sec):
    _expect(type(sec) is dict and set(sec) == {"class", "arrays"} and type(sec["class"]) is str
            and type(sec["arrays"]) is list, "header: malformed model entry")
    out = {}
    for k, e in enumerate(sec["arrays"]):
        _expect(type(e) is dict and set(e) == {"key", "shape", "dtype"} and type(e["key"]) is str
                and e["key"] and _is_shape(e["shape"]), f"header: malformed model arrays[{k}]")
        _expect(e["key"] not in out, f"header: model array {e['key']!r} listed twice")
        _parse_dtype(e["dtype"], f"model array {e['key']!r}")
        out[e["key"]] = (tuple(e["shape"]), e["dtype"])
    return out


def _check_against_optimizer(optimizer, cls, metas, groups, state):
    """Compare the file's optimizer entry with ``optimizer``; raise on any mismatch."""
    mine = type(optimizer).__name__
    _expect(cls == mine, f"the checkpoint holds the state of a {cls} optimizer; it cannot be loaded "
                         f"into a {mine}")
    pgs = optimizer.param_groups
    _expect(len(groups) == len(pgs), f"checkpoint has {len(groups)} param groups, the optimizer has "
                                     f"{len(pgs)}")
    pos = 0
    for gi, ((n, hyper), g) in enumerate(zip(groups, pgs)):
        _expect(n == len(g["params"]), f"checkpoint param_groups[{gi}] has {n} params, the "
                                       f"optimizer's has {len(g['params'])}")
        # every hyperparameter the class defines must be in the file; other keys (a scheduler's
        # "initial_lr", user tags) are taken from the file, or kept when the file lacks them
        from .optim._precision import OPTION_KEYS  # (storage options: kept when the file lacks them)

        missing = sorted(set(getattr(optimizer, "defaults", {})) - set(hyper) - set(OPTION_KEYS))
        _expect(not missing, f"checkpoint param_groups[{gi}] lacks the hyperparameters {missing} of "
                             f"{mine}")
        check = getattr(optimizer, "_check_group", None)
        if check is not None:
            merged = {k: v for k, v in g.items() if k != "params"}
            merged.update(hyper)
            merged["params"] = g["params"]
            try:
                check(merged)
            except (TypeError, ValueError, KeyError) as exc:
                raise CheckpointError(f"checkpoint param_groups[{gi}]: invalid hyperparameter: "
                                      f"{exc}") from None
        for k, p in enumerate(g["params"]):
            shape, dtype = metas[pos]
            _expect(tuple(p.shape) == shape and _dtype_name(p.dtype) == dtype,
                    f"checkpoint params[{pos}] has shape {shape} and dtype {dtype}, the optimizer's "
                    f"param_groups[{gi}]['params'][{k}] has {tuple(p.shape)} and {np.dtype(p.dtype)}")
            pos += 1
    names = getattr(optimizer, "_all_state_names", None)
    if names is not None:  # (this also bounds how many arrays per parameter are read)
        rule = getattr(optimizer, "_rule", None)
        mixed = getattr(rule, "name", None) in _P.MIXED_RULES
        buffers = tuple(names)
        names = buffers + tuple(getattr(rule, "scalar_state", ()))
        if mixed:  # low precision: block scales of 8-bit codes, master copies (the optimizer's
            # load_state_dict decides whether its groups take them)
            names += tuple(n + _SCALE for n in buffers) + (_MASTER,)
        for i, (_, arrays, scalars) in state.items():
            bad = sorted((set(arrays) | set(scalars)) - set(names))
            _expect(not bad, f"checkpoint optimizer state[{i}] has unknown entries {bad}; "
                             f"{mine} keeps {list(names)}")
            if not mixed:  # no low-precision storage: every buffer is its parameter's shape and dtype
                for n, meta in arrays.items():
                    _expect(meta == metas[i], f"checkpoint optimizer state[{i}][{n!r}] has shape "
                                              f"{meta[0]} and dtype {_dtype_text(meta[1])}; {mine} "
                                              f"keeps its state in its parameter's shape {metas[i][0]}"
                                              f" and dtype {_dtype_text(metas[i][1])}")


def _check_against_model(model, entries):
    mine = model.state_dict()
    missing = sorted(set(mine) - set(entries))
    unexpected = sorted(set(entries) - set(mine))
    _expect(not missing and not unexpected,
            f"checkpoint model arrays do not match the model (missing {missing}, unexpected "
            f"{unexpected})")
    for key, ref in mine.items():
        ref = np.asarray(ref)
        shape, dtype = entries[key]
        _expect(shape == ref.shape, f"checkpoint model array {key!r} has shape {shape}, the model's "
                                    f"{ref.shape}")
        _expect(dtype == _dtype_name(ref.dtype), f"checkpoint model array {key!r} has dtype {dtype}, "
                                                  f"the model's {ref.dtype}")


def _parse(path, f, optimizer, model):
    """Parse and fully validate the file's bytes; return (optimizer state_dict or None, model dict
    or None, extra). Raises CheckpointError; touches neither ``optimizer`` nor ``model``."""
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path!r} is not a fastdescent checkpoint (not an .npz/zip "
                              "archive, or truncated)") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        _expect(len(set(names)) == len(names), "archive lists an array twice")
        # members must occupy disjoint byte ranges: overlapping entries ("overlapped zip bombs")
        # would let a small file make the CRC pass decompress one block many times over
        spans = sorted((i.header_offset, i.header_offset + 30 + len(i.orig_filename.encode())
                        + i.compress_size) for i in infos)
        _expect(all(a[1] <= b[0] for a, b in zip(spans, spans[1:])),
                "archive members overlap (a crafted zip)")
        _expect(all(n.endswith(".npy") for n in names),
                f"archive holds non-.npy members {[n for n in names if not n.endswith('.npy')][:5]}")
        names = {n[:-4] for n in names}
        n_arrays = 0  # the header may grow with the objects loaded into, not with the file's claims
        if optimizer is not None:
            n_arrays += sum(len(g["params"]) for g in optimizer.param_groups)
        if model is not None:
            n_arrays += len(model.state_dict())
        header = _read_header(zf, names, _header_limit(n_arrays))

        expected = {_HEADER: None}  # member name -> (shape, dtype)
        opt_sec = header["optimizer"]
        if opt_sec is not None:
            cls, metas, groups, state = _parse_optimizer(opt_sec, header["version"])
            for i, (_, arrays, _) in state.items():
                for n, meta in arrays.items():
                    expected[f"{_OPT}{i}/{n}"] = meta
        model_sec = header["model"]
        if model_sec is not None:
            entries = _parse_model(model_sec)
            for key, meta in entries.items():
                expected[_MODEL + key] = meta
        extra = header["extra"]
        _expect(extra is None or type(extra) is dict, "header: extra must be an object or null")
        missing = sorted(set(expected) - names)
        unexpected = sorted(names - set(expected))
        _expect(not missing, f"checkpoint is missing arrays {missing[:10]}")
        _expect(not unexpected, f"checkpoint has unexpected arrays {unexpected[:10]}")

        # compare with the targets before reading the bulk of the data
        if optimizer is not None:
            _expect(opt_sec is not None, "checkpoint holds no optimizer state (it was saved without "
                                         "optimizer=)")
            _check_against_optimizer(optimizer, cls, metas, groups, state)
        if model is not None:
            _expect(model_sec is not None, "checkpoint holds no model (it was saved without model=)")
            _check_against_model(model, entries)

        # Read the requested sections' arrays: their shapes and dtypes were just compared with
        # the caller's objects, so no allocation exceeds what those objects hold. The sections not
        # asked for are verified (their .npy headers against the file's header, their sizes, their
        # CRC-32s) by streaming their data in bounded chunks, never materialised: a corrupted file
        # is refused even in parts not loaded, and memory stays bounded whatever those parts
        # declare (the time is that of decompressing them).
        loaded = {}
        for name, meta in expected.items():
            if name == _HEADER:
                continue
            shape, dtype = meta
            wanted = optimizer is not None if name.startswith(_OPT) else model is not None
            arr = _read_member(zf, name, _parse_dtype(dtype, name), shape, load=wanted)
            if wanted:
                loaded[name] = arr.view(_P.bfloat16()) if dtype == _BF16 else arr

    opt_sd = None  # (only for the sections asked for: the others were verified, not read)
    if optimizer is not None:
        pg, pos = [], 0
        for n, hyper in groups:
            pg.append({**hyper, "params": list(range(pos, pos + n))})
            pos += n
        st = {}
        for i in sorted(state):
            step, arrays, scalars = state[i]
            d = {} if step is None else {"step": step}
            for n in arrays:
                d[n] = loaded[f"{_OPT}{i}/{n}"]
            d.update(scalars)
            st[i] = d
        opt_sd = {"state": st, "param_groups": pg}
    model_sd = None
    if model is not None:
        model_sd = {key: loaded[_MODEL + key] for key in entries}
        for key, arr in model_sd.items():
            # fastdescent.nn models refuse non-finite parameters: find it before loading anything
            if arr.dtype.kind == "f" or _is_bf16(arr.dtype):
                _expect(bool(np.isfinite(arr).all()),
                        f"checkpoint model array {key!r} contains NaN or infinity")
    return opt_sd, model_sd, ({} if extra is None else extra)


def load_checkpoint(path, *, optimizer=None, model=None):
    """Load a checkpoint written by :func:`save_checkpoint` into ``optimizer`` and/or ``model``.

    The file is read without ``np.load`` or pickle (an object array is refused, never unpickled)
    and validated completely -- header JSON and format version, the optimizer class
    name, number of param groups and of parameters per group, parameter shapes and dtypes, the
    hyperparameters (every one the optimizer class defines present, all values valid), every array
    present with the expected dtype and shape and no other, zip CRCs, model arrays finite --
    before anything is changed. Group keys the target optimizer does not have are left to its
    ``load_state_dict`` (fastdescent's ignores a scheduler's ``initial_lr`` and refuses others);
    keys the target has and the file lacks keep their values. Then the optimizer's ``load_state_dict``
    and the model's
    ``load_state_dict`` are called; if either raises, both are restored, so a failed load changes
    nothing. Sections of the file that are not asked for (e.g. the optimizer, when only ``model=``
    is given) are validated but not loaded: their header entries are checked, and their arrays'
    ``.npy`` headers, sizes and zip CRCs are verified by streaming the data through in 1 MiB chunks
    (so a corrupted file is refused as a whole), never materialised. State saved on one backend
    loads on any other.

    Memory: every array allocated has the shape and dtype of the ``model`` array it is loaded into,
    or of a state array the ``optimizer`` can hold (its parameter's shape, in its parameter's dtype
    or one of at most 4 bytes, or one float32 per 256-element block; only names it keeps) -- compared
    before allocating; the data is streamed from the zip entry into it, with no intermediate copy
    (bfloat16 arrays are read as their 16-bit words and viewed as ``ml_dtypes.bfloat16``, which is
    imported only then) --, the JSON header may have at most 8 MiB + 4 KiB per parameter/model
    array of the objects given (:func:`save_checkpoint` refuses to write a larger one), and no zip
    entry is ever decompressed past the size its array needs. Sizes declared by the file alone
    never decide an allocation, so a small crafted file cannot exhaust memory; the time spent on
    unrequested sections is that of decompressing them.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file, read exactly as named (no ``.npz`` suffix is appended).
    optimizer : fastdescent Optimizer, optional
        Must be of the saved class, over parameters of the saved shapes and dtypes, grouped the same
        way. Its hyperparameters, state and step counts become the saved ones. A
        :class:`fastdescent.distributed.ShardedOptimizer` loads collectively (every rank reads the
        file, which may come from a run with any number of ranks, and keeps its shard; an error on
        any rank raises on every rank with nothing changed anywhere).
    model : fastdescent.nn model, optional
        Must have the saved ``state_dict`` keys, shapes and dtypes. Its parameters are copied in
        place (optimizers built on it stay bound).

    Returns
    -------
    dict
        The ``extra`` dict that was saved (``{}`` if none was).

    Raises
    ------
    CheckpointError
        The file is not a fastdescent checkpoint, is truncated or corrupted, has another format
        version, holds a pickled/object array, or does not match ``optimizer``/``model``.
        Nothing was changed.
    OSError
        The file cannot be read (e.g. ``FileNotFoundError``).
    """
    collective = getattr(optimizer, "_load_checkpoint", None)
    if collective is not None:  # a sharded optimizer: every rank reads, keeps its shard
        return collective(path, model=model)
    path = os.fspath(path)
    if model is not None and not (callable(getattr(model, "state_dict", None))
                                  and callable(getattr(model, "load_state_dict", None))):
        raise TypeError(f"model must have state_dict() and load_state_dict() (a fastdescent.nn model), "
                        f"got {type(model).__name__}")
    with open(path, "rb") as f:  # OSError (missing file, permissions) propagates as is
        try:
            opt_sd, model_sd, extra = _parse(path, f, optimizer, model)
        except CheckpointError:
            raise
        except MemoryError:
            raise
        except _READ_ERRORS as exc:
            raise CheckpointError(f"{path!r} is corrupted or truncated: {type(exc).__name__}: "
                                  f"{exc}") from None

    opt_before = optimizer.state_dict() if optimizer is not None else None
    model_before = model.state_dict() if model is not None else None
    try:
        if optimizer is not None:
            try:
                optimizer.load_state_dict(opt_sd)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"the optimizer rejected the checkpoint: {exc}") from exc
        if model is not None:
            try:
                model.load_state_dict(model_sd)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"the model rejected the checkpoint: {exc}") from exc
    except BaseException:
        # put both back as they were (each load_state_dict is an exact round trip)
        if optimizer is not None:
            try:
                optimizer.load_state_dict(opt_before)
            except Exception:  # pragma: no cover - best effort; the original error matters more
                pass
        if model is not None:
            try:
                model.load_state_dict(model_before)
            except Exception:  # pragma: no cover
                pass
        raise
    return extra
