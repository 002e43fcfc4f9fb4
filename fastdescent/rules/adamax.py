"""Adamax's rule (torch.optim.Adamax): Adam with an infinity-norm second moment.

torch updates ``exp_avg`` with ``lerp_(grad, 1 - beta1)``, whose CPU formula depends on the weight
``w = 1 - beta1``: ``m + w*(g - m)`` when ``|w| < 0.5``, else ``g - (g - m)*(1 - w)``. The rule
passes the branch as the flag ``lerp_from_grad`` and the weight of ``(g - m)`` as ``lerp_weight``
(``w``, or ``w - 1`` on the second branch), so every kernel computes
``m <- (g if lerp_from_grad else m) + lerp_weight*(g - m)`` and never derives a constant itself.
"""

from . import Rule, check_betas, check_flag, check_real, register


class AdamaxRule(Rule):
    name = "adamax"
    defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                    l1=0.0)
    all_state = ("exp_avg", "exp_inf")
    core_state = ("exp_avg", "exp_inf")

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_betas(hp["betas"])
        check_real("eps", hp["eps"], lo=0.0)
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_flag("maximize", hp["maximize"])
        check_real("l1", hp.get("l1", 0.0), lo=0.0)

    def scalars(self, hp, step, first):
        """``clr`` = lr / (1 - beta1**t), torch's non-capturable step size."""
        beta1, beta2 = float(hp["betas"][0]), float(hp["betas"][1])
        w = 1.0 - beta1
        small = abs(w) < 0.5  # torch's is_lerp_weight_small
        return dict(
            lerp_weight=w if small else w - 1.0, lerp_from_grad=0 if small else 1,
            beta2=beta2, eps=float(hp["eps"]), weight_decay=float(hp["weight_decay"]),
            clr=float(hp["lr"]) / (1.0 - beta1 ** step), maximize=int(bool(hp["maximize"])),
        )


ADAMAX = register(AdamaxRule())
