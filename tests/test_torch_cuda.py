"""fastdescent.torch on the cuda backend: CUDA tensors updated by the Numba kernels in place.

Without a GPU (CI), the cuda backend runs in Numba's CUDA simulator, where "device" memory is host
memory: an optimizer made with ``backend="cuda"`` then updates CPU tensors with the same kernels,
tables and launches a GPU runs (the stand-in these tests use). With a GPU (``FASTDESCENT_TEST_GPU=1``,
``benchmarks/gpu_check.sh``) the same tests run on real CUDA tensors, and the ones marked ``gpu``
check what only a GPU has (torch's streams, a CPU tensor refused by ``backend="cuda"``).
Trajectories are compared with torch.optim's for-loop implementation on the same device.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

import fastdescent.torch as fdt  # noqa: E402
from conftest import require_backend  # noqa: E402

require_backend("cuda")

from fastdescent.backends import get_backend  # noqa: E402

SIM = get_backend("cuda").SIM
GPU = not SIM and torch.cuda.is_available()
#: where the tensors live: a GPU, or (simulator) the CPU memory that stands in for it
DEV = torch.device("cuda") if GPU else torch.device("cpu")
gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU with torch's CUDA build "
                                         "(FASTDESCENT_TEST_GPU=1)")

#: one configuration per optimizer torch has, each with a non-default option
CONFIGS = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.9))),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, alpha=0.9)),
    ("Adagrad", dict(lr_decay=0.1, initial_accumulator_value=0.5)),
    ("NAdam", dict(decoupled_weight_decay=True, weight_decay=0.1)),
    ("RAdam", dict(lr=0.01)),
    ("Adamax", dict(maximize=True)),
    ("Adadelta", dict(rho=0.5)),
    ("Rprop", dict()),
]
STEPS = 4
NONE_AT = 2  # the step at which layer 2's weight has no gradient


def make_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    return m.to(device=DEV, dtype=dtype)


def groups(m, lr):
    ps = list(m.parameters())
    return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.5 * lr}]


def data(steps, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 5, generator=g, dtype=dtype).to(DEV),
             torch.randn(4, 3, generator=g, dtype=dtype).to(DEV)) for _ in range(steps)]


def train(m, opt, batches, start=0):
    for k, (x, y) in enumerate(batches, start):
        opt.zero_grad()  # (set_to_none: new gradient tensors every step)
        torch.nn.functional.mse_loss(m(x), y).backward()
        if k == NONE_AT:
            m[2].weight.grad = None
        opt.step()


def fd_opt(name, params, hp):
    return getattr(fdt, name)(params, **hp, backend="cuda")


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-12)


def assert_close_models(m1, m2, dtype, what):
    for j, (a, b) in enumerate(zip(m1.parameters(), m2.parameters())):
        assert a.device == b.device == DEV
        torch.testing.assert_close(a, b, **tol(dtype), msg=lambda s, j=j: f"{what}: params[{j}]: {s}")


@pytest.mark.parametrize("name,hp", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_trajectory_matches_torch(name, hp):
    m, tm = make_model(), make_model()
    lr = hp.get("lr", getattr(torch.optim, name)([torch.zeros(1)]).defaults["lr"])
    opt = fd_opt(name, groups(m, lr), hp)
    topt = getattr(torch.optim, name)(groups(tm, lr), **hp, foreach=False)
    assert opt.backend == "cuda"
    batches = data(STEPS)
    train(m, opt, batches)
    train(tm, topt, batches)
    assert_close_models(m, tm, torch.float32, name)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    for i, tst in tsd["state"].items():
        assert set(sd["state"][i]) == set(tst)
        for k, v in tst.items():
            if k == "step":
                assert sd["state"][i][k].device.type == "cpu" and float(sd["state"][i][k]) == float(v)
            elif isinstance(v, torch.Tensor) and v.dim():
                assert sd["state"][i][k].device == DEV
                torch.testing.assert_close(sd["state"][i][k], v, **tol(torch.float32))


def test_float64_and_state_dict_both_ways():
    """float64 on the device; a state_dict moves to torch.optim.Adam mid-run and back, and each
    continues on the same trajectory."""
    dt = torch.float64
    m, tm = make_model(dtype=dt), make_model(dtype=dt)
    opt = fd_opt("Adam", m.parameters(), dict(lr=0.01))
    topt = torch.optim.Adam(tm.parameters(), lr=0.01, foreach=False)
    batches = data(6, dtype=dt)
    train(m, opt, batches[:3])
    train(tm, topt, batches[:3])
    # swap: torch continues from fastdescent's state, fastdescent from torch's
    m2, tm2 = copy.deepcopy(m), copy.deepcopy(tm)
    t_from_fd = torch.optim.Adam(m2.parameters(), lr=0.01, foreach=False)
    t_from_fd.load_state_dict(copy.deepcopy(opt.state_dict()))  # (torch may keep the tensors)
    fd_from_t = fd_opt("Adam", tm2.parameters(), dict(lr=0.01))
    fd_from_t.load_state_dict(topt.state_dict())  # (copied into buffers of its own)
    for mm, o in ((m, opt), (tm, topt), (m2, t_from_fd), (tm2, fd_from_t)):
        train(mm, o, batches[3:], start=3)
    for other in (tm, m2, tm2):
        assert_close_models(m, other, dt, "after the swap")


def test_fresh_gradients_are_read_every_step():
    """The fast path (same plan, new gradient tensors) never reads an old gradient: a step with
    gradients of zeros after steps with real ones moves SGD (no momentum) by nothing."""
    w = torch.nn.Parameter(torch.ones(7, device=DEV))
    opt = fd_opt("SGD", [w], dict(lr=0.5))
    for _ in range(3):
        w.grad = torch.full((7,), 2.0, device=DEV)
        opt.step()
    before = w.detach().clone()
    w.grad = torch.zeros(7, device=DEV)
    opt.step()
    torch.testing.assert_close(w.detach(), before)
    w.grad = torch.arange(7.0, device=DEV)
    opt.step()
    torch.testing.assert_close(w.detach(), before - 0.5 * torch.arange(7.0, device=DEV))


def test_deepcopy_keeps_the_backend():
    m = make_model()
    opt = fd_opt("Adam", m.parameters(), dict(lr=0.01))
    train(m, opt, data(1))
    m2 = copy.deepcopy(m)
    opt2 = fd_opt("Adam", m2.parameters(), dict(lr=0.01))
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    c = copy.deepcopy(opt)
    assert c.backend == "cuda"
    batches = data(2, seed=5)
    train(m, opt, batches, start=10)
    train(m2, opt2, batches, start=10)
    assert_close_models(m, m2, torch.float32, "deep copy")


LOWP = [
    ("Adam", torch.bfloat16, dict()),  # (bfloat16 state, torch.optim's default)
    ("Adam", torch.bfloat16, dict(stochastic_rounding=True, state_dtype="int8", seed=3)),
    ("AdamW", torch.bfloat16, dict(master_weights=True, state_dtype="float32", amsgrad=True)),
    ("Adam", torch.float32, dict(state_dtype="int8")),
    ("SGD", torch.float16, dict(master_weights=True, momentum=0.9, nesterov=True)),
    ("RMSprop", torch.bfloat16, dict(stochastic_rounding=True, centered=True, momentum=0.5)),
]


def _lowp_pair(name, dtype, kw, n=700):
    g = torch.Generator().manual_seed(2)
    w0 = torch.randn(n, generator=g).to(dtype)
    w, cw = (torch.nn.Parameter(w0.clone().to(d)) for d in (DEV, "cpu"))
    lr = 0.05 if name == "SGD" else 0.01
    return w, cw, fd_opt(name, [w], dict(lr=lr, **kw)), getattr(fdt, name)([cw], lr=lr, **kw,
                                                                            backend="c")


@pytest.mark.parametrize("name,dtype,kw", LOWP, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in LOWP])
def test_low_precision_matches_the_c_backend_bit_for_bit(name, dtype, kw):
    """bfloat16/float16 parameters and the low-precision options on the cuda backend: the
    mixed-precision kernel over the tensors' memory, bit for bit the C backend's step (parameters,
    8-bit codes and their scales, bfloat16 moments, master copies), and the state_dict of one
    loads into the other mid-run."""
    require_backend("c")
    w, cw, opt, copt = _lowp_pair(name, dtype, kw)
    g = torch.Generator().manual_seed(4)
    for k in range(4):
        grad = torch.randn(w.numel(), generator=g).to(dtype)
        w.grad, cw.grad = grad.to(DEV), grad.clone()
        opt.step()
        copt.step()
        if k == 1:  # swap the states: each continues from the other's
            sd, csd = copy.deepcopy(opt.state_dict()), copy.deepcopy(copt.state_dict())
            opt.load_state_dict(csd)
            copt.load_state_dict(sd)
    assert torch.equal(w.detach().cpu(), cw.detach())
    st, cst = opt.state_dict()["state"][0], copt.state_dict()["state"][0]
    assert st.keys() == cst.keys()
    for k, v in cst.items():
        assert st[k].device == (torch.device("cpu") if k == "step" else DEV), k
        assert torch.equal(st[k].cpu(), v), k


def test_float32_state_loads_into_an_int8_state_optimizer_on_the_device():
    """A float32 state (torch.optim's) quantized on load into 8-bit codes and scales on the
    parameter's device, as the C backend quantizes it."""
    require_backend("c")
    w, cw, opt, copt = _lowp_pair("Adam", torch.float32, dict(state_dtype="int8"))
    tw = torch.nn.Parameter(cw.detach().clone())
    topt = torch.optim.Adam([tw], lr=0.01, foreach=False)
    tw.grad = torch.linspace(-1, 1, tw.numel())
    topt.step()
    opt.load_state_dict(copy.deepcopy(topt.state_dict()))
    copt.load_state_dict(copy.deepcopy(topt.state_dict()))
    st, cst = opt.state_dict()["state"][0], copt.state_dict()["state"][0]
    assert st["exp_avg"].dtype == torch.uint8 and st["exp_avg_scale"].device == DEV
    for k, v in cst.items():
        assert torch.equal(st[k].cpu(), v), k


class _FakeCuda(torch.Tensor):
    """A CPU tensor that says it is on cuda:0 (only the device checks read it)."""

    @property
    def device(self):
        return torch.device("cuda:0")


def test_a_host_backend_named_explicitly_refuses_cuda_tensors():
    fake = torch.Tensor._make_subclass(_FakeCuda, torch.zeros(3), True)
    for backend in ("c", "numpy"):
        with pytest.raises(ValueError, match=rf"params\[0\] is on cuda:0, but this "
                                             rf"fastdescent.torch.Adam was made with "
                                             rf"backend='{backend}', which updates CPU tensors"):
            fdt.Adam([fake], backend=backend)
    with pytest.raises(ValueError, match=r"params\[0\] is on device meta: fastdescent.torch.SGD "
                                         "supports CPU and CUDA tensors only"):
        fdt.SGD([torch.nn.Parameter(torch.zeros(3, device="meta"))], lr=0.1)


@gpu
def test_gpu_cpu_tensor_refused_by_backend_cuda():
    with pytest.raises(ValueError, match=r"params\[0\] is on the CPU, but this "
                                         r"fastdescent.torch.Adam was made with backend='cuda'"):
        fdt.Adam([torch.nn.Parameter(torch.zeros(3))], backend="cuda")


@gpu
def test_gpu_auto_backend_mixes_cpu_and_cuda_tensors():
    """The default backend updates CPU tensors on the C backend and CUDA ones on cuda, in one
    optimizer, as torch.optim would."""
    a = torch.nn.Parameter(torch.linspace(-1, 1, 50))
    b = torch.nn.Parameter(torch.linspace(-1, 1, 50, device="cuda"))
    ta, tb = (torch.nn.Parameter(t.detach().clone()) for t in (a, b))
    opt = fdt.Adam([a, b], lr=0.1)
    topt = torch.optim.Adam([ta, tb], lr=0.1, foreach=False)
    for k in range(3):
        for p in (a, b, ta, tb):
            p.grad = torch.sin(p.detach() * (k + 1))
        opt.step()
        topt.step()
    torch.testing.assert_close(a, ta, **tol(torch.float32))
    torch.testing.assert_close(b, tb, **tol(torch.float32))


@gpu
def test_gpu_steps_on_a_side_stream_are_ordered():
    """Inside ``with torch.cuda.stream(s)``: the gradients are made on s and the parameters read
    there right after the step, with no synchronisation in between; large enough that a kernel
    out of order would be caught (the step and the work around it take milliseconds)."""
    n = 1 << 24
    s = torch.cuda.Stream()
    w = torch.nn.Parameter(torch.zeros(n, device="cuda"))
    tw = torch.nn.Parameter(torch.zeros(n, device="cuda"))
    opt = fdt.SGD([w], lr=1.0)
    topt = torch.optim.SGD([tw], lr=1.0, foreach=False)
    torch.cuda.synchronize()
    with torch.cuda.stream(s):
        for k in range(1, 4):
            for p, o in ((w, opt), (tw, topt)):
                g = torch.full((n,), float(k), device="cuda")
                for _ in range(20):  # (keep s busy before the gradient is final)
                    g.mul_(1.0001).div_(1.0001)
                p.grad = g
                o.step()
                p.grad = None
            out = w.detach() * 1.0  # (read on s right after the step)
    torch.cuda.synchronize()
    torch.testing.assert_close(w, tw)
    torch.testing.assert_close(out, tw.detach())


@pytest.mark.parametrize("name,hp", [("Lion", dict(lr=0.01, weight_decay=0.1)),
                                     ("LAMB", dict(lr=0.01, weight_decay=0.01))])
def test_lion_and_lamb_match_the_c_backend(name, hp):
    """The optimizers torch lacks (LAMB's per-tensor trust ratio: a reduction per tensor on the
    device) against the same class on the C backend over CPU tensors."""
    require_backend("c")
    m = make_model()
    cm = make_model().to("cpu")
    opt = fd_opt(name, groups(m, hp["lr"]), hp)
    copt = getattr(fdt, name)(groups(cm, hp["lr"]), **hp, backend="c")
    batches = data(STEPS)
    train(m, opt, batches)
    train(cm, copt, [(x.cpu(), y.cpu()) for x, y in batches])
    for j, (a, b) in enumerate(zip(m.parameters(), cm.parameters())):
        torch.testing.assert_close(a.detach().cpu(), b.detach(), **tol(torch.float32),
                                   msg=lambda s, j=j: f"{name}: params[{j}]: {s}")


def test_device_table_reuses_recent_address_columns():
    """Gradients at the addresses of a recent step are not uploaded again (each upload is a copy
    to the device): a column set, cleared and set again at the same addresses is the same device
    array; a fifth new set of addresses pushes the oldest out."""
    be = get_backend("cuda")
    tab = be.Table(torch.zeros(1).numpy().dtype, [3, 4])
    sets = [[1000 * k + 8, 1000 * k + 64] for k in range(1, 6)]
    cols = []
    for addrs in sets[:4]:
        tab.set("grad", [None, None], addrs)
        cols.append(tab.packed["grad"])
        tab.set("grad", None)
    for addrs, col in zip(sets[:4], cols):
        tab.set("grad", [None, None], addrs)
        assert tab.packed["grad"] is col
    tab.set("grad", [None, None], sets[4])  # (pushes out sets[0], the least recently used)
    tab.set("grad", [None, None], sets[1])
    assert tab.packed["grad"] is cols[1]
    tab.set("grad", [None, None], sets[0])
    assert tab.packed["grad"] is not cols[0]
    assert (tab.packed["grad"].host == sets[0]).all()


def test_mixed_step_reuses_the_upload_of_recent_gradient_addresses():
    """The mixed-precision step's gradient address table is uploaded once per set of addresses (the
    last few kept): a step whose gradients sit where a recent step's did uploads nothing."""
    w = torch.nn.Parameter(torch.zeros(300, dtype=torch.bfloat16, device=DEV))
    opt = fd_opt("Adam", [w], dict(lr=0.1))
    grads = [torch.full((300,), float(k + 1), dtype=torch.bfloat16, device=DEV) for k in range(2)]
    seen = []
    for k in range(4):
        w.grad = grads[k % 2]
        opt.step()
        plan = opt._fd_plan.buckets[0].plan
        seen.append(plan.cache["cuda.grad_uploads"][
            next(key for key in plan.cache["cuda.grad_uploads"]
                 if key[:8] == int(grads[k % 2].data_ptr()).to_bytes(8, "little"))][0])
    assert seen[0] is seen[2] and seen[1] is seen[3] and seen[0] is not seen[1]
