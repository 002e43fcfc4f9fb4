"""save_checkpoint / load_checkpoint: one pickle-free .npz, atomic writes, exact round trips on every
backend, and refusal (with nothing changed) of truncated, corrupted, mismatched or smuggled files."""

from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import fastdescent as fd
from cases import BY_KIND, make
from conftest import Device, require_backend
from fastdescent.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint

#: the richest configuration of each optimizer (every state buffer in use)
RICH = {kind: cases[-1] for kind, cases in BY_KIND.items()}
SHAPES = [(3, 2), (), (5,), (1,), (2, 2)]
CUDA_SHAPES = [(3,), (), (2, 2)]
STEPS, SAVE_AT = 6, 3


def _data(seed, shapes, steps=STEPS):
    rng = np.random.default_rng(seed)
    dtypes = [np.float32 if i % 2 else np.float64 for i in range(len(shapes))]
    init = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    grads = [[rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)] for _ in range(steps)]
    return init, grads


def _groups(case, params):
    return [dict(params=params[:2]), dict(params=params[2:], lr=case.hp["lr"] * 3)]


def _make(case, init, backend, lr_scale=1.0):
    dev = Device(backend)
    params = [dev.put(a) for a in init]
    opt = make(fd, case, _groups(case, params), backend=backend)
    if lr_scale != 1.0:
        for g in opt.param_groups:
            g["lr"] *= lr_scale
    return opt, params, dev


def _hyper(opt):
    """param_groups without the arrays, with every value's type (tuple vs list, int vs float)."""
    def typed(v):
        if isinstance(v, (tuple, list)):
            return (type(v).__name__, [typed(x) for x in v])
        return (type(v).__name__, repr(v))
    return [{k: typed(v) for k, v in g.items() if k != "params"} for g in opt.param_groups]


def _assert_state_equal(a, b):
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        sa, sb = a["state"][i], b["state"][i]
        assert sa.keys() == sb.keys(), i
        assert type(sa["step"]) is int and sa["step"] == sb["step"]
        for n in sa:
            if n != "step":
                assert sa[n].dtype == sb[n].dtype and sa[n].shape == sb[n].shape
                assert sa[n].tobytes() == sb[n].tobytes(), (i, n)
    assert [g["params"] for g in a["param_groups"]] == [g["params"] for g in b["param_groups"]]


class Snapshot:
    """Everything a failed load must leave alone: optimizer state, param groups (values, types and
    the parameter objects), parameter bytes, model parameters."""

    def __init__(self, opt=None, params=(), model=None, dev=None):
        self.opt, self.model, self.dev = opt, model, dev or Device("numpy")
        self.params = list(params)
        self.taken = self._take()

    def _take(self):
        out = {}
        if self.opt is not None:
            out["sd"] = self.opt.state_dict()
            out["hyper"] = _hyper(self.opt)
            out["ids"] = [[id(p) for p in g["params"]] for g in self.opt.param_groups]
        out["params"] = [self.dev.get(p).tobytes() for p in self.params]
        if self.model is not None:
            out["model"] = {k: v.tobytes() for k, v in self.model.state_dict().items()}
        return out

    def check(self):
        now = self._take()
        if self.opt is not None:
            _assert_state_equal(now["sd"], self.taken["sd"])
            assert now["hyper"] == self.taken["hyper"]
            assert now["ids"] == self.taken["ids"]
        assert now["params"] == self.taken["params"]
        if self.model is not None:
            assert now["model"] == self.taken["model"]


def _run(backend, case, init, grads, path=None, load_backend=None, via_dict=False):
    """All steps; with ``path``: save after SAVE_AT steps and continue in a FRESH optimizer (other
    hyperparameters, same parameter values) on ``load_backend`` loaded from the file (or, with
    ``via_dict``, from the in-memory state_dict). Returns (host params, final state_dict)."""
    opt, params, dev = _make(case, init, backend)
    for k, gs in enumerate(grads):
        if path is not None and k == SAVE_AT:
            save_checkpoint(path, optimizer=opt)
            saved = opt.state_dict()
            values = [dev.get(p) for p in params]
            opt, params, dev = _make(case, values, load_backend or backend, lr_scale=7.0)
            if via_dict:
                opt.load_state_dict(saved)
            else:
                assert load_checkpoint(path, optimizer=opt) == {}
        opt.step([dev.put(g) for g in gs])
        if k == 1:
            opt.param_groups[0]["lr"] *= 0.5  # saved with the state, restored by the load
    return [dev.get(p) for p in params], opt.state_dict(), _hyper(opt)


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("kind", list(RICH))
def test_round_trip_exact(host_backend, kind, tmp_path):
    case = RICH[kind]
    init, grads = _data(1, SHAPES)
    p_a, sd_a, h_a = _run(host_backend, case, init, grads)
    p_b, sd_b, h_b = _run(host_backend, case, init, grads, path=tmp_path / "ckpt.npz")
    for a, b in zip(p_a, p_b):
        assert a.tobytes() == b.tobytes()
    _assert_state_equal(sd_a, sd_b)
    assert h_a == h_b
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


def test_round_trip_cuda_simulator(tmp_path):
    require_backend("cuda")
    case = RICH["adam"]
    init, grads = _data(2, CUDA_SHAPES, steps=4)
    p_a, sd_a, h_a = _run("cuda", case, init, grads)
    p_b, sd_b, h_b = _run("cuda", case, init, grads, path=tmp_path / "c.npz")
    for a, b in zip(p_a, p_b):
        assert a.tobytes() == b.tobytes()
    _assert_state_equal(sd_a, sd_b)
    assert h_a == h_b
    # and the device state saved by cuda loads on a host backend, same as the in-memory state_dict
    p_c, sd_c, _ = _run("cuda", case, init, grads, path=tmp_path / "d.npz", load_backend="numpy")
    p_d, sd_d, _ = _run("cuda", case, init, grads, path=tmp_path / "e.npz", load_backend="numpy",
                        via_dict=True)
    for a, b in zip(p_c, p_d):
        assert a.tobytes() == b.tobytes()
    _assert_state_equal(sd_c, sd_d)


@pytest.mark.parametrize("src,dst,kind", [*[("c", "numba", k) for k in RICH],
                                          ("numba", "c", "adam"), ("numpy", "c", "rmsprop")])
def test_across_backends(src, dst, kind, tmp_path):
    """Saved on ``src``, loaded on ``dst``: the trajectory is the one a load of the in-memory
    state_dict gives, bit for bit, and that of continuing on ``src`` (to the backends' documented
    agreement: bitwise on the machines we test, but FMA contraction may differ elsewhere)."""
    require_backend(src)
    require_backend(dst)
    case = RICH[kind]
    init, grads = _data(3, SHAPES)
    p_file, sd_file, h_file = _run(src, case, init, grads, path=tmp_path / "a.npz", load_backend=dst)
    p_dict, sd_dict, h_dict = _run(src, case, init, grads, path=tmp_path / "b.npz",
                                   load_backend=dst, via_dict=True)
    for a, b in zip(p_file, p_dict):
        assert a.tobytes() == b.tobytes()
    _assert_state_equal(sd_file, sd_dict)
    assert h_file == h_dict
    p_src, _, _ = _run(src, case, init, grads)
    for a, b in zip(p_file, p_src):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _mlp(seed=0, dtype=np.float32):
    return fd.nn.MLP([4, 6, 3], seed=seed, dtype=dtype, backend="numpy")


def _xy():
    rng = np.random.default_rng(5)
    return rng.standard_normal((8, 4)).astype(np.float32), np.arange(8) % 3


def _trained(backend="numpy", seed=0, steps=3, kind="adam"):
    model = _mlp(seed)
    opt = make(fd, RICH[kind], model.parameters(), backend=backend)
    x, y = _xy()
    for _ in range(steps):
        _, grads = model.loss_and_grad(x, y)
        opt.step(grads)
    return model, opt


def test_model_optimizer_extra(tmp_path):
    model, opt = _trained()
    extra = {"epoch": 3, "loss": 0.1 + 0.2, "seen": [1, 2.5, None, True, "x"], "nested": {"a": {}},
             "big": 2 ** 70, "np": np.float64(1 / 3)}
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, optimizer=opt, model=model, extra=extra)
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]  # exactly the given path, no ".npz" added
    model2 = _mlp(seed=9)
    opt2 = make(fd, RICH["adam"], model2.parameters(), backend="numpy")
    got = load_checkpoint(str(path), optimizer=opt2, model=model2)
    assert got == extra and type(got["seen"]) is list and type(got["big"]) is int
    for a, b in zip(model.params, model2.params):
        assert a.tobytes() == b.tobytes()
    _assert_state_equal(opt.state_dict(), opt2.state_dict())
    assert _hyper(opt) == _hyper(opt2)
    # the optimizer is still bound to the model's arena: the next steps agree bit for bit
    x, y = _xy()
    for _ in range(2):
        for m, o in ((model, opt), (model2, opt2)):
            o.step(m.loss_and_grad(x, y)[1])
    for a, b in zip(model.params, model2.params):
        assert a.tobytes() == b.tobytes()


def test_only_model_or_only_optimizer(tmp_path):
    model, opt = _trained()
    save_checkpoint(tmp_path / "m.npz", model=model)
    save_checkpoint(tmp_path / "o.npz", optimizer=opt, extra={"k": 1})
    save_checkpoint(tmp_path / "both.npz", model=model, optimizer=opt)
    m2 = _mlp(seed=4)
    assert load_checkpoint(tmp_path / "m.npz", model=m2) == {}
    assert all(a.tobytes() == b.tobytes() for a, b in zip(model.params, m2.params))
    o2 = make(fd, RICH["adam"], _mlp(seed=4).parameters(), backend="numpy")
    assert load_checkpoint(tmp_path / "o.npz", optimizer=o2) == {"k": 1}
    _assert_state_equal(opt.state_dict(), o2.state_dict())
    # a model alone out of a full checkpoint
    m3 = _mlp(seed=5)
    load_checkpoint(tmp_path / "both.npz", model=m3)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(model.params, m3.params))
    # asking for what the file does not hold
    snap = Snapshot(o2)
    with pytest.raises(CheckpointError, match="no optimizer"):
        load_checkpoint(tmp_path / "m.npz", optimizer=o2)
    snap.check()
    with pytest.raises(CheckpointError, match="no model"):
        load_checkpoint(tmp_path / "o.npz", model=m3)
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "none.npz")


def test_param_arena_and_fresh_optimizer(tmp_path):
    arena = fd.ParamArena([(3, 2), (4,)], np.float64)
    arena.flat_params[...] = np.linspace(-1, 1, arena.flat_params.size)
    opt = fd.RMSprop(arena, lr=0.01, momentum=0.5, centered=True)
    save_checkpoint(tmp_path / "fresh.npz", optimizer=opt)  # no state yet
    arena.flat_grads[...] = 0.5
    opt.step()
    opt.step()
    save_checkpoint(tmp_path / "a.npz", optimizer=opt)
    arena2 = fd.ParamArena([(3, 2), (4,)], np.float64)
    arena2.flat_params[...] = arena.flat_params
    opt2 = fd.RMSprop(arena2, lr=0.5, momentum=0.5, centered=True)
    load_checkpoint(tmp_path / "a.npz", optimizer=opt2)
    _assert_state_equal(opt.state_dict(), opt2.state_dict())
    arena2.flat_grads[...] = 0.25
    arena.flat_grads[...] = 0.25
    opt.step()
    opt2.step()
    assert arena.flat_params.tobytes() == arena2.flat_params.tobytes()
    load_checkpoint(tmp_path / "fresh.npz", optimizer=opt2)
    assert opt2.state_dict()["state"] == {}


def test_hyperparameter_types_round_trip(tmp_path):
    p = [np.zeros(3, np.float32)]
    opt = fd.Adam([dict(params=p, tag="enc", note=None, sched=(1, 2.5, [3, (4,)]), opts={"k": [True]},
                        cap=np.float32(0.1), n=np.int64(7), weird=float("inf"))],
                  lr=1, betas=(0.9, 0.99))
    opt.step([np.ones(3, np.float32)])
    save_checkpoint(tmp_path / "h.npz", optimizer=opt)
    opt2 = fd.Adam([dict(params=[np.zeros(3, np.float32)], tag="", note=0, sched=None, opts=None,
                         cap=None, n=None, weird=None)], lr=0.5, betas=[0.1, 0.2])
    load_checkpoint(tmp_path / "h.npz", optimizer=opt2)
    g = opt2.param_groups[0]
    assert _hyper(opt) == _hyper(opt2)
    assert type(g["lr"]) is int and g["lr"] == 1
    assert type(g["betas"]) is tuple and g["betas"] == (0.9, 0.99)
    assert g["sched"] == (1, 2.5, [3, (4,)]) and type(g["sched"][2][1]) is tuple
    assert type(g["cap"]) is np.float32 and g["cap"] == np.float32(0.1)
    assert type(g["n"]) is np.int64 and g["weird"] == float("inf")


def test_schedulers(tmp_path):
    """Resuming with a scheduler: its "initial_lr" in the groups, its state_dict (inf included) in
    extra."""
    model, opt = _trained(kind="sgd")
    sched = fd.nn.StepLR(opt, step_size=2, gamma=0.5)
    plateau = fd.nn.ReduceLROnPlateau(opt)
    sched.step()
    extra = {"step_lr": sched.state_dict(), "plateau": plateau.state_dict()}
    assert extra["plateau"]["best"] == float("inf")
    save_checkpoint(tmp_path / "s.npz", optimizer=opt, model=model, extra=extra)
    model2 = _mlp(seed=3)
    opt2 = make(fd, RICH["sgd"], model2.parameters(), backend="numpy")
    opt2.param_groups[0]["lr"] = 0.125
    sched2 = fd.nn.StepLR(opt2, step_size=2, gamma=0.5)  # records initial_lr = 0.125
    got = load_checkpoint(tmp_path / "s.npz", optimizer=opt2, model=model2)
    assert got == extra
    sched2.load_state_dict(got["step_lr"])
    assert _hyper(opt2) == _hyper(opt) and opt2.param_groups[0]["initial_lr"] == RICH["sgd"].hp["lr"]
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    # a file without initial_lr loads into groups that have one (which they keep) ...
    save_checkpoint(tmp_path / "plain.npz", optimizer=make(fd, RICH["sgd"], _mlp().parameters()))
    load_checkpoint(tmp_path / "plain.npz", optimizer=opt2)
    assert opt2.param_groups[0]["initial_lr"] == RICH["sgd"].hp["lr"]
    # ... and a file with one loads into groups without (the optimizer's rule for such keys)
    load_checkpoint(tmp_path / "s.npz", optimizer=make(fd, RICH["sgd"], _mlp().parameters()))


def test_float_hyperparameters_exact(tmp_path):
    lrs = [0.1 + 0.2, 1e-308, 5e-324, 1 / 3, 2.0 ** -60, 123456789.123456789]
    params = [np.zeros(2) for _ in lrs]
    opt = fd.SGD([dict(params=[p], lr=lr) for p, lr in zip(params, lrs)], momentum=0.9)
    save_checkpoint(tmp_path / "f.npz", optimizer=opt)
    opt2 = fd.SGD([dict(params=[np.zeros(2)]) for _ in lrs], lr=0.5, momentum=0.9)
    load_checkpoint(tmp_path / "f.npz", optimizer=opt2)
    assert [g["lr"] for g in opt2.param_groups] == lrs


# ------------------------------------------------------------------------------ bad values at save
@pytest.mark.parametrize("extra", [
    {"s": {1, 2}}, {"t": (1, 2)}, {1: "int key"}, {"deep": [{"t": (1,)}]},
    {"i": np.int64(3)}, {"o": object()}, {"b": b"bytes"}, {"a": np.zeros(2)}, [1, 2], "text"])
def test_non_json_extra_rejected_before_writing(extra, tmp_path):
    model, opt = _trained()
    path = tmp_path / "x.npz"
    save_checkpoint(path, model=model, extra={"v": 1})
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="extra"):
        save_checkpoint(path, model=model, optimizer=opt, extra=extra)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["x.npz"]
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "new.npz", model=model, extra=extra)
    assert os.listdir(tmp_path) == ["x.npz"]


def test_non_json_hyperparameter_rejected(tmp_path):
    opt = fd.SGD([dict(params=[np.zeros(2)], fn=print)], lr=0.1)
    with pytest.raises(CheckpointError, match=r"param_groups\[0\]\['fn'\]"):
        save_checkpoint(tmp_path / "x.npz", optimizer=opt)
    opt = fd.SGD([dict(params=[np.zeros(2)], d={1: 2})], lr=0.1)
    with pytest.raises(CheckpointError, match="not a str"):
        save_checkpoint(tmp_path / "x.npz", optimizer=opt)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ atomic writes
def test_failure_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    model, opt = _trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model=model, optimizer=opt, extra={"v": 1})
    before = path.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def failing(fp, array, *a, **kw):
        calls.append(1)
        if len(calls) == 4:  # some members written; this one half written
            fp.write(b"\x93NUMPY partial")
            raise OSError("disk full (simulated)")
        return real(fp, array, *a, **kw)

    model.params[0][...] += 1.0
    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, optimizer=opt, extra={"v": 2})
    assert len(calls) == 4
    monkeypatch.setattr(np.lib.format, "write_array", real)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # the temporary file was removed

    for name in ("fsync", "replace"):
        def boom(*a, **kw):
            raise OSError(f"{name} failed (simulated)")  # noqa: B023 (called in this iteration)
        with monkeypatch.context() as m:
            m.setattr(os, name, boom)
            with pytest.raises(OSError, match="simulated"):
                save_checkpoint(path, model=model, extra={"v": 3})
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["ckpt.npz"]
    m2 = _mlp(seed=3)
    assert load_checkpoint(path, model=m2) == {"v": 1}


def test_killed_mid_write_keeps_previous_file(tmp_path):
    """A process killed (SIGKILL-like, no cleanup) in the middle of writing leaves the old file."""
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model=_mlp(seed=1), extra={"v": 1})
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, sys
        import numpy as np
        sys.path[:0] = {sys.path!r}
        import fastdescent as fd
        from fastdescent.checkpoint import save_checkpoint
        real = np.lib.format.write_array
        n = [0]
        def dying(fp, array, *a, **kw):
            n[0] += 1
            if n[0] == 3:
                fp.write(b"\\x93NUMPY partial")
                fp.flush()
                os._exit(9)
            return real(fp, array, *a, **kw)
        np.lib.format.write_array = dying
        model = fd.nn.MLP([4, 6, 3], seed=2, backend="numpy")
        save_checkpoint({str(path)!r}, model=model, extra={{"v": 2}})
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert res.returncode == 9, res.stderr.decode()
    assert path.read_bytes() == before
    leftovers = [n for n in os.listdir(tmp_path) if n != "ckpt.npz"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.npz.")  # a killed writer's temp
    assert load_checkpoint(path, model=_mlp()) == {"v": 1}


def test_pathlike_and_exact_name(tmp_path):
    model = _mlp()
    save_checkpoint(tmp_path / "noext", model=model)
    save_checkpoint(str(tmp_path / "s.npz"), model=model)
    assert sorted(os.listdir(tmp_path)) == ["noext", "s.npz"]
    assert load_checkpoint(pathlib.Path(tmp_path / "noext"), model=model) == {}
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "noext.npz", model=model)
    # plain numpy can read it, without pickle
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        assert json.loads(z["header"].tobytes())["version"] == FORMAT_VERSION
        assert z["model/0.weight"].tobytes() == model.params[0].tobytes()


# ------------------------------------------------------------------------------ bad files
@pytest.fixture
def saved(tmp_path):
    """A full checkpoint (Adam(amsgrad) + model + extra) and fresh targets to load it into."""
    model, opt = _trained(steps=2)
    path = tmp_path / "good.npz"
    save_checkpoint(path, model=model, optimizer=opt, extra={"epoch": 2})
    return path, path.read_bytes()


def _targets(seed=7, kind="adam", dtype=np.float32, sizes=(4, 6, 3)):
    model = fd.nn.MLP(list(sizes), seed=seed, dtype=dtype, backend="numpy")
    opt = make(fd, RICH[kind], model.parameters(), backend="numpy")
    x, y = _xy()
    if dtype == np.float32 and tuple(sizes) == (4, 6, 3):
        opt.step(model.loss_and_grad(x, y)[1])  # some state of its own to protect
    return model, opt


def _refused(path, match=None, **targets):
    """Loading ``path`` raises CheckpointError and changes nothing."""
    model, opt = targets.get("model"), targets.get("optimizer")
    if model is None and opt is None:
        model, opt = _targets()
    snap = Snapshot(opt, model=model)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path, optimizer=opt, model=model)
    snap.check()
    return str(info.value)


def _members(raw):
    """{name: array} of a good file (read without pickle)."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write_members(path, members):
    with open(path, "wb") as f:  # (a file object: np.savez appends no suffix)
        np.savez(f, **members)


def _with_header(path, raw, edit):
    members = _members(raw)
    header = json.loads(members["header"].tobytes())
    edit(header)
    members["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    _write_members(path, members)


def test_truncated(saved, tmp_path):
    path, raw = saved
    bad = tmp_path / "t.npz"
    for n in sorted({0, 1, 4, 30, 100, len(raw) // 3, len(raw) // 2, len(raw) - 100, len(raw) - 23,
                     len(raw) - 1}):
        bad.write_bytes(raw[:n])
        _refused(bad)


def test_bit_flips(saved, tmp_path):
    """A flipped bit is refused, or (zip metadata nobody reads, e.g. a timestamp) harmless: the load
    then gives exactly what the good file gives. A flip in any array's data is always refused."""
    path, raw = saved
    ref_model, ref_opt = _targets()
    load_checkpoint(path, model=ref_model, optimizer=ref_opt)
    bad = tmp_path / "f.npz"
    rng = np.random.default_rng(0)
    offsets = sorted(set(range(0, len(raw), max(1, len(raw) // 80))) | set(rng.integers(0, len(raw), 40)))
    refused = 0
    for off in offsets:
        data = bytearray(raw)
        data[off] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(data))
        model, opt = _targets()
        snap = Snapshot(opt, model=model)
        try:
            extra = load_checkpoint(bad, model=model, optimizer=opt)
        except CheckpointError:
            snap.check()
            refused += 1
        else:
            assert extra == {"epoch": 2}
            _assert_state_equal(opt.state_dict(), ref_opt.state_dict())
            assert _hyper(opt) == _hyper(ref_opt)
            assert all(a.tobytes() == b.tobytes() for a, b in zip(model.params, ref_model.params))
    assert refused > len(offsets) // 2
    # data bytes of every array
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            data = bytearray(raw)
            data[start + info.file_size - 1] ^= 0x10  # the last byte of the member
            bad.write_bytes(bytes(data))
            _refused(bad)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x"
    model, opt = _targets()
    cases = {
        "empty": b"",
        "text": b"hello world\n" * 10,
        "npy": None,
        "pickle": pickle.dumps({"state": {}, "param_groups": []}),
        "empty zip": None,
        "other npz": None,
    }
    for name, content in cases.items():
        if name == "npy":
            buf = io.BytesIO()
            np.save(buf, np.zeros(3))
            content = buf.getvalue()
        elif name == "empty zip":
            buf = io.BytesIO()
            zipfile.ZipFile(buf, "w").close()
            content = buf.getvalue()
        elif name == "other npz":
            buf = io.BytesIO()
            np.savez(buf, a=np.zeros(3))
            content = buf.getvalue()
        bad.write_bytes(content)
        _refused(bad, model=model, optimizer=opt)


def test_bad_header(saved, tmp_path):
    path, raw = saved
    bad = tmp_path / "h.npz"
    members = _members(raw)
    for text in (b"{not json", b"[]", b'{"format": "fastdescent-checkpoint"}', b"\xff\xfe",
                 b'{"format": "fastdescent-checkpoint", "version": NaN}'):
        _write_members(bad, dict(members, header=np.frombuffer(text, np.uint8)))
        _refused(bad)
    _write_members(bad, dict(members, header=members["header"].astype(np.int32)))
    _refused(bad, match="dtype")
    _with_header(bad, raw, lambda h: h.update(version=FORMAT_VERSION + 1))
    assert "version" in _refused(bad)
    _with_header(bad, raw, lambda h: h.update(version=True))
    _refused(bad, match="version")
    _with_header(bad, raw, lambda h: h.update(format="something-else"))
    _refused(bad, match="not a fastdescent checkpoint")
    _with_header(bad, raw, lambda h: h.update(surprise=1))
    _refused(bad, match="unexpected")
    _with_header(bad, raw, lambda h: h["optimizer"]["param_groups"][0]["hyperparameters"].update(
        lr=-1.0))
    _refused(bad, match="lr")
    _with_header(bad, raw, lambda h: h["optimizer"]["param_groups"][0]["hyperparameters"].update(
        betas={"tuple": [0.9, {"bogus": 1}]}))
    _refused(bad, match="betas")
    _with_header(bad, raw, lambda h: h["optimizer"]["param_groups"][0]["hyperparameters"].pop(
        "eps"))
    _refused(bad, match=r"lacks the hyperparameters \['eps'\]")
    _with_header(bad, raw, lambda h: h["optimizer"]["param_groups"][0]["hyperparameters"].update(
        surprise=1))  # an unknown key: the optimizer refuses it (it could change the update rule)
    _refused(bad, match="surprise")
    _with_header(bad, raw, lambda h: h["optimizer"]["state"]["0"].update(step=-1))
    _refused(bad)
    _with_header(bad, raw, lambda h: h["optimizer"]["state"]["0"].update(step=2.5))
    _refused(bad)
    _with_header(bad, raw, lambda h: h["optimizer"]["state"].update({"99": h["optimizer"]["state"]["0"]}))
    _refused(bad, match="99")


def test_missing_and_unexpected_arrays(saved, tmp_path):
    path, raw = saved
    bad = tmp_path / "m.npz"
    members = _members(raw)
    for name in ("optimizer/state/3/max_exp_avg_sq", "model/2.bias", "header"):
        _write_members(bad, {k: v for k, v in members.items() if k != name})
        _refused(bad, match="missing|header")
    _write_members(bad, dict(members, **{"model/9.weight": np.zeros(2, np.float32)}))
    _refused(bad, match="unexpected")
    # the header and the arrays disagree
    for name, arr in (("optimizer/state/0/exp_avg", np.zeros((4, 6), np.float64)),
                      ("optimizer/state/0/exp_avg", np.zeros((6, 4), np.float32)),
                      ("model/0.bias", np.zeros(6, np.float64)),
                      ("model/0.bias", np.zeros((1, 6), np.float32))):
        _write_members(bad, dict(members, **{name: arr}))
        _refused(bad, match="dtype|shape")


def test_mismatched_targets(saved):
    path, _ = saved
    # wrong optimizer class
    for kind in ("adamw", "sgd"):
        model, opt = _targets(kind=kind)
        assert "Adam" in _refused(path, model=model, optimizer=opt)
    # wrong dtype / shapes / counts
    model, opt = _targets(dtype=np.float64)
    _refused(path, match="dtype", model=model, optimizer=opt)
    model, opt = _targets(sizes=(4, 7, 3))
    _refused(path, match="shape", model=model, optimizer=opt)
    model, opt = _targets(sizes=(4, 6, 6, 3))
    _refused(path, match="params|missing", model=model, optimizer=opt)
    model, _ = _targets()
    p = model.params
    opt = make(fd, RICH["adam"], [dict(params=p[:2]), dict(params=p[2:])], backend="numpy")
    _refused(path, match="param groups", model=model, optimizer=opt)
    _refused(path, match="param groups", optimizer=opt)
    # a model that does not match, with an optimizer that does: neither changes
    model, opt = _targets()
    _refused(path, model=_mlp(dtype=np.float64), optimizer=opt)


def test_pickle_smuggling_never_unpickles(saved, tmp_path):
    """An object array whose unpickling would run code is refused without being unpickled."""
    path, raw = saved
    bad = tmp_path / "evil.npz"
    members = _members(raw)
    _Evil.fired = False
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil()
    for name in ("optimizer/state/0/exp_avg", "model/0.weight", "header"):
        _write_members(bad, dict(members, **{name: evil}))  # np.savez pickles object arrays
        with zipfile.ZipFile(bad) as zf:
            assert b"_evil_payload" in zf.read(name + ".npy")  # the trap is really there
        _refused(bad)
        assert not _Evil.fired
    bad.write_bytes(pickle.dumps(_Evil()))
    _refused(bad)
    assert not _Evil.fired
    # sanity: unpickling it would indeed have fired
    pickle.loads(pickle.dumps(_Evil()))
    assert _Evil.fired


def _evil_payload():
    _Evil.fired = True
    return "boom"


class _Evil:
    fired = False

    def __reduce__(self):
        return (_evil_payload, ())


def test_restored_when_a_load_state_dict_raises(saved, monkeypatch):
    """Validation passed, then the optimizer's or the model's load_state_dict raises: nothing
    (optimizer or model) stays changed."""
    path, _ = saved
    model, opt = _targets()
    snap = Snapshot(opt, model=model)

    def refuse(self, sd, *a, **kw):
        raise ValueError("refused (simulated)")

    monkeypatch.setattr(type(model), "load_state_dict", refuse)
    with pytest.raises(CheckpointError, match="model rejected"):
        load_checkpoint(path, model=model, optimizer=opt)
    snap.check()
    monkeypatch.undo()
    real = type(opt).load_state_dict
    calls = []

    def refuse_first(self, sd):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("refused (simulated)")
        return real(self, sd)

    monkeypatch.setattr(type(opt), "load_state_dict", refuse_first)
    with pytest.raises(CheckpointError, match="optimizer rejected"):
        load_checkpoint(path, model=model, optimizer=opt)
    snap.check()


def test_non_finite_model_refused_before_loading(tmp_path):
    model, opt = _trained()
    model.params[1][0] = np.nan
    save_checkpoint(tmp_path / "nan.npz", model=model, optimizer=opt)
    m2, o2 = _targets()
    _refused(tmp_path / "nan.npz", match="NaN", model=m2, optimizer=o2)


# ------------------------------------------------------------------------------ hostile sizes
# Each file below is small; what it declares is large. A load must refuse it (CheckpointError,
# nothing changed) or read it within bounded memory -- never allocate what the file alone claims.
# Memory is measured with tracemalloc (NumPy reports its data buffers to it), so nothing large is
# ever allocated by these tests, before or after the fix.
_MiB = 1 << 20


def _npy(arr=None, *, header=None, data=b"", version=(1, 0), raw_header=None):
    """An .npy member: ``arr`` written normally, or a crafted ``header`` dict followed by ``data``."""
    buf = io.BytesIO()
    if arr is not None:
        np.lib.format.write_array(buf, arr, allow_pickle=False)
    elif raw_header is not None:
        buf.write(raw_header + data)
    else:
        write = {(1, 0): np.lib.format.write_array_header_1_0,
                 (2, 0): np.lib.format.write_array_header_2_0}[version]
        write(buf, header)
        buf.write(data)
    return buf.getvalue()


def _rezip(path, raw, replace=(), compress=None):
    """Copy the archive ``raw`` to ``path``, members (name -> bytes or a writer fn) replaced/added."""
    replace = dict(replace)
    with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(path, "w") as z:
        for info in zin.infolist():
            if info.filename not in replace:
                z.writestr(info.filename, zin.read(info))
        for name, content in replace.items():
            zi = zipfile.ZipInfo(name)
            zi.compress_type = compress or zipfile.ZIP_STORED
            if callable(content):
                with z.open(zi, "w", force_zip64=True) as out:
                    content(out)
            else:
                z.writestr(zi, content)


def _peak_bytes(fn):
    """(fn(), the peak traced allocation in bytes while it ran)."""
    import tracemalloc
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_unrequested_section_verified_without_materialising(saved, tmp_path):
    """An optimizer-only load of a file whose model section (not asked for) declares a 16 MiB array
    stored as 16 KiB of deflated zeros: the array is never held in memory (before: read twice,
    zf.read plus np.load's copy -- 2**28 elements took 4 GB and 20 s, 2**31 was OOM-killed), yet
    the unrequested section is still verified: a corrupted byte in it is refused."""
    model, opt = _trained(steps=1)
    good = tmp_path / "o.npz"
    save_checkpoint(good, optimizer=opt)
    raw = good.read_bytes()
    n = 2 * _MiB  # float64 elements: 16 MiB declared
    header = json.loads(_members(raw)["header"].tobytes())
    header["model"] = {"class": "MLP", "arrays": [{"key": "w", "shape": [n], "dtype": "<f8"}]}

    def zeros(out):
        np.lib.format.write_array_header_1_0(out, {"descr": "<f8", "fortran_order": False,
                                                   "shape": (n,)})
        for _ in range(n * 8 // _MiB):
            out.write(bytes(_MiB))

    bomb = tmp_path / "bomb.npz"
    _rezip(bomb, raw, {"header.npy": _npy(np.frombuffer(json.dumps(header).encode(), np.uint8)),
                       "model/w.npy": zeros}, compress=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < _MiB
    opt2 = make(fd, RICH["adam"], _mlp(seed=3).parameters(), backend="numpy")
    extra, peak = _peak_bytes(lambda: load_checkpoint(bomb, optimizer=opt2))
    assert extra == {}
    _assert_state_equal(opt.state_dict(), opt2.state_dict())
    assert peak < 4 * _MiB, peak  # the unrequested 16 MiB array was streamed, not held
    # ... but verified: a flipped data byte in the (unrequested) model section is refused
    path, good_raw = saved
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("model/0.weight.npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(good_raw)
    data[start + info.file_size - 1] ^= 0x10
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    _, opt3 = _targets()
    _refused(bad, match="corrupted|CRC", optimizer=opt3)


def test_requested_array_streamed_into_place(tmp_path):
    """A requested array is read straight into its preallocated array: the peak is its size plus
    a bounded read buffer (before: twice its size, the zip member's bytes and np.load's copy)."""
    from fastdescent.checkpoint import _read_member
    a = np.arange(_MiB, dtype=np.float64)  # 8 MiB
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/w.npy", _npy(a))
    with zipfile.ZipFile(path) as zf:
        got, peak = _peak_bytes(lambda: _read_member(zf, "model/w", np.dtype("<f8"), a.shape))
    assert got.dtype == a.dtype and got.shape == a.shape and got.tobytes() == a.tobytes()
    assert peak < a.nbytes + 3 * _MiB, peak


def _lies(shape):
    """(member, .npy bytes, expected message) whose .npy header or size disagrees with the JSON
    header, which is left intact; ``shape`` is the true shape of parameter 0 (float32)."""
    ok = {"descr": "<f4", "fortran_order": False, "shape": shape}
    nbytes = int(np.prod(shape)) * 4
    exp_avg = "optimizer/state/0/exp_avg"
    return [
        # the reviewer's case: np.load would call np.empty(10**14) -> MemoryError
        (exp_avg, _npy(header=dict(ok, shape=(10 ** 14,)), data=bytes(16)), "shape"),
        (exp_avg, _npy(header=dict(ok, shape=(10 ** 9, 10 ** 9)), data=bytes(16)), "shape"),
        (exp_avg, _npy(header=dict(ok, descr="<f8"), data=bytes(2 * nbytes)), "dtype"),
        (exp_avg, _npy(header=dict(ok, descr=">f4"), data=bytes(nbytes)), "dtype"),
        (exp_avg, _npy(header=dict(ok, fortran_order=True), data=bytes(nbytes)), "Fortran"),
        (exp_avg, _npy(header=ok, data=bytes(nbytes - 4)), "data bytes"),
        (exp_avg, _npy(header=ok, data=bytes(nbytes + 8)), "data bytes"),
        (exp_avg, _npy(header=ok, data=bytes(nbytes), version=(2, 0)), None),  # (accepted)
        (exp_avg, b"\x93NUMPY\x03\x00" + _npy(header=ok, data=bytes(nbytes))[8:], "version"),
        (exp_avg, _npy(raw_header=b"\x93NUMPY\x02\x00" + (2 ** 31).to_bytes(4, "little") + b"{"),
         "header"),
        (exp_avg, _npy(raw_header=b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4}  \n"), "header"),
        ("model/0.weight", _npy(header=dict(ok, shape=(2 ** 40,)), data=bytes(nbytes)), "shape"),
        ("header", _npy(header={"descr": "|u1", "fortran_order": False, "shape": (10 ** 12,)},
                        data=b"{}"), "header"),
    ]


def test_npy_header_lies_refused_before_allocating(saved, tmp_path, monkeypatch):
    """The JSON header is intact, the member's own .npy header (or its size) lies: refused with a
    CheckpointError naming the member, before anything is allocated from the lie (before: np.load
    trusted the .npy header and MemoryError escaped)."""
    path, raw = saved
    with zipfile.ZipFile(path) as zf:
        shape = np.lib.format.read_array_header_1_0(
            io.BytesIO(zf.read("optimizer/state/0/exp_avg.npy")[8:]))[0]
    sizes = []
    real_empty = np.empty

    def empty(shape, *args, **kw):  # record, and refuse anything large
        n = int(np.prod(shape, dtype=object))
        sizes.append(n)
        assert n < _MiB, f"np.empty({shape}) from a crafted file"
        return real_empty(shape, *args, **kw)

    monkeypatch.setattr(np, "empty", empty)
    bad = tmp_path / "lie.npz"
    for member, content, match in _lies(shape):
        _rezip(bad, raw, {member + ".npy": content})
        if match is None:
            model, opt = _targets()
            load_checkpoint(bad, model=model, optimizer=opt)
            continue
        msg = _refused(bad, match=match)
        assert repr(member) in msg, msg
    assert sizes  # (the accepted file was read through np.empty)


def test_zip_entry_inflating_past_its_size_is_cut(saved, tmp_path):
    """A deflated entry whose stream inflates to 32 MiB while the zip directory (size and CRC)
    describes the real, small array: never more than the declared size (plus a bounded buffer) is
    decompressed into memory, and the load gives exactly the good file's result."""
    path, raw = saved
    name = "optimizer/state/0/exp_avg.npy"
    with zipfile.ZipFile(path) as zf:
        good = zf.read(name)
    bad = tmp_path / "zb.npz"
    _rezip(bad, raw, {name: good + bytes(32 * _MiB)}, compress=zipfile.ZIP_DEFLATED)
    data = bytearray(bad.read_bytes())
    with zipfile.ZipFile(bad) as zf:
        info, start_dir = zf.getinfo(name), zf.start_dir
    fields = (zipfile.crc32(good), len(good))
    local = info.header_offset  # local header: crc at +14, uncompressed size at +22
    central = data.index(b"PK\x01\x02", start_dir)
    while data[central + 46:central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    for off_crc, off_size in ((local + 14, local + 22), (central + 16, central + 24)):
        data[off_crc:off_crc + 4] = fields[0].to_bytes(4, "little")
        data[off_size:off_size + 4] = fields[1].to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    ref_model, ref_opt = _targets()
    load_checkpoint(path, model=ref_model, optimizer=ref_opt)
    model, opt = _targets()
    _, peak = _peak_bytes(lambda: load_checkpoint(bad, model=model, optimizer=opt))
    _assert_state_equal(opt.state_dict(), ref_opt.state_dict())
    assert peak < 4 * _MiB, peak


def test_header_size_bounded(saved, tmp_path):
    """The JSON header may have 8 MiB + 4 KiB per parameter/array of the objects involved: a larger
    one is refused at save (nothing written) and at load (before reading it)."""
    model, opt = _trained(steps=1)
    big = {"blob": "x" * (9 * _MiB)}
    with pytest.raises(CheckpointError, match="header"):
        save_checkpoint(tmp_path / "big.npz", model=model, optimizer=opt, extra=big)
    assert not (tmp_path / "big.npz").exists()
    save_checkpoint(tmp_path / "ok.npz", model=model, optimizer=opt, extra={"blob": "x" * _MiB})
    path, raw = saved
    bad = tmp_path / "bighdr.npz"
    _with_header(bad, raw, lambda h: h.update(extra=big))
    _refused(bad, match="header")


def test_overlapping_zip_members_refused(tmp_path):
    """Central-directory entries that point into each other's bytes ("overlapped" zip bombs, which
    this Python's zipfile does not detect) are refused before anything is decompressed."""
    import struct

    model, opt = _trained()
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, optimizer=opt, model=model)
    data = bytearray(path.read_bytes())
    cds = [i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"]
    assert len(cds) >= 2
    first_offset = struct.unpack_from("<I", data, cds[0] + 42)[0]
    struct.pack_into("<I", data, cds[1] + 42, first_offset)  # member 2 claims member 1's bytes
    path.write_bytes(bytes(data))
    before = [p.copy() for p in model.parameters().params] if hasattr(model.parameters(), "params") else None
    with pytest.raises(CheckpointError, match="overlap"):
        load_checkpoint(path, optimizer=opt, model=model)
    if before is not None:
        assert all((a == b).all() for a, b in zip(before, model.parameters().params))
