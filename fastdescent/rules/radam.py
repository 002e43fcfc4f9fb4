"""RAdam's rule (torch.optim.RAdam, with ``decoupled_weight_decay`` for RAdamW).

torch's update, with t the step count (1 on the first step):

    bc1 = 1 - beta1**t ;  bc2 = 1 - beta2**t
    rho_inf = 2/(1 - beta2) - 1 ;  rho_t = rho_inf - 2*t*beta2**t/bc2
    if rho_t > 5 (rectified):
        r_t = sqrt((rho_t - 4)*(rho_t - 2)*rho_inf / ((rho_inf - 4)*(rho_inf - 2)*rho_t))
        p <- p - lr * m/bc1 * r_t * sqrt(bc2)/(sqrt(v) + eps)
    else:
        p <- p - lr * m/bc1

(the moments are updated on every step). rho_t, r_t and the choice are per-step float64 scalars of
this module; the kernels get ``step_size`` (lr*r_t*sqrt(bc2)/bc1, or lr/bc1) and the flag
``rectify``: p <- p - step_size * (m / (sqrt(v) + eps)), or p <- p - step_size * m.
"""

import math

from . import Rule, check_betas, check_flag, check_real, register


class RAdamRule(Rule):
    name = "radam"
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    decoupled_weight_decay=False, maximize=False)
    all_state = ("exp_avg", "exp_avg_sq")
    core_state = ("exp_avg", "exp_avg_sq")

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_betas(hp["betas"])
        check_real("eps", hp["eps"], lo=0.0)
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_flag("decoupled_weight_decay", hp.get("decoupled_weight_decay", False))
        check_flag("maximize", hp["maximize"])
        check_real("l1", hp.get("l1", 0.0), lo=0.0)

    @staticmethod
    def rectification(beta2, step):
        """(rho_t, r_t or None when rho_t <= 5), exactly as torch computes them (float64)."""
        t = float(step)
        bc2 = 1.0 - beta2 ** t
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * t * (beta2 ** t) / bc2
        if not rho_t > 5.0:
            return rho_t, None
        rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) ** 0.5
        return rho_t, rect

    def scalars(self, hp, step, first):
        """Coupled decay goes into ``weight_decay``; decoupled decay (RAdamW) into ``decay`` =
        1 - lr*wd, applied to p before the moments. ``rectify`` = (rho_t > 5); ``step_size`` =
        lr*r_t*sqrt(bc2)/bc1 when rectified, else lr/bc1."""
        beta1, beta2 = float(hp["betas"][0]), float(hp["betas"][1])
        lr, wd = float(hp["lr"]), float(hp["weight_decay"])
        decoupled = bool(hp.get("decoupled_weight_decay", False))
        t = float(step)
        bc1 = 1.0 - beta1 ** t
        _, rect = self.rectification(beta2, step)
        if rect is None:
            step_size = lr / bc1
        else:
            step_size = lr * rect * math.sqrt(1.0 - beta2 ** t) / bc1
        return dict(
            beta1=beta1, one_minus_beta1=1.0 - beta1, beta2=beta2, one_minus_beta2=1.0 - beta2,
            eps=float(hp["eps"]), weight_decay=0.0 if decoupled else wd,
            decay=1.0 - lr * wd if decoupled else 1.0, step_size=step_size,
            rectify=int(rect is not None), maximize=int(bool(hp["maximize"])),
        )


RADAM = register(RAdamRule())
