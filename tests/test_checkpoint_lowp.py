"""Checkpoints of low-precision training: bfloat16 parameters and models, 8-bit state (codes and
block scales), bfloat16 state, float32 master copies -- bit-exact round trips that continue on the
same trajectory, conversions on load, and files that lie about them refused with nothing changed."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import fastdescent as fd
from fastdescent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
SIZES = (300, 7, 1000)  # a partial 256-block, a tiny tensor, several blocks

CASES = [
    ("Adam", BF16, dict(stochastic_rounding=True, state_dtype="int8")),
    ("AdamW", np.float16, dict(master_weights=True, weight_decay=0.1)),
    ("RMSprop", BF16, dict(stochastic_rounding=True, state_dtype="bfloat16", centered=True,
                           momentum=0.5)),
    ("SGD", np.float32, dict(momentum=0.9, state_dtype="int8")),
    ("Adam", BF16, dict(master_weights=True, state_dtype="int8", amsgrad=True)),
]


def _make(name, dtype, kw, seed=0):
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in SIZES]
    return ps, getattr(fd, name)(ps, lr=1e-2, **kw)


def _grads(ps, k):
    return [np.random.default_rng(100 + k).standard_normal(p.shape).astype(np.float32) for p in ps]


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _state_bytes(opt):
    return {(i, n): _bits(np.asarray(v)).copy() for i, st in opt.state_dict()["state"].items()
            for n, v in st.items() if n != "step"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{np.dtype(c[1]).name}")
def test_round_trip_continues_bit_for_bit(tmp_path, case):
    name, dtype, kw = case
    ps, opt = _make(name, dtype, kw)
    for k in range(3):
        opt.step(_grads(ps, k))
    path = tmp_path / "c.npz"
    save_checkpoint(path, optimizer=opt)
    ps2, opt2 = _make(name, dtype, kw, seed=9)
    for a, b in zip(ps2, ps):
        a[...] = b
    load_checkpoint(path, optimizer=opt2)
    a, b = _state_bytes(opt), _state_bytes(opt2)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    for k in range(3, 6):
        opt.step(_grads(ps, k))
        opt2.step(_grads(ps2, k))
    for a, b in zip(ps, ps2):
        np.testing.assert_array_equal(_bits(a), _bits(b))


def test_bf16_model_round_trip(tmp_path):
    m = fd.nn.MLP([8, 16, 3], dtype=BF16, seed=0)
    save_checkpoint(tmp_path / "m.npz", model=m)
    header = json.loads(np.load(tmp_path / "m.npz")["header"].tobytes())
    assert {e["dtype"] for e in header["model"]["arrays"]} == {"bfloat16"}
    m2 = fd.nn.MLP([8, 16, 3], dtype=BF16, seed=5)
    load_checkpoint(tmp_path / "m.npz", model=m2)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert np.asarray(b).dtype == BF16
        np.testing.assert_array_equal(_bits(a), _bits(b))
    # a float32 model of the same shapes is not the same model
    with pytest.raises(CheckpointError, match="dtype bfloat16"):
        load_checkpoint(tmp_path / "m.npz", model=fd.nn.MLP([8, 16, 3], seed=0))


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
    from fastdescent import precision as P

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


@pytest.fixture
def saved(tmp_path):
    ps, opt = _make("Adam", BF16, dict(stochastic_rounding=True, state_dtype="int8"))
    opt.step(_grads(ps, 0))
    path = tmp_path / "s.npz"
    save_checkpoint(path, optimizer=opt)
    return path.read_bytes()


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
    for a in header["optimizer"]["state"][str(i)]["arrays"]:
        if a == name or isinstance(a, dict) and a["name"] == name:
            return a
    raise KeyError(name)


def _refused(path, match):
    ps, opt = _make("Adam", BF16, dict(stochastic_rounding=True, state_dtype="int8"), seed=3)
    opt.step(_grads(ps, 7))
    before = _state_bytes(opt)
    pbefore = [_bits(p).copy() for p in ps]
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, optimizer=opt)
    after = _state_bytes(opt)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert all(np.array_equal(a, _bits(p)) for a, p in zip(pbefore, ps))


def test_lying_files_are_refused_and_change_nothing(tmp_path, saved):
    bad = tmp_path / "bad.npz"

    # a scale array of the wrong length (header and member agree: the rule refuses it)
    def short_scale(h):
        _entry(h, 2, "exp_avg_scale")["shape"] = [3]

    _rewrite(bad, saved, short_scale,
             lambda m: m.update({"optimizer/state/2/exp_avg_scale": np.zeros(3, np.float32)}))
    _refused(bad, r"state\[2\]\['exp_avg_scale'\].*one per 256-element block")

    # the header says uint8 codes, the member holds float32
    _rewrite(bad, saved, None, lambda m: m.update(
        {"optimizer/state/0/exp_avg": np.zeros(300, np.float32)}))
    _refused(bad, "exp_avg.*dtype")

    # 8-bit codes without their scales
    def drop_scale(h):
        arrs = h["optimizer"]["state"]["1"]["arrays"]
        arrs.remove(_entry(h, 1, "exp_avg_sq_scale"))

    _rewrite(bad, saved, drop_scale, lambda m: m.pop("optimizer/state/1/exp_avg_sq_scale"))
    _refused(bad, "exp_avg_sq")

    # a master copy in bfloat16
    def bf16_master(h):
        h["optimizer"]["state"]["0"]["arrays"].append(
            {"name": "master_param", "shape": [300], "dtype": "bfloat16"})

    _rewrite(bad, saved, bf16_master, lambda m: m.update(
        {"optimizer/state/0/master_param": np.zeros(300, np.uint16)}))
    _refused(bad, "master_param")

    # the parameters declared float32 (the optimizer's are bfloat16)
    def f32_params(h):
        for m in h["optimizer"]["params"]:
            m["dtype"] = "<f4"

    _rewrite(bad, saved, f32_params)
    _refused(bad, r"params\[0\].*<f4")

    # truncated
    for n in (len(saved) // 2, len(saved) - 40):
        bad.write_bytes(saved[:n])
        _refused(bad, "truncated|corrupted|not a fastdescent checkpoint")


def test_bfloat16_declared_for_a_float32_parameter_is_refused(tmp_path):
    ps, opt = _make("SGD", np.float32, dict(momentum=0.9))
    opt.step(_grads(ps, 0))
    path = tmp_path / "f.npz"
    save_checkpoint(path, optimizer=opt)
    raw = path.read_bytes()

    def as_bf16(h):
        for m in h["optimizer"]["params"]:
            m["dtype"] = "bfloat16"

    _rewrite(path, raw, as_bf16)
    with pytest.raises(CheckpointError, match="bfloat16"):
        load_checkpoint(path, optimizer=_make("SGD", np.float32, dict(momentum=0.9))[1])


def test_save_refuses_implausible_state(tmp_path):
    ps, opt = _make("Adam", BF16, dict(master_weights=True))
    opt.step(_grads(ps, 0))
    sd = opt.state_dict()
    sd["state"][0]["master_param"] = np.asarray(sd["state"][0]["master_param"]).astype(np.float16)
    fake = type("Fake", (), {"state_dict": lambda self: sd, "param_groups": opt.param_groups})()
    with pytest.raises(CheckpointError, match="master_param"):
        save_checkpoint(tmp_path / "x.npz", optimizer=fake)
    assert not (tmp_path / "x.npz").exists()
