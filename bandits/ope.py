"""Off-policy evaluation: how would a candidate policy have done on traffic logged by another?

Every estimator takes, per logged decision *i*: the reward rᵢ, the logging propensity pᵢ of the
arm that was shown, and the candidate's probability πᵢ of showing that same arm in that context.
With wᵢ = πᵢ / pᵢ:

- IPS: mean(wᵢ rᵢ) — unbiased, high variance when propensities are small;
- self-normalised IPS: Σ wᵢ rᵢ / Σ wᵢ — slightly biased, much steadier;
- doubly robust: mean(q̂(π)ᵢ + wᵢ (rᵢ − q̂ᵢ)) with a reward model q̂ — unbiased if either the
  model or the propensities are right.

Intervals are percentile bootstraps over decisions, seeded.

Examples:
    >>> import numpy as np
    >>> rewards = np.array([1.0, 0.0, 1.0, 0.0]); logged = np.full(4, 0.5)
    >>> target = np.array([1.0, 0.0, 1.0, 0.0])  # always picks the arm that paid
    >>> ips(rewards, logged, target, seed=1).value
    1.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Estimate", "doubly_robust", "ips", "reward_model", "snips"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    method: str
    value: float
    low: float  # the bootstrap interval
    high: float
    n: int
    effective_n: float  # (Σw)² / Σw²: how many decisions the estimate really rests on


def _weights(propensities: Array, target: Array) -> Array:
    p = np.asarray(propensities, dtype=float)
    if np.any(p <= 0):
        raise ValueError("every logged propensity must be greater than 0")
    return np.asarray(np.asarray(target, dtype=float) / p, dtype=np.float64)


def _estimate(
    method: str,
    terms: Callable[[NDArray[np.int64]], float],
    n: int,
    weights: Array,
    level: float,
    resamples: int,
    seed: int | None,
) -> Estimate:
    everything = np.arange(n)
    value = terms(everything)
    rng = np.random.default_rng(seed)
    boot = np.array([terms(rng.integers(0, n, n)) for _ in range(resamples)])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail]) if n else (np.nan, np.nan)
    squares = float((weights**2).sum())
    effective = float(weights.sum() ** 2 / squares) if squares else 0.0
    return Estimate(method, float(value), float(low), float(high), n, effective)


def ips(
    rewards: Array,
    propensities: Array,
    target: Array,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int | None = None,
) -> Estimate:
    w = _weights(propensities, target)
    r = np.asarray(rewards, dtype=float)
    return _estimate(
        "ips", lambda i: float(np.mean(w[i] * r[i])), len(r), w, level, resamples, seed
    )


def snips(
    rewards: Array,
    propensities: Array,
    target: Array,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int | None = None,
) -> Estimate:
    w = _weights(propensities, target)
    r = np.asarray(rewards, dtype=float)

    def value(i: NDArray[np.int64]) -> float:
        total = w[i].sum()
        return float((w[i] * r[i]).sum() / total) if total > 0 else 0.0

    return _estimate("snips", value, len(r), w, level, resamples, seed)


def doubly_robust(
    rewards: Array,
    propensities: Array,
    target: Array,
    predicted_logged: Array,
    predicted_target: Array,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int | None = None,
) -> Estimate:
    """``predicted_logged``: q̂ for the logged arm; ``predicted_target``: Σₐ π(a) q̂(a)."""
    w = _weights(propensities, target)
    r = np.asarray(rewards, dtype=float)
    q_logged = np.asarray(predicted_logged, dtype=float)
    q_target = np.asarray(predicted_target, dtype=float)
    terms = q_target + w * (r - q_logged)
    return _estimate("dr", lambda i: float(np.mean(terms[i])), len(r), w, level, resamples, seed)


def reward_model(
    features: Array, arms: NDArray[np.int64], rewards: Array, n_arms: int, ridge: float = 1.0
) -> Callable[[Array], Array]:
    """A ridge regression of reward on features per arm, fitted on the log; the returned
    function maps contexts (n × d) to predicted rewards (n × arms)."""
    x = np.asarray(features, dtype=float)
    d = x.shape[1]
    coefficients = np.zeros((n_arms, d))
    for arm in range(n_arms):
        mask = arms == arm
        xa, ra = x[mask], np.asarray(rewards, dtype=float)[mask]
        coefficients[arm] = np.linalg.solve(xa.T @ xa + ridge * np.eye(d), xa.T @ ra)

    def predict(contexts: Array) -> Array:
        return np.asarray(np.asarray(contexts, dtype=float) @ coefficients.T, dtype=float)

    return predict
