"""Adagrad's rule (torch.optim.Adagrad): clr = lr / (1 + (t-1)*lr_decay)."""

from . import Rule, check_flag, check_real, register


class AdagradRule(Rule):
    name = "adagrad"
    defaults = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                    eps=1e-10, maximize=False)
    all_state = ("sum",)
    core_state = ("sum",)

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_real("lr_decay", hp["lr_decay"], lo=0.0)
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_real("initial_accumulator_value", hp.get("initial_accumulator_value", 0.0), lo=0.0)
        check_real("eps", hp["eps"], lo=0.0)
        check_flag("maximize", hp["maximize"])

    def init_value(self, hp, name):
        return float(hp["initial_accumulator_value"])

    def scalars(self, hp, step, first):
        return dict(clr=self.prox_lr(hp, step), eps=float(hp["eps"]),
                    weight_decay=float(hp["weight_decay"]), maximize=int(bool(hp["maximize"])))

    def prox_lr(self, hp, step):
        """The decayed rate ``clr = lr / (1 + (t-1)*lr_decay)``: Adagrad's step size, and the rate
        that scales its proximal L1 threshold."""
        return float(hp["lr"]) / (1.0 + (step - 1) * float(hp["lr_decay"]))


ADAGRAD = register(AdagradRule())
