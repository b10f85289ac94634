"""Fixed-split A/B/n tests with sticky assignment and a holdout.

Assignment is a pure function of the unit (a visitor id) and the placement's salt (see
``bandits.hashing``): the same unit gets the same arm in every process and after restarts, and
adding weight to an arm moves only the units that must move. A unit whose bucket falls in the
first ``holdout`` share is held out: it gets the default arm and is not part of the test.

Examples:
    >>> test = ABTest([50, 50], salt="home_hero")
    >>> test.assign("user-1") == test.assign("user-1")
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bandits.hashing import bucket, pick
from bandits.policy import Choice, Features, Policy

__all__ = ["ABTest"]


class ABTest(Policy):
    kind = "ab"

    def __init__(
        self,
        weights: Sequence[float],
        salt: str,
        holdout: float = 0.0,
        default: int = 0,
        hash_version: int = 2,
        **options: Any,
    ):
        super().__init__(len(weights), **options)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be non-negative and add up to more than 0: {weights}")
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"holdout must lie in [0, 1), got {holdout}")
        self.weights = [float(w) for w in weights]
        self.salt = salt
        self.holdout = holdout
        self.default = default
        self.hash_version = hash_version

    def assign(self, unit: str) -> Choice:
        """The arm of ``unit``: deterministic, so its propensity is the arm's share."""
        point = bucket(unit, self.salt, self.hash_version)
        if point < self.holdout:
            return Choice(self.default, 1.0)
        rescaled = (point - self.holdout) / (1.0 - self.holdout)
        arm = pick(rescaled, self.weights)
        return Choice(arm, self.weights[arm] / sum(self.weights))

    def _probabilities(self, context: Features | None) -> NDArray[np.float64]:
        weights = np.asarray(self.weights)
        return np.asarray(weights / weights.sum(), dtype=float)

    def _pull(self, arm: int, context: Features | None) -> None:
        pass  # a fixed split does not learn; its results come from the statistics engine

    def _reward(self, arm: int, value: float, context: Features | None) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "pulls": self.pulls}

    def load(self, state: dict[str, Any]) -> None:
        self.pulls = float(state.get("pulls", 0.0))

    def absorb(
        self,
        arms: NDArray[np.int64],
        rewards: NDArray[np.float64],
        counts: NDArray[np.float64],
        contexts: NDArray[np.float64] | None = None,
    ) -> None:
        self.pulls += float(counts.sum())

    def merge(self, other: Policy) -> None:
        self.pulls += other.pulls
