"""The optimizer classes of ``fastdescent.torch``, generated from one table: for each, the fastdescent
rule it runs and torch 2.13's constructor signature (names, order, kinds, defaults), so that
``torch.optim.X(...)`` -> ``fastdescent.torch.X(...)`` is a one-word change. Lion and LAMB, which
torch does not have, take the signature of the fastdescent classes (and the drop-in flags).
``tests/test_torch_dropin.py`` checks the signatures against the installed torch.
"""

from __future__ import annotations

import inspect

from ..optim import _precision
from ..precision import MIXED_RULES
from ..rules import get as _get_rule
from ._optimizer import Optimizer

__all__ = ["SPECS", "make_class"]

_P, _K = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
_BETAS = (0.9, 0.999)
#: the low-precision options of the classes whose rule has a mixed-precision step (keyword-only,
#: after ``backend``), with fastdescent's defaults
_LOWP_DEFAULTS = (("master_weights", False), ("stochastic_rounding", False), ("state_dtype", None),
                  ("seed", 0))

#: class name -> (rule name, [(argument, default, kind)] after ``params``, fixed group values,
#: torch's class or None, the state torch keeps)
SPECS = {
    "SGD": ("sgd", [("lr", 1e-3, _P), ("momentum", 0, _P), ("dampening", 0, _P),
                    ("weight_decay", 0, _P), ("nesterov", False, _P), ("maximize", False, _K),
                    ("foreach", None, _K), ("differentiable", False, _K), ("fused", None, _K)],
            {}, "SGD", "``momentum_buffer`` (momentum != 0); no ``step``, as in torch"),
    "Adam": ("adam", [("lr", 1e-3, _P), ("betas", _BETAS, _P), ("eps", 1e-8, _P),
                      ("weight_decay", 0, _P), ("amsgrad", False, _P), ("foreach", None, _K),
                      ("maximize", False, _K), ("capturable", False, _K),
                      ("differentiable", False, _K), ("fused", None, _K),
                      ("decoupled_weight_decay", False, _K)],
             {}, "Adam", "``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad)"),
    "AdamW": ("adam", [("lr", 1e-3, _P), ("betas", _BETAS, _P), ("eps", 1e-8, _P),
                       ("weight_decay", 1e-2, _P), ("amsgrad", False, _P), ("maximize", False, _K),
                       ("foreach", None, _K), ("capturable", False, _K),
                       ("differentiable", False, _K), ("fused", None, _K)],
              {"decoupled_weight_decay": True}, "AdamW",
              "``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad)"),
    "RMSprop": ("rmsprop", [("lr", 1e-2, _P), ("alpha", 0.99, _P), ("eps", 1e-8, _P),
                            ("weight_decay", 0, _P), ("momentum", 0, _P), ("centered", False, _P),
                            ("capturable", False, _P), ("foreach", None, _P),
                            ("maximize", False, _P), ("differentiable", False, _P)],
                {}, "RMSprop",
                "``step``, ``square_avg``, ``grad_avg`` (centered), ``momentum_buffer`` "
                "(momentum > 0)"),
    "Adagrad": ("adagrad", [("lr", 1e-2, _P), ("lr_decay", 0, _P), ("weight_decay", 0, _P),
                            ("initial_accumulator_value", 0, _P), ("eps", 1e-10, _P),
                            ("foreach", None, _P), ("maximize", False, _K),
                            ("differentiable", False, _K), ("fused", None, _K)],
                {}, "Adagrad", "``step``, ``sum`` (created by the constructor, as in torch)"),
    "NAdam": ("nadam", [("lr", 2e-3, _P), ("betas", _BETAS, _P), ("eps", 1e-8, _P),
                        ("weight_decay", 0, _P), ("momentum_decay", 4e-3, _P),
                        ("decoupled_weight_decay", False, _P), ("foreach", None, _K),
                        ("maximize", False, _K), ("capturable", False, _K),
                        ("differentiable", False, _K)],
              {}, "NAdam", "``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``"),
    "RAdam": ("radam", [("lr", 1e-3, _P), ("betas", _BETAS, _P), ("eps", 1e-8, _P),
                        ("weight_decay", 0, _P), ("decoupled_weight_decay", False, _P),
                        ("foreach", None, _K), ("maximize", False, _K), ("capturable", False, _K),
                        ("differentiable", False, _K)],
              {}, "RAdam", "``step``, ``exp_avg``, ``exp_avg_sq``"),
    "Adamax": ("adamax", [("lr", 2e-3, _P), ("betas", _BETAS, _P), ("eps", 1e-8, _P),
                          ("weight_decay", 0, _P), ("foreach", None, _P), ("maximize", False, _K),
                          ("differentiable", False, _K), ("capturable", False, _K)],
               {}, "Adamax", "``step``, ``exp_avg``, ``exp_inf``"),
    "Adadelta": ("adadelta", [("lr", 1.0, _P), ("rho", 0.9, _P), ("eps", 1e-6, _P),
                              ("weight_decay", 0, _P), ("foreach", None, _P),
                              ("capturable", False, _K), ("maximize", False, _K),
                              ("differentiable", False, _K)],
                 {}, "Adadelta", "``step``, ``square_avg``, ``acc_delta``"),
    "Rprop": ("rprop", [("lr", 1e-2, _P), ("etas", (0.5, 1.2), _P), ("step_sizes", (1e-6, 50), _P),
                        ("capturable", False, _K), ("foreach", None, _K), ("maximize", False, _K),
                        ("differentiable", False, _K)],
              {}, "Rprop", "``step``, ``prev``, ``step_size``"),
    "Lion": ("lion", [("lr", 1e-4, _P), ("betas", (0.9, 0.99), _P), ("weight_decay", 0.0, _P),
                      ("maximize", False, _K), ("foreach", None, _K), ("capturable", False, _K),
                      ("differentiable", False, _K), ("fused", None, _K)],
             {}, None, "``step``, ``exp_avg``"),
    "LAMB": ("lamb", [("lr", 1e-3, _P), ("betas", _BETAS, _P), ("eps", 1e-6, _P),
                      ("weight_decay", 0.0, _P), ("bias_correction", True, _P),
                      ("maximize", False, _K), ("foreach", None, _K), ("capturable", False, _K),
                      ("differentiable", False, _K), ("fused", None, _K)],
             {}, None, "``step``, ``exp_avg``, ``exp_avg_sq``"),
}

_DOC = """{what}

Runs fastdescent's ``{rule}`` kernel (``fastdescent.{name}``'s rule, SEMANTICS.md) with one call per
(param group, dtype) bucket on the tensors' own memory. A ``torch.optim.Optimizer``: schedulers,
hooks, ``zero_grad``, ``add_param_group``, ``state_dict``/``load_state_dict`` work as in torch.

Signature: {sig_note}, plus ``backend`` (keyword-only: ``"c"``, ``"numba"``, ``"numpy"`` or
``"auto"``; default: fastdescent's default in force, the C backend on CPU){lowp_args}.
``foreach``, ``fused`` and ``capturable`` are accepted and ignored (kept in the param groups, as torch
keeps them, so state_dicts interchange); ``differentiable=True`` raises ``ValueError``.

Parameters: {params}. State per parameter (torch's names and layout): {state}.
"""

_PARAMS_PLAIN = """CPU or CUDA tensors of float32 or float64 (float16/bfloat16 parameters have a
mixed-precision step in SGD, Adam, AdamW and RMSprop only; they, complex parameters and sparse
gradients raise a clear error)"""

_PARAMS_LOWP = """CPU or CUDA tensors of float32, float64, bfloat16 or float16 (complex
parameters and sparse gradients raise a clear error). A bfloat16/float16 parameter is
updated in float32 and stored once, rounded to nearest (``docs/low-precision.md``). By default, as in
torch.optim, bfloat16 parameters keep their state in bfloat16 (rounded to nearest); float16 parameters
keep float32 state (torch.optim: float16; fastdescent has no float16 state)"""

_LOWP_ARGS = """, and fastdescent's low-precision options (keyword-only;
stored as param-group keys only when they differ from these defaults, so default groups keep torch's
keys):

- ``master_weights=False``: keep a float32 copy of each bfloat16/float16 parameter
  (``state["master_param"]``), update it, store the parameter as the copy rounded to nearest;
- ``stochastic_rounding=False``: round bfloat16 parameters (and bfloat16 state) stochastically, with
  random bits keyed by ``seed`` (reproducible, the same as ``fastdescent.{name}``'s);
- ``state_dtype=None``: ``"float32"``, ``"bfloat16"`` or ``"int8"`` (8-bit block-quantized: uint8
  codes under the buffer's name plus ``<name>_scale``, float32, one per 256 elements); None: the
  parameter's dtype (float32 for float16 parameters);
- ``seed=0``.

A state_dict holding ``master_param``, ``<name>_scale`` entries or uint8 codes loads back into
fastdescent.torch, not into torch.optim (which would read the codes as values)"""


def make_class(name):
    """The ``fastdescent.torch`` class ``name`` (a key of :data:`SPECS`)."""
    rule_name, args, fixed, torch_name, state = SPECS[name]
    params = [inspect.Parameter("params", _P)]
    params += [inspect.Parameter(a, kind, default=d) for a, d, kind in args]
    sig = inspect.Signature(params)
    lowp = rule_name in MIXED_RULES
    extra = [inspect.Parameter("backend", _K, default=None)]
    if lowp:
        extra += [inspect.Parameter(k, _K, default=d) for k, d in _LOWP_DEFAULTS]
    full = inspect.Signature([inspect.Parameter("self", _P)] + params + extra)
    arg_names = [a for a, _, _ in args]

    if lowp:
        def __init__(self, params, *args, backend=None, master_weights=False,
                     stochastic_rounding=False, state_dtype=None, seed=0, **kwargs):
            bound = sig.bind(params, *args, **kwargs)
            bound.apply_defaults()
            defaults = {a: bound.arguments[a] for a in arg_names}
            defaults.update(fixed)
            defaults.update(_precision.options(master_weights, stochastic_rounding, state_dtype,
                                               seed))
            Optimizer.__init__(self, params, defaults, backend=backend)
    else:
        def __init__(self, params, *args, backend=None, **kwargs):
            bound = sig.bind(params, *args, **kwargs)
            bound.apply_defaults()
            defaults = {a: bound.arguments[a] for a in arg_names}
            defaults.update(fixed)
            Optimizer.__init__(self, params, defaults, backend=backend)

    __init__.__signature__ = full
    if torch_name is not None:
        what = (f"Drop-in replacement for ``torch.optim.{torch_name}``: same constructor, defaults, "
                "update rule and state_dict.")
        sig_note = f"torch.optim.{torch_name}'s"
    else:
        what = (f"{name} (torch.optim has none): ``fastdescent.{name}``'s rule and defaults as a "
                "torch optimizer.")
        sig_note = f"``fastdescent.{name}``'s, plus torch's drop-in flags"
    doc = _DOC.format(what=what, rule=rule_name, name=name, sig_note=sig_note, state=state,
                      params=_PARAMS_LOWP if lowp else _PARAMS_PLAIN,
                      lowp_args=_LOWP_ARGS.format(name=name) if lowp else "")
    ns = {"__init__": __init__, "__doc__": doc, "__module__": "fastdescent.torch",
          "_rule": _get_rule(rule_name), "_torch_name": torch_name,
          "_step_in_state": name != "SGD", "_eager_state": name == "Adagrad",
          "_forced": dict(fixed)}
    cls = type(name, (Optimizer,), ns)
    cls.__qualname__ = name
    __init__.__qualname__ = f"{name}.__init__"
    return cls
