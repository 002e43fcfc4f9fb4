"""SGD's rule: coupled weight decay, (Nesterov) momentum with dampening (torch.optim.SGD), and
optional gradient noise after the update (docs/update-rules.md "Gradient noise")."""

import operator

import numpy as np

from . import Rule, check_flag, check_real, register

#: seeds are keys of a counter-based generator: ints in [0, 2**63) (int64 in C)
SEED_LIMIT = 2 ** 63


def check_seed(seed, name="seed"):
    """An int (or NumPy integer, never bool) in [0, 2**63), as an int."""
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int in [0, 2**63), got {seed!r}")
    try:
        v = operator.index(seed)
    except TypeError:
        raise TypeError(f"{name} must be an int in [0, 2**63), got {type(seed).__name__} "
                        f"{seed!r}") from None
    if not 0 <= v < SEED_LIMIT:
        raise ValueError(f"{name} must be an int in [0, 2**63), got {v}")
    return v


def check_noise(hp):
    """The gradient-noise options of a group (absent keys take their defaults): ``noise_std`` and
    ``noise_decay`` finite and >= 0, ``seed`` an int in [0, 2**63)."""
    check_real("noise_std", hp.get("noise_std", 0.0), lo=0.0)
    check_real("noise_decay", hp.get("noise_decay", 0.0), lo=0.0)
    check_seed(hp.get("seed", 0))


class SGDRule(Rule):
    name = "sgd"
    defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                    maximize=False, noise_std=0.0, noise_decay=0.0, seed=0)
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
        check_noise(hp)

    def state_names(self, hp):
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    def scalars(self, hp, step, first):
        return dict(lr=float(hp["lr"]), momentum=float(hp["momentum"]),
                    dampening=float(hp["dampening"]), weight_decay=float(hp["weight_decay"]),
                    nesterov=int(bool(hp["nesterov"])), maximize=int(bool(hp["maximize"])),
                    first_step=int(bool(first)))

    def noise_sigma(self, hp, step):
        """sigma_t = noise_std * t**(-noise_decay), float64 (0 when noise_std is 0)."""
        std = float(hp.get("noise_std", 0.0))
        if std == 0.0:
            return 0.0
        return std * float(step) ** -float(hp.get("noise_decay", 0.0))

    def post_passes(self, hp, step):
        """Gradient noise (row ``noise``: sigma_t, the seed and the step count t; the caller adds
        each tensor's ``param_index``) when ``noise_std > 0``, then the base passes (proximal L1).
        With ``noise_std == 0`` there is no noise pass at all: exactly plain SGD."""
        passes = []
        sigma = self.noise_sigma(hp, step)
        if sigma > 0.0:  # (also skipped when t**-noise_decay underflows: adding 0 changes nothing)
            passes.append(("noise", {"sigma": sigma, "seed": operator.index(hp.get("seed", 0)),
                                     "step": int(step)}))
        return passes + super().post_passes(hp, step)


SGD = register(SGDRule())
