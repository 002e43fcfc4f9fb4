"""Adam's and AdamW's rule (torch.optim.Adam with ``decoupled_weight_decay``, torch.optim.AdamW)."""

import math

from . import Rule, check_betas, check_flag, check_real, register


class AdamRule(Rule):
    name = "adam"
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                    maximize=False, decoupled_weight_decay=False)
    all_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    core_state = ("exp_avg", "exp_avg_sq")

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_betas(hp["betas"])
        check_real("eps", hp["eps"], lo=0.0)
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_flag("amsgrad", hp["amsgrad"])
        check_flag("maximize", hp["maximize"])
        check_flag("decoupled_weight_decay", hp.get("decoupled_weight_decay", False))

    def state_names(self, hp):
        return self.all_state if hp["amsgrad"] else self.core_state

    def scalars(self, hp, step, first):
        """Coupled decay goes into ``weight_decay``; decoupled decay (AdamW) into ``decay`` =
        1 - lr*wd, applied to p before the moments; ``step_size`` = lr/bc1."""
        beta1, beta2 = float(hp["betas"][0]), float(hp["betas"][1])
        bc1 = 1.0 - beta1 ** step
        bc2 = 1.0 - beta2 ** step
        lr, wd = float(hp["lr"]), float(hp["weight_decay"])
        decoupled = bool(hp.get("decoupled_weight_decay", False))
        return dict(
            beta1=beta1, beta2=beta2, eps=float(hp["eps"]),
            weight_decay=0.0 if decoupled else wd,
            decay=1.0 - lr * wd if decoupled else 1.0,
            step_size=lr / bc1,
            bias_correction2_sqrt=math.sqrt(bc2),
            amsgrad=int(bool(hp["amsgrad"])), maximize=int(bool(hp["maximize"])),
        )


ADAM = register(AdamRule())
