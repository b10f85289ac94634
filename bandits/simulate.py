"""Simulated traffic for tests and benchmarks: Bernoulli arms, and arms whose payoff depends on
the context. Everything random comes from a seeded generator.

Examples:
    >>> from bandits.mab import BetaThompson
    >>> run = simulate(BetaThompson(3, seed=1), BernoulliArms([0.1, 0.2, 0.3]), rounds=2000, seed=1)
    >>> bool(run.regret[-1] < 2000 * 0.2)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bandits.policy import Policy

__all__ = ["BernoulliArms", "ContextualArms", "Run", "simulate"]


@dataclass(frozen=True)
class BernoulliArms:
    means: list[float]

    def context(self, rng: np.random.Generator) -> NDArray[np.float64] | None:
        return None

    def expected(self, context: NDArray[np.float64] | None) -> NDArray[np.float64]:
        return np.asarray(self.means, dtype=float)


@dataclass(frozen=True)
class ContextualArms:
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

    def expected(self, context: NDArray[np.float64] | None) -> NDArray[np.float64]:
        assert context is not None
        segment = int(np.argmax(context[1:]))
        return np.array([row[segment] for row in self.payoffs], dtype=float)


@dataclass
class Run:
    arms: NDArray[np.int64]
    rewards: NDArray[np.float64]
    regret: NDArray[np.float64]  # cumulative expected regret


def simulate(policy: Policy, env: BernoulliArms | ContextualArms, rounds: int, seed: int) -> Run:
    rng = np.random.default_rng(seed)
    arms = np.zeros(rounds, dtype=np.int64)
    rewards = np.zeros(rounds)
    lost = np.zeros(rounds)
    for t in range(rounds):
        x = env.context(rng)
        expected = env.expected(x)
        arm, _ = policy.choose(x, rng)
        reward = float(rng.random() < expected[arm])
        policy.update(arm, reward, x)
        arms[t], rewards[t], lost[t] = arm, reward, expected.max() - expected[arm]
    return Run(arms, rewards, np.cumsum(lost))
