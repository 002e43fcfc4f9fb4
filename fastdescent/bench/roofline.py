"""The memory-roofline probe: a plain streaming kernel that moves the same bytes as an update.

An elementwise optimizer update is memory-bound: Adam in float32 reads p, g, m, v and writes p, m, v
in place, 7 x 4 = 28 bytes per parameter, and does a handful of flops on each. The fastest it can
possibly run is the time a kernel needs to stream those bytes and do nothing else. The probe is that
kernel, with the same number of arrays read and written in place, the same element count, the same
threads; ``fraction of roofline = probe time / kernel time`` (1.0 means the kernel is as fast as
memory allows).

Providers, first that loads wins:

``c``      ``fastdescent.backends.c_cffi.stream`` (``fd_stream_f32``: every dst[i] = sum of the
           srcs[i], dsts among the srcs): OpenMP, the same threading as the C kernels (the
           reference probe);
``numba``  a generated ``@njit(parallel=True)`` loop over the same arrays (used when the C library
           did not build).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["StreamProbe", "probe_provider", "stream_function"]



@functools.lru_cache(maxsize=None)
def _c_stream():
    """``prepare_stream(dsts, srcs) -> callable`` of the C backend (raises if it cannot load)."""
    from ..backends import get_backend

    get_backend("c")  # raises BackendUnavailableError with the cause
    from ..backends.c_cffi.stream import prepare_stream

    return prepare_stream


@functools.lru_cache(maxsize=None)
def _numba_stream(n_reads, n_writes):
    import numba

    srcs = [f"s{i}" for i in range(n_reads)]
    dsts = [f"d{j}" for j in range(n_writes)]
    body = " + ".join(f"{s}[i]" for s in srcs)
    lines = [f"def _k({', '.join(dsts + srcs)}, scale):",
             f"    for i in numba.prange({srcs[0]}.shape[0]):",
             f"        acc = ({body}) * scale"]
    lines += [f"        {d}[i] = acc" for d in dsts]
    ns = {"numba": numba}
    exec("\n".join(lines), ns)  # noqa: S102 - generated from integers only
    return numba.njit(parallel=True, nogil=True, cache=False)(ns["_k"])


def probe_provider():
    """``(name, None)`` of the provider that will be used, or ``(None, reason)`` if none loads."""
    reasons = []
    try:
        _c_stream()
        return "c", None
    except Exception as exc:  # noqa: BLE001 - any failure means "not this provider"
        reasons.append(f"c: {type(exc).__name__}: {exc}")
    try:
        import numba  # noqa: F401

        return "numba", None
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"numba: {type(exc).__name__}: {exc}")
    return None, "; ".join(reasons)


def stream_function():
    """The C backend's ``prepare_stream(dsts, srcs)`` (returns a no-argument callable), or None."""
    try:
        return _c_stream()
    except Exception:  # noqa: BLE001
        return None


class StreamProbe:
    """Arrays laid out like an optimizer's, and a callable streaming them with its traffic.

    The arrays are allocated exactly as an optimizer case allocates its own: the parameter, then the
    gradient, then one block per state column (``reads`` order), each a separate allocation of the
    same size. This matters: on the machines we measured, the relative placement of the streams
    changed a streaming pass's speed by up to 2x, so a probe over differently placed arrays is not
    a fair roofline for the kernel. The probe then reads every column of ``reads`` and writes every
    column of ``writes`` in place, one pass, like the update.

    Parameters
    ----------
    n_elements : int
        Elements per array (a multi-tensor layout is probed as one flat tensor of its total size:
        the same bytes in one pass, the best case).
    reads, writes : tuple of str
        Column names read, and written in place (``writes`` must be a subset of ``reads``), e.g.
        Adam: ``("param", "grad", "exp_avg", "exp_avg_sq")`` and ``("param", "exp_avg", "exp_avg_sq")``.
    dtype : numpy dtype
    passes : tuple of (reads, writes)
        Further streaming passes over the same arrays, run after the first (an update that streams
        memory twice, as LAMB over a tensor larger than the cache); their bytes count too.
    """

    def __init__(self, n_elements, reads, writes, dtype=np.float32, passes=()):
        reads, writes = tuple(reads), tuple(writes)
        passes = tuple((tuple(r), tuple(w)) for r, w in passes)
        for r, w in ((reads, writes),) + passes:
            if not w or not set(w) <= set(r) or not set(r) <= set(reads):
                raise ValueError(f"writes {w} must be a non-empty subset of reads {r}, and every "
                                 f"pass must read columns of the first ({reads})")
        self.n_elements = int(n_elements)
        self.n_reads, self.n_writes = len(reads), len(writes)
        self.dtype = np.dtype(dtype)
        self.bytes = sum(len(r) + len(w) for r, w in ((reads, writes),) + passes) \
            * self.n_elements * self.dtype.itemsize
        rng = np.random.default_rng(0)
        arrays = {}
        for name in reads:  # allocation order = the optimizer's: param, grad, then state blocks
            a = np.empty(self.n_elements, self.dtype)
            if name in ("param", "grad"):
                rng.random(out=a, dtype=self.dtype)
            else:
                a.fill(0)
            arrays[name] = a
        self.arrays = [arrays[n] for n in reads]
        self.provider, reason = probe_provider()
        if self.provider is None:
            raise RuntimeError(f"no streaming kernel is available ({reason})")
        runs = []
        for r, w in ((reads, writes),) + passes:
            srcs, dsts = [arrays[n] for n in r], [arrays[n] for n in w]
            if self.provider == "c":
                runs.append(_c_stream()(dsts, srcs))
            else:
                k = _numba_stream(len(r), len(w))
                runs.append(functools.partial(k, *dsts, *srcs, self.dtype.type(1.0 / len(r))))
        if len(runs) == 1:
            self.run = runs[0]
        else:
            def run():
                for f in runs:
                    f()
            self.run = run

    def __call__(self):
        self.run()
