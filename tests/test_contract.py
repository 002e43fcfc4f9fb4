"""The kernel contract (fastdescent/_contract.py) is implemented by every backend and declared by the
C header, with the contract's argument names in the contract's order.

``kind="multi"`` rows are strict everywhere. ``kind="array"`` rows (the dense-layer kernels) are strict
as soon as ANY Python backend implements the row: from then on every backend must. While no backend
has one yet they are xfail (non-strict), so work in progress elsewhere does not break CI but a row
wired into one backend and forgotten in another does. The C header is strict for every row.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import fastdescent as fd
from conftest import ALL_BACKENDS, require_backend
from fastdescent import _contract
from fastdescent import backends as reg

ROWS = list(_contract.KERNELS.values())
ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "csrc" / "fastdescent.h"


def _implemented_anywhere(row):
    for name in ALL_BACKENDS:
        if reg.backend_status()[name] is None and row.name in fd.get_backend(name).KERNELS:
            return True
    return False


def _maybe_pending(row):
    if row.kind == "array" and not _implemented_anywhere(row):
        pytest.xfail(f"array row {row.name!r} is not wired into any Python backend yet")


def test_contract_rows_are_well_formed():
    assert ROWS
    for row in ROWS:
        assert row.kind in ("multi", "array"), row
        assert set(row.optional) <= set(row.columns), row
        assert len(set(row.columns)) == len(row.columns), row
        assert len(set(row.scalars)) == len(row.scalars), row
        assert not set(row.scalars) & set(row.columns), row
        assert row.returns in (None, "float", "bool"), row
        # per-tensor int64 arrays come first among the keyword arguments; ints are scalars
        assert row.scalars[:len(row.per_tensor)] == row.per_tensor, row
        assert set(row.ints) <= set(row.scalars) and not set(row.ints) & set(row.flags), row
        assert re.fullmatch(r"[a-z][a-z0-9_]*", row.name) and re.fullmatch(r"[a-z][a-z0-9_]*", row.stem)
    assert set(_contract.DTYPES) == {"float32", "float64"}
    with pytest.raises(KeyError, match="adam"):
        _contract.row("no_such_kernel")


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_backend_implements_row_with_contract_signature(backend, row):
    require_backend(backend)
    mod = fd.get_backend(backend)
    if row.name not in mod.KERNELS:
        _maybe_pending(row)
        pytest.fail(f"backend {backend!r} does not implement contract row {row.name!r} "
                    f"(expected {mod.__name__}.{row.stem}.{row.name})")
    fn = mod.KERNELS[row.name]
    assert callable(fn)
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    kwonly = [p.name for p in params if p.kind == p.KEYWORD_ONLY]
    assert not [p for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)], \
        f"{backend}.{row.name}: *args/**kwargs hide the contract"
    assert kwonly == list(row.scalars), \
        f"{backend}.{row.name}: keyword-only scalars {kwonly} != contract {list(row.scalars)}"
    if row.kind == "multi":
        assert len(positional) == 1, f"{backend}.{row.name}: takes (table, *, scalars)"
    else:
        assert [p.name for p in positional] == list(row.columns), \
            f"{backend}.{row.name}: positional {[p.name for p in positional]} != {list(row.columns)}"
    assert all(p.default is p.empty for p in params[1:] if p.kind == p.KEYWORD_ONLY), \
        f"{backend}.{row.name}: scalars have no defaults (the caller always passes all of them)"


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_backend_has_no_kernels_outside_the_contract(backend):
    require_backend(backend)
    mod = fd.get_backend(backend)
    extra = set(mod.KERNELS) - set(_contract.KERNELS)
    assert not extra, f"{backend} has kernels that are not contract rows: {sorted(extra)}"
    assert mod.NAME == backend
    assert isinstance(mod.DEVICE, bool) and mod.DEVICE == (backend == "cuda")
    from fastdescent.backends._table import TensorTable
    assert issubclass(mod.Table, TensorTable)


# ------------------------------------------------------------------------------ the C header
def _declarations():
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    decls = {}
    for m in re.finditer(r"\b([A-Za-z_][\w \t\*]*?)\b(fd_\w+)\s*\(([^)]*)\)\s*;", text):
        ret, name, args = m.group(1).strip(), m.group(2), m.group(3)
        names, types_ = [], []
        for a in args.split(","):
            a = a.strip()
            if not a or a == "void":
                continue
            ident = re.findall(r"[A-Za-z_]\w*", a)[-1]
            names.append(ident)
            types_.append(a[: a.rfind(ident)])
        decls[name] = (ret, names, types_)
    return decls


def _is_subsequence(needles, haystack):
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


@pytest.mark.parametrize("suffix,ctype", [("f32", "float"), ("f64", "double")])
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_header_declares_row(row, suffix, ctype):
    assert HEADER.exists(), f"{HEADER} is missing"
    decls = _declarations()
    cname = f"fd_{row.name}_{suffix}"
    assert cname in decls, f"csrc/fastdescent.h does not declare {cname}"
    ret, names, types_ = decls[cname]
    assert ret == "int", f"{cname} must return int (an fd_status), returns {ret!r}"
    ordered = list(row.columns) + list(row.scalars)
    if row.kind == "multi":
        expected = ["ntensors", "sizes", *ordered] + (["out"] if row.returns else [])
        assert names == expected, f"{cname}: parameters {names} != {expected}"
        for col in row.columns:
            t = types_[names.index(col)]
            assert ctype in t and t.count("*") == 2, f"{cname}: column {col} has type {t!r}"
            assert ("const" in t.split("*")[0]) == (col in row.reads), \
                f"{cname}: column {col} ({t!r}) must be const exactly when it is read-only"
        for arg in row.per_tensor:
            t = types_[names.index(arg)]
            assert t.replace(" ", "") == "constint64_t*", f"{cname}: {arg} has type {t!r}"
        for arg in row.ints:
            t = types_[names.index(arg)]
            assert t.strip() == "int64_t", f"{cname}: integer scalar {arg} has type {t!r}"
    else:
        assert _is_subsequence(ordered, names), \
            f"{cname}: {ordered} must appear in this order among its parameters {names}"
        for col in row.columns:
            t = types_[names.index(col)]
            if col != "labels":
                assert ctype in t, f"{cname}: column {col} has type {t!r}"


def test_header_has_no_stray_fd_kernels():
    """Every fd_<x>_f32/_f64 in the header is a contract row (or a documented non-kernel helper)."""
    # fd_stream_*: the memory-roofline probe used by benchmarks; fd_mlp_step_*: the fused MLP
    # training step (a composite of contract kernels, not a per-backend row; _sgd: with fd_sgd)
    helpers = {"stream", "mlp_step", "mlp_step_sgd"}
    decls = _declarations()
    stray = sorted({m.group(1) for n in decls if (m := re.fullmatch(r"fd_(\w+)_f(32|64)", n))}
                   - set(_contract.KERNELS) - helpers)
    assert not stray, f"kernels declared in the header but not in the contract: {stray}"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_c_library_exports_row(row):
    require_backend("c")
    lib = fd.get_backend("c").lib
    for suffix in _contract.DTYPES.values():
        assert hasattr(lib, f"fd_{row.name}_{suffix}"), f"the c extension lacks fd_{row.name}_{suffix}"


def test_every_multi_row_kernel_is_exercised_by_parity():
    """Each multi row reachable from the public API has a parity path in this suite."""
    from cases import BY_KIND
    clip_rows = {"norm_pow_sum", "scale", "all_finite", "clip_value"}  # test_clip*.py
    post_rows = {"prox", "noise"}  # test_l1.py, test_noise.py
    from fastdescent import rules
    optim_rows = set(rules.RULES)  # one rule per optimizer row
    multi = {r.name for r in ROWS if r.kind == "multi"}
    known = optim_rows | clip_rows | post_rows
    assert multi <= known, f"multi rows without a parity test: {multi - known}"
    assert {c.kind if c.kind != "adamw" else "adam" for k in BY_KIND for c in BY_KIND[k]} == optim_rows


def test_kind_enums_agree_with_the_c_header():
    """ACT_KINDS / LOSS_KINDS / LAYER_TYPES are the C header's enums, value for value."""
    text = HEADER.read_text()
    enums = {}
    for name, body in re.findall(r"enum\s+(fd_\w+)\s*\{([^}]*)\}", text):
        enums[name] = {k: int(v) for k, v in re.findall(r"(FD_\w+)\s*=\s*(\d+)", body)}
    act = {f"FD_ACT_{k.upper()}": v for k, v in _contract.ACT_KINDS.items()}
    loss = {"FD_LOSS_XENT": _contract.LOSS_KINDS["cross_entropy"], "FD_LOSS_MSE": _contract.LOSS_KINDS["mse"]}
    layer = {"FD_LAYER_LINEAR": _contract.LAYER_TYPES["linear"],
             "FD_LAYER_ACT": _contract.LAYER_TYPES["activation"]}
    assert enums["fd_act_kind"] == act
    assert enums["fd_loss_kind"] == loss
    assert enums["fd_layer_type"] == layer
    lib = fd.get_backend("c").lib if reg.backend_status()["c"] is None else None
    if lib is not None:  # the compiled cdef carries the same values
        assert all(getattr(lib, k) == v for k, v in {**act, **loss, **layer}.items())
