"""Timing: warm-up, calibrated inner loops, medians of several rounds, interleaved peers.

The machine a benchmark runs on is usually shared and noisy. Two things keep the figures honest:

* every figure is the **median** over ``rounds`` rounds, each round timing ``inner`` consecutive calls
  (``inner`` is calibrated so that a round lasts at least ``min_time`` seconds), after ``warmup`` calls
  that are not timed (JIT compilation and first-touch page faults happen there);
* implementations that are compared with each other are timed **interleaved** (round 1 of every
  implementation, then round 2 of every implementation, ... with the order rotated each round), so a
  burst of load from another process hits all of them alike and the ratios stay meaningful.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

__all__ = ["Timing", "calibrate", "measure", "measure_interleaved"]

_clock = time.perf_counter


@dataclass
class Timing:
    """Seconds per call: ``median`` over the rounds, plus every round and the calls per round."""

    median: float
    rounds: list = field(default_factory=list)
    inner: int = 1
    #: rounds asked for; fewer were timed when the case ran over its time budget
    asked: int = 0

    @property
    def min(self):
        return min(self.rounds)

    @property
    def spread(self):
        """(max - min) / median over the rounds: a rough noise indicator."""
        if len(self.rounds) < 2 or self.median == 0:
            return 0.0
        return (max(self.rounds) - min(self.rounds)) / self.median

    @property
    def over_budget(self):
        return len(self.rounds) < self.asked

    def as_dict(self):
        d = {"median_s": self.median, "min_s": self.min, "rounds_s": list(self.rounds),
             "calls_per_round": self.inner, "spread": self.spread}
        if self.over_budget:
            d["rounds_asked"] = self.asked
        return d


def calibrate(fn, min_time, max_inner=100_000):
    """Number of consecutive calls of ``fn`` that take at least ``min_time`` seconds (>= 1)."""
    n = 1
    while True:
        t0 = _clock()
        for _ in range(n):
            fn()
        dt = _clock() - t0
        if dt >= min_time or n >= max_inner:
            return n
        if dt <= 0:
            n = min(max_inner, n * 10)
        else:
            n = min(max_inner, max(n + 1, math.ceil(n * 1.2 * min_time / dt)))


def _round(fn, inner):
    t0 = _clock()
    for _ in range(inner):
        fn()
    return (_clock() - t0) / inner


def measure(fn, *, rounds=5, min_time=0.05, warmup=1, budget=None):
    """Time ``fn()``: ``warmup`` untimed calls, then ``rounds`` calibrated rounds; a :class:`Timing`."""
    return measure_interleaved([fn], rounds=rounds, min_time=min_time, warmup=warmup,
                               budget=budget)[0]


def measure_interleaved(fns, *, rounds=5, min_time=0.05, warmup=1, budget=None):
    """Time several callables side by side, round-robin, rotating the order each round.

    ``budget`` (seconds per callable, None: no limit) bounds the whole measurement: calibration
    asks for no more calls than fit, and once the time spent passes ``budget * len(fns)`` no further
    round starts (at least one round is always timed); the Timings then say ``over_budget``. A single
    call is never interrupted.

    Returns one :class:`Timing` per callable, in the order given.
    """
    fns = list(fns)
    t0 = _clock()
    for fn in fns:
        for _ in range(warmup):
            fn()
    total = None if budget is None else budget * len(fns)
    if total is not None:  # a round of each may take at most its share of what is left
        left = max(0.0, total - (_clock() - t0))
        min_time = min(min_time, left / max(1, rounds) / len(fns))
    inner = [calibrate(fn, min_time) for fn in fns]
    per = [[] for _ in fns]
    k = len(fns)
    for r in range(max(1, rounds)):
        if r > 0 and total is not None and _clock() - t0 > total:
            break
        for j in range(k):
            i = (j + r) % k
            per[i].append(_round(fns[i], inner[i]))
    return [Timing(statistics.median(ts), ts, n, max(1, rounds)) for ts, n in zip(per, inner)]
