"""Thompson sampling on revenue per decision, with conversion and order value modelled apart.

Revenue per decision is mostly zeros: a variant that converts 2% of visitors at 100 an order
earns twice one that converts 5% at 20, yet a Gaussian on revenue per decision sees two streams
of zeros with a few outliers, and its variance estimate swings with each large order. Here each
arm's rate has a Beta(1 + c, 1 + n − c) posterior, learned from every decision, and the mean
value of its orders a log-normal one, learned from its orders alone: centred, before any
order, on the mean of every arm's orders, but ``value_spread`` wide in logs (2: a factor of
seven either way), because a variant's orders may be worth far more than the others'. A draw
of revenue per decision is a draw of the rate times a draw of the order value, so a variant
that rarely converts keeps being shown until it has had its chance to show what its orders are
worth, and then one order tells more than hundreds of zero-revenue decisions.

Each arm keeps ``n`` (pulls), ``c`` (conversions: rewards above 0), ``s`` and ``q`` (sum and
sum of squares of the order values), all discounted alike: states add up across shards.

Examples:
    >>> rng = np.random.default_rng(5)
    >>> policy = RevenueThompson(3, seed=5)
    >>> for _ in range(4000):  # 5% at 20, 4% at 25, 2% at 100: the last earns most
    ...     arm, _ = policy.choose(rng=rng)
    ...     rate, value = [(0.05, 20.0), (0.04, 25.0), (0.02, 100.0)][arm]
    ...     policy.update(arm, value * rng.lognormal(0, 0.3) if rng.random() < rate else 0.0)
    >>> int(policy.probabilities().argmax())
    2
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bandits.mab import _Thompson
from bandits.policy import Features, Policy

__all__ = ["RevenueThompson"]


class RevenueThompson(_Thompson):
    """Beta conversion rate × log-normal mean order value, per arm (see the module)."""

    kind = "revenue_thompson"

    def __init__(self, n_arms: int, value_spread: float = 2.0, **options: Any) -> None:
        super().__init__(n_arms, **options)
        if value_spread <= 0.0:
            raise ValueError(f"value_spread must be above 0, got {value_spread}")
        self.value_spread = value_spread
        self.c = np.zeros(n_arms)

    def _conversions(self, arm: int) -> tuple[float, float]:
        return float(self.n[arm]), float(min(self.c[arm], self.n[arm]))

    def _pull(self, arm: int, context: Features | None) -> None:
        if self.discount < 1.0:
            self.c *= self.discount
        super()._pull(arm, context)

    def _reward(self, arm: int, value: float, context: Features | None) -> None:
        self.c[arm] += 1.0
        super()._reward(arm, value, context)

    def _restart(self) -> None:
        self.c[:] = 0.0
        super()._restart()

    def _posterior(self, draws: int) -> NDArray[np.float64]:
        c = np.minimum(self.c, self.n)
        rate = self.rng.beta(np.repeat((1.0 + c)[:, None], draws, 1),
                             np.repeat((1.0 + self.n - c)[:, None], draws, 1))  # fmt: skip
        return rate * self._order_values(c, draws)

    def _order_values(self, c: NDArray[np.float64], draws: int) -> NDArray[np.float64]:
        """Draws of each arm's mean order value (arms × draws); all ones before any order.

        In logs, the prior is N(log m, ``value_spread``²), m the mean of every arm's orders,
        and an arm's orders say log(their mean) with the standard error of a mean (the arm's
        variance shrunk towards the pooled one by one order's worth)."""
        orders = float(c.sum())
        if orders <= 0.0:
            return np.ones((self.n_arms, draws))
        overall = max(float(self.s.sum()) / orders, 1e-9)
        seen = c > 0
        some = np.maximum(c, 1e-12)
        mean = np.where(seen, np.maximum(self.s / some, 1e-9 * overall), overall)
        within = np.maximum(self.q - self.s**2 / some, 0.0)
        pooled = max(float(within.sum()) / orders, 1e-12 * overall**2)
        variance = (within + pooled) / (c + 1.0)
        evidence = np.where(seen, some * mean**2 / np.maximum(variance, 1e-300), 0.0)  # 1/se²
        precision = 1.0 / self.value_spread**2 + evidence
        centre = (np.log(overall) / self.value_spread**2 + evidence * np.log(mean)) / precision
        noise = self.rng.standard_normal((self.n_arms, draws))
        return np.asarray(np.exp(centre[:, None] + noise / np.sqrt(precision)[:, None]))

    def state(self) -> dict[str, Any]:
        return super().state() | {"c": self.c.tolist()}

    def load(self, state: dict[str, Any]) -> None:
        self.c = np.asarray(state.get("c", [0.0] * self.n_arms), dtype=float)
        super().load(state)

    def absorb(
        self,
        arms: NDArray[np.int64],
        rewards: NDArray[np.float64],
        counts: NDArray[np.float64],
        contexts: NDArray[np.float64] | None = None,
    ) -> None:
        np.add.at(self.c, arms, np.where(rewards != 0.0, counts, 0.0))
        super().absorb(arms, rewards, counts, contexts)

    def merge(self, other: Policy) -> None:
        if not isinstance(other, RevenueThompson):
            raise ValueError("only states of the same kind and arms merge")
        super().merge(other)
        self.c += other.c
