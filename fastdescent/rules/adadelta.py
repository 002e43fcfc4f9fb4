"""Adadelta's rule (torch.optim.Adadelta): no per-step schedule, ``1 - rho`` derived here."""

from . import Rule, check_flag, check_real, register


class AdadeltaRule(Rule):
    name = "adadelta"
    defaults = dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False, l1=0.0)
    all_state = ("square_avg", "acc_delta")
    core_state = ("square_avg", "acc_delta")

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_real("rho", hp["rho"], lo=0.0, hi=1.0)
        check_real("eps", hp["eps"], lo=0.0)
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_flag("maximize", hp["maximize"])
        check_real("l1", hp.get("l1", 0.0), lo=0.0)

    def scalars(self, hp, step, first):
        rho = float(hp["rho"])
        return dict(lr=float(hp["lr"]), rho=rho, one_minus_rho=1.0 - rho, eps=float(hp["eps"]),
                    weight_decay=float(hp["weight_decay"]), maximize=int(bool(hp["maximize"])))


ADADELTA = register(AdadeltaRule())
