"""Contextual bandits with a linear reward model per arm: LinUCB and linear Thompson sampling.

Each arm keeps A⁻¹ (A = λI + Σ xxᵀ) and b = Σ r·x. An update is a Sherman–Morrison rank-one
change of A⁻¹, O(d²), never a matrix inversion. ``discount`` scales A by γ (A⁻¹ by 1/γ) and b by
γ before each update, so old evidence fades.

Examples:
    >>> import numpy as np
    >>> policy = LinUCB(2, dimensions=2, alpha=0.5, seed=3)
    >>> rng = np.random.default_rng(3)
    >>> for _ in range(500):  # arm 0 pays when the first feature is on, arm 1 otherwise
    ...     x = np.array([1.0, 0.0]) if rng.random() < 0.5 else np.array([0.0, 1.0])
    ...     arm, _ = policy.choose(x)
    ...     policy.update(arm, float(arm == (0 if x[0] else 1)), x)
    >>> [int(policy.probabilities(np.array(x)).argmax()) for x in ([1.0, 0.0], [0.0, 1.0])]
    [0, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bandits.policy import Features, Policy, one_hot

__all__ = ["LinUCB", "LinearThompson"]


class _Linear(Policy):
    contextual = True

    def __init__(self, n_arms: int, dimensions: int, ridge: float = 1.0, **options: Any):
        super().__init__(n_arms, **options)
        if dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, got {dimensions}")
        self.dimensions = dimensions
        self.ridge = ridge
        self.a_inv = np.repeat(np.eye(dimensions)[None] / ridge, n_arms, axis=0)
        self.b = np.zeros((n_arms, dimensions))
        self.n = np.zeros(n_arms)

    def _x(self, context: Features | None) -> NDArray[np.float64]:
        if context is None:
            raise ValueError(f"{self.kind} needs a context of {self.dimensions} features")
        x = np.asarray(context, dtype=float)
        if x.shape != (self.dimensions,):
            raise ValueError(f"context must have {self.dimensions} features, got {x.shape}")
        return x

    @property
    def theta(self) -> NDArray[np.float64]:
        return np.asarray(np.einsum("kij,kj->ki", self.a_inv, self.b), dtype=np.float64)

    def _pull(self, arm: int, context: Features | None) -> None:
        x = self._x(context)
        if self.discount < 1.0:
            self.a_inv /= self.discount
            self.b *= self.discount
            self.n *= self.discount
        a_inv = self.a_inv[arm]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.n[arm] += 1.0
        self._changed(arm)

    def _reward(self, arm: int, value: float, context: Features | None) -> None:
        self.b[arm] += value * self._x(context)

    def _changed(self, arm: int) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "pulls": self.pulls, "a_inv": self.a_inv.tolist(),
                "b": self.b.tolist(), "n": self.n.tolist()}  # fmt: skip

    def load(self, state: dict[str, Any]) -> None:
        a_inv = np.asarray(state["a_inv"], dtype=float)
        if a_inv.shape != self.a_inv.shape:
            raise ValueError(f"state is shaped {a_inv.shape}, the policy {self.a_inv.shape}")
        self.pulls = float(state["pulls"])
        self.a_inv, self.b = a_inv, np.asarray(state["b"], dtype=float)
        self.n = np.asarray(state["n"], dtype=float)
        for arm in range(self.n_arms):
            self._changed(arm)

    def absorb(
        self,
        arms: NDArray[np.int64],
        rewards: NDArray[np.float64],
        counts: NDArray[np.float64],
        contexts: NDArray[np.float64] | None = None,
    ) -> None:
        if contexts is None or contexts.shape != (len(arms), self.dimensions):
            raise ValueError(f"{self.kind} needs {self.dimensions} features per row")
        for arm in np.unique(arms):
            mask = arms == arm
            x, c, r = contexts[mask], counts[mask], rewards[mask]
            a = np.linalg.inv(self.a_inv[arm]) + (x * c[:, None]).T @ x
            self.a_inv[arm] = np.linalg.inv(a)
            self.b[arm] += (x * (c * r)[:, None]).sum(axis=0)
            self.n[arm] += c.sum()
            self._changed(int(arm))
        self.pulls += float(counts.sum())

    def merge(self, other: Policy) -> None:
        if not isinstance(other, _Linear) or other.a_inv.shape != self.a_inv.shape:
            raise ValueError("only states of the same kind and shape merge")
        prior = np.eye(self.dimensions) * self.ridge  # counted once, not twice
        a = np.linalg.inv(self.a_inv) + np.linalg.inv(other.a_inv) - prior
        self.a_inv = np.asarray(np.linalg.inv(a), dtype=np.float64)
        self.b += other.b
        self.n += other.n
        self.pulls += other.pulls
        for arm in range(self.n_arms):
            self._changed(arm)


class LinUCB(_Linear):
    """The best upper bound θᵀx + α·sqrt(xᵀA⁻¹x) (Li et al., 2010)."""

    kind = "linucb"

    def __init__(self, n_arms: int, dimensions: int, alpha: float = 1.0, **options: Any):
        super().__init__(n_arms, dimensions, **options)
        self.alpha = alpha

    def _probabilities(self, context: Features | None) -> NDArray[np.float64]:
        x = self._x(context)
        ax = self.a_inv @ x  # arms × d
        width = np.sqrt(np.maximum(ax @ x, 0.0))
        return one_hot(self.theta @ x + self.alpha * width)


class LinearThompson(_Linear):
    """Thompson sampling with θ ~ N(A⁻¹b, v²A⁻¹) per arm (Agrawal & Goyal, 2013).

    The probability of each arm for a context is estimated from ``draws`` samples of the
    arms' scores xᵀθ (normal, so sampled directly rather than θ).
    """

    kind = "linear_thompson"

    def __init__(
        self, n_arms: int, dimensions: int, scale: float = 0.5, draws: int = 200, **options: Any
    ):
        super().__init__(n_arms, dimensions, **options)
        self.scale = scale
        self.draws = draws
        self._chol: list[NDArray[np.float64] | None] = [None] * n_arms
        # Common random numbers: the same standard-normal draws for every context, so the
        # probabilities are a fixed function of the state and the context (and cheap).
        self._noise = self.rng.standard_normal((n_arms, draws))

    def _changed(self, arm: int) -> None:
        self._chol[arm] = None

    def _factor(self, arm: int) -> NDArray[np.float64]:
        factor = self._chol[arm]
        if factor is None:
            matrix = (self.a_inv[arm] + self.a_inv[arm].T) / 2.0
            jitter = 1e-10 * np.eye(self.dimensions)
            factor = self._chol[arm] = np.linalg.cholesky(matrix + jitter)
        return factor

    def _probabilities(self, context: Features | None) -> NDArray[np.float64]:
        x = self._x(context)
        mean = self.theta @ x  # arms
        # xᵀθ for θ = mean + v·L·z is normal with sd v·|Lᵀx|: sample the scores directly.
        spread = np.array([np.linalg.norm(self._factor(a).T @ x) for a in range(self.n_arms)])
        scores = mean[:, None] + self.scale * spread[:, None] * self._noise
        wins = np.bincount(scores.argmax(axis=0), minlength=self.n_arms)
        return np.asarray(wins / self.draws, dtype=float)
