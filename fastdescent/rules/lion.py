"""Lion's rule (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; optax.lion):
the sign of an interpolation of the momentum and the gradient, decoupled weight decay."""

from . import Rule, check_betas, check_flag, check_real, register


class LionRule(Rule):
    name = "lion"
    defaults = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False, l1=0.0)
    all_state = ("exp_avg",)
    core_state = ("exp_avg",)

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_betas(hp["betas"])
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_flag("maximize", hp["maximize"])
        check_real("l1", hp.get("l1", 0.0), lo=0.0)

    def scalars(self, hp, step, first):
        """``decay`` = 1 - lr*wd (the decoupled factor, 1 without weight decay); ``1 - beta`` in
        float64 for both betas. Lion has no step-dependent scalar."""
        beta1, beta2 = float(hp["betas"][0]), float(hp["betas"][1])
        lr = float(hp["lr"])
        return dict(lr=lr, beta1=beta1, one_minus_beta1=1.0 - beta1, beta2=beta2,
                    one_minus_beta2=1.0 - beta2, decay=1.0 - lr * float(hp["weight_decay"]),
                    maximize=int(bool(hp["maximize"])))


LION = register(LionRule())
