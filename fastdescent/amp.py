"""Dynamic loss scaling for float16/bfloat16 training: :class:`GradScaler`.

float16 gradients underflow to zero below 6e-8 and overflow above 65504; multiplying the loss (hence
every gradient) by a large ``scale`` keeps them representable. The scaler's :meth:`GradScaler.step`
passes ``grad_scale=scale`` to the optimizer, whose kernel divides each gradient by it as it reads it
(no unscaled copy, no extra pass), after one read-only check that every gradient is finite; on an
overflow the step is skipped (nothing is written) and :meth:`GradScaler.update` halves the scale.
After ``growth_interval`` steps in a row without overflow, the scale doubles. This is torch's
``torch.amp.GradScaler`` rule, with the same defaults::

    scaler = fd.amp.GradScaler()
    for x, y in batches:
        loss, grads = forward_backward(params, x, y, loss_scale=scaler.get_scale())
        scaler.step(opt, grads)     # skipped if a gradient is inf/NaN
        scaler.update()
"""

from __future__ import annotations

import math


from ._validate import FLOAT32_MAX, check_flag, check_loss_scale, check_real

__all__ = ["GradScaler"]

class GradScaler:
    """Dynamic loss scale (torch.amp.GradScaler's rule).

    Parameters
    ----------
    init_scale : float, default 2**16
    growth_factor : float, default 2.0
        Multiplies the scale after ``growth_interval`` consecutive steps without overflow (> 1).
    backoff_factor : float, default 0.5
        Multiplies the scale after a step with an inf/NaN gradient (in (0, 1)).
    growth_interval : int, default 2000
    enabled : bool, default True
        If False, :meth:`step` is a plain ``optimizer.step(grads)`` and the scale stays 1.
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        self._enabled = check_flag("enabled", enabled)
        self._scale = check_loss_scale("init_scale", init_scale)
        self._growth = check_real("growth_factor", growth_factor, lo=1.0, lo_open=True)
        self._backoff = check_real("backoff_factor", backoff_factor, lo=0.0, hi=1.0, lo_open=True,
                                   hi_open=True)
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) \
                or growth_interval < 1:
            raise ValueError(f"growth_interval must be an int >= 1, got {growth_interval!r}")
        self._interval = growth_interval
        self._tracker = 0  # steps in a row without overflow
        self._found_inf = None  # result of the last step(), consumed by update()
        self.skipped_steps = 0

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        """The loss scale to multiply the next loss by (1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def scale(self, loss):
        """``loss * get_scale()`` (a float, or an array multiplied in its own dtype)."""
        return loss * self.get_scale() if self._enabled else loss

    def step(self, optimizer, grads=None):
        """``optimizer.step(grads, grad_scale=scale)`` unless a gradient is inf or NaN (then nothing
        is written and the next :meth:`update` backs off). Returns True if the step was taken."""
        if not self._enabled:
            return optimizer.step(grads) is not False
        if self._found_inf is not None:
            raise RuntimeError("GradScaler.step() was called twice without update() in between")
        took = optimizer._scaled_step(grads, self._scale)
        self._found_inf = not took
        if not took:
            self.skipped_steps += 1
        return took

    def update(self, new_scale=None):
        """Adjust the scale after a :meth:`step` (or set it to ``new_scale``)."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = check_loss_scale("new_scale", new_scale)
            self._tracker = 0
            self._found_inf = None
            return
        if self._found_inf is None:
            raise RuntimeError("GradScaler.update() needs a step() first")
        if self._found_inf:
            self._scale = max(self._scale * self._backoff, math.ldexp(1.0, -126))
            self._tracker = 0
        else:
            self._tracker += 1
            if self._tracker == self._interval:
                grown = self._scale * self._growth
                if grown <= FLOAT32_MAX:  # (torch's scale is a float32 tensor: it stops below inf)
                    self._scale = grown
                self._tracker = 0
        self._found_inf = None

    def state_dict(self):
        return {"scale": self._scale, "growth_factor": self._growth,
                "backoff_factor": self._backoff, "growth_interval": self._interval,
                "_growth_tracker": self._tracker} if self._enabled else {}

    def load_state_dict(self, state):
        if not self._enabled:
            return
        if not isinstance(state, dict) or "scale" not in state:
            raise ValueError("GradScaler.load_state_dict: expected a dict with 'scale' (from "
                             "state_dict())")
        scale = check_loss_scale("state['scale']", state["scale"], coerce=True)
        growth = check_real("state['growth_factor']", state.get("growth_factor", self._growth),
                            lo=1.0, lo_open=True, coerce=True)
        backoff = check_real("state['backoff_factor']", state.get("backoff_factor", self._backoff),
                             lo=0.0, hi=1.0, lo_open=True, hi_open=True, coerce=True)
        interval = state.get("growth_interval", self._interval)
        tracker = state.get("_growth_tracker", 0)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"state['growth_interval'] must be an int >= 1, got {interval!r}")
        if isinstance(tracker, bool) or not isinstance(tracker, int) or not 0 <= tracker < interval:
            raise ValueError(f"state['_growth_tracker'] must be an int in [0, growth_interval), "
                             f"got {tracker!r}")
        self._scale, self._growth, self._backoff = scale, growth, backoff
        self._interval, self._tracker = interval, tracker
        self._found_inf = None

    def __repr__(self):
        return (f"GradScaler(scale={self.get_scale()!r}, growth_factor={self._growth}, "
                f"backoff_factor={self._backoff}, growth_interval={self._interval}, "
                f"enabled={self._enabled})")
