"""Losses: mean squared error and softmax cross-entropy over integer class labels.

Both follow torch's default ``reduction="mean"``:

* ``mse``: :math:`\\frac{1}{R\\,N}\\sum (\\text{pred} - \\text{target})^2` over all ``R x N`` elements
  (``torch.nn.MSELoss``);
* ``cross_entropy``: :math:`\\frac{1}{R}\\sum_r \\big(\\operatorname{logsumexp}(z_r) - z_{r,y_r}\\big)`
  over the ``R`` rows of logits ``z`` (``torch.nn.CrossEntropyLoss`` on raw logits).

They run on the ``mse_fwd_bwd`` / ``xent_fwd_bwd`` kernels, which return the loss (accumulated in
float64) and add its gradient into a buffer in the same pass. A model uses them through
``loss="mse"`` / ``loss="cross_entropy"`` (or these functions themselves); called directly they
validate their arguments and return the loss, and its gradient with ``return_grad=True``.
"""

from __future__ import annotations

import numpy as np

from ..precision import BF16, code_of_dtype

from ._backend import resolve_dense

__all__ = ["mse", "cross_entropy", "get_loss", "LossSpec", "LOSSES"]


def _finite_check(a, what):
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        at = tuple(int(i) for i in bad)
        raise ValueError(f"{what} contains NaN or infinity (first at index {at[0] if len(at) == 1 else at})")


def _as_array(x, what):
    """``x`` as a plain ``numpy.ndarray`` (the caller then checks its dtype and shape).

    ``np.matrix`` and other subclasses become plain arrays (a matrix stays 2-D under ``reshape(-1)``);
    a masked array is taken only when no entry is masked (its masked values are arbitrary); a torch
    tensor is detached and copied to the host (bfloat16/float16 through float64, exactly); a NumPy
    bfloat16 array (``ml_dtypes``) becomes float32, exactly."""
    if type(x) is np.ndarray:
        if x.dtype.kind == "V" and code_of_dtype(x.dtype) == BF16:
            return x.astype(np.float32)
        return x
    if isinstance(x, np.ma.MaskedArray):
        mask = np.ma.getmask(x)
        if mask is not np.ma.nomask and mask.any():
            raise ValueError(f"{what} is a masked array with {int(np.count_nonzero(mask))} masked "
                             "entries; fill them (.filled(value)) or drop those rows first")
        return np.asarray(x.data)
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # a torch tensor
        t = x.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # dtypes numpy lacks (bfloat16 ...)
            if getattr(t, "is_floating_point", lambda: False)():
                return t.double().numpy()
            raise TypeError(f"{what}: a tensor of dtype {t.dtype} is not supported") from None
    try:
        return np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{what} must be array-like, got {type(x).__name__}") from exc


def _check_real(a, what, purpose="real numbers"):
    if a.dtype == np.bool_ or a.dtype.kind not in "iuf":
        raise TypeError(f"{what} must hold {purpose}, got dtype {a.dtype}")


def _to_dtype(a, dtype, what, rows=False):
    """``a`` (a real ndarray) converted to ``dtype`` (C-contiguous), checked finite AFTER the conversion.

    A value that is finite in ``a`` but overflows ``dtype`` (1e39 for float32) is named as not
    representable; NaN and infinity as such. ``rows=True`` reports the first bad row of a 2-D array
    (inputs), else the first bad index. No overflow warning escapes: the error says it all."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(a, dtype=dtype)
        # a finite sum proves every element finite (one inf or NaN makes any sum inf or NaN) at
        # about half the cost of isfinite's boolean temporary on a large input; a sum that
        # overflows (or an input that holds inf/NaN) takes the exact check
        suspect = out.dtype.kind == "f" and not np.isfinite(np.add.reduce(out, axis=None))
    if suspect and not np.isfinite(out).all():
        bad = ~np.isfinite(out)
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        src = a[at]  # a has out's shape
        where = (f"first in row {at[0]}" if rows
                 else f"first at index {at[0] if len(at) == 1 else at}")
        if a.dtype.kind in "iu" or np.isfinite(src):
            lim = float(np.finfo(out.dtype).max)
            raise ValueError(f"{what} holds a value not representable in {out.dtype} ({where}: "
                             f"{str(src)} overflows to infinity; |values| must be <= {lim:.4g})")
        raise ValueError(f"{what} contains NaN or infinity ({where})")
    return out


class LossSpec:
    """How a loss runs inside a model: its kernel, target validation and reduction scale."""

    def __init__(self, name, kernel, classification):
        self.name = name
        self.kernel = kernel
        self.classification = classification

    def scale(self, rows, n_out):
        """The kernel's ``scale`` for a mean over a batch of ``rows`` rows of ``n_out`` outputs."""
        return 1.0 / rows if self.classification else 1.0 / (rows * n_out)

    def prepare_targets(self, y, n_out, dtype, what="y"):
        """Validate targets ``y`` for a model with ``n_out`` outputs; return the array the kernel reads.

        cross_entropy: int64 labels of shape ``(R,)`` in ``[0, n_out)`` (integer dtype, or floats
        holding whole numbers). mse: ``dtype`` targets of shape ``(R, n_out)`` (``(R,)`` when
        ``n_out == 1``), finite once converted to ``dtype``. Raises ``TypeError``/``ValueError``
        naming ``what``.
        """
        a = _as_array(y, what)
        if self.classification:
            return _prepare_labels(a, n_out, what)
        _check_real(a, what, "real numbers for loss='mse'")
        if a.ndim == 1 and n_out == 1:
            a = a.reshape(-1, 1)
        if a.ndim != 2 or a.shape[1] != n_out:
            expect = "(n,) or (n, 1)" if n_out == 1 else f"(n, {n_out})"
            raise ValueError(f"{what} has shape {a.shape}; loss='mse' on a model with {n_out} outputs "
                             f"expects {expect}")
        # finite in the model's dtype: 1e39 is a finite float64 but inf as a float32 target
        return _to_dtype(a, dtype, what)

    def __repr__(self):
        return f"LossSpec({self.name!r})"


def _prepare_labels(a, n_out, what):
    if a.ndim == 2 and a.shape[1] == 1:
        a = a.reshape(-1)
    if a.ndim != 1:
        hint = " (one-hot targets? pass y.argmax(1))" if a.ndim == 2 else ""
        raise ValueError(f"{what} must be a 1-D array of integer class labels for loss='cross_entropy', "
                         f"got shape {a.shape}{hint}")
    if a.dtype == np.bool_ or a.dtype.kind not in "iuf":
        raise TypeError(f"{what} must hold integer class labels for loss='cross_entropy', "
                        f"got dtype {a.dtype}")
    if a.dtype.kind == "f":
        _finite_check(a, what)
        frac = a != np.floor(a)
        if frac.any():
            i = int(np.argmax(frac))
            raise ValueError(f"{what} must hold integer class labels for loss='cross_entropy'; "
                             f"{what}[{i}] = {float(a[i])} is not a whole number")
    if a.size:
        lo, hi = a.min(), a.max()
        if lo < 0 or hi >= n_out:
            bad = lo if lo < 0 else hi
            i = int(np.argmax(a == bad))
            bad = int(bad) if a.dtype.kind in "iu" else float(bad)
            bad = int(bad) if isinstance(bad, float) and bad.is_integer() and abs(bad) < 2**53 else bad
            raise ValueError(f"{what}: class labels must lie in [0, {n_out}) for a model with {n_out} "
                             f"outputs; {what}[{i}] = {bad}")
    return np.ascontiguousarray(a, dtype=np.int64)


LOSSES = {
    "mse": LossSpec("mse", "mse_fwd_bwd", classification=False),
    "cross_entropy": LossSpec("cross_entropy", "xent_fwd_bwd", classification=True),
}
_ALIASES = {"mean_squared_error": "mse", "crossentropy": "cross_entropy", "ce": "cross_entropy",
            "xent": "cross_entropy"}


def get_loss(loss):
    """The :class:`LossSpec` for ``loss``: a name (``"mse"``, ``"cross_entropy"``), one of the
    functions :func:`mse` / :func:`cross_entropy`, or a ``LossSpec``."""
    if isinstance(loss, LossSpec):
        return loss
    if loss is mse:
        return LOSSES["mse"]
    if loss is cross_entropy:
        return LOSSES["cross_entropy"]
    if isinstance(loss, str):
        key = _ALIASES.get(loss.lower(), loss.lower())
        if key in LOSSES:
            return LOSSES[key]
    raise ValueError(f"loss must be one of {sorted(LOSSES)} (or fastdescent.nn.mse / "
                     f"fastdescent.nn.cross_entropy), got {loss!r}")


def _float_input(a, what):
    a = _as_array(a, what)
    if a.dtype not in (np.float32, np.float64):
        if a.dtype.kind in "iu":
            a = a.astype(np.float64)
        else:
            raise TypeError(f"{what} must be a float32 or float64 array, got dtype {a.dtype}")
    return np.ascontiguousarray(a)


def cross_entropy(logits, labels, *, backend=None, return_grad=False):
    """Mean softmax cross-entropy of ``logits`` (R, C) against integer ``labels`` (R,).

    Equal to ``torch.nn.functional.cross_entropy(logits, labels)``. Leading dimensions of
    ``logits`` (..., C) are flattened into rows (``labels`` then has shape ``(...)``).

    Parameters
    ----------
    logits : array (R, C) or (..., C), float32/float64
    labels : array of int (R,), in [0, C)
    backend : str, optional
        Backend name; None means the default in force.
    return_grad : bool, default False
        Also return d loss / d logits (same shape and dtype as ``logits``).

    Returns
    -------
    float, or (float, ndarray)

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> round(fd.nn.cross_entropy(np.zeros((2, 4)), [1, 3]), 6)   # log(4)
    1.386294
    """
    z = _float_input(logits, "logits")
    if z.ndim < 2:
        raise ValueError(f"logits must have shape (rows, classes), got shape {z.shape}")
    C = z.shape[-1]
    z2 = z.reshape(-1, C)
    lab = _as_array(labels, "labels")
    if lab.shape not in (z.shape[:-1], (z2.shape[0],)):
        raise ValueError(f"labels has shape {lab.shape}, expected {z.shape[:-1]} (the rows of logits)")
    _finite_check(z2, "logits")
    lab = _prepare_labels(lab.reshape(-1), C, "labels")
    mod = resolve_dense(backend, ("xent_fwd_bwd",))
    R = z2.shape[0]
    if R == 0:
        raise ValueError("logits has no rows")
    grad = np.zeros_like(z2)
    loss = float(mod.KERNELS["xent_fwd_bwd"](grad, z2, lab, scale=1.0 / R))
    return (loss, grad.reshape(z.shape)) if return_grad else loss


def mse(pred, target, *, backend=None, return_grad=False):
    """Mean squared error over all elements, ``mean((pred - target)**2)`` (torch.nn.MSELoss).

    Parameters
    ----------
    pred : array, float32/float64
    target : array of the same shape (cast to ``pred``'s dtype); a ``(n,)`` target is accepted for
        a ``(n, 1)`` prediction.
    backend : str, optional
    return_grad : bool, default False
        Also return d loss / d pred.

    Examples
    --------
    >>> import numpy as np, fastdescent as fd
    >>> fd.nn.mse(np.array([1.0, 2.0]), np.array([1.0, 4.0]))
    2.0
    """
    p = _float_input(pred, "pred")
    t = _as_array(target, "target")
    if t.shape != p.shape:
        if p.ndim == 2 and p.shape[1] == 1 and t.shape == (p.shape[0],):
            t = t.reshape(p.shape)
        else:
            raise ValueError(f"target has shape {t.shape}, expected {p.shape} (the shape of pred)")
    if t.dtype == np.bool_ or t.dtype.kind not in "iuf":
        raise TypeError(f"target must hold real numbers, got dtype {t.dtype}")
    if p.size == 0:
        raise ValueError("pred is empty")
    _finite_check(p, "pred")
    t = _to_dtype(t, p.dtype, "target")  # finite in pred's dtype (1e39 overflows float32)
    mod = resolve_dense(backend, ("mse_fwd_bwd",))
    grad = np.zeros_like(p)
    loss = float(mod.KERNELS["mse_fwd_bwd"](grad.reshape(-1), p.reshape(-1), t.reshape(-1),
                                            scale=1.0 / p.size))
    return (loss, grad) if return_grad else loss
