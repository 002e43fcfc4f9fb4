"""Hostile inputs to the fused training step (csrc/fd_fused.c through backends/c/fused.py; the plan in
fastdescent/nn/fused.py): arrays the step writes through changed in place after the step was made.
The fused step must do what the kernel-by-kernel step does (tests/test_fused.py's twin), i.e. refuse
what ``optimizer.step`` refuses, and write nothing then."""

from __future__ import annotations

import os
import re
import signal
import warnings

import numpy as np
import pytest

import fastdescent as fd

from test_fused import FUSED, fused_module, fused_step, unfused_step


_ADDR = re.compile(r"0x[0-9a-f]+")


def _twins(backend, opt, monkeypatch, rows=10):
    """(model, optimizer, step) with the fused step and with the kernel-by-kernel one."""
    fused_module(backend)
    out = []
    for fused in (True, False):
        m = fd.nn.MLP([6, 16, 3], seed=0, backend=backend)
        o = (fd.SGD(m.parameters(), lr=0.05, momentum=0.9, backend=backend) if opt == "sgd"
             else fd.Adam(m.parameters(), lr=1e-2, backend=backend))
        st = fused_step(m, o, "cross_entropy", rows) if fused else unfused_step(
            m, o, "cross_entropy", rows, monkeypatch)
        out.append((m, o, st))
    return out


def _batch(rows=10):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(rows, 6)).astype(np.float32),
            rng.integers(0, 3, size=rows).astype(np.int64))


def _opts(backend):
    return ["sgd", "adam"] if backend == "c" else ["adam"]


GRAD_CHANGES = {
    "shape": lambda m: setattr(m.arena.grads[0], "shape", (16, 6)),
    "dtype": lambda m: setattr(m.arena.grads[0], "dtype", np.int32),
    "flat_view": lambda m: setattr(m.layers[0].weight_grad, "shape", (96,)),
    "flat_grads_read_only": lambda m: setattr(m.arena.flat_grads.flags, "writeable", False),
}


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("change", sorted(GRAD_CHANGES))
def test_gradient_changed_in_place_refused_like_unfused(backend, change, monkeypatch):
    """A gradient array of the model changed in place between two calls of a made step: the
    kernel-by-kernel step refuses it (optimizer.step checks its gradient list's layout at every
    step) and writes nothing; the fused step wrote through the pointers it took at bind time and
    kept training."""
    x, y = _batch()
    for opt in _opts(backend):
        twins = _twins(backend, opt, monkeypatch)
        for m, _o, st in twins:
            st(x, y)
            GRAD_CHANGES[change](m)
        errors = []
        for m, o, st in twins:
            before = m.arena.flat_params.copy()
            with pytest.raises((ValueError, TypeError)) as exc:
                st(x, y)
            errors.append(type(exc.value))
            np.testing.assert_array_equal(m.arena.flat_params, before)
            assert o.state[0]["step"] == 1
        assert errors[0] is errors[1]


@pytest.mark.parametrize("backend", FUSED)
def test_gradient_restored_goes_back_to_the_fused_path(backend, monkeypatch):
    x, y = _batch()
    for opt in _opts(backend):
        (mf, of, sf), (mu, ou, su) = _twins(backend, opt, monkeypatch)
        for m, st in ((mf, sf), (mu, su)):
            st(x, y)
            m.arena.grads[0].shape = (16, 6)
            with pytest.raises(ValueError):
                st(x, y)
            m.arena.grads[0].shape = (6, 16)
            st(x, y)
            st(x, y)
        calls = sf.fused_calls
        sf(x, y)
        su(x, y)
        assert sf.fused_calls == calls + 1
        np.testing.assert_array_equal(mf.arena.flat_params, mu.arena.flat_params)
        assert of.state[0]["step"] == ou.state[0]["step"] == 4


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("what", ["weight", "weight_grad", "flat_grads"])
def test_read_only_arrays_when_the_step_is_made(backend, what, monkeypatch):
    """A parameter, gradient or the gradient block flagged read-only before the step is made: the
    c backend's step raised cffi's 'buffer source array is read-only' from make_train_step (fit);
    the plan now leaves such a model to the kernel-by-kernel step, which does what it does (the
    optimizer names a read-only parameter; a read-only gradient block refuses the zeroing)."""
    fused_module(backend)
    x, y = _batch()
    results = []
    for fused in (True, False):
        m = fd.nn.MLP([6, 16, 3], seed=0, backend=backend)
        o = fd.Adam(m.parameters(), lr=1e-2, backend=backend)
        arr = {"weight": m.layers[0].weight, "weight_grad": m.layers[0].weight_grad,
               "flat_grads": m.arena.flat_grads}[what]
        arr.flags.writeable = False
        with monkeypatch.context() as mp:
            if not fused:
                mp.setattr(fd.nn.model, "_fused_train_step", lambda be: None)
            try:
                st = m.make_train_step(o, "cross_entropy", rows=10)
                assert not getattr(st, "fused", False)
                res = st(x, y)
            except ValueError as e:
                res = f"{type(e).__name__}: {_ADDR.sub('0x?', str(e))}"
        results.append((res, m.arena.flat_params.copy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("backend", FUSED)
def test_parameter_reshaped_to_1d_before_the_step_is_made(backend, monkeypatch):
    """model.params[0].shape = (96,) then a new optimizer: FusedPlan.create unpacked the weight's
    shape (ValueError: not enough values to unpack); now the kernel-by-kernel step's own error."""
    fused_module(backend)
    errs = []
    for fused in (True, False):
        m = fd.nn.MLP([6, 16, 3], seed=0, backend=backend)
        m.arena.params[0].shape = (96,)
        o = fd.Adam(m.parameters(), lr=1e-2, backend=backend)
        with monkeypatch.context() as mp:
            if not fused:
                mp.setattr(fd.nn.model, "_fused_train_step", lambda be: None)
            with pytest.raises(ValueError) as exc:
                m.make_train_step(o, "cross_entropy", rows=10)(*_batch())
        errs.append(str(exc.value))
    assert errs[0] == errs[1]


@pytest.mark.parametrize("backend", FUSED)
def test_param_group_dict_replaced(backend, monkeypatch):
    """``opt.param_groups[0] = dict(opt.param_groups[0])`` (same params list, so the optimizer takes
    it) and then an lr edited in the new dict: optimizer.step reads the list at every step, the
    fused step went on reading the replaced dict (lr=0 ignored: the parameters moved). Now the
    fused step notices, runs that call kernel by kernel, and binds again to the new dict."""
    x, y = _batch()
    for opt in _opts(backend):
        (mf, of, sf), (mu, ou, su) = _twins(backend, opt, monkeypatch)
        for o, st in ((of, sf), (ou, su)):
            st(x, y)
            o.param_groups[0] = dict(o.param_groups[0])
            o.param_groups[0]["lr"] = 0.0
        for m, st in ((mf, sf), (mu, su)):
            before = m.arena.flat_params.copy()
            st(x, y)
            np.testing.assert_array_equal(m.arena.flat_params, before)
        calls = sf.fused_calls
        for o in (of, ou):
            o.param_groups[0]["lr"] = 0.02  # (edited in place in the new dict)
        assert sf(x, y) == su(x, y)
        assert sf.fused_calls == calls + 1
        np.testing.assert_array_equal(mf.arena.flat_params, mu.arena.flat_params)
        assert of.state[0]["step"] == ou.state[0]["step"] == 3


def test_c_rebind_does_not_keep_the_old_state_blocks():
    """Every call that rebinds the fused step (load_state_dict, momentum switched, noise on and off,
    ...) appended the new bucket's parameter view and state blocks to the step's keep-alive list:
    a checkpoint restore per epoch, or a per-step scheduler toggling an option, held one more
    model-sized block each time, for the step's lifetime. The old blocks must be freed."""
    import gc
    import weakref

    fused_module("c")
    x, y = _batch()
    for opt in ("sgd", "adam"):
        m = fd.nn.MLP([6, 64, 3], seed=0, backend="c")
        o = (fd.SGD(m.parameters(), lr=0.05, momentum=0.9, backend="c") if opt == "sgd"
             else fd.Adam(m.parameters(), lr=1e-2, backend="c"))
        st = fused_step(m, o, "cross_entropy", 10)
        st(x, y)
        name = "momentum_buffer" if opt == "sgd" else "exp_avg"
        blk = o.state[0][name]
        while blk.base is not None:
            blk = blk.base
        old = weakref.ref(blk)
        del blk
        for _ in range(3):
            o.load_state_dict(o.state_dict())
            st(x, y)  # (kernel by kernel: the buckets were rebuilt; the step binds again)
            st(x, y)
        gc.collect()
        assert old() is None, "the fused step keeps the state block of a bucket it no longer uses"
        assert st.fused_calls == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("backend", FUSED)
def test_fused_step_in_a_forked_child(backend, monkeypatch):
    """A process forked while another thread is inside an optimizer step (holding its lock): the
    child renews every optimizer's lock (optim.base._renew_locks_after_fork), and the kernel-by-
    kernel step runs there; the fused step had taken the lock object once, when it was made, and
    deadlocked in the child. (The child gets SIGALRM after a few seconds if it hangs.)"""
    import threading

    x, y = _batch()
    opt = _opts(backend)[0]
    for _m, o, st in _twins(backend, opt, monkeypatch):
        st(x, y)
        held, release = threading.Event(), threading.Event()

        def holder(o=o, held=held, release=release):
            with o._lock:
                held.set()
                release.wait()

        t = threading.Thread(target=holder)
        t.start()
        held.wait()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # (fork with threads)
                pid = os.fork()
            if pid == 0:  # pragma: no cover (the child)
                code = 1
                try:
                    signal.alarm(10)
                    st(x, y)
                    code = 0 if o.state[0]["step"] == 2 else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
        finally:
            release.set()
            t.join()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
            f"the step in the forked child hung or failed (wait status {status})")


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("how", ["subclass", "instance"])
def test_overridden_optimizer_step_is_not_skipped(backend, how, monkeypatch):
    """An optimizer whose ``step`` is overridden (a subclass clipping the gradients, or a wrapper set
    on the instance): fit's kernel-by-kernel step calls it at every minibatch; the fused step
    replaced it by the kernel's update without a word (the override never ran, other weights).
    A plain subclass that overrides nothing still gets the fused step."""
    fused_module(backend)
    base = fd.SGD if backend == "c" else fd.Adam
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=40).astype(np.int64)

    class Clipped(base):
        def step(self, grads=None, grad_scale=None):
            self.calls = getattr(self, "calls", 0) + 1
            for g in grads:
                np.clip(g, -1e-3, 1e-3, out=g)
            return super().step(grads, grad_scale)

    class Plain(base):
        pass

    def train(fused, cls=Clipped):
        m = fd.nn.MLP([6, 16, 3], seed=0, backend=backend)
        o = cls(m.parameters(), lr=0.1, backend=backend)
        if how == "instance" and cls is Clipped:
            o = base(m.parameters(), lr=0.1, backend=backend)
            real = o.step

            def step(grads=None, grad_scale=None):
                o.calls = getattr(o, "calls", 0) + 1
                for g in grads:
                    np.clip(g, -1e-3, 1e-3, out=g)
                return real(grads, grad_scale)
            o.step = step
        with monkeypatch.context() as mp:
            if not fused:
                mp.setattr(fd.nn.model, "_fused_train_step", lambda be: None)
            st = m.make_train_step(o, "cross_entropy", rows=10)
            fd.fit(m, X, y, optimizer=o, epochs=1, batch_size=10, progress=False)
        return m, o, st

    (mf, of, sf), (mu, ou, _su) = train(True), train(False)
    assert not getattr(sf, "fused", False)
    assert of.calls == ou.calls == 4
    np.testing.assert_array_equal(mf.arena.flat_params, mu.arena.flat_params)
    assert getattr(train(True, Plain)[2], "fused", False)
