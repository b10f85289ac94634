"""Change detection on each arm's conversion stream: a two-sided Bernoulli CUSUM (Page's test in
its likelihood-ratio form; Page–Hinkley is the same test for a Gaussian mean).

For each arm it sums the log-likelihood ratio of "the rate moved" against "the rate is still
p", p being the arm's rate since the policy last restarted: one sum for a fall to
p − ``shift``·min(p, 1 − p), one for a rise to p + ``shift``·min(p, 1 − p). Each sum is floored
at 0, so a long quiet past cannot hide a new change, and a sum above ``threshold`` (in nats) is
a change. The test is scale-free: the same threshold suits a 1% and a 30% rate. An arm is
tested once it has ``least`` conversions and ``least`` non-conversions since the restart (its
rate is known well enough to say it moved).

Outcomes arrive after their pull (a click follows its decision): a pull adds the no-conversion
term and its conversion, when it comes, adds the difference, so the sums are those over
(pull, outcome) pairs, taken in the order outcomes become known.

Examples:
    >>> detector, rng = ChangeDetector(1), np.random.default_rng(1)
    >>> n = c = 0
    >>> for t in range(4000):  # a 10% rate that falls to 3% after 2,000 pulls
    ...     n += 1
    ...     found = detector.pulled(0, n, c)
    ...     if not found and rng.random() < (0.10 if t < 2000 else 0.03):
    ...         c += 1
    ...         found = detector.converted(0, n, c)
    ...     if found:
    ...         break
    >>> found, 2000 < t < 2600
    ('fell', True)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Change", "ChangeDetector"]


class Change(NamedTuple):
    """A change the detector found: the arm, which way its rate went, its rate since the
    previous restart (the change's own pulls included), and the policy's pull count then."""

    arm: int
    direction: str  # "fell" or "rose"
    rate: float
    pulls: float


class ChangeDetector:
    """Two CUSUM sums per arm, ``down`` and ``up`` (see the module's docstring)."""

    def __init__(
        self, n_arms: int, threshold: float = 10.0, shift: float = 0.5, least: int = 10
    ) -> None:
        if threshold <= 0.0:
            raise ValueError(f"threshold must be above 0, got {threshold}")
        if not 0.0 < shift < 1.0:
            raise ValueError(f"shift must lie in (0, 1), got {shift}")
        self.threshold = threshold
        self.shift = shift
        self.least = least
        self.down = np.zeros(n_arms)
        self.up = np.zeros(n_arms)

    def pulled(self, arm: int, n: float, c: float) -> str | None:
        """A pull of ``arm``, which has now ``n`` pulls and ``c`` conversions since the restart:
        the no-conversion term of both sums. Returns "fell" or "rose" on a change."""
        rates = self._rates(n, c)
        if rates is None:
            return None
        p, low, high = rates
        self.down[arm] = max(0.0, self.down[arm] + math.log((1 - low) / (1 - p)))
        self.up[arm] = max(0.0, self.up[arm] + math.log((1 - high) / (1 - p)))
        return self._verdict(arm)

    def converted(self, arm: int, n: float, c: float, value: float = 1.0) -> str | None:
        """A conversion (``value`` of one) of an earlier pull of ``arm``, now at ``n`` pulls and
        ``c`` conversions: the difference between a conversion's term and a non-conversion's."""
        rates = self._rates(n, c)
        if rates is None:
            return None
        p, low, high = rates
        value = min(max(value, 0.0), 1.0)
        down = math.log(low / p) - math.log((1 - low) / (1 - p))
        up = math.log(high / p) - math.log((1 - high) / (1 - p))
        self.down[arm] = max(0.0, self.down[arm] + value * down)
        self.up[arm] = max(0.0, self.up[arm] + value * up)
        return self._verdict(arm)

    def clear(self) -> None:
        """Start both sums of every arm again (after a restart)."""
        self.down[:] = 0.0
        self.up[:] = 0.0

    def _rates(self, n: float, c: float) -> tuple[float, float, float] | None:
        if c < self.least or n - c < self.least:
            return None
        p = c / n
        step = self.shift * min(p, 1.0 - p)
        return p, p - step, p + step

    def _verdict(self, arm: int) -> str | None:
        if self.down[arm] > self.threshold:
            return "fell"
        if self.up[arm] > self.threshold:
            return "rose"
        return None

    def state(self) -> dict[str, Any]:
        return {"down": self.down.tolist(), "up": self.up.tolist()}

    def load(self, state: dict[str, Any]) -> None:
        """Take back ``state``'s sums (none in a state saved before detection was on)."""
        for name in ("down", "up"):
            if name in state:
                setattr(self, name, np.asarray(state[name], dtype=float))
            else:
                getattr(self, name)[:] = 0.0
