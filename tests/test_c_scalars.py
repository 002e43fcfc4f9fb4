"""The C per-step scalar helpers (``fd_<name>_scalars``, ``csrc/fd_scalars.c``) against the Python
rules (``fastdescent.rules``): bit-identical float64 values for every optimizer over thousands of
(hyperparameters, step) combinations, edge values included; the same refusals (every domain check
of ``Rule.check`` and the non-finite results ``check_scalars`` refuses give ``FD_ERR_ARG``, with the
output struct left untouched); output fields named and ordered as the contract row's scalars.

The helpers are called through the cffi extension (the c backend), which compiles every
``csrc/fd_*.c`` from the same header as ``libfastdescent``.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from fastdescent import _contract, rules
from fastdescent.rules import check_scalars

from conftest import require_backend

FD_OK, FD_ERR_NULL, FD_ERR_ARG = 0, 1, 3

#: real values drawn for hyperparameters: ordinary ones, domain edges, and values outside every
#: domain (negative, NaN, infinite, >= 1 for betas)
EDGE = [0.0, -0.0, 5e-324, 1e-300, 1e-8, 1e-3, 0.1, 0.25, 0.5, 0.6, 2 / 3, 0.9, 0.96, 0.99, 0.999,
        1 - 2 ** -53, 1.0, 1.0 + 2 ** -52, 1.2, 2.0, 50.0, 1e300, 1.7976931348623157e308]
BAD = [-1e-300, -1e-3, -1.0, math.nan, math.inf, -math.inf]
STEPS = [1, 2, 3, 4, 5, 6, 7, 10, 100, 1000, 12345, 10 ** 6, 2 ** 31, 2 ** 40, 2 ** 53 + 1, 2 ** 62,
         2 ** 63 - 1]


def _real(rng, kind):
    """A value for a hyperparameter: mostly ordinary ones of its ``kind``, sometimes an edge value,
    rarely one outside every domain."""
    u = rng.random()
    if u < 0.04:
        return float(rng.choice(BAD))
    if u < 0.30:
        return float(rng.choice(EDGE))
    if kind == "beta":
        return float(rng.choice([rng.random(), 1.0 - 10.0 ** rng.uniform(-12, 0)]))
    if kind == "eta_minus":
        return float(rng.uniform(0, 1))
    if kind == "eta_plus":
        return float(1.0 + 10.0 ** rng.uniform(-6, 1))
    if kind == "any":
        return float(rng.normal() * 10.0 ** rng.uniform(-3, 3))
    return float(10.0 ** rng.uniform(-10, 3))  # "pos": a scale-free positive value


def _flag(rng):
    return bool(rng.random() < 0.5)


def _step(rng):
    return int(rng.choice(STEPS)) if rng.random() < 0.4 else int(rng.integers(1, 5000))


# Per optimizer: (C struct fields -> kinds), how the Python rule's hp dict is made from them, and the
# extra output fields that are not contract scalars.
SPECS = {
    "sgd": dict(reals={"lr": "pos", "momentum": "pos", "dampening": "any", "weight_decay": "pos",
                       "noise_std": "pos", "noise_decay": "pos"},
                flags=("nesterov", "maximize"), extra=("noise_sigma",)),
    "adam": dict(reals={"lr": "pos", "beta1": "beta", "beta2": "beta", "eps": "pos",
                        "weight_decay": "pos"},
                 flags=("amsgrad", "maximize", "decoupled_weight_decay"), extra=()),
    "rmsprop": dict(reals={"lr": "pos", "alpha": "beta", "eps": "pos", "weight_decay": "pos",
                           "momentum": "pos"}, flags=("centered", "maximize"), extra=()),
    "adagrad": dict(reals={"lr": "pos", "lr_decay": "pos", "eps": "pos", "weight_decay": "pos"},
                    flags=("maximize",), extra=()),
    "lion": dict(reals={"lr": "pos", "beta1": "beta", "beta2": "beta", "weight_decay": "pos"},
                 flags=("maximize",), extra=()),
    "lamb": dict(reals={"lr": "pos", "beta1": "beta", "beta2": "beta", "eps": "pos",
                        "weight_decay": "pos"}, flags=("bias_correction", "maximize"), extra=()),
    "rprop": dict(reals={"lr": "pos", "etaminus": "eta_minus", "etaplus": "eta_plus",
                         "step_size_min": "pos", "step_size_max": "pos"},
                  flags=("maximize",), extra=()),
    "adamax": dict(reals={"lr": "pos", "beta1": "beta", "beta2": "beta", "eps": "pos",
                          "weight_decay": "pos"}, flags=("maximize",), extra=()),
    "adadelta": dict(reals={"lr": "pos", "rho": "beta", "eps": "pos", "weight_decay": "pos"},
                     flags=("maximize",), extra=()),
    "nadam": dict(reals={"lr": "pos", "beta1": "beta", "beta2": "beta", "eps": "pos",
                         "weight_decay": "pos", "momentum_decay": "pos"},
                  flags=("decoupled_weight_decay", "maximize"), extra=("mu_product",)),
    "radam": dict(reals={"lr": "pos", "beta1": "beta", "beta2": "beta", "eps": "pos",
                         "weight_decay": "pos"},
                  flags=("decoupled_weight_decay", "maximize"), extra=()),
}


def _python_hp(name, c):
    """The Python rule's hyperparameter dict for the C struct's field values ``c``."""
    hp = {k: v for k, v in c.items() if k not in ("beta1", "beta2", "etaminus", "etaplus",
                                                  "step_size_min", "step_size_max")}
    if "beta1" in c:
        hp["betas"] = (c["beta1"], c["beta2"])
    if name == "rprop":
        hp["etas"] = (c["etaminus"], c["etaplus"])
        hp["step_sizes"] = (c["step_size_min"], c["step_size_max"])
    return hp


def _bits(v):
    return struct.pack("<d", v) if isinstance(v, float) else v


@pytest.fixture(scope="module")
def C():
    return require_backend("c")


def _call(C, name, c_vals, step, extra_arg=None):
    """(status, output struct, the struct's bytes before the call) of fd_<name>_scalars."""
    ffi, lib = C.ffi, C.lib
    hp = ffi.new(f"fd_{name}_hparams_t *")
    for k, v in c_vals.items():
        setattr(hp, k, int(v) if isinstance(v, bool) else v)
    out = ffi.new(f"fd_{name}_scalars_t *")
    ffi.memmove(out, b"\xab" * ffi.sizeof(out[0]), ffi.sizeof(out[0]))
    before = bytes(ffi.buffer(out))
    fn = getattr(lib, f"fd_{name}_scalars")
    if extra_arg is None:
        rc = fn(hp, step, out)
    else:
        rc = fn(hp, step, extra_arg, out)
    return rc, out, before


def _python(name, hp, step, first, mu_product):
    """The Python layer's (scalars + extras) for one step, or None where it refuses."""
    rule = rules.get(name)
    try:
        rule.check(hp)
        if name == "nadam":
            rule.check_scalar_state("mu_product", mu_product, "mu_product")
            sc = rule.scalars(hp, step, first, {"mu_product": mu_product})
            sc["mu_product"] = rule.next_scalar_state(hp, step, {"mu_product": mu_product})[
                "mu_product"]
        else:
            sc = rule.scalars(hp, step, first)
        if name == "sgd":
            sc["noise_sigma"] = rule.noise_sigma(hp, step)
        check_scalars(sc, name)
    except (ValueError, TypeError, ArithmeticError):
        return None
    return sc


def _compare(C, name, c_vals, step, first=True, mu_product=1.0):
    hp = _python_hp(name, c_vals)
    want = _python(name, hp, step, first, mu_product)
    extra = int(first) if name == "sgd" else (mu_product if name == "nadam" else None)
    rc, out, before = _call(C, name, c_vals, step, extra)
    if want is None:
        assert rc == FD_ERR_ARG, (name, c_vals, step, rc)
        assert bytes(C.ffi.buffer(out)) == before, f"{name}: out written on error"
        return None
    assert rc == FD_OK, (name, c_vals, step, rc)
    got = {k: getattr(out, k) for k in want}
    diff = {k: (want[k], got[k]) for k in want if _bits(float(want[k]) if isinstance(got[k], float)
                                                         else want[k]) != _bits(got[k])}
    assert not diff, f"{name} step {step} hp {c_vals}: python != C: {diff}"
    return got


def test_every_rule_has_a_c_helper():
    """A new optimizer (a rule) needs its fd_<name>_scalars helper too (and an entry above)."""
    assert set(SPECS) == set(rules.RULES)


def test_output_fields_are_the_contract_scalars(C):
    """fd_<name>_scalars_t: the contract row's scalars, same names, same order, reals as double
    and flags as int; then the documented extras."""
    ffi = C.ffi
    for name, spec in SPECS.items():
        row = _contract.KERNELS[name]
        fields = ffi.typeof(f"fd_{name}_scalars_t").fields
        names = [f for f, _ in fields]
        assert names == list(row.scalars) + list(spec["extra"]), name
        for f, ft in fields:
            want = "int" if f in row.flags else "double"
            assert ft.type.cname == want, (name, f, ft.type.cname)
        hp_fields = [f for f, _ in ffi.typeof(f"fd_{name}_hparams_t").fields]
        assert sorted(hp_fields) == sorted([*spec["reals"], *spec["flags"]]), name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_scalars_match_the_python_rule_bit_for_bit(C, name):
    spec = SPECS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    n_ok = 0
    for _ in range(2500):
        c_vals = {k: _real(rng, kind) for k, kind in spec["reals"].items()}
        c_vals.update({k: _flag(rng) for k in spec["flags"]})
        mu_product = float(rng.choice([1.0, rng.random(), 0.0, 1.5, -0.1, math.nan])) \
            if rng.random() < 0.3 else 1.0
        n_ok += _compare(C, name, c_vals, _step(rng), first=_flag(rng),
                         mu_product=mu_product) is not None
    # the draw covers both accepted and refused hyperparameters
    assert 500 < n_ok < 2500, n_ok


@pytest.mark.parametrize("name", sorted(SPECS))
def test_defaults_over_many_steps(C, name):
    """The optimizer's defaults (torch's), steps 1..3000 and a few huge ones; NAdam chains its
    mu_product from one step to the next as an embedder does."""
    rule = rules.get(name)
    spec = SPECS[name]
    d = rule.defaults
    c_vals = {}
    for k in spec["reals"]:
        if k in ("beta1", "beta2"):
            c_vals[k] = float(d["betas"][k == "beta2"])
        elif k in ("etaminus", "etaplus"):
            c_vals[k] = float(d["etas"][k == "etaplus"])
        elif k in ("step_size_min", "step_size_max"):
            c_vals[k] = float(d["step_sizes"][k == "step_size_max"])
        else:
            c_vals[k] = float(d[k])
    c_vals.update({k: bool(d[k]) for k in spec["flags"]})
    c_vals["weight_decay" if "weight_decay" in c_vals else "lr"] = 0.01
    mu = 1.0
    for step in [*range(1, 3001), 10 ** 6, 2 ** 40, 2 ** 62]:
        got = _compare(C, name, c_vals, step, first=step == 1, mu_product=mu)
        assert got is not None
        if name == "nadam":
            mu = got["mu_product"]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_refusals(C, name):
    """NULL pointers, step < 1, flags other than 0/1, and each real set to NaN / +-inf / -1: the
    helper refuses, and *out is left as it was."""
    spec = SPECS[name]
    ffi, lib = C.ffi, C.lib
    fn = getattr(lib, f"fd_{name}_scalars")
    good = {k: 0.5 for k in spec["reals"]}
    if name == "rprop":
        good.update(etaplus=1.2, step_size_min=1e-6, step_size_max=50.0)
    good.update({k: False for k in spec["flags"]})
    extra = () if name not in ("sgd", "nadam") else ((1,) if name == "sgd" else (1.0,))
    assert _call(C, name, good, 1, *extra)[0] == FD_OK
    hp = ffi.new(f"fd_{name}_hparams_t *")
    assert fn(ffi.NULL, 1, *extra, ffi.new(f"fd_{name}_scalars_t *")) == FD_ERR_NULL
    assert fn(hp, 1, *extra, ffi.NULL) == FD_ERR_NULL
    for step in (0, -1, -(2 ** 63)):
        rc, out, before = _call(C, name, good, step, *extra)
        assert rc == FD_ERR_ARG and bytes(ffi.buffer(out)) == before, (name, step)
    for k in spec["flags"]:
        for v in (2, -1):
            rc, out, before = _call(C, name, {**good, k: v}, 1, *extra)
            assert rc == FD_ERR_ARG and bytes(ffi.buffer(out)) == before, (name, k, v)
    for k in spec["reals"]:
        for v in (math.nan, math.inf, -math.inf, -1.0):
            if k == "dampening" and math.isfinite(v):
                continue  # SGD's dampening may be any finite value
            rc, out, before = _call(C, name, {**good, k: v}, 1, *extra)
            assert rc == FD_ERR_ARG and bytes(ffi.buffer(out)) == before, (name, k, v)
    if name == "sgd":
        assert _call(C, name, good, 1, 2)[0] == FD_ERR_ARG  # first is a flag too
        ok = {**good, "nesterov": True, "dampening": 0.0}
        assert _call(C, name, ok, 1, 1)[0] == FD_OK
        assert _call(C, name, {**ok, "momentum": 0.0}, 1, 1)[0] == FD_ERR_ARG
        assert _call(C, name, {**ok, "dampening": 0.1}, 1, 1)[0] == FD_ERR_ARG
    if name == "nadam":
        for mu in (-0.1, 1.1, math.nan, math.inf):
            assert _call(C, name, good, 1, mu)[0] == FD_ERR_ARG
    # a derived scalar that overflows float64 is refused, as check_scalars refuses it
    for case in OVERFLOWS.get(name, ()):
        c_vals = {**good, **case}
        assert _python(name, _python_hp(name, c_vals), 1, True, 1.0) is None, (name, case)
        rc, out, before = _call(C, name, c_vals, 1, *extra)
        assert rc == FD_ERR_ARG and bytes(ffi.buffer(out)) == before, (name, case)


_BIG = 1.7976931348623157e308
#: hyperparameters within their domains whose derived scalars overflow float64 at step 1:
#: lr / (1 - beta1) and the decoupled decay factor 1 - lr * weight_decay
OVERFLOWS = {
    "adam": [dict(lr=_BIG, beta1=0.5), dict(lr=1e200, weight_decay=1e200,
                                               decoupled_weight_decay=True)],
    "adamax": [dict(lr=_BIG, beta1=0.5)],
    "radam": [dict(lr=_BIG, beta1=0.5), dict(lr=1e200, weight_decay=1e200,
                                                decoupled_weight_decay=True)],
    "nadam": [dict(lr=1e200, weight_decay=1e200, decoupled_weight_decay=True)],
    "lion": [dict(lr=1e200, weight_decay=1e200)],
}
