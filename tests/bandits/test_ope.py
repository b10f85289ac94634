from __future__ import annotations

import numpy as np
import pytest

from bandits.linear import LinUCB
from bandits.ope import Log, doubly_robust, evaluate, ips, reward_model, snips
from bandits.simulate import ContextualArms

ENV = ContextualArms([[0.30, 0.05, 0.10], [0.05, 0.30, 0.10], [0.10, 0.10, 0.25]])


def logged_uniform(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    contexts = np.array([ENV.context(rng) for _ in range(n)])
    arms = rng.integers(0, 3, n)
    expected = np.array([ENV.expected(x)[a] for x, a in zip(contexts, arms)])
    rewards = (rng.random(n) < expected).astype(float)
    return contexts, arms, rewards, np.full(n, 1 / 3)


def target_policy(contexts: np.ndarray) -> np.ndarray:
    """The candidate: always the arm that is best for the segment (probabilities per arm)."""
    best = np.array([ENV.expected(x).argmax() for x in contexts])
    return np.eye(3)[best]


def test_ips_on_a_uniform_log_recovers_the_true_value_inside_its_interval() -> None:
    contexts, arms, rewards, propensities = logged_uniform(30_000, seed=3)
    pi = target_policy(contexts)
    truth = float(np.mean([ENV.expected(x).max() for x in contexts]))
    for estimate in (ips(rewards, propensities, pi[np.arange(len(arms)), arms], seed=1),
                     snips(rewards, propensities, pi[np.arange(len(arms)), arms], seed=1)):  # fmt: skip
        assert estimate.low <= truth <= estimate.high, estimate
        assert estimate.high - estimate.low < 0.03
    model = reward_model(contexts, arms, rewards, n_arms=3)
    q = model(contexts)
    dr = doubly_robust(rewards, propensities, pi[np.arange(len(arms)), arms],
                       q[np.arange(len(arms)), arms], (pi * q).sum(axis=1), seed=1)  # fmt: skip
    assert dr.low <= truth <= dr.high
    assert dr.high - dr.low <= (ips(rewards, propensities, pi[np.arange(len(arms)), arms], seed=1).high
                                - ips(rewards, propensities, pi[np.arange(len(arms)), arms], seed=1).low)  # fmt: skip


def test_a_learned_policy_can_be_evaluated_before_launch() -> None:
    contexts, arms, rewards, propensities = logged_uniform(20_000, seed=4)
    candidate = LinUCB(3, ENV.dimensions, alpha=0.0, seed=1)
    for x, a, r in zip(contexts[:10_000], arms[:10_000], rewards[:10_000]):
        candidate.update(int(a), float(r), x)  # trained on the first half of the log
    held = slice(10_000, None)
    target = np.array([candidate.probabilities(x)[a] for x, a in zip(contexts[held], arms[held])])
    estimate = snips(rewards[held], propensities[held], target, seed=2)
    logging_value = rewards[held].mean()
    assert estimate.low > logging_value  # better than the random policy that logged the data
    assert estimate.effective_n > 1000


def test_bad_propensities_are_refused() -> None:
    with pytest.raises(ValueError, match="every logged propensity must be greater than 0"):
        ips(np.ones(2), np.array([0.5, 0.0]), np.ones(2))


def test_a_grouped_log_gives_the_estimates_of_the_expanded_log() -> None:
    rewards = np.array([0.0, 1.0, 0.0, 1.0])
    propensities = np.array([0.5, 0.5, 0.25, 0.25])
    target = np.array([1.0, 1.0, 0.0, 0.5])
    counts = np.array([30.0, 10.0, 5.0, 7.0])
    expanded = [np.repeat(a, counts.astype(int)) for a in (rewards, propensities, target)]
    for estimator in (ips, snips):
        grouped = estimator(rewards, propensities, target, counts=counts, seed=1)
        flat = estimator(*expanded, seed=1)
        assert grouped.value == pytest.approx(flat.value)
        assert grouped.n == flat.n == 52
        assert grouped.effective_n == pytest.approx(flat.effective_n)
        assert grouped.low == pytest.approx(flat.low, abs=0.05)


def test_evaluate_trains_the_candidate_on_the_earlier_log() -> None:
    contexts, arms, rewards, propensities = logged_uniform(20_000, seed=5)
    half = 10_000

    def log(part: slice) -> Log:
        return Log(arms[part], propensities[part], rewards[part], np.ones(len(arms[part])),
                   contexts[part])  # fmt: skip

    truth = float(np.mean([ENV.expected(x).max() for x in contexts[half:]]))
    found = evaluate(LinUCB(3, ENV.dimensions, alpha=0.0, seed=1), log(slice(0, half)),
                     log(slice(half, None)), seed=3)  # fmt: skip
    assert found["snips"].low <= truth <= found["snips"].high
    assert found["snips"].low > found["logged"].high  # better than the random logging policy
    untrained = evaluate(LinUCB(3, ENV.dimensions, seed=1), log(slice(0, 0)),
                         log(slice(half, None)), seed=3)  # fmt: skip
    assert untrained["ips"].value < found["ips"].value
