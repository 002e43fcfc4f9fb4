"""Rprop's rule (torch.optim.Rprop): per-element step sizes grown by etaplus while the gradient
keeps its sign and shrunk by etaminus when it flips, clamped to [step_size_min, step_size_max];
the parameter moves by its step size against the gradient's sign. The learning rate only seeds the
step sizes (``step_size`` starts at the group's lr when the state is created)."""

from . import Rule, check_flag, check_real, register


def check_etas(etaminus, etaplus, names=("etas[0] (etaminus)", "etas[1] (etaplus)")):
    """0 < etaminus < 1 < etaplus, both finite (torch.optim.Rprop's condition, plus finiteness)."""
    check_real(names[0], etaminus, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    check_real(names[1], etaplus, lo=1.0, lo_open=True)


def check_step_sizes(step_size_min, step_size_max,
                     names=("step_sizes[0] (step_size_min)", "step_sizes[1] (step_size_max)")):
    """0 <= step_size_min <= step_size_max, both finite."""
    lo = check_real(names[0], step_size_min, lo=0.0)
    hi = check_real(names[1], step_size_max, lo=0.0)
    if lo > hi:
        raise ValueError(f"{names[0]} must be <= {names[1]}, got {step_size_min!r} > "
                         f"{step_size_max!r}")


def _pair(value, name, what):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair {what}, got {value!r}")
    return value


class RpropRule(Rule):
    name = "rprop"
    defaults = dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False)
    all_state = ("prev", "step_size")
    core_state = ("prev", "step_size")

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_etas(*_pair(hp["etas"], "etas", "(etaminus, etaplus)"))
        check_step_sizes(*_pair(hp["step_sizes"], "step_sizes", "(step_size_min, step_size_max)"))
        check_flag("maximize", hp["maximize"])

    def init_value(self, hp, name):
        """``prev`` starts at 0, ``step_size`` at the group's lr (torch fills it at the first
        step)."""
        return float(hp["lr"]) if name == "step_size" else 0.0

    def scalars(self, hp, step, first):
        etaminus, etaplus = hp["etas"]
        step_size_min, step_size_max = hp["step_sizes"]
        return dict(etaminus=float(etaminus), etaplus=float(etaplus),
                    step_size_min=float(step_size_min), step_size_max=float(step_size_max),
                    maximize=int(bool(hp["maximize"])))


RPROP = register(RpropRule())
