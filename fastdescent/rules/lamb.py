"""LAMB's rule (You et al. 2020, "Large Batch Optimization for Deep Learning"; optax.lamb): Adam's
direction plus decoupled weight decay, scaled per tensor by the trust ratio ||p|| / ||r||."""

from . import Rule, check_betas, check_flag, check_real, register


class LambRule(Rule):
    name = "lamb"
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, bias_correction=True,
                    maximize=False, l1=0.0)
    all_state = ("exp_avg", "exp_avg_sq")
    core_state = ("exp_avg", "exp_avg_sq")

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_betas(hp["betas"])
        check_real("eps", hp["eps"], lo=0.0)
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_flag("bias_correction", hp["bias_correction"])
        check_flag("maximize", hp["maximize"])
        check_real("l1", hp.get("l1", 0.0), lo=0.0)

    def scalars(self, hp, step, first):
        """``inv_bias_correction1/2`` = 1 / (1 - beta**t) in float64 (exactly 1 when
        ``bias_correction`` is off): the kernels multiply m and v by them (mh = m * inv_bc1, as
        Adam's step_size = lr/bc1 is a multiplier), so each step costs one division and one square
        root per element and pass instead of three divisions and a square root (LAMB is
        compute-bound otherwise, see csrc/fd_lamb.c); ``1 - beta`` in float64 for both betas. The
        trust ratio is per tensor and per step: the kernels compute it (float64 norms) and round
        lr * trust once to the element type."""
        beta1, beta2 = float(hp["betas"][0]), float(hp["betas"][1])
        if hp["bias_correction"]:
            ibc1, ibc2 = 1.0 / (1.0 - beta1 ** step), 1.0 / (1.0 - beta2 ** step)
        else:
            ibc1 = ibc2 = 1.0
        return dict(lr=float(hp["lr"]), beta1=beta1, one_minus_beta1=1.0 - beta1, beta2=beta2,
                    one_minus_beta2=1.0 - beta2, eps=float(hp["eps"]),
                    weight_decay=float(hp["weight_decay"]), inv_bias_correction1=ibc1,
                    inv_bias_correction2=ibc2, maximize=int(bool(hp["maximize"])))


LAMB = register(LambRule())
