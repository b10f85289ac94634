"""Policies on simulated traffic (seeded), and the contract every policy keeps."""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pytest

from bandits.abtest import ABTest
from bandits.linear import LinearThompson, LinUCB
from bandits.mab import UCB1, BetaThompson, EpsilonGreedy, GaussianThompson
from bandits.policy import Policy
from bandits.revenue import RevenueThompson
from bandits.simulate import BernoulliArms, ContextualArms, simulate

BERNOULLI = BernoulliArms([0.04, 0.05, 0.06, 0.08, 0.10])


def test_thompson_beats_epsilon_greedy_and_ucb1_on_bernoulli_arms() -> None:
    """Mean regret over five seeded runs of 20k rounds (one run can be lucky for anyone)."""
    regret: dict[str, list[float]] = {"thompson": [], "epsilon": [], "ucb1": []}
    for seed in range(5):
        policies = {
            "thompson": BetaThompson(5, seed=seed, refresh_every=20),
            "epsilon": EpsilonGreedy(5, epsilon=0.1, seed=seed),
            "ucb1": UCB1(5, seed=seed),
        }
        for name, policy in policies.items():
            run = simulate(policy, BERNOULLI, rounds=20_000, seed=seed)
            regret[name].append(run.regret[-1])
            if name == "thompson":
                assert (run.arms[-5000:] == 4).mean() >= 0.90  # the best arm, every seed
    mean = {name: float(np.mean(values)) for name, values in regret.items()}
    assert mean["thompson"] < mean["epsilon"]
    assert mean["thompson"] < mean["ucb1"]


def test_contextual_policies_beat_the_best_non_contextual_one() -> None:
    env = ContextualArms([[0.12, 0.02, 0.03], [0.02, 0.12, 0.03], [0.03, 0.02, 0.12]])
    d = env.dimensions
    regret = {
        name: simulate(policy, env, rounds=10_000, seed=5).regret[-1]
        for name, policy in {
            "linucb": LinUCB(3, d, alpha=0.5, seed=5),
            "linear_ts": LinearThompson(3, d, scale=0.3, seed=5),
            "thompson": BetaThompson(3, seed=5),
            "ucb1": UCB1(3, seed=5),
        }.items()
    }
    best_plain = min(regret["thompson"], regret["ucb1"])
    assert regret["linucb"] < 0.5 * best_plain
    assert regret["linear_ts"] < 0.5 * best_plain


def test_gaussian_thompson_finds_the_richer_arm() -> None:
    policy = GaussianThompson(3, seed=2, prior_sd=20.0)
    rng = np.random.default_rng(2)
    for _ in range(3000):
        arm, _ = policy.choose(rng=rng)
        policy.update(arm, max(0.0, rng.normal([20.0, 25.0, 30.0][arm], 10.0)))
    assert int(policy.probabilities().argmax()) == 2
    assert policy.probabilities()[2] > 0.9


def test_top_two_thompson_keeps_sampling_the_challenger() -> None:
    plain, top_two = BetaThompson(3, seed=4), BetaThompson(3, seed=4, top_two=True)
    for policy in (plain, top_two):
        for arm, wins in ((0, 30), (1, 45), (2, 50)):
            for i in range(100):
                policy.update(arm, float(i < wins))
        policy.refresh()
    assert top_two.probabilities().max() < plain.probabilities().max()
    assert top_two.probabilities()[1] > plain.probabilities()[1]


def make(kind: str, seed: int = 9) -> Policy:
    return {
        "epsilon_greedy": lambda: EpsilonGreedy(3, seed=seed),
        "ucb1": lambda: UCB1(3, seed=seed),
        "thompson": lambda: BetaThompson(3, seed=seed),
        "top_two": lambda: BetaThompson(3, seed=seed, top_two=True),
        "gaussian_thompson": lambda: GaussianThompson(3, seed=seed),
        "revenue_thompson": lambda: RevenueThompson(3, seed=seed),
        "detecting": lambda: BetaThompson(3, seed=seed, detect_changes=True, change_threshold=3),
        "linucb": lambda: LinUCB(3, 2, seed=seed),
        "linear_thompson": lambda: LinearThompson(3, 2, seed=seed),
        "ab": lambda: ABTest([1, 1, 2], salt="s"),
    }[kind]()


KINDS = [
    "epsilon_greedy",
    "ucb1",
    "thompson",
    "top_two",
    "gaussian_thompson",
    "revenue_thompson",
    "detecting",
    "linucb",
    "linear_thompson",
    "ab",
]


def feed(policy: Policy, rounds: int = 200, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        x = rng.random(2)
        arm, _ = policy.choose(x, rng)
        policy.update(arm, float(rng.random() < 0.3 + 0.2 * arm), x)


@pytest.mark.parametrize("kind", KINDS)
def test_every_choice_says_its_probability(kind: str) -> None:
    policy = make(kind)
    feed(policy)
    x = np.array([0.3, 0.7])
    p = policy.probabilities(x)
    assert p.shape == (3,) and p.sum() == pytest.approx(1.0) and (p >= 0).all()
    rng = np.random.default_rng(0)
    arm, propensity = policy.choose(x, rng)
    assert propensity == pytest.approx(policy.probabilities(x)[arm])


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trips_through_json_and_pickle(kind: str) -> None:
    policy = make(kind)
    feed(policy)
    copy = make(kind)
    copy.load(json.loads(json.dumps(policy.state())))
    assert copy.state() == policy.state()
    assert pickle.loads(pickle.dumps(policy)).state() == policy.state()


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_choices(kind: str) -> None:
    a, b = make(kind, seed=21), make(kind, seed=21)
    feed(a, seed=3)
    feed(b, seed=3)
    assert a.state() == b.state()


@pytest.mark.parametrize(
    "kind",
    ["epsilon_greedy", "ucb1", "thompson", "gaussian_thompson", "revenue_thompson", "linucb"],
)
def test_merging_two_shards_equals_learning_everything(kind: str) -> None:
    whole, left, right = make(kind), make(kind), make(kind)
    rng = np.random.default_rng(8)
    for i in range(300):
        x, arm, reward = rng.random(2), int(rng.integers(0, 3)), float(rng.random() < 0.5)
        whole.update(arm, reward, x)
        (left if i % 2 else right).update(arm, reward, x)
    left.merge(right)
    for key, value in whole.state().items():
        if key != "kind":
            np.testing.assert_allclose(
                np.asarray(left.state()[key]), np.asarray(value), rtol=1e-6, atol=1e-9
            )


@pytest.mark.parametrize("kind", KINDS)
def test_absorbing_a_grouped_log_equals_learning_it_one_by_one(kind: str) -> None:
    one_by_one, grouped = make(kind), make(kind)
    x = np.array([[0.2, 0.9], [0.7, 0.1], [0.5, 0.5]])
    arms, rewards, counts = (
        np.array([0, 2, 1]),
        np.array([1.0, 0.0, 2.5]),
        np.array([3.0, 5.0, 2.0]),
    )
    for row in range(3):
        for _ in range(int(counts[row])):
            one_by_one.update(int(arms[row]), float(rewards[row]), x[row])
    grouped.absorb(arms, rewards, counts, x)
    for key, value in one_by_one.state().items():
        if key != "kind":
            np.testing.assert_allclose(
                np.asarray(grouped.state()[key]), np.asarray(value), rtol=1e-6, atol=1e-9
            )


def test_options_burn_in_min_share_and_discount() -> None:
    policy = UCB1(4, burn_in=10, min_share=0.05, seed=1)
    assert policy.probabilities().tolist() == [0.25] * 4
    for _ in range(10):
        for arm in range(4):
            policy.update(arm, float(arm == 3))
    p = policy.probabilities()
    assert p.min() >= 0.05 and p[3] == pytest.approx(1 - 3 * 0.05)
    forgetful = EpsilonGreedy(2, epsilon=0.0, discount=0.9, seed=1)
    for _ in range(50):
        forgetful.update(0, 1.0)
    for _ in range(30):
        forgetful.update(1, 1.0)
        forgetful.update(0, 0.0)
    assert forgetful.probabilities()[1] == 1.0  # old wins of arm 0 have faded


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: UCB1(0), "n_arms must be at least 1, got 0", id="no-arms"),
        pytest.param(
            lambda: UCB1(3, min_share=0.5), r"min_share × arms must lie in \[0, 1\]", id="min-share"
        ),
        pytest.param(
            lambda: UCB1(3, discount=0.0), r"discount must lie in \(0, 1\]", id="discount"
        ),
        pytest.param(
            lambda: UCB1(3).update(3, 1.0), r"arm must lie in \[0, 3\), got 3", id="bad-arm"
        ),
        pytest.param(
            lambda: LinUCB(2, 3).choose(np.ones(2)),
            r"context must have 3 features",
            id="bad-context",
        ),
        pytest.param(
            lambda: LinUCB(2, 3).choose(), "linucb needs a context of 3 features", id="no-context"
        ),
        pytest.param(
            lambda: ABTest([0, 0], salt="s"), "weights must be non-negative", id="zero-weights"
        ),
    ],
)
def test_bad_arguments_say_what_is_wrong(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
