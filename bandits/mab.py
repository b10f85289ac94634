"""Non-contextual bandits on per-arm sufficient statistics: ε-greedy, UCB1, Thompson sampling.

Each arm keeps ``n`` (pulls), ``s`` (sum of rewards) and ``q`` (sum of squared rewards), all
discounted alike, so states add up across shards and serialise as three short lists.

Thompson sampling draws its choice from the probability that each arm is the best under the
posterior, estimated from ``draws`` posterior samples and refreshed after ``refresh_every``
updates: the logged propensity is exactly the probability used (batched Thompson sampling).

Examples:
    >>> ts = BetaThompson(3, seed=7)
    >>> for _ in range(300):
    ...     arm, _ = ts.choose()
    ...     ts.update(arm, 1.0 if arm == 2 else 0.0)
    >>> int(ts.probabilities().argmax())
    2
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bandits.change import Change, ChangeDetector
from bandits.policy import Features, Policy, one_hot

__all__ = ["UCB1", "BetaThompson", "EpsilonGreedy", "GaussianThompson"]


class _ArmStats(Policy):
    """Per-arm (n, sum, sum of squares), discounted together."""

    def __init__(self, n_arms: int, **options: Any):
        super().__init__(n_arms, **options)
        self.n = np.zeros(n_arms)
        self.s = np.zeros(n_arms)
        self.q = np.zeros(n_arms)

    @property
    def means(self) -> NDArray[np.float64]:
        return np.divide(self.s, self.n, out=np.zeros(self.n_arms), where=self.n > 0)

    def _pull(self, arm: int, context: Features | None) -> None:
        if self.discount < 1.0:
            self.n *= self.discount
            self.s *= self.discount
            self.q *= self.discount
        self.n[arm] += 1.0
        self._changed()

    def _reward(self, arm: int, value: float, context: Features | None) -> None:
        self.s[arm] += value
        self.q[arm] += value * value
        self._changed()

    def _changed(self) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "pulls": self.pulls, "n": self.n.tolist(),
                "s": self.s.tolist(), "q": self.q.tolist()}  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        if len(state["n"]) != self.n_arms:
            raise ValueError(f"state has {len(state['n'])} arms, the policy {self.n_arms}")
        self.pulls = float(state["pulls"])
        self.n, self.s, self.q = (np.asarray(state[k], dtype=float) for k in ("n", "s", "q"))
        self._changed()

    def absorb(
        self,
        arms: NDArray[np.int64],
        rewards: NDArray[np.float64],
        counts: NDArray[np.float64],
        contexts: NDArray[np.float64] | None = None,
    ) -> None:
        np.add.at(self.n, arms, counts)
        np.add.at(self.s, arms, counts * rewards)
        np.add.at(self.q, arms, counts * rewards**2)
        self.pulls += float(counts.sum())
        self._changed()

    def merge(self, other: Policy) -> None:
        if not isinstance(other, _ArmStats) or other.n_arms != self.n_arms:
            raise ValueError("only states of the same kind and arms merge")
        self.pulls += other.pulls
        self.n += other.n
        self.s += other.s
        self.q += other.q
        self._changed()


class EpsilonGreedy(_ArmStats):
    """The best mean so far with probability 1 − ε, any arm uniformly with probability ε."""

    kind = "epsilon_greedy"

    def __init__(self, n_arms: int, epsilon: float = 0.1, **options: Any):
        super().__init__(n_arms, **options)
        self.epsilon = epsilon

    def _probabilities(self, context: Features | None) -> NDArray[np.float64]:
        scores = np.where(self.n > 0, self.means, np.inf)  # an unseen arm is tried first
        return (1.0 - self.epsilon) * one_hot(scores) + self.epsilon / self.n_arms


class UCB1(_ArmStats):
    """The best upper confidence bound: mean + sqrt(2 ln t / n) (Auer et al., 2002)."""

    kind = "ucb1"

    def _probabilities(self, context: Features | None) -> NDArray[np.float64]:
        total = max(float(self.n.sum()), 1.0)
        bonus = np.sqrt(2.0 * np.log(total) / np.maximum(self.n, 1e-12))
        return one_hot(np.where(self.n > 0, self.means + bonus, np.inf))


class _Thompson(_ArmStats):
    """Batched Thompson sampling, with an optional change detector on each arm's conversions
    (``detect_changes``): when an arm's rate moves, the policy restarts (``_restart``), and
    the change waits in ``changes`` for whoever runs the policy to announce it."""

    def __init__(
        self,
        n_arms: int,
        draws: int = 1000,
        refresh_every: int = 50,
        detect_changes: bool = False,
        change_threshold: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(n_arms, **options)
        self.draws = draws
        self.refresh_every = refresh_every
        self.detector = ChangeDetector(n_arms, change_threshold) if detect_changes else None
        self.restarts = 0  # changes found (summed over shards by ``merge``)
        self.changes: list[Change] = []  # found and not yet taken (``take_changes``)
        self._pi: NDArray[np.float64] | None = None
        self._stale = 0

    def _changed(self) -> None:
        self._stale += 1
        if self._pi is None or self._stale >= self.refresh_every:
            self._pi = None

    def refresh(self) -> None:
        """Recompute the choice probabilities from the current posterior now."""
        self._pi = None

    def take_changes(self) -> list[Change]:
        """The changes found since the last call (the reward worker logs each as an event)."""
        found, self.changes = self.changes, []
        return found

    def _conversions(self, arm: int) -> tuple[float, float]:
        """The arm's pulls and conversions since the last restart (what the detector tests)."""
        return float(self.n[arm]), float(np.clip(self.s[arm], 0.0, self.n[arm]))

    def _pull(self, arm: int, context: Features | None) -> None:
        super()._pull(arm, context)
        if self.detector is not None:
            self._found(arm, self.detector.pulled(arm, *self._conversions(arm)))

    def _reward(self, arm: int, value: float, context: Features | None) -> None:
        super()._reward(arm, value, context)
        if self.detector is not None:
            self._found(arm, self.detector.converted(arm, *self._conversions(arm), value=value))

    def _found(self, arm: int, direction: str | None) -> None:
        if direction is None:
            return
        n, c = self._conversions(arm)
        self.changes.append(Change(arm, direction, c / n if n else 0.0, self.pulls))
        self.restarts += 1
        self._restart()

    def _restart(self) -> None:
        """After a change: every arm's evidence is forgotten (the policy starts again from the
        prior and relearns the new order of the arms). Forgetting only the arm that changed is
        not enough: when a promotion ends, another variant may have become the best, and its
        old evidence would keep it from being shown."""
        self.n[:] = 0.0
        self.s[:] = 0.0
        self.q[:] = 0.0
        if self.detector is not None:
            self.detector.clear()
        self._pi = None

    def state(self) -> dict[str, Any]:
        state = super().state()
        if self.detector is not None or self.restarts:
            state["restarts"] = self.restarts
        if self.detector is not None:
            state |= self.detector.state()
        return state

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.restarts = int(state.get("restarts", 0))
        if self.detector is not None:
            self.detector.load(state)
        self._pi = None

    def merge(self, other: Policy) -> None:
        super().merge(other)
        if isinstance(other, _Thompson):
            self.restarts += other.restarts
        self._pi = None

    def _probabilities(self, context: Features | None) -> NDArray[np.float64]:
        if self._pi is None and _alike(self.n) and _alike(self.s) and _alike(self.q):
            self._pi = np.full(self.n_arms, 1.0 / self.n_arms)  # same evidence: a fair split
        if self._pi is None:
            samples = self._posterior(self.draws)  # arms × draws
            self._pi = self._shares(samples)
            self._stale = 0
        return self._pi

    def _shares(self, samples: NDArray[np.float64]) -> NDArray[np.float64]:
        wins = np.bincount(samples.argmax(axis=0), minlength=self.n_arms)
        return np.asarray(wins / samples.shape[1], dtype=float)

    def _posterior(self, draws: int) -> NDArray[np.float64]:
        raise NotImplementedError

    def posterior_samples(self, draws: int) -> NDArray[np.float64]:
        """``draws`` samples of every arm's mean from the posterior (arms × draws), from the
        policy's own random stream: what its choice probabilities are estimated from."""
        return self._posterior(draws)


class BetaThompson(_Thompson):
    """Thompson sampling for 0/1 rewards with Beta(1 + successes, 1 + failures) posteriors.

    ``top_two`` (Russo, 2016) spends a share 1 − ``beta`` of choices on the best challenger
    of the leader instead, which finds the best arm faster when that is the goal.
    """

    kind = "thompson"

    def __init__(self, n_arms: int, top_two: bool = False, beta: float = 0.5, **options: Any):
        super().__init__(n_arms, **options)
        self.top_two = top_two
        self.beta = beta

    def _posterior(self, draws: int) -> NDArray[np.float64]:
        successes = np.clip(self.s, 0.0, self.n)
        a = (1.0 + successes)[:, None]
        b = (1.0 + self.n - successes)[:, None]
        return self.rng.beta(np.repeat(a, draws, 1), np.repeat(b, draws, 1))

    def _shares(self, samples: NDArray[np.float64]) -> NDArray[np.float64]:
        if not self.top_two or self.n_arms < 2:
            return super()._shares(samples)
        leaders = samples.argmax(axis=0)
        second = self._posterior(samples.shape[1])
        second[leaders, np.arange(samples.shape[1])] = -np.inf
        challengers = second.argmax(axis=0)
        lead = np.bincount(leaders, minlength=self.n_arms) / samples.shape[1]
        chal = np.bincount(challengers, minlength=self.n_arms) / samples.shape[1]
        return np.asarray(self.beta * lead + (1.0 - self.beta) * chal, dtype=float)


class GaussianThompson(_Thompson):
    """Thompson sampling for real-valued rewards (revenue): the mean of each arm is normal
    with variance σ²/n, σ² estimated from the arm's rewards (``prior_sd`` before two pulls)."""

    kind = "gaussian_thompson"

    def __init__(self, n_arms: int, prior_sd: float = 1.0, **options: Any):
        super().__init__(n_arms, **options)
        self.prior_sd = prior_sd

    def _posterior(self, draws: int) -> NDArray[np.float64]:
        n = np.maximum(self.n, 1e-12)
        mean = np.where(self.n > 0, self.s / n, 0.0)
        spread = np.maximum(self.q / n - mean**2, 0.0) * n / np.maximum(n - 1.0, 1e-12)
        variance = np.where(self.n > 1, np.maximum(spread, 1e-12), self.prior_sd**2)
        sd = np.sqrt(variance / np.maximum(self.n, 1.0))
        noise = self.rng.standard_normal((self.n_arms, draws))
        return mean[:, None] + sd[:, None] * noise


def _alike(values: NDArray[np.float64]) -> bool:
    return bool(np.all(values == values[0]))
