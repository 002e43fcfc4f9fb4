"""SGD's rule: coupled weight decay, (Nesterov) momentum with dampening (torch.optim.SGD)."""

from . import Rule, check_flag, check_real, register


class SGDRule(Rule):
    name = "sgd"
    defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                    maximize=False)
    all_state = ("momentum_buffer",)
    core_state = ()

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_real("momentum", hp["momentum"], lo=0.0)
        check_real("dampening", hp["dampening"])
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_flag("nesterov", hp["nesterov"])
        check_flag("maximize", hp["maximize"])
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening == 0 "
                             f"(got momentum={hp['momentum']!r}, dampening={hp['dampening']!r})")

    def state_names(self, hp):
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    def scalars(self, hp, step, first):
        return dict(lr=float(hp["lr"]), momentum=float(hp["momentum"]),
                    dampening=float(hp["dampening"]), weight_decay=float(hp["weight_decay"]),
                    nesterov=int(bool(hp["nesterov"])), maximize=int(bool(hp["maximize"])),
                    first_step=int(bool(first)))


SGD = register(SGDRule())
