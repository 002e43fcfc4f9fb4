"""Backend resolution for the dense-layer kernels (shared by models and the functional losses)."""

from __future__ import annotations

from ..backends import AUTO_ORDER, _load, default_backend, resolve
from ..errors import BackendUnavailableError

__all__ = ["DENSE_KERNELS", "resolve_dense"]

#: the contract rows a model needs (the loss rows are checked when a loss is used)
DENSE_KERNELS = ("matmul_fwd", "matmul_bwd_x", "matmul_bwd_w", "act_fwd", "act_bwd")


def _missing(mod, rows):
    kernels = getattr(mod, "KERNELS", {})
    return [r for r in rows if r not in kernels]


def resolve_dense(name, rows=DENSE_KERNELS):
    """Resolve ``name`` (None: the default in force) to a host backend implementing ``rows``.

    ``"auto"`` takes the first backend of the auto order that loads *and* implements every row, so a
    backend still missing the dense-layer kernels is passed over quietly; a backend named explicitly
    that lacks one raises :class:`~fastdescent.errors.BackendUnavailableError` naming the rows.
    """
    if name is None:
        name = default_backend()
    if name == "auto":
        for n in AUTO_ORDER:
            mod, _ = _load(n)
            if mod is not None and not _missing(mod, rows):
                return mod
        raise BackendUnavailableError(
            f"backend: no available backend implements the dense-layer kernels {list(rows)}")
    if not isinstance(name, str):
        raise TypeError(f"backend must be a backend name (str) or None, got {type(name).__name__}")
    mod = resolve(name, device=False)  # ValueError for unknown names and for 'cuda' (device arrays)
    missing = _missing(mod, rows)
    if missing:
        raise BackendUnavailableError(
            f"backend {name!r} does not implement the kernels {missing} needed by fastdescent.nn")
    return mod
