"""Benchmarks of the ``cuda`` backend: Adam fp32 on a real GPU (pytest-benchmark).

Two workloads, each with its peers measured in the same run:

* one tensor of 2**26 elements (a coalesced bucket: a chunk plan of one tensor, 8192 chunks);
* 1000 small tensors (one multi-tensor launch through the device pointer tables).

Peers, when present: torch's fused CUDA Adam (``torch.optim.Adam(fused=True)``) on the same shapes,
and a device-to-device copy that moves the same bytes as Adam fp32 (read p, g, m, v and write
p, m, v: 28 bytes per parameter; a copy of 14 bytes per parameter reads and writes 28): the memory
roofline. The fraction of the roofline is the copy's time divided by the kernel's time.

Each benchmark first checks one step against the NumPy backend, then times steps after a warm-up
that excludes JIT compilation; every timed call ends with a device synchronisation. Skipped without
a GPU, and under Numba's CUDA simulator (it times Python threads, not a GPU).

Run: ``pytest benchmarks/bench_cuda.py --benchmark-only`` (``--benchmark-group-by=group`` to see each
workload's peers side by side).
"""

import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    pytest.skip("NUMBA_ENABLE_CUDASIM is set: the simulator cannot be benchmarked",
                allow_module_level=True)

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("no CUDA GPU: the cuda backend benchmarks need one", allow_module_level=True)

import fastdescent as fd  # noqa: E402

try:
    CU = fd.get_backend("cuda")
except fd.BackendUnavailableError as _exc:
    pytest.skip(f"cuda backend unavailable: {_exc}", allow_module_level=True)

try:
    import torch  # noqa: E402

    HAVE_TORCH_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    torch, HAVE_TORCH_CUDA = None, False

BIG = 1 << 26
N_SMALL = 1000
ROUNDS = 20
BYTES_PER_PARAM = 28  # Adam fp32: read p, g, m, v; write p, m, v


def small_sizes():
    rng = np.random.default_rng(0)
    return [int(n) for n in rng.integers(256, 8192, N_SMALL)]


WORKLOADS = {"one_2e26": [BIG], "1000_small": small_sizes()}
HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def _sync():
    cuda.synchronize()
    if HAVE_TORCH_CUDA:
        torch.cuda.synchronize()


def _run(benchmark, step):
    step()  # warm-up (JIT compilation, allocation)
    step()
    _sync()

    def timed():
        step()
        _sync()

    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=2)


def _check_against_numpy(sizes, params_dev, grads_host, init_host):
    """One fastdescent step on the device vs the NumPy backend on (a sample of) the tensors."""
    pick = list(range(len(sizes))) if len(sizes) < 50 else list(range(0, len(sizes), 97))
    ref = [init_host[i].copy() for i in pick]
    fd.Adam(ref, backend="numpy", **HP).step([grads_host[i] for i in pick])
    for k, i in enumerate(pick):
        got = CU.to_host(params_dev[i])
        np.testing.assert_allclose(got, ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_fastdescent_adam_fp32(benchmark, workload):
    sizes = WORKLOADS[workload]
    benchmark.group = f"adam_fp32_{workload}"
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads_host = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    params = [cuda.to_device(x) for x in init]
    grads = [cuda.to_device(g) for g in grads_host]
    opt = fd.Adam(params, backend="cuda", **HP)
    opt.step(grads)
    _check_against_numpy(sizes, params, grads_host, init)
    _run(benchmark, lambda: opt.step(grads))
    benchmark.extra_info.update(params=sum(sizes), tensors=len(sizes),
                                bytes_per_step=BYTES_PER_PARAM * sum(sizes))


@pytest.mark.skipif(not HAVE_TORCH_CUDA, reason="torch with CUDA not installed")
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_torch_fused_adam_fp32(benchmark, workload):
    sizes = WORKLOADS[workload]
    benchmark.group = f"adam_fp32_{workload}"
    gen = torch.Generator(device="cuda").manual_seed(1)
    params = [torch.randn(n, device="cuda", generator=gen).requires_grad_() for n in sizes]
    for p in params:
        p.grad = torch.randn(p.numel(), device="cuda", generator=gen)
    opt = torch.optim.Adam(params, fused=True, **HP)
    _run(benchmark, opt.step)
    benchmark.extra_info.update(params=sum(sizes), tensors=len(sizes))


@pytest.mark.skipif(not HAVE_TORCH_CUDA, reason="torch with CUDA not installed")
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_fastdescent_adam_fp32_on_torch_tensors(benchmark, workload):
    """fastdescent updating torch CUDA tensors in place through __cuda_array_interface__."""
    sizes = WORKLOADS[workload]
    benchmark.group = f"adam_fp32_{workload}"
    gen = torch.Generator(device="cuda").manual_seed(1)
    params = [torch.randn(n, device="cuda", generator=gen) for n in sizes]
    grads = [torch.randn(n, device="cuda", generator=gen) for n in sizes]
    opt = fd.Adam(params, **HP)  # auto: cuda
    assert opt.backend == "cuda"
    _run(benchmark, lambda: opt.step(grads))


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_device_copy_same_bytes(benchmark, workload):
    """The memory roofline: a D2D copy of 14 bytes per parameter moves Adam fp32's 28 bytes."""
    total = sum(WORKLOADS[workload])
    benchmark.group = f"adam_fp32_{workload}"
    nbytes = BYTES_PER_PARAM // 2 * total
    src = cuda.device_array(nbytes, dtype=np.uint8)
    dst = cuda.device_array(nbytes, dtype=np.uint8)
    _run(benchmark, lambda: dst.copy_to_device(src))
    benchmark.extra_info.update(bytes_moved=2 * nbytes)
