"""A step refused after the buckets were (re)built leaves the state exactly as it was: no buffers of
parameters that had none, no option buffers added, no initial values that overflow the dtype (found
by a hostile review of the optimizer family; these failed before the rollback in Optimizer._step)."""

import warnings

import numpy as np
import pytest

import fastdescent as fd
from conftest import require_backend


@pytest.mark.parametrize("name", ["RAdam", "Adamax", "NAdam", "Adadelta", "Lion", "LAMB"])
def test_refused_first_step_leaves_state_empty(name):
    # README: bad input / out-of-range hyperparameters raise and leave parameters and state untouched.
    w = [np.ones(4, np.float32)]
    opt = getattr(fd, name)(w, backend="numpy")
    opt.param_groups[0]["lr"] = 1e42  # a kernel scalar overflows float32: refused
    with pytest.raises(ValueError):
        opt.step([np.ones(4, np.float32)])
    assert np.array_equal(w[0], np.ones(4, np.float32))
    assert opt.state_dict()["state"] == {}


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_rprop_float32_lr_overflow_refused(backend):
    require_backend(backend)
    # lr=1e42 does not fit the float32 step_size buffer; every other optimizer refuses such an lr.
    w = [np.ones(4, np.float32)]
    opt = fd.Rprop(w, lr=1e42, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered in cast" while filling the state
        with pytest.raises(ValueError, match="lr"):
            opt.step([np.ones(4, np.float32)])
    assert np.array_equal(w[0], np.ones(4, np.float32))


def test_rprop_refused_step_leaves_no_nonfinite_state():
    w = [np.ones(4, np.float32)]
    opt = fd.Rprop(w, lr=1e42, step_sizes=(1e-6, 1e300), backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            opt.step([np.ones(4, np.float32)])
    # today: state[0]['step_size'] == inf (step 0) after the refused step
    for st in opt.state_dict()["state"].values():
        assert np.isfinite(st["step_size"]).all()


def test_refused_rebuild_keeps_existing_state_and_goes_on_like_a_twin(host_backend):
    """amsgrad switched on (a rebuild adds max_exp_avg_sq) together with an lr that overflows float32:
    refused; the state is the one before, and the run goes on exactly like a twin that never saw it."""
    rng = np.random.default_rng(0)
    g = [rng.standard_normal(5).astype(np.float32) for _ in range(3)]
    w, t = [np.ones(5, np.float32)], [np.ones(5, np.float32)]
    opt = fd.Adam(w, lr=0.01, backend=host_backend)
    twin = fd.Adam(t, lr=0.01, backend=host_backend)
    opt.step([g[0]])
    twin.step([g[0]])
    before = opt.state_dict()
    opt.param_groups[0].update(amsgrad=True, lr=1e42)
    with pytest.raises(ValueError, match="overflows float32"):
        opt.step([g[1]])
    after = opt.state_dict()
    assert after["state"].keys() == before["state"].keys()
    for i, st in before["state"].items():
        assert after["state"][i].keys() == st.keys()  # no max_exp_avg_sq
        for k, v in st.items():
            np.testing.assert_array_equal(after["state"][i][k], v)
    opt.param_groups[0].update(amsgrad=False, lr=0.01)
    for gi in g[1:]:
        opt.step([gi])
        twin.step([gi])
    np.testing.assert_array_equal(w[0], t[0])


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_a_parameter_changed_in_place_is_refused(backend):
    """HOLE (fixed): the optimizers kept a parameter's address, dtype and shape from construction
    and never looked again: after ``p.dtype = np.int32`` the c kernel wrote float32 bits into the
    int32 view, after ``p.resize(..., refcheck=False)`` (memory freed and moved) it wrote into freed
    memory (a segfault in the hostile run); a read-only flag was ignored. Each is now a ValueError
    naming the parameter, with nothing written; restored, the parameter steps again."""
    require_backend(backend)
    ps = [np.ones(8, np.float32), np.ones((3, 4), np.float32)]
    opt = fd.Adam(ps, lr=0.1, backend=backend)
    g = [np.ones(8, np.float32), np.ones((3, 4), np.float32)]
    opt.step(g)
    p = ps[1]
    changes = [(lambda: setattr(p, "dtype", np.int32), lambda: setattr(p, "dtype", np.float32),
                "int32"),
               (lambda: setattr(p, "shape", (4, 3)), lambda: setattr(p, "shape", (3, 4)),
                r"shape \(4, 3\)"),
               (lambda: setattr(p.flags, "writeable", False),
                lambda: setattr(p.flags, "writeable", True), "read-only")]
    for change, restore, what in changes:
        before = ([a.copy() for a in ps], repr(opt.state_dict()))
        change()
        with pytest.raises(ValueError, match=rf"params\[1\] changed in place .*now .*{what}"):
            opt.step(g)
        restore()
        assert all(np.array_equal(a, b) for a, b in zip(ps, before[0]))
        assert repr(opt.state_dict()) == before[1]
        assert opt.step(g) is True
    before = repr(opt.state_dict())
    p.resize((30, 40), refcheck=False)  # (frees the memory the optimizer points at, and moves it)
    with pytest.raises(ValueError, match=r"params\[1\] changed in place .*now float32, shape "
                                         r"\(30, 40\)"):
        opt.step(g)
    assert repr(opt.state_dict()) == before
