"""fastdescent.optim.lr_scheduler: lr (and momentum/betas) sequences equal torch's, state_dict round
trips, argument validation, and the old ``fastdescent.nn.schedulers`` import path."""

import copy
import math
import pickle

import numpy as np
import pytest

import fastdescent as fd
from fastdescent.optim import lr_scheduler as S

try:
    import torch
    import torch.optim.lr_scheduler as T
except ImportError:  # pragma: no cover - torch is optional
    torch = T = None

pytestmark = [pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step:UserWarning"),
              pytest.mark.filterwarnings("ignore:The epoch parameter:UserWarning")]

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

LRS = (0.1, 0.05)


def _fd_opt(kind, lrs=LRS):
    groups = [dict(params=[np.zeros(4)], lr=lr) for lr in lrs]
    if kind == "sgd":
        return fd.SGD(groups, lr=lrs[0], momentum=0.9)
    if kind == "adam":
        return fd.Adam(groups, lr=lrs[0])
    return fd.RMSprop(groups, lr=lrs[0], momentum=0.5)


def _torch_opt(kind, lrs=LRS):
    groups = [dict(params=[torch.zeros(4, dtype=torch.float64, requires_grad=True)], lr=lr)
              for lr in lrs]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lrs[0])
    return torch.optim.RMSprop(groups, lr=lrs[0], momentum=0.5)


def _snapshot(opt):
    out = []
    for g in opt.param_groups:
        row = [float(g["lr"])]
        if "betas" in g:
            row.append(float(g["betas"][0]))
        if "momentum" in g:
            row.append(float(g["momentum"]))
        out.append(row)
    return out


def _fd_step(opt):
    opt.step([np.full(4, 0.01) for g in opt.param_groups for _ in g["params"]])


def _torch_step(opt):
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.full_like(p, 0.01)
    opt.step()


def _run(build, kind, steps, *, step_args=None, resume_at=None):
    """Drive a fastdescent and a torch optimizer with the same scheduler; return both sequences
    (lr, betas[0]/momentum per group per step, and get_last_lr)."""
    seqs = []
    for lib, make_opt, do_step in ((S, _fd_opt, _fd_step), (T, _torch_opt, _torch_step)):
        opt = make_opt(kind)
        sched = build(lib, opt)
        seq = [(_snapshot(opt), [float(v) for v in sched.get_last_lr()])]
        for i in range(steps):
            do_step(opt)
            if step_args is not None:
                sched.step(step_args(i))
            else:
                sched.step()
            seq.append((_snapshot(opt), [float(v) for v in sched.get_last_lr()]))
        seqs.append(seq)
    return seqs


def _assert_same(a, b):
    assert len(a) == len(b)
    for i, ((ga, la), (gb, lb)) in enumerate(zip(a, b)):
        np.testing.assert_allclose(np.array(ga, float), np.array(gb, float), rtol=1e-12, atol=0,
                                   err_msg=f"param groups differ at step {i}")
        np.testing.assert_allclose(la, lb, rtol=1e-12, atol=0, err_msg=f"get_last_lr at step {i}")


CASES = {
    "lambda": lambda m, o: m.LambdaLR(o, lambda e: 0.95 ** e + 0.01 * (e % 3)),
    "lambda_list": lambda m, o: m.LambdaLR(o, [lambda e: 1 / (1 + e), lambda e: 0.9 ** e]),
    "multiplicative": lambda m, o: m.MultiplicativeLR(o, lambda e: 0.97 if e % 2 else 1.01),
    "step": lambda m, o: m.StepLR(o, step_size=4, gamma=0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[3, 10, 10, 25], gamma=0.3),
    "constant": lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=7),
    "constant_default": lambda m, o: m.ConstantLR(o),
    "linear": lambda m, o: m.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=9),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.93),
    "polynomial": lambda m, o: m.PolynomialLR(o, total_iters=12, power=2.0),
    "polynomial_default": lambda m, o: m.PolynomialLR(o),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.001),
    "warm_restarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-3),
    "warm_restarts_1": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=6),
    "sequential": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=5),
                                                  m.CosineAnnealingLR(o, T_max=10),
                                                  m.ExponentialLR(o, gamma=0.9)],
                                              milestones=[5, 20]),
    "sequential_nested": lambda m, o: m.SequentialLR(
        o, [m.ChainedScheduler([m.StepLR(o, 3, 0.5), m.ExponentialLR(o, 0.98)]),
            m.ConstantLR(o, factor=0.5, total_iters=3)], milestones=[6]),
    "chained": lambda m, o: m.ChainedScheduler([m.ConstantLR(o, factor=0.1, total_iters=8),
                                                m.ExponentialLR(o, gamma=0.9)]),
    "chained_opt": lambda m, o: m.ChainedScheduler([m.LinearLR(o, 0.5, total_iters=4),
                                                    m.MultiStepLR(o, [5, 9])], optimizer=o),
    "onecycle": lambda m, o: m.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=40),
    "onecycle_linear3": lambda m, o: m.OneCycleLR(o, max_lr=0.3, epochs=8, steps_per_epoch=5,
                                                  anneal_strategy="linear", three_phase=True,
                                                  pct_start=0.25),
    "onecycle_nomom": lambda m, o: m.OneCycleLR(o, max_lr=0.2, total_steps=40, cycle_momentum=False,
                                                div_factor=10.0, final_div_factor=100.0),
    "cyclic": lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=[0.1, 0.2], step_size_up=4),
    "cyclic_tri2": lambda m, o: m.CyclicLR(o, base_lr=[0.01, 0.02], max_lr=0.1, step_size_up=3,
                                           step_size_down=5, mode="triangular2",
                                           base_momentum=0.7, max_momentum=0.95),
    "cyclic_exp": lambda m, o: m.CyclicLR(o, 0.001, 0.1, step_size_up=5, mode="exp_range",
                                          gamma=0.97),
    "cyclic_fn": lambda m, o: m.CyclicLR(o, 0.001, 0.1, step_size_up=4, scale_fn=lambda x: 0.9 ** x,
                                         scale_mode="iterations", cycle_momentum=False),
}
# optimizers each case runs on (cycle_momentum: SGD "momentum", Adam "betas", RMSprop "momentum")
KINDS = {k: ("sgd", "adam") for k in CASES}
KINDS["onecycle"] = KINDS["cyclic"] = ("sgd", "adam", "rmsprop")


@needs_torch
@pytest.mark.parametrize("case,kind", [(c, k) for c in CASES for k in KINDS[c]])
def test_matches_torch(case, kind):
    steps = 40
    a, b = _run(CASES[case], kind, steps)
    _assert_same(a, b)


@needs_torch
@pytest.mark.parametrize("T_mult", [1, 2, 3])
def test_warm_restarts_float_epochs(T_mult):
    iters = 7
    a, b = _run(lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=T_mult, eta_min=0.002),
                "sgd", 60, step_args=lambda i: (i // iters) + (i % iters) / iters)
    _assert_same(a, b)


@needs_torch
@pytest.mark.parametrize("case", ["step", "multistep", "constant", "linear", "exponential",
                                  "polynomial", "cosine"])
def test_step_with_epoch_uses_closed_form(case):
    epochs = [3, 7, 1, 12, 12, 0, 20]
    a, b = _run(CASES[case], "sgd", len(epochs), step_args=lambda i: epochs[i])
    _assert_same(a, b)


@needs_torch
def test_onecycle_past_total_steps_raises():
    for m, make in ((S, _fd_opt), (T, _torch_opt)):
        sched = m.OneCycleLR(make("sgd"), max_lr=0.1, total_steps=5)
        for _ in range(5):
            sched.step()
        with pytest.raises(ValueError, match="total steps"):
            sched.step()


def test_onecycle_zero_length_phase():
    """pct_start * total_steps == 1: torch divides 0 by 0 at step 0; here the phase ends at max_lr."""
    opt = _fd_opt("sgd")
    sched = S.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=0.1, cycle_momentum=False)
    assert sched.get_last_lr()[0] == pytest.approx(0.1)
    for _ in range(9):
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.1 / 25 / 1e4)


# ------------------------------------------------------------------------------ state_dict
@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trip_mid_run(case):
    """Stop after 13 steps, save (through pickle), rebuild on a fresh optimizer with the saved
    optimizer groups, load, and continue: the next 20 steps equal the uninterrupted run."""
    opt = _fd_opt("sgd")
    sched = CASES[case](S, opt)
    for _ in range(13):
        _fd_step(opt)
        sched.step()
    sd = pickle.loads(pickle.dumps(sched.state_dict()))
    groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])

    opt2 = _fd_opt("sgd")
    sched2 = CASES[case](S, opt2)
    sched2.load_state_dict(sd)
    for g2, g in zip(opt2.param_groups, groups):
        g2.update(g)
    assert sched2.get_last_lr() == sched.get_last_lr()
    for _ in range(20):
        for o, s in ((opt, sched), (opt2, sched2)):
            _fd_step(o)
            s.step()
        assert _snapshot(opt2) == _snapshot(opt)
        assert sched2.get_last_lr() == sched.get_last_lr()


@needs_torch
@pytest.mark.parametrize("case", ["step", "cosine", "onecycle", "cyclic", "warm_restarts",
                                  "chained", "sequential", "lambda"])
def test_state_dict_keys_match_torch_and_torch_state_loads(case):
    o_fd, o_t = _fd_opt("sgd"), _torch_opt("sgd")
    s_fd, s_t = CASES[case](S, o_fd), CASES[case](T, o_t)
    for _ in range(6):
        _torch_step(o_t)
        s_t.step()
    sd_t = s_t.state_dict()
    ignore = {"_get_lr_called_within_step", "_scale_fn_ref", "_is_initial", "_step_count"}

    def keys(sd):
        return {k for k in sd if k not in ignore}
    assert keys(s_fd.state_dict()) == keys(sd_t)
    s_fd.load_state_dict(sd_t)  # torch's own bookkeeping key is accepted
    assert getattr(s_fd, "last_epoch", None) == getattr(s_t, "last_epoch", None)
    assert s_fd.get_last_lr() == [float(v) for v in s_t.get_last_lr()]


def test_load_state_dict_refuses_unknown_keys():
    opt = _fd_opt("sgd")
    for sched in (CASES["onecycle"](S, opt), CASES["sequential"](S, _fd_opt("sgd")),
                  CASES["lambda"](S, _fd_opt("sgd")), CASES["cyclic"](S, _fd_opt("adam"))):
        sd = sched.state_dict()
        before = copy.deepcopy(sched.state_dict())
        with pytest.raises(ValueError, match="bogus"):
            sched.load_state_dict({**sd, "bogus": 1})
        with pytest.raises(ValueError, match="optimizer"):
            sched.load_state_dict({**sd, "optimizer": None})
        assert pickle.dumps(sched.state_dict()) == pickle.dumps(before)
        sched.load_state_dict(sd)


def test_lambda_state_dict_saves_callable_objects():
    class Decay:
        def __init__(self, f):
            self.f = f

        def __call__(self, e):
            return self.f ** e

    opt = _fd_opt("sgd")
    sched = S.LambdaLR(opt, [Decay(0.9), lambda e: 1.0])
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"f": 0.9}, None]
    other = S.LambdaLR(_fd_opt("sgd"), [Decay(0.5), lambda e: 1.0])
    other.load_state_dict(sd)
    assert other.lr_lambdas[0].f == 0.9


# ------------------------------------------------------------------------------ validation
def _bad(build, exc, name):
    with pytest.raises(exc, match=name):
        build(_fd_opt("sgd"))


@pytest.mark.parametrize("build,exc,name", [
    (lambda o: S.LambdaLR(o, 3), TypeError, "lr_lambda"),
    (lambda o: S.LambdaLR(o, [lambda e: 1]), ValueError, "lr_lambda"),
    (lambda o: S.MultiplicativeLR(o, [lambda e: 1, "x"]), TypeError, r"lr_lambda\[1\]"),
    (lambda o: S.StepLR(o, step_size=0), ValueError, "step_size"),
    (lambda o: S.StepLR(o, step_size=2.5), TypeError, "step_size"),
    (lambda o: S.StepLR(o, 2, gamma=math.nan), ValueError, "gamma"),
    (lambda o: S.MultiStepLR(o, [2, -1]), ValueError, r"milestones\[1\]"),
    (lambda o: S.MultiStepLR(o, 5), TypeError, "milestones"),
    (lambda o: S.MultiStepLR(o, [2], gamma=-0.5), ValueError, "gamma"),
    (lambda o: S.ConstantLR(o, factor=1.5), ValueError, "factor"),
    (lambda o: S.ConstantLR(o, factor=0), ValueError, "factor"),
    (lambda o: S.ConstantLR(o, total_iters=-1), ValueError, "total_iters"),
    (lambda o: S.PolynomialLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: S.PolynomialLR(o, power=math.inf), ValueError, "power"),
    (lambda o: S.ExponentialLR(o, gamma="0.9"), TypeError, "gamma"),
    (lambda o: S.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "T_0"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=1.5), TypeError, "T_mult"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=2, eta_min=-1), ValueError, "eta_min"),
    (lambda o: S.StepLR(o, 2, last_epoch=-2), ValueError, "last_epoch"),
    (lambda o: S.SequentialLR(o, [], []), ValueError, "schedulers"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 2), S.StepLR(o, 3)], [4, 5]), ValueError, "milestones"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 2), S.StepLR(o, 3), S.StepLR(o, 3)], [5, 5]),
     ValueError, "increasing"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 2), S.StepLR(_fd_opt("sgd"), 3)], [4]),
     ValueError, r"schedulers\[1\]"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 2), S.ReduceLROnPlateau(o)], [4]),
     ValueError, r"schedulers\[1\]"),
    (lambda o: S.ChainedScheduler([S.StepLR(o, 2), 7]), TypeError, r"schedulers\[1\]"),
    (lambda o: S.ChainedScheduler([]), ValueError, "schedulers"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1), ValueError, "total_steps"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=0), ValueError, "total_steps"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, epochs=2, steps_per_epoch=-3), ValueError,
     "steps_per_epoch"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"), ValueError,
     "anneal_strategy"),
    (lambda o: S.OneCycleLR(o, max_lr=[0.1], total_steps=10), ValueError, "max_lr"),
    (lambda o: S.OneCycleLR(o, max_lr=math.inf, total_steps=10), ValueError, "max_lr"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=10, div_factor=0), ValueError, "div_factor"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=10, three_phase=1), TypeError, "three_phase"),
    (lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=10, base_momentum=[0.8]), ValueError,
     "base_momentum"),
    (lambda o: S.CyclicLR(o, 0.1, 0.2, step_size_up=0), ValueError, "step_size_up"),
    (lambda o: S.CyclicLR(o, 0.1, 0.2, step_size_down=-1), ValueError, "step_size_down"),
    (lambda o: S.CyclicLR(o, 0.1, 0.2, mode="sawtooth"), ValueError, "mode"),
    (lambda o: S.CyclicLR(o, 0.1, 0.2, scale_mode="epochs"), ValueError, "scale_mode"),
    (lambda o: S.CyclicLR(o, 0.1, 0.2, scale_fn=3), TypeError, "scale_fn"),
    (lambda o: S.CyclicLR(o, -0.1, 0.2), ValueError, "base_lr"),
    (lambda o: S.CyclicLR(o, 0.1, 0.2, mode="exp_range", gamma=math.nan), ValueError, "gamma"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    (lambda o: S.StepLR(object(), 2), TypeError, "optimizer"),
])
def test_bad_arguments_name_them(build, exc, name):
    _bad(build, exc, name)


def test_cycle_momentum_needs_momentum_or_betas():
    opt = fd.Adagrad([np.zeros(3)], lr=0.1)
    for build in (lambda: S.OneCycleLR(opt, max_lr=0.1, total_steps=10),
                  lambda: S.CyclicLR(opt, 0.01, 0.1)):
        with pytest.raises(ValueError, match="cycle_momentum"):
            build()
    S.OneCycleLR(opt, max_lr=0.1, total_steps=10, cycle_momentum=False)


def test_bad_step_epoch():
    sched = S.CosineAnnealingWarmRestarts(_fd_opt("sgd"), T_0=3)
    for bad, exc in ((-0.5, ValueError), (math.nan, ValueError), ("1", TypeError), (-1, ValueError)):
        with pytest.raises(exc, match="epoch"):
            sched.step(bad)
    with pytest.raises(ValueError, match="epoch"):
        S.StepLR(_fd_opt("sgd"), 2).step(-3)


# ------------------------------------------------------------------------------ import paths
def test_old_import_path_still_works():
    import fastdescent.nn.schedulers as old
    from fastdescent.nn import (
        CosineAnnealingLR,
        ExponentialLR,
        LinearLR,
        LRScheduler,
        ReduceLROnPlateau,
        StepLR,
    )
    from fastdescent.optim.lr_scheduler import __all__ as names

    assert StepLR is S.StepLR and ExponentialLR is S.ExponentialLR and LinearLR is S.LinearLR
    assert CosineAnnealingLR is S.CosineAnnealingLR and ReduceLROnPlateau is S.ReduceLROnPlateau
    assert LRScheduler is S.LRScheduler and fd.nn.StepLR is S.StepLR
    for n in names:
        assert getattr(old, n) is getattr(S, n)
    assert fd.optim.lr_scheduler is S
    assert issubclass(S.ReduceLROnPlateau, S.LRScheduler)


def test_optim_does_not_import_nn():
    """No import cycle: fastdescent.optim never imports fastdescent.nn."""
    import fastdescent.optim as optim_pkg
    for mod in (S, optim_pkg):
        with open(mod.__file__, encoding="utf-8") as f:
            src = f.read()
        assert "fastdescent.nn" not in src and "..nn" not in src and "from .nn" not in src


def test_one_cycle_resume_through_optimizer_state_dict():
    """OneCycleLR writes max_lr/min_lr/max_momentum/base_momentum into the groups; an optimizer
    state_dict carrying them loads (scheduler built first, as torch recommends) and the run goes on
    exactly as an uninterrupted one."""
    import fastdescent as fd
    from fastdescent.optim.lr_scheduler import OneCycleLR

    def build():
        p = np.ones(3)
        opt = fd.Adam([p], lr=0.01, backend="numpy")
        return p, opt, OneCycleLR(opt, max_lr=0.1, total_steps=30)

    p, opt, sch = build()
    lrs = []
    for k in range(30):
        if k == 12:
            sd, ssd, pk = opt.state_dict(), sch.state_dict(), p.copy()
        opt.step([np.full(3, 0.5)])
        sch.step()
        lrs.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
    q, opt2, sch2 = build()
    q[...] = pk
    opt2.load_state_dict(sd)
    sch2.load_state_dict(ssd)
    for k in range(12, 30):
        opt2.step([np.full(3, 0.5)])
        sch2.step()
        assert (opt2.param_groups[0]["lr"], opt2.param_groups[0]["betas"][0]) == lrs[k]
    np.testing.assert_array_equal(q, p)
