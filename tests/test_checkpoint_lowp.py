"""Checkpoints of low-precision training: bfloat16 parameters and models, 8-bit state (codes and
block scales), bfloat16 state, float32 master copies -- bit-exact round trips that continue on the
same trajectory, conversions on load, version 1 files, and files that lie about any of it refused
with nothing changed.

Backends: ``numpy`` (the reference); resumed on ``c`` and ``numba`` (bit-identical to it).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

import fastdescent as fd
from conftest import require_backend
from _subproc import run_script
from fastdescent import precision as P
from fastdescent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
SIZES = (300, 7, 1000)  # a partial 256-block, a tiny tensor, several blocks
BACKEND = "numpy"

#: the optimizers with a mixed-precision step, each with every state buffer it can have in use
OPTIMIZERS = {
    "Adam": dict(amsgrad=True),
    "AdamW": dict(weight_decay=0.1),
    "SGD": dict(momentum=0.9),
    "RMSprop": dict(centered=True, momentum=0.5),
}
#: parameter dtype and options; what the state_dict then holds for each buffer
CONFIGS = {
    "bf16-master": (BF16, dict(master_weights=True)),
    "bf16-sr-bf16state": (BF16, dict(stochastic_rounding=True, state_dtype="bfloat16", seed=7)),
    "f32-int8": (np.float32, dict(state_dtype="int8")),
    "bf16-int8": (BF16, dict(state_dtype="int8")),
    "f16-master": (np.float16, dict(master_weights=True)),
}
#: header dtype name of a buffer (exp_avg, ...) per config
BUFFER_DTYPE = {"bf16-master": "<f4", "bf16-sr-bf16state": "bfloat16", "f32-int8": "|u1",
                "bf16-int8": "|u1", "f16-master": "<f4"}

CASES = [
    ("Adam", BF16, dict(stochastic_rounding=True, state_dtype="int8")),
    ("AdamW", np.float16, dict(master_weights=True, weight_decay=0.1)),
    ("RMSprop", BF16, dict(stochastic_rounding=True, state_dtype="bfloat16", centered=True,
                           momentum=0.5)),
    ("SGD", np.float32, dict(momentum=0.9, state_dtype="int8")),
    ("Adam", BF16, dict(master_weights=True, state_dtype="int8", amsgrad=True)),
]


def _make(name, dtype, kw, seed=0, backend=BACKEND, sizes=SIZES):
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in sizes]
    return ps, getattr(fd, name)(ps, lr=1e-2, backend=backend, **kw)


def _grads(ps, k):
    """float32 gradients (float64 ones for float64 parameters)."""
    return [np.random.default_rng(100 + k).standard_normal(p.shape).astype(
        np.float64 if p.dtype == np.float64 else np.float32) for p in ps]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _state_bytes(opt):
    return {(i, n): (np.asarray(v).dtype, _bits(np.asarray(v)).copy())
            for i, st in opt.state_dict()["state"].items() for n, v in st.items() if n != "step"}


def _same_state(a, b):
    return a.keys() == b.keys() and all(a[k][0] == b[k][0] and np.array_equal(a[k][1], b[k][1])
                                        for k in a)


def _header(path):
    with np.load(path, allow_pickle=False) as z:
        return json.loads(z["header"].tobytes())


def _continue(tmp_path, name, dtype, kw, load_backend=BACKEND):
    """3 steps, save, load into a fresh optimizer (other lr, other parameter values, then the saved
    run's values copied in) on ``load_backend``; both continue 3 steps. Returns (uninterrupted
    optimizer, its params, resumed optimizer, its params, file header)."""
    ps, opt = _make(name, dtype, kw)
    for k in range(3):
        opt.step(_grads(ps, k))
    path = tmp_path / "c.npz"
    save_checkpoint(path, optimizer=opt)
    ps2, opt2 = _make(name, dtype, kw, seed=9, backend=load_backend)
    for g in opt2.param_groups:
        g["lr"] = 0.5
    for a, b in zip(ps2, ps):
        a[...] = b
    assert load_checkpoint(path, optimizer=opt2) == {}
    assert opt2.param_groups[0]["lr"] == 1e-2
    assert _same_state(_state_bytes(opt), _state_bytes(opt2))
    for k in range(3, 6):
        opt.step(_grads(ps, k))
        opt2.step(_grads(ps2, k))
    for a, b in zip(ps, ps2):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(_bits(a), _bits(b))
    assert _same_state(_state_bytes(opt), _state_bytes(opt2))
    return opt, ps, opt2, ps2, _header(path)


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_and_storage_continues_bit_for_bit(tmp_path, name, config):
    dtype, kw = CONFIGS[config]
    _, _, _, _, header = _continue(tmp_path, name, dtype, {**OPTIMIZERS[name], **kw})
    # what the file declares: each array's own dtype and shape, the parameters' dtype
    assert {m["dtype"] for m in header["optimizer"]["params"]} == {fd.checkpoint._dtype_name(dtype)}
    for i, n in enumerate(SIZES):
        entries = {}
        for a in header["optimizer"]["state"][str(i)]["arrays"]:
            e = a if isinstance(a, dict) else {"name": a, "shape": [n],
                                               "dtype": fd.checkpoint._dtype_name(dtype)}
            entries[e["name"]] = (e["dtype"], e["shape"])
        buffers = [k for k in entries if k != "master_param" and not k.endswith("_scale")]
        assert buffers and all(entries[b] == (BUFFER_DTYPE[config], [n]) for b in buffers)
        scales = sorted(k for k in entries if k.endswith("_scale"))
        if BUFFER_DTYPE[config] == "|u1":
            assert scales == sorted(b + "_scale" for b in buffers)
            assert all(entries[s] == ("<f4", [P.nblocks(n)]) for s in scales)
        else:
            assert not scales
        assert ("master_param" in entries) == kw.get("master_weights", False)
        if "master_param" in entries:
            assert entries["master_param"] == ("<f4", [n])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{np.dtype(c[1]).name}")
def test_round_trip_continues_bit_for_bit(tmp_path, case):
    _continue(tmp_path, *case)


@pytest.mark.parametrize("backend", ["c", "numba"])
@pytest.mark.parametrize("config", ["bf16-master", "bf16-sr-bf16state", "bf16-int8"])
def test_saved_on_numpy_resumed_on_another_backend(tmp_path, config, backend):
    """The backends' mixed steps are bit-identical, so a run resumed on another backend stays on
    the uninterrupted run's trajectory."""
    require_backend(backend)
    dtype, kw = CONFIGS[config]
    _continue(tmp_path, "RMSprop", dtype, {**OPTIMIZERS["RMSprop"], **kw}, load_backend=backend)


def _mlp_run(tmp_path, kw, backend=BACKEND, save_at=None):
    """Train a bfloat16 MLP 6 steps; with ``save_at``, save model and optimizer after that many
    steps and resume in fresh ones (other seeds, other lr) loaded from the file."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    y = np.arange(16) % 3

    def build(seed):
        model = fd.nn.MLP([8, 16, 3], dtype=BF16, seed=seed, backend=backend)
        return model, fd.Adam(model.parameters(), lr=1e-2, backend=backend, **kw)

    model, opt = build(0)
    for k in range(6):
        if k == save_at:
            save_checkpoint(tmp_path / "m.npz", optimizer=opt, model=model, extra={"step": k})
            model, opt = build(5)
            opt.param_groups[0]["lr"] = 0.3
            assert load_checkpoint(tmp_path / "m.npz", optimizer=opt, model=model) == {"step": k}
        opt.step(model.loss_and_grad(x, y)[1])
    return model, opt


@pytest.mark.parametrize("kw", [dict(master_weights=True),
                                dict(stochastic_rounding=True, state_dtype="int8", seed=3),
                                dict(stochastic_rounding=True, state_dtype="bfloat16")],
                         ids=["master", "sr-int8", "sr-bf16"])
def test_bf16_model_training_resumes_on_the_same_trajectory(tmp_path, kw):
    m_a, o_a = _mlp_run(tmp_path, kw)
    m_b, o_b = _mlp_run(tmp_path, kw, save_at=3)
    sa, sb = m_a.state_dict(), m_b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype == BF16
        np.testing.assert_array_equal(_bits(sa[k]), _bits(sb[k]))
    assert _same_state(_state_bytes(o_a), _state_bytes(o_b))
    header = _header(tmp_path / "m.npz")
    assert {e["dtype"] for e in header["model"]["arrays"]} == {"bfloat16"}
    # the model alone (the low-precision optimizer section verified, not loaded), and the optimizer
    # alone
    m_c = fd.nn.MLP([8, 16, 3], dtype=BF16, seed=9, backend=BACKEND)
    assert load_checkpoint(tmp_path / "m.npz", model=m_c) == {"step": 3}
    o_c = fd.Adam(m_c.parameters(), lr=1e-2, backend=BACKEND, **kw)
    load_checkpoint(tmp_path / "m.npz", optimizer=o_c)
    assert o_c.state_dict()["state"].keys() == o_b.state_dict()["state"].keys()


def test_bf16_model_round_trip(tmp_path):
    m = fd.nn.MLP([8, 16, 3], dtype=BF16, seed=0, backend=BACKEND)
    save_checkpoint(tmp_path / "m.npz", model=m)
    header = _header(tmp_path / "m.npz")
    assert {e["dtype"] for e in header["model"]["arrays"]} == {"bfloat16"}
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:  # the members: 16-bit words
        assert {z[k].dtype for k in z.files if k.startswith("model/")} == {np.dtype("<u2")}
    m2 = fd.nn.MLP([8, 16, 3], dtype=BF16, seed=5, backend=BACKEND)
    load_checkpoint(tmp_path / "m.npz", model=m2)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert np.asarray(b).dtype == BF16
        np.testing.assert_array_equal(_bits(a), _bits(b))
    # a float32 or float16 model of the same shapes is not the same model
    for dt in (np.float32, np.float16):
        with pytest.raises(CheckpointError, match="dtype bfloat16"):
            load_checkpoint(tmp_path / "m.npz", model=fd.nn.MLP([8, 16, 3], seed=0, dtype=dt,
                                                                backend=BACKEND))


def test_fp32_state_loads_into_int8_optimizer_and_back(tmp_path):
    ps, opt = _make("Adam", np.float32, {})
    for k in range(2):
        opt.step(_grads(ps, k))
    save_checkpoint(tmp_path / "f.npz", optimizer=opt)
    ps8, opt8 = _make("Adam", np.float32, dict(state_dtype="int8"))
    load_checkpoint(tmp_path / "f.npz", optimizer=opt8)
    st = opt8.state_dict()["state"][0]
    assert np.asarray(st["exp_avg"]).dtype == np.uint8 and "exp_avg_scale" in st
    m32 = np.asarray(opt.state_dict()["state"][0]["exp_avg"])
    m8 = P.q8_dequantize(st["exp_avg"], st["exp_avg_scale"], P.Q8S)
    assert np.abs(m8 - m32).max() <= np.abs(m32).max() * 2.0 ** -4
    save_checkpoint(tmp_path / "q.npz", optimizer=opt8)
    # into a plain optimizer: the file's group brings its state_dtype (as torch's load_state_dict
    # brings hyperparameters), and the codes come back exactly
    ps32, opt32 = _make("Adam", np.float32, {})
    load_checkpoint(tmp_path / "q.npz", optimizer=opt32)
    assert opt32.param_groups[0]["state_dtype"] == "int8"
    np.testing.assert_array_equal(opt32.state_dict()["state"][0]["exp_avg"], st["exp_avg"])
    # asking for float32 storage dequantizes it at the next step
    opt32.param_groups[0]["state_dtype"] = "float32"
    opt32.step([np.zeros(p.shape, np.float32) for p in ps32])
    m = np.asarray(opt32.state_dict()["state"][0]["exp_avg"])
    assert m.dtype == np.float32
    np.testing.assert_allclose(m, m8 * np.float32(0.9), rtol=1e-6)


# ------------------------------------------------------------------------------ version 1 files
def _plain_run():
    model = fd.nn.MLP([3, 4, 2], seed=0, backend=BACKEND)
    extra = [np.ones((3, 2), np.float32), np.ones(5)]
    opt = fd.Adam([dict(params=model.params), dict(params=extra, lr=0.1)], lr=1e-2, amsgrad=True,
                  backend=BACKEND)
    x, y = np.ones((2, 3), np.float32), np.array([0, 1])
    grads = list(model.loss_and_grad(x, y)[1]) + [np.full((3, 2), 0.5, np.float32),
                                                  np.full(5, 0.25)]
    opt.step(grads)
    return model, opt


def test_version_1_files_still_load(tmp_path):
    """A version 1 file (written before low precision: every state array with its parameter's shape
    and dtype, listed by name) is what this writer makes of float32/float64 training with the
    version number 1 -- checked byte for byte against the version 1 writer when format 2 was made."""
    model, opt = _plain_run()
    path = tmp_path / "v1.npz"
    save_checkpoint(path, optimizer=opt, model=model, extra={"epoch": 1})
    raw = path.read_bytes()
    header = _header(path)
    assert header["version"] == 2
    assert all(type(a) is str for st in header["optimizer"]["state"].values() for a in st["arrays"])
    _rewrite(path, raw, lambda h: h.update(version=1))
    assert _header(path)["version"] == 1
    with np.load(path, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    model2 = fd.nn.MLP([3, 4, 2], seed=4, backend=BACKEND)
    ps = [np.zeros((3, 2), np.float32), np.zeros(5)]
    opt2 = fd.Adam([dict(params=model2.params), dict(params=ps, lr=0.3)], lr=0.2, amsgrad=True,
                   backend=BACKEND)
    assert load_checkpoint(path, optimizer=opt2, model=model2) == {"epoch": 1}
    for i, st in opt2.state_dict()["state"].items():
        for n, v in st.items():
            if n != "step":
                np.testing.assert_array_equal(_bits(v), _bits(members[f"optimizer/state/{i}/{n}"]))
    for k, v in model2.state_dict().items():
        np.testing.assert_array_equal(_bits(v), _bits(members[f"model/{k}"]))
    assert _same_state(_state_bytes(opt), _state_bytes(opt2))
    assert [g["lr"] for g in opt2.param_groups] == [1e-2, 0.1]

    # version 1 has no per-entry dtypes: an entry that declares one is malformed there
    def declare(h):
        h["version"] = 1
        arrays = h["optimizer"]["state"]["0"]["arrays"]
        arrays[0] = {"name": arrays[0], "shape": h["optimizer"]["params"][0]["shape"],
                     "dtype": "<f4"}

    _rewrite(path, raw, declare)
    with pytest.raises(CheckpointError, match=r"malformed optimizer state\[0\]"):
        load_checkpoint(path, optimizer=opt2, model=model2)


def test_ml_dtypes_imported_only_for_bfloat16(tmp_path):
    src = """
        import sys, numpy as np, fastdescent as fd
        model = fd.nn.MLP([3, 4, 2], seed=0, backend="numpy")
        opt = fd.Adam(model.parameters(), lr=1e-2, backend="numpy", state_dtype="int8")
        opt.step(model.loss_and_grad(np.ones((2, 3), np.float32), np.array([0, 1]))[1])
        fd.save_checkpoint("a.npz", optimizer=opt, model=model)
        fd.load_checkpoint("a.npz", optimizer=opt, model=model)
        assert "ml_dtypes" not in sys.modules, "float32 + int8 checkpoint imported ml_dtypes"
        import ml_dtypes
        m = fd.nn.MLP([3, 4, 2], seed=0, backend="numpy", dtype=ml_dtypes.bfloat16)
        fd.save_checkpoint("b.npz", model=m)
        del sys.modules["ml_dtypes"]
        m2 = fd.nn.MLP([3, 4, 2], seed=1, backend="numpy", dtype=ml_dtypes.bfloat16)
        fd.load_checkpoint("b.npz", model=m2)
        assert "ml_dtypes" in sys.modules  # (imported again by the load, for the view)
        print("OK")
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(fd.__file__)))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    assert "OK" in run_script(tmp_path, src, env=env)


# ------------------------------------------------------------------------------ hostile files
def _members(raw):
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _rewrite(path, raw, edit_header=None, edit_members=None):
    members = _members(raw)
    header = json.loads(members["header"].tobytes())
    if edit_header:
        edit_header(header)
    if edit_members:
        edit_members(members)
    members["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)


def _entry(header, i, name):
    for k, a in enumerate(header["optimizer"]["state"][str(i)]["arrays"]):
        if a == name or isinstance(a, dict) and a["name"] == name:
            if not isinstance(a, dict):  # listed by name: spell it out, to be edited
                p = header["optimizer"]["params"][i]
                a = header["optimizer"]["state"][str(i)]["arrays"][k] = {
                    "name": a, "shape": list(p["shape"]), "dtype": p["dtype"]}
            return a
    raise KeyError(name)


_INT8 = ("Adam", BF16, dict(stochastic_rounding=True, state_dtype="int8"))


def _saved(tmp_path, case=_INT8, steps=1):
    ps, opt = _make(*case)
    for k in range(steps):
        opt.step(_grads(ps, k))
    path = tmp_path / "s.npz"
    save_checkpoint(path, optimizer=opt)
    return path.read_bytes()


def _refused(path, match, case=_INT8):
    """Loading ``path`` into an optimizer of ``case`` (with state of its own) raises
    CheckpointError matching ``match`` and changes nothing."""
    ps, opt = _make(*case, seed=3)
    opt.step(_grads(ps, 7))
    before = _state_bytes(opt)
    pbefore = [_bits(p).copy() for p in ps]
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, optimizer=opt)
    assert _same_state(before, _state_bytes(opt))
    assert all(np.array_equal(a, _bits(p)) for a, p in zip(pbefore, ps))
    assert hyper == [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


def test_lying_files_are_refused_and_change_nothing(tmp_path):
    saved = _saved(tmp_path)
    bad = tmp_path / "bad.npz"

    # a scale array of the wrong length (header and member agree: the rule refuses it)
    def short_scale(h):
        _entry(h, 2, "exp_avg_scale")["shape"] = [3]

    _rewrite(bad, saved, short_scale,
             lambda m: m.update({"optimizer/state/2/exp_avg_scale": np.zeros(3, np.float32)}))
    _refused(bad, r"state\[2\]\['exp_avg_scale'\] has shape \(3,\).*shape \(4,\) \(one per "
                  "256-element block")

    # the same, with only the member lying (the header says 4 blocks)
    _rewrite(bad, saved, None,
             lambda m: m.update({"optimizer/state/2/exp_avg_scale": np.zeros(3, np.float32)}))
    _refused(bad, r"'optimizer/state/2/exp_avg_scale'")

    # scales of the right shape and dtype but impossible values (the optimizer refuses them; the
    # load is undone)
    for v in (-1.0, np.inf):
        _rewrite(bad, saved, None, lambda m, v=v: m.update(
            {"optimizer/state/2/exp_avg_scale": np.full(4, v, np.float32)}))
        _refused(bad, r"optimizer rejected.*\['exp_avg_scale'\] holds")

    # the header says uint8 codes, the member holds float32
    _rewrite(bad, saved, None, lambda m: m.update(
        {"optimizer/state/0/exp_avg": np.zeros(300, np.float32)}))
    _refused(bad, "'optimizer/state/0/exp_avg'.*dtype")

    # the header says float32, the member holds the codes (uint8)
    _rewrite(bad, saved, lambda h: _entry(h, 0, "exp_avg").update(dtype="<f4"))
    _refused(bad, r"state\[0\]\['exp_avg_scale'\].*next to 8-bit codes 'exp_avg' \(uint8; the "
                  "file says float32")

    # signed int8 codes (the codes are uint8)
    _rewrite(bad, saved, lambda h: _entry(h, 0, "exp_avg").update(dtype="|i1"),
             lambda m: m.update({"optimizer/state/0/exp_avg":
                                 m["optimizer/state/0/exp_avg"].view(np.int8)}))
    _refused(bad, r"state\[0\]\['exp_avg'\] has shape \(300,\) and dtype \|i1")

    # 8-bit codes without their scales
    def drop_scale(h):
        arrs = h["optimizer"]["state"]["1"]["arrays"]
        arrs.remove(_entry(h, 1, "exp_avg_sq_scale"))

    _rewrite(bad, saved, drop_scale, lambda m: m.pop("optimizer/state/1/exp_avg_sq_scale"))
    _refused(bad, r"state\[1\]\['exp_avg_sq'\].*its block scales 'exp_avg_sq_scale'")

    # a master copy in bfloat16
    def bf16_master(h):
        h["optimizer"]["state"]["0"]["arrays"].append(
            {"name": "master_param", "shape": [300], "dtype": "bfloat16"})

    _rewrite(bad, saved, bf16_master, lambda m: m.update(
        {"optimizer/state/0/master_param": np.zeros(300, np.uint16)}))
    _refused(bad, r"state\[0\]\['master_param'\].*dtype bfloat16")

    # the parameters declared float32 (the optimizer's are bfloat16)
    def f32_params(h):
        for m in h["optimizer"]["params"]:
            m["dtype"] = "<f4"

    _rewrite(bad, saved, f32_params)
    _refused(bad, r"params\[0\].*<f4")

    # an unknown entry
    def smuggle(h):
        h["optimizer"]["state"]["0"]["arrays"].append(
            {"name": "momentum_buffer", "shape": [300], "dtype": "<f4"})

    _rewrite(bad, saved, smuggle, lambda m: m.update(
        {"optimizer/state/0/momentum_buffer": np.zeros(300, np.float32)}))
    _refused(bad, r"state\[0\] has unknown entries \['momentum_buffer'\]")

    # truncated
    for n in (len(saved) // 2, len(saved) - 40, 100):
        bad.write_bytes(saved[:n])
        _refused(bad, "truncated|corrupted|not a fastdescent checkpoint")


def test_bfloat16_member_lies(tmp_path):
    """bfloat16 arrays are stored as '<u2' words: a member of any other 2-byte dtype (float16,
    int16), or a header that calls the words something else, is refused."""
    case = ("RMSprop", BF16, dict(stochastic_rounding=True, state_dtype="bfloat16", centered=True,
                                  momentum=0.5))
    saved = _saved(tmp_path, case)
    bad = tmp_path / "bad.npz"
    key = "optimizer/state/1/square_avg"
    for dt in (np.float16, np.int16):
        _rewrite(bad, saved, None, lambda m, dt=dt: m.update({key: m[key].view(dt)}))
        _refused(bad, f"'{key}' has dtype {np.dtype(dt)}, expected uint16", case)
    # the header calls them float16 (the member '<u2' then disagrees; and no float16 state exists)
    _rewrite(bad, saved, lambda h: _entry(h, 1, "square_avg").update(dtype="<f2"))
    _refused(bad, r"state\[1\]\['square_avg'\].*dtype float16.*the parameter is bfloat16", case)
    _rewrite(bad, saved, lambda h: _entry(h, 1, "square_avg").update(dtype="<u2"))
    _refused(bad, r"state\[1\]\['square_avg'\].*dtype <u2", case)
    # float32 state of a bfloat16 parameter is legitimate: the same values as a float32 entry load,
    # converted exactly into the group's bfloat16 storage
    good = tmp_path / "good.npz"
    words = _members(saved)[key]
    as_f32 = (words.astype(np.uint32) << 16).view(np.float32)
    _rewrite(good, saved, lambda h: _entry(h, 1, "square_avg").update(dtype="<f4"),
             lambda m: m.update({key: as_f32}))
    ps, opt = _make(*case, seed=3)
    load_checkpoint(good, optimizer=opt)
    got = np.asarray(opt.state_dict()["state"][1]["square_avg"])
    assert got.dtype == BF16 and np.array_equal(got.view(np.uint16), words)


def test_bfloat16_declared_for_a_float_parameter_is_refused(tmp_path):
    ps, opt = _make("SGD", np.float32, dict(momentum=0.9))
    opt.step(_grads(ps, 0))
    path = tmp_path / "f.npz"
    save_checkpoint(path, optimizer=opt)
    raw = path.read_bytes()

    def as_bf16(h):
        for m in h["optimizer"]["params"]:
            m["dtype"] = "bfloat16"

    _rewrite(path, raw, as_bf16)
    with pytest.raises(CheckpointError, match=r"params\[0\] has shape \(300,\) and dtype "
                                              r"bfloat16.*float32"):
        load_checkpoint(path, optimizer=_make("SGD", np.float32, dict(momentum=0.9))[1])


def test_implausible_state_for_the_parameter_dtype(tmp_path):
    """Each state entry's declared dtype must be one its parameter's dtype can have: float64
    parameters keep float64 state, no float16 state exists, master copies are of bfloat16/float16
    parameters, and optimizers without a mixed step keep their parameter's dtype."""
    bad = tmp_path / "bad.npz"
    # float64 parameter, momentum buffer declared bfloat16 (words) / float32
    f64 = ("SGD", np.float64, dict(momentum=0.9))
    saved = _saved(tmp_path, f64)
    key = "optimizer/state/0/momentum_buffer"
    _rewrite(bad, saved, lambda h: _entry(h, 0, "momentum_buffer").update(dtype="bfloat16"),
             lambda m: m.update({key: m[key].astype(np.float32).astype(BF16).view(np.uint16)}))
    _refused(bad, r"state\[0\]\['momentum_buffer'\].*dtype bfloat16.*\['float64'\]", f64)
    _rewrite(bad, saved, lambda h: _entry(h, 0, "momentum_buffer").update(dtype="<f4"),
             lambda m: m.update({key: m[key].astype(np.float32)}))
    _refused(bad, r"state\[0\]\['momentum_buffer'\].*dtype float32.*\['float64'\]", f64)

    # a master copy of a float32 parameter
    f32 = ("Adam", np.float32, {})
    saved = _saved(tmp_path, f32)
    _rewrite(bad, saved, lambda h: h["optimizer"]["state"]["0"]["arrays"].append(
        {"name": "master_param", "shape": [300], "dtype": "<f4"}),
        lambda m: m.update({"optimizer/state/0/master_param": np.zeros(300, np.float32)}))
    _refused(bad, r"state\[0\]\['master_param'\].*bfloat16/float16 parameter \(this one is "
                  "float32\\)", f32)

    # float16 state of a float16 parameter
    f16 = ("AdamW", np.float16, dict(master_weights=True))
    saved = _saved(tmp_path, f16)
    key = "optimizer/state/2/exp_avg"
    _rewrite(bad, saved, lambda h: _entry(h, 2, "exp_avg").update(dtype="<f2"),
             lambda m: m.update({key: m[key].astype(np.float16)}))
    _refused(bad, r"state\[2\]\['exp_avg'\].*dtype float16.*the parameter is float16", f16)

    # an optimizer with no mixed-precision step: state must be its parameter's dtype
    ada = ("Adagrad", np.float32, {})
    saved = _saved(tmp_path, ada)
    key = "optimizer/state/0/sum"
    _rewrite(bad, saved, lambda h: _entry(h, 0, "sum").update(dtype="bfloat16"),
             lambda m: m.update({key: m[key].astype(BF16).view(np.uint16)}))
    _refused(bad, r"state\[0\]\['sum'\].*dtype bfloat16; Adagrad keeps its state in its "
                  "parameter's shape \\(300,\\) and dtype float32", ada)
    _rewrite(bad, saved, lambda h: h["optimizer"]["state"]["0"]["arrays"].append(
        {"name": "master_param", "shape": [300], "dtype": "<f4"}),
        lambda m: m.update({"optimizer/state/0/master_param": np.zeros(300, np.float32)}))
    _refused(bad, r"state\[0\]\['master_param'\]", ada)


def test_bfloat16_declared_for_a_float_model_is_refused(tmp_path):
    m = fd.nn.MLP([8, 16, 3], seed=0, dtype=np.float16, backend=BACKEND)
    save_checkpoint(tmp_path / "m.npz", model=m)
    raw = (tmp_path / "m.npz").read_bytes()

    def as_bf16(h):
        for e in h["model"]["arrays"]:
            e["dtype"] = "bfloat16"

    _rewrite(tmp_path / "m.npz", raw, as_bf16, lambda ms: ms.update(
        {k: v.view(np.uint16) for k, v in ms.items() if k.startswith("model/")}))
    m2 = fd.nn.MLP([8, 16, 3], seed=1, dtype=np.float16, backend=BACKEND)
    before = {k: v.tobytes() for k, v in m2.state_dict().items()}
    with pytest.raises(CheckpointError, match="model array '0.weight' has dtype bfloat16"):
        load_checkpoint(tmp_path / "m.npz", model=m2)
    assert before == {k: v.tobytes() for k, v in m2.state_dict().items()}

    # a bfloat16 model whose file is truncated, or holds a NaN word, changes nothing either
    mb = fd.nn.MLP([8, 16, 3], seed=0, dtype=BF16, backend=BACKEND)
    save_checkpoint(tmp_path / "b.npz", model=mb)
    raw = (tmp_path / "b.npz").read_bytes()
    target = fd.nn.MLP([8, 16, 3], seed=2, dtype=BF16, backend=BACKEND)
    before = {k: v.tobytes() for k, v in target.state_dict().items()}
    (tmp_path / "t.npz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupted"):
        load_checkpoint(tmp_path / "t.npz", model=target)

    def nan_word(ms):
        w = ms["model/2.bias"].copy()
        w[1] = 0x7FC0
        ms["model/2.bias"] = w

    _rewrite(tmp_path / "n.npz", raw, None, nan_word)
    with pytest.raises(CheckpointError, match="model array '2.bias' contains NaN"):
        load_checkpoint(tmp_path / "n.npz", model=target)
    assert before == {k: v.tobytes() for k, v in target.state_dict().items()}


class _Fake:
    """An optimizer whose state_dict is edited (save-side checks)."""

    def __init__(self, opt, sd):
        self.param_groups, self._sd = opt.param_groups, sd

    def state_dict(self):
        return self._sd


@pytest.mark.parametrize("edit,match", [
    (lambda st: st.update(master_param=np.asarray(st["master_param"]).astype(np.float16)),
     r"state\[0\]\['master_param'\].*dtype float16"),
    (lambda st: st.update(exp_avg=np.asarray(st["exp_avg"]).astype(np.float16)),
     r"state\[0\]\['exp_avg'\].*dtype float16"),
    (lambda st: st.update(exp_avg=np.zeros(300, np.int8), exp_avg_scale=np.zeros(2, np.float32)),
     r"state\[0\]\['exp_avg'\].*dtype \|i1"),
    (lambda st: st.update(exp_avg=np.zeros(300, np.uint8)),
     r"state\[0\]\['exp_avg'\].*its block scales 'exp_avg_scale'"),
    (lambda st: st.update(exp_avg_scale=np.zeros(2, np.float32)),
     r"state\[0\]\['exp_avg_scale'\].*next to 8-bit codes 'exp_avg' \(uint8; the file says "
     "float32"),
    (lambda st: st.update(exp_avg=np.zeros(300, np.uint8), exp_avg_scale=np.zeros(3, np.float32)),
     r"state\[0\]\['exp_avg_scale'\] has shape \(3,\).*shape \(2,\)"),
], ids=["f16-master", "f16-state", "int8-codes", "codes-no-scale", "scale-no-codes", "scale-len"])
def test_save_refuses_implausible_state(tmp_path, edit, match):
    ps, opt = _make("Adam", BF16, dict(master_weights=True))
    opt.step(_grads(ps, 0))
    sd = opt.state_dict()
    edit(sd["state"][0])
    with pytest.raises(CheckpointError, match=match):
        save_checkpoint(tmp_path / "x.npz", optimizer=_Fake(opt, sd))
    assert not (tmp_path / "x.npz").exists()
