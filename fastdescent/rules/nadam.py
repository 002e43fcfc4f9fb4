"""NAdam's rule (torch.optim.NAdam, with ``decoupled_weight_decay`` for NAdamW).

torch's update, per parameter, with t the step count (1 on the first step), psi = momentum_decay,
Pi_t the running product mu_1 * ... * mu_t (``mu_product``, state):

    mu_t     = beta1 * (1 - 0.5 * 0.96**(t*psi)) ;  mu_{t+1} = beta1 * (1 - 0.5 * 0.96**((t+1)*psi))
    Pi_t     = Pi_{t-1} * mu_t                    (Pi_0 = 1)
    bc2      = 1 - beta2**t
    p <- p - lr*(1 - mu_t)/(1 - Pi_t) * g/d - lr*mu_{t+1}/(1 - Pi_t*mu_{t+1}) * m/d,
    d = sqrt(v/bc2) + eps

Every factor above is a float64 scalar of this module (``mu_product`` is the per-parameter scalar
state: it depends on the history of beta1, which a scheduler may change). The kernels apply the
algebraically identical form p <- p - (sg*g + sm*m) / (sqrt(v) + eps*sqrt(bc2)), where the
coefficients carry sqrt(bc2): one square root and one division per element.

Precision of ``mu_product``: kept in float64. torch keeps it in its default scalar dtype (float32
unless ``torch.set_default_dtype(torch.float64)``; and after a ``load_state_dict`` it takes the
parameter's dtype), so against torch's defaults a float64 trajectory agrees to ~1e-8 relative, and
to float64 precision against torch with a float64 default dtype (or after a state_dict load).
"""

import math

from . import Rule, check_betas, check_flag, check_real, register


class NAdamRule(Rule):
    name = "nadam"
    defaults = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                    decoupled_weight_decay=False, maximize=False)
    all_state = ("exp_avg", "exp_avg_sq")
    core_state = ("exp_avg", "exp_avg_sq")
    scalar_state = {"mu_product": 1.0}

    def check(self, hp):
        check_real("lr", hp["lr"], lo=0.0)
        check_betas(hp["betas"])
        check_real("eps", hp["eps"], lo=0.0)
        check_real("weight_decay", hp["weight_decay"], lo=0.0)
        check_real("momentum_decay", hp["momentum_decay"], lo=0.0)
        check_flag("decoupled_weight_decay", hp.get("decoupled_weight_decay", False))
        check_flag("maximize", hp["maximize"])
        check_real("l1", hp.get("l1", 0.0), lo=0.0)

    @staticmethod
    def _mus(hp, step):
        """(mu_t, mu_{t+1}) as torch computes them (float64)."""
        beta1, psi, t = float(hp["betas"][0]), float(hp["momentum_decay"]), float(step)
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1.0) * psi)))
        return mu, mu_next

    def next_scalar_state(self, hp, step, sstate):
        """mu_product after step ``step``: Pi_t = Pi_{t-1} * mu_t."""
        mu, _ = self._mus(hp, step)
        return {"mu_product": sstate["mu_product"] * mu}

    def check_scalar_state(self, name, value, where):
        # a product of factors in [0, 1): within [0, 1] (1 before the first step)
        return check_real(where, value, lo=0.0, hi=1.0, coerce=True)

    def scalars(self, hp, step, first, sstate=None):
        """Coupled decay goes into ``weight_decay``; decoupled decay (NAdamW) into ``decay`` =
        1 - lr*wd, applied to p before the moments. ``step_size_grad`` = lr*(1-mu_t)/(1-Pi_t) *
        sqrt(bc2), ``step_size_exp_avg`` = lr*mu_{t+1}/(1-Pi_t*mu_{t+1}) * sqrt(bc2), ``eps_scaled``
        = eps*sqrt(bc2) (``sstate``: the mu_product before this step; None on a fresh start)."""
        beta1, beta2 = float(hp["betas"][0]), float(hp["betas"][1])
        lr, wd = float(hp["lr"]), float(hp["weight_decay"])
        decoupled = bool(hp.get("decoupled_weight_decay", False))
        mu, mu_next = self._mus(hp, step)
        mu_product = (self.scalar_state if sstate is None else sstate)["mu_product"] * mu
        mu_product_next = mu_product * mu_next
        sqrt_bc2 = math.sqrt(1.0 - beta2 ** float(step))
        return dict(
            beta1=beta1, one_minus_beta1=1.0 - beta1, beta2=beta2, one_minus_beta2=1.0 - beta2,
            weight_decay=0.0 if decoupled else wd,
            decay=1.0 - lr * wd if decoupled else 1.0,
            step_size_grad=lr * (1.0 - mu) / (1.0 - mu_product) * sqrt_bc2,
            step_size_exp_avg=lr * mu_next / (1.0 - mu_product_next) * sqrt_bc2,
            eps_scaled=float(hp["eps"]) * sqrt_bc2,
            maximize=int(bool(hp["maximize"])),
        )


NADAM = register(NAdamRule())
