"""What every policy shares: the choice protocol, and the options that shape any policy.

A policy chooses one of ``n_arms`` arms for a context and says with what probability it did;
it learns from (arm, reward, context). ``probabilities`` is the distribution a choice is drawn
from, so the propensity logged with a decision is exact, which off-policy evaluation relies on.

Options every policy takes:

- ``burn_in``: the first pulls are uniform (every arm gets seen before any is favoured);
- ``min_share``: each arm keeps at least this probability (exploration that never stops);
- ``discount``: each update first multiplies what was learned by this factor (< 1 forgets old
  evidence, for content whose appeal drifts; ``PolicySpec.window`` sets it in decisions).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_right
from itertools import accumulate
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numpy.typing import NDArray

from bandits.change import Change

__all__ = ["Choice", "Features", "Policy"]

Features = NDArray[np.float64]


class Choice(NamedTuple):
    arm: int
    propensity: float


class Policy(ABC):
    """Base of every policy: subclasses define ``_probabilities``, ``_pull``, ``_reward`` and
    state. Learning is split in two because rewards arrive after the choice: a pull counts the
    showing, a reward adds what it earned (``update`` does both at once)."""

    kind: ClassVar[str]
    contextual: ClassVar[bool] = False

    def __init__(
        self,
        n_arms: int,
        *,
        burn_in: int = 0,
        min_share: float = 0.0,
        discount: float = 1.0,
        seed: int | None = None,
    ):
        if n_arms < 1:
            raise ValueError(f"n_arms must be at least 1, got {n_arms}")
        if not 0.0 <= min_share * n_arms <= 1.0:
            raise ValueError(f"min_share × arms must lie in [0, 1], got {min_share} × {n_arms}")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must lie in (0, 1], got {discount}")
        self.n_arms = n_arms
        self.burn_in = burn_in
        self.min_share = min_share
        self.discount = discount
        self.rng = np.random.default_rng(seed)
        self.pulls = 0.0  # updates seen (discounted like the evidence)
        self._drawn_from: NDArray[np.float64] | None = None  # what ``choose`` drew from last
        self._drawn_p: list[float] = []
        self._drawn_cdf: list[float] = []

    def probabilities(self, context: Features | None = None) -> NDArray[np.float64]:
        """The probability of choosing each arm now, for ``context``."""
        if self.pulls < self.burn_in:
            return np.full(self.n_arms, 1.0 / self.n_arms)
        p = self._probabilities(context)
        if self.min_share:
            p = (1.0 - self.min_share * self.n_arms) * p + self.min_share
        return p

    def choose(
        self, context: Features | None = None, rng: np.random.Generator | None = None
    ) -> Choice:
        p = self.probabilities(context)
        if p is not self._drawn_from:  # a new distribution: its cumulative sums, once
            self._drawn_from, self._drawn_p = p, p.tolist()
            self._drawn_cdf = list(accumulate(self._drawn_p))
        point = (rng or self.rng).random() * self._drawn_cdf[-1]
        arm = min(bisect_right(self._drawn_cdf, point), self.n_arms - 1)
        return Choice(arm, self._drawn_p[arm])

    def update(self, arm: int, reward: float, context: Features | None = None) -> None:
        """Learn that ``arm``, shown in ``context``, earned ``reward``."""
        self.pull(arm, context)
        if reward:
            self.reward(arm, reward, context)

    def pull(self, arm: int, context: Features | None = None) -> None:
        """Learn that ``arm`` was shown (its reward, if any, comes later with ``reward``)."""
        self._check(arm)
        self.pulls = self.pulls * self.discount + 1.0
        self._pull(arm, context)

    def reward(self, arm: int, value: float, context: Features | None = None) -> None:
        """Add a reward to an earlier pull of ``arm`` in ``context`` (a click, an order)."""
        self._check(arm)
        self._reward(arm, float(value), context)

    def take_changes(self) -> list[Change]:
        """The changes in an arm's rate found since the last call (``bandits.change``; the
        reward worker logs each one): none for a policy that does not look for them."""
        return []

    def _check(self, arm: int) -> None:
        if not 0 <= arm < self.n_arms:
            raise ValueError(f"arm must lie in [0, {self.n_arms}), got {arm}")

    @abstractmethod
    def _probabilities(self, context: Features | None) -> NDArray[np.float64]: ...

    @abstractmethod
    def _pull(self, arm: int, context: Features | None) -> None: ...

    @abstractmethod
    def _reward(self, arm: int, value: float, context: Features | None) -> None: ...

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """What was learned, as JSON-ready data (``load`` takes it back)."""

    @abstractmethod
    def load(self, state: dict[str, Any]) -> None: ...

    @abstractmethod
    def absorb(
        self,
        arms: NDArray[np.int64],
        rewards: NDArray[np.float64],
        counts: NDArray[np.float64],
        contexts: NDArray[np.float64] | None = None,
    ) -> None:
        """Learn from a grouped log at once: row i stands for ``counts[i]`` showings of
        ``arms[i]`` (in ``contexts[i]``), each earning ``rewards[i]``. No discounting: this
        fits a candidate on history (off-policy evaluation), it is not live learning."""

    @abstractmethod
    def merge(self, other: Policy) -> None:
        """Add what ``other`` learned from data this policy has not seen (another shard)."""


def one_hot(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """All probability on the best score, split evenly between ties."""
    best = (scores == scores.max()).astype(float)
    return np.asarray(best / best.sum(), dtype=np.float64)
