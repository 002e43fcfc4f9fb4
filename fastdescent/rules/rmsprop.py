"""RMSprop's rule: plain or centered, with optional momentum (torch.optim.RMSprop)."""

from . import Rule, check_flag, check_real, register


class RMSpropRule(Rule):
    name = "rmsprop"
    defaults = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                    maximize=False)
    all_state = ("square_avg", "grad_avg", "momentum_buffer")
    core_state = ("square_avg",)

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_real("alpha", hp["alpha"], lo=0.0)
        check_real("eps", hp["eps"], lo=0.0)
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_real("momentum", hp["momentum"], lo=0.0)
        check_flag("centered", hp["centered"])
        check_flag("maximize", hp["maximize"])

    def state_names(self, hp):
        names = ("square_avg",)
        if hp["centered"]:
            names += ("grad_avg",)
        if hp["momentum"] > 0:
            names += ("momentum_buffer",)
        return names

    def scalars(self, hp, step, first):
        return dict(lr=float(hp["lr"]), alpha=float(hp["alpha"]), eps=float(hp["eps"]),
                    weight_decay=float(hp["weight_decay"]), momentum=float(hp["momentum"]),
                    centered=int(bool(hp["centered"])), maximize=int(bool(hp["maximize"])))


RMSPROP = register(RMSpropRule())
