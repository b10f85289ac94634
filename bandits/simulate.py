"""Simulated traffic for tests and benchmarks: Bernoulli arms, arms whose payoff depends on the
context, arms whose rates change at a moment, and arms that convert at one rate and order at
another value. Everything random comes from a seeded generator.

Every environment says the expected reward of each arm (``expected``, for a context at a
round) and draws one outcome (``outcome``): a click (1 or 0) or an order's revenue (0 when the
visitor did not convert).

Examples:
    >>> from bandits.mab import BetaThompson
    >>> run = simulate(BetaThompson(3, seed=1), BernoulliArms([0.1, 0.2, 0.3]), rounds=2000, seed=1)
    >>> bool(run.regret[-1] < 2000 * 0.2)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from bandits.policy import Policy

__all__ = [
    "BernoulliArms",
    "ContextualArms",
    "Environment",
    "RevenueArms",
    "Run",
    "ShiftingArms",
    "simulate",
]

Context = NDArray[np.float64] | None


class Environment(Protocol):
    def context(self, rng: np.random.Generator) -> Context: ...

    def expected(self, context: Context, t: int = 0) -> NDArray[np.float64]: ...

    def outcome(self, arm: int, context: Context, t: int, rng: np.random.Generator) -> float: ...


class _Clicks:
    """An outcome is a click with the arm's expected rate."""

    def expected(self, context: Context, t: int = 0) -> NDArray[np.float64]:
        raise NotImplementedError

    def outcome(self, arm: int, context: Context, t: int, rng: np.random.Generator) -> float:
        return float(rng.random() < self.expected(context, t)[arm])


@dataclass(frozen=True)
class BernoulliArms(_Clicks):
    means: list[float]

    def context(self, rng: np.random.Generator) -> Context:
        return None

    def expected(self, context: Context, t: int = 0) -> NDArray[np.float64]:
        return np.asarray(self.means, dtype=float)


@dataclass(frozen=True)
class ShiftingArms(_Clicks):
    """Click rates ``before`` until round ``at``, ``after`` from then on (a promotion ends)."""

    before: list[float]
    after: list[float]
    at: int

    def context(self, rng: np.random.Generator) -> Context:
        return None

    def expected(self, context: Context, t: int = 0) -> NDArray[np.float64]:
        return np.asarray(self.before if t < self.at else self.after, dtype=float)


@dataclass(frozen=True)
class ContextualArms(_Clicks):
    """Contexts are one-hot segments (plus a bias feature); each arm pays best in one segment."""

    payoffs: list[list[float]]  # arms × segments: the click probability

    @property
    def dimensions(self) -> int:
        return len(self.payoffs[0]) + 1

    def context(self, rng: np.random.Generator) -> NDArray[np.float64]:
        x = np.zeros(self.dimensions)
        x[0] = 1.0
        x[1 + rng.integers(0, self.dimensions - 1)] = 1.0
        return x

    def expected(self, context: Context, t: int = 0) -> NDArray[np.float64]:
        assert context is not None
        segment = int(np.argmax(context[1:]))
        return np.array([row[segment] for row in self.payoffs], dtype=float)


@dataclass(frozen=True)
class RevenueArms:
    """Each arm converts at ``rates`` and its orders are worth ``values`` on average
    (log-normal, with ``spread`` the standard deviation of the log): the reward is revenue."""

    rates: list[float]
    values: list[float]
    spread: float = 0.5

    def context(self, rng: np.random.Generator) -> Context:
        return None

    def expected(self, context: Context, t: int = 0) -> NDArray[np.float64]:
        rates, values = np.asarray(self.rates, dtype=float), np.asarray(self.values, dtype=float)
        return np.asarray(rates * values, dtype=np.float64)

    def outcome(self, arm: int, context: Context, t: int, rng: np.random.Generator) -> float:
        if rng.random() >= self.rates[arm]:
            return 0.0
        # The mean of a log-normal is exp(mu + spread²/2): mu is set so it is the arm's value.
        mu = np.log(self.values[arm]) - self.spread**2 / 2.0
        return float(rng.lognormal(mu, self.spread))


@dataclass
class Run:
    arms: NDArray[np.int64]
    rewards: NDArray[np.float64]
    regret: NDArray[np.float64]  # cumulative expected regret


def simulate(policy: Policy, env: Environment, rounds: int, seed: int) -> Run:
    """``rounds`` choices and immediate updates (``update``) of ``policy`` in ``env``."""
    rng = np.random.default_rng(seed)
    arms = np.zeros(rounds, dtype=np.int64)
    rewards = np.zeros(rounds)
    lost = np.zeros(rounds)
    for t in range(rounds):
        x = env.context(rng)
        expected = env.expected(x, t)
        arm, _ = policy.choose(x, rng)
        reward = env.outcome(arm, x, t, rng)
        policy.update(arm, reward, x)
        arms[t], rewards[t], lost[t] = arm, reward, expected.max() - expected[arm]
    return Run(arms, rewards, np.cumsum(lost))
