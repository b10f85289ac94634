"""Off-policy evaluation: how would a candidate policy have done on traffic logged by another?

Every estimator takes, per logged decision *i*: the reward rᵢ, the logging propensity pᵢ of the
arm that was shown, and the candidate's probability πᵢ of showing that same arm in that context.
With wᵢ = πᵢ / pᵢ:

- IPS: mean(wᵢ rᵢ) — unbiased, high variance when propensities are small;
- self-normalised IPS: Σ wᵢ rᵢ / Σ wᵢ — slightly biased, much steadier;
- doubly robust: mean(q̂(π)ᵢ + wᵢ (rᵢ − q̂ᵢ)) with a reward model q̂ — unbiased if either the
  model or the propensities are right.

A log of lists (several positions per page, as in the Open Bandit Dataset) is evaluated per
position: πᵢ is then the candidate's probability of putting the logged arm at the logged
position (``evaluate_positions``, with ``bandits.slates`` for Thompson sampling).

Intervals are percentile bootstraps over decisions, seeded. A log may come grouped (one row per
distinct arm, propensity, features and reward, with a count — what a SQL aggregate returns):
pass ``counts`` and every estimate, interval and the bootstrap are as over the expanded log.

Examples:
    >>> import numpy as np
    >>> rewards = np.array([1.0, 0.0, 1.0, 0.0]); logged = np.full(4, 0.5)
    >>> target = np.array([1.0, 0.0, 1.0, 0.0])  # always picks the arm that paid
    >>> ips(rewards, logged, target, seed=1).value
    1.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from bandits.policy import Policy

__all__ = [
    "Estimate",
    "Log",
    "doubly_robust",
    "evaluate",
    "evaluate_positions",
    "ips",
    "reward_model",
    "snips",
]

Array = NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
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


def _counts(counts: Array | None, n: int) -> Array:
    if counts is None:
        return np.ones(n)
    c = np.asarray(counts, dtype=float)
    if c.shape != (n,) or np.any(c < 0):
        raise ValueError("counts must give a non-negative count for every row")
    return c


def _estimate(
    method: str,
    value: Callable[[Array], float],
    counts: Array,
    weights: Array,
    level: float,
    resamples: int,
    seed: int | None,
) -> Estimate:
    """``value(c)``: the estimate when row i stands for c[i] decisions. The bootstrap redraws
    the decisions with replacement, as multinomial counts over the rows."""
    n = int(counts.sum())
    estimate = value(counts) if n else float("nan")
    low = high = float("nan")
    if n:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, counts / n, size=resamples)
        boot = np.array([value(c) for c in draws.astype(float)])
        tail = (1.0 - level) / 2.0
        low, high = (float(q) for q in np.quantile(boot, [tail, 1.0 - tail]))
    squares = float((counts * weights**2).sum())
    effective = float((counts * weights).sum() ** 2 / squares) if squares else 0.0
    return Estimate(
        method=method, value=float(estimate), low=low, high=high, n=n, effective_n=effective
    )


def ips(
    rewards: Array,
    propensities: Array,
    target: Array,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int | None = None,
    counts: Array | None = None,
) -> Estimate:
    """``counts``: for a grouped log, how many decisions each row stands for."""
    w = _weights(propensities, target)
    wr = w * np.asarray(rewards, dtype=float)
    c = _counts(counts, len(w))
    return _estimate("ips", lambda k: float(k @ wr / k.sum()), c, w, level, resamples, seed)


def snips(
    rewards: Array,
    propensities: Array,
    target: Array,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int | None = None,
    counts: Array | None = None,
) -> Estimate:
    w = _weights(propensities, target)
    wr = w * np.asarray(rewards, dtype=float)
    c = _counts(counts, len(w))

    def value(k: Array) -> float:
        total = float(k @ w)
        return float(k @ wr) / total if total > 0 else 0.0

    return _estimate("snips", value, c, w, level, resamples, seed)


def doubly_robust(
    rewards: Array,
    propensities: Array,
    target: Array,
    predicted_logged: Array,
    predicted_target: Array,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int | None = None,
    counts: Array | None = None,
) -> Estimate:
    """``predicted_logged``: q̂ for the logged arm; ``predicted_target``: Σₐ π(a) q̂(a)."""
    w = _weights(propensities, target)
    r = np.asarray(rewards, dtype=float)
    q_logged = np.asarray(predicted_logged, dtype=float)
    q_target = np.asarray(predicted_target, dtype=float)
    terms = q_target + w * (r - q_logged)
    c = _counts(counts, len(w))
    return _estimate("dr", lambda k: float(k @ terms / k.sum()), c, w, level, resamples, seed)


def reward_model(
    features: Array,
    arms: NDArray[np.int64],
    rewards: Array,
    n_arms: int,
    ridge: float = 1.0,
    counts: Array | None = None,
) -> Callable[[Array], Array]:
    """A ridge regression of reward on features per arm, fitted on the log (rows weighted by
    ``counts``); the returned function maps contexts (n × d) to predicted rewards (n × arms)."""
    x = np.asarray(features, dtype=float)
    c = _counts(counts, len(x))
    d = x.shape[1]
    coefficients = np.zeros((n_arms, d))
    for arm in range(n_arms):
        mask = arms == arm
        xa, ra, ca = x[mask], np.asarray(rewards, dtype=float)[mask], c[mask]
        gram = (xa * ca[:, None]).T @ xa + ridge * np.eye(d)
        coefficients[arm] = np.linalg.solve(gram, (xa * ca[:, None]).T @ ra)

    def predict(contexts: Array) -> Array:
        return np.asarray(np.asarray(contexts, dtype=float) @ coefficients.T, dtype=float)

    return predict


@dataclass(frozen=True)
class Log:
    """A grouped decision log: row i stands for ``counts[i]`` decisions that showed ``arms[i]``
    with probability ``propensities[i]`` in ``contexts[i]`` (n × d; d may be 0) and earned
    ``rewards[i]`` each; at ``positions[i]`` of a list (0 first), when the log has them."""

    arms: NDArray[np.int64]
    propensities: Array
    rewards: Array
    counts: Array
    contexts: Array
    positions: NDArray[np.int64] | None = None

    @property
    def size(self) -> int:
        return int(self.counts.sum())


def evaluate(
    candidate: Policy,
    train: Log,
    test: Log,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int | None = None,
) -> dict[str, Estimate]:
    """How ``candidate`` would have done on ``test``, having learned from ``train`` (the
    earlier traffic): IPS, SNIPS and doubly robust (reward model fitted on ``train``, else on
    ``test``), with ``logged``, the policy that ran, for comparison."""
    contextual = candidate.contextual
    if train.size:
        candidate.absorb(
            train.arms, train.rewards, train.counts, train.contexts if contextual else None
        )
    n_arms = candidate.n_arms
    pi = np.array(
        [candidate.probabilities(x if contextual else None) for x in test.contexts]
    ).reshape(len(test.arms), n_arms)
    rows = np.arange(len(test.arms))
    target = pi[rows, test.arms]
    fit = train if train.size else test
    model = reward_model(_bias(fit.contexts), fit.arms, fit.rewards, n_arms, counts=fit.counts)
    q = model(_bias(test.contexts))
    return _estimates(test, target, q[rows, test.arms], (pi * q).sum(axis=1), level, resamples,
                      seed)  # fmt: skip


def evaluate_positions(
    shares: Array,
    log: Log,
    level: float = 0.95,
    resamples: int = 1000,
    seed: int | None = None,
) -> dict[str, Estimate]:
    """How a candidate that puts arm *a* at position *k* with probability ``shares[a, k]``
    (arms × positions, the same in every context) would have done on ``log``, per logged
    (arm, position): IPS, SNIPS and doubly robust, beside ``logged``. The reward model of DR
    is a ridge regression per arm on the context and the position, fitted on ``log``."""
    n_arms, slots = shares.shape
    positions = log.positions if log.positions is not None else np.zeros(len(log.arms), int)
    if len(log.arms) and (log.arms.max() >= n_arms or positions.max() >= slots):
        raise ValueError(f"the log has an arm or position beyond the candidate's {n_arms} arms "
                         f"× {slots} positions")  # fmt: skip
    rows = np.arange(len(log.arms))
    target = shares[log.arms, positions]
    at = np.zeros((len(rows), max(slots - 1, 0)))  # the position, one-hot (the first: none)
    at[positions > 0, positions[positions > 0] - 1] = 1.0
    x = _bias(np.hstack([at, np.asarray(log.contexts, dtype=float)]))
    q = reward_model(x, log.arms, log.rewards, n_arms, counts=log.counts)(x)  # rows × arms
    chosen = shares[:, positions].T  # rows × arms: the candidate's shares at the row's position
    return _estimates(log, target, q[rows, log.arms], (chosen * q).sum(axis=1), level,
                      resamples, seed)  # fmt: skip


def _estimates(log: Log, target: Array, q_logged: Array, q_target: Array, level: float,
               resamples: int, seed: int | None) -> dict[str, Estimate]:  # fmt: skip
    """What ``evaluate`` and ``evaluate_positions`` answer: the logging policy's own value,
    IPS, SNIPS and DR of the candidate whose probability of each logged action is ``target``
    (``q_logged``: the reward model at the logged action; ``q_target``: its expectation under
    the candidate)."""
    p, r, c = log.propensities, log.rewards, log.counts
    return {
        "logged": replace(ips(r, p, p, level, resamples, seed, c), method="logged"),
        "ips": ips(r, p, target, level, resamples, seed, c),
        "snips": snips(r, p, target, level, resamples, seed, c),
        "dr": doubly_robust(r, p, target, q_logged, q_target, level, resamples, seed, c),
    }


def _bias(contexts: Array) -> Array:
    return np.hstack([np.ones((len(contexts), 1)), np.asarray(contexts, dtype=float)])
