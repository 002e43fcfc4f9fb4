"""The optimizer configurations every parity test runs: a data table, with ids.

Each optimizer's options form a full product (it is cheap: at most 20 rows per optimizer), minus the
combinations SEMANTICS.md forbids (nesterov needs momentum > 0 and dampening == 0), plus a few rows
with non-default betas/alpha/eps; Lion and LAMB (which torch does not have) get an each-choice cover
of their options plus one richer row. :data:`CUDA_CASES` is a smaller each-choice cover of the same table
(every value of every option appears at least once) for the CUDA simulator, where each GPU thread
runs in Python.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

__all__ = ["Case", "CASES", "CUDA_CASES", "BY_KIND", "CLASS_NAMES", "TORCH_NAMES", "make"]

#: reference kind -> fastdescent class name (torch.optim uses the same names)
CLASS_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
               "adagrad": "Adagrad", "nadam": "NAdam", "radam": "RAdam", "adamax": "Adamax",
               "adadelta": "Adadelta", "rprop": "Rprop",
               "lion": "Lion", "lamb": "LAMB"}
#: the kinds torch.optim has, and its class names (the torch-based tests skip the others)
TORCH_NAMES = {k: v for k, v in CLASS_NAMES.items() if k not in ("lion", "lamb")}

#: learning rates large enough that every step moves the parameters visibly
BASE_LR = {"sgd": 0.05, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.01, "adagrad": 0.1,
           "nadam": 0.01, "radam": 0.01, "adamax": 0.02, "adadelta": 1.0, "rprop": 0.02,
           "lion": 0.01, "lamb": 0.05}


@dataclass(frozen=True)
class Case:
    kind: str  # reference / functional name
    hp: dict = field(hash=False)  # constructor keyword arguments (all of them, lr included)

    @property
    def id(self):
        parts = [self.kind]
        for k, v in self.hp.items():
            if k == "lr":
                continue
            if isinstance(v, bool):
                if v:
                    parts.append(k)
            elif isinstance(v, tuple):
                parts.append(f"{k}={','.join(map(str, v))}")
            else:
                parts.append(f"{k}={v:g}")
        return "-".join(parts)

    @property
    def cls_name(self):
        return CLASS_NAMES[self.kind]

    def __repr__(self):
        return self.id


def _product(kind, **axes):
    names = list(axes)
    for values in itertools.product(*(axes[n] for n in names)):
        yield dict(lr=BASE_LR[kind], **dict(zip(names, values)))


def _sgd():
    for hp in _product("sgd", momentum=(0.0, 0.9), dampening=(0.0, 0.5), nesterov=(False, True),
                       weight_decay=(0.0, 0.1), maximize=(False, True)):
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            continue  # ValueError by SEMANTICS.md; covered by test_errors
        yield Case("sgd", hp)
    yield Case("sgd", dict(lr=0.02, momentum=0.5, dampening=0.1, nesterov=False, weight_decay=0.01,
                           maximize=False))


def _adam(kind):
    for hp in _product(kind, amsgrad=(False, True), weight_decay=(0.0, 0.1), maximize=(False, True)):
        yield Case(kind, hp)
    yield Case(kind, dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, amsgrad=True, weight_decay=0.05,
                          maximize=False))


def _rmsprop():
    for hp in _product("rmsprop", centered=(False, True), momentum=(0.0, 0.9),
                       weight_decay=(0.0, 0.1), maximize=(False, True)):
        yield Case("rmsprop", hp)
    yield Case("rmsprop", dict(lr=0.005, alpha=0.9, eps=1e-6, centered=True, momentum=0.5,
                               weight_decay=0.0, maximize=False))


def _adagrad():
    for hp in _product("adagrad", lr_decay=(0.0, 0.1), initial_accumulator_value=(0.0, 0.5),
                       weight_decay=(0.0, 0.1), maximize=(False, True)):
        yield Case("adagrad", hp)
    yield Case("adagrad", dict(lr=0.05, eps=1e-6, lr_decay=0.01, initial_accumulator_value=0.1,
                               weight_decay=0.0, maximize=True))


def _rprop():
    # step_sizes=(1e-3, 0.03) clamps from both sides within 8 steps (0.02*1.3**2 > 0.03; 0.02*0.4**3
    # < 1e-3); etas=(0.8, 1.05) keeps every step size inside the default bounds
    for hp in _product("rprop", etas=((0.5, 1.2), (0.8, 1.05)), maximize=(False, True)):
        yield Case("rprop", hp)
    yield Case("rprop", dict(lr=0.02, etas=(0.4, 1.3), step_sizes=(1e-3, 0.03), maximize=False))
    yield Case("rprop", dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-3, 0.03), maximize=True))


def _nadam():
    # each-choice cover of the options (suite time matters), plus non-default betas/eps/decay
    yield Case("nadam", dict(lr=0.01, weight_decay=0.0, decoupled_weight_decay=False,
                             maximize=False))
    yield Case("nadam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=False,
                             maximize=True))
    yield Case("nadam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True,
                             maximize=False))
    yield Case("nadam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05,
                             momentum_decay=0.3, decoupled_weight_decay=True, maximize=True))


def _radam():
    # with beta2 = 0.999 (and 0.95) rho_t > 5 from step 6 on: the 8-step runs take both branches
    yield Case("radam", dict(lr=0.01, weight_decay=0.0, decoupled_weight_decay=False,
                             maximize=False))
    yield Case("radam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=False,
                             maximize=True))
    yield Case("radam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True,
                             maximize=False))
    yield Case("radam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05,
                             decoupled_weight_decay=True, maximize=True))


def _adamax():
    for hp in _product("adamax", weight_decay=(0.0, 0.1), maximize=(False, True)):
        yield Case("adamax", hp)
    # beta1 = 0 and beta1 = 0.3: torch's lerp takes its other branch (m = g + (w - 1)*(g - m))
    yield Case("adamax", dict(lr=0.05, betas=(0.0, 0.99), eps=1e-3, weight_decay=0.05,
                              maximize=False))
    yield Case("adamax", dict(lr=0.01, betas=(0.3, 0.9), eps=1e-6, weight_decay=0.0, maximize=True))


def _adadelta():
    for hp in _product("adadelta", weight_decay=(0.0, 0.1), maximize=(False, True)):
        yield Case("adadelta", hp)
    # rho = 1: both averages stay zero and the update is lr*g (sqrt(eps)/sqrt(eps) = 1)
    yield Case("adadelta", dict(lr=0.05, rho=1.0, eps=1e-4, weight_decay=0.0, maximize=True))
    yield Case("adadelta", dict(lr=0.5, rho=0.5, eps=1e-3, weight_decay=0.05, maximize=False))


def _lion():
    # an each-choice cover (Lion has no torch counterpart; its options are few and independent)
    for wd, maximize in ((0.0, False), (0.1, False), (0.0, True)):
        yield Case("lion", dict(lr=BASE_LR["lion"], weight_decay=wd, maximize=maximize))
    yield Case("lion", dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.05, maximize=True))


def _lamb():
    for wd, bc, maximize in ((0.0, True, False), (0.1, False, False), (0.0, False, True)):
        yield Case("lamb", dict(lr=BASE_LR["lamb"], weight_decay=wd, bias_correction=bc,
                                maximize=maximize))
    yield Case("lamb", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-4, weight_decay=0.05,
                            bias_correction=True, maximize=True))


CASES = [*_sgd(), *_adam("adam"), *_adam("adamw"), *_rmsprop(), *_adagrad(), *_nadam(), *_radam(),
         *_adamax(), *_adadelta(), *_rprop(), *_lion(), *_lamb()]
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"

BY_KIND = {k: [c for c in CASES if c.kind == k] for k in CLASS_NAMES}


def _each_choice(cases):
    """Greedy cover: cases until every (option, value) of the table appears at least once."""
    want = {(k, repr(v)) for c in cases for k, v in c.hp.items() if k != "lr"}
    out = []
    while want:
        best = max(cases, key=lambda c: len(want & {(k, repr(v)) for k, v in c.hp.items()}))
        out.append(best)
        want -= {(k, repr(v)) for k, v in best.hp.items()}
    return out


CUDA_CASES = [c for k in CLASS_NAMES for c in _each_choice(BY_KIND[k])]


def make(fd, case, params, **kw):
    """Construct the fastdescent optimizer of ``case`` over ``params`` (arrays, groups or arena)."""
    return getattr(fd, case.cls_name)(params, **case.hp, **kw)
