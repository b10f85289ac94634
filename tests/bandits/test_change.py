"""Policies that follow change: a Thompson sampler with change detection adapts after the best
variant changes, stays with plain Thompson sampling when nothing changes, and says what it
found; ``window`` sets the memory in decisions. Seeded simulations, no timings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bandits.change import ChangeDetector
from bandits.mab import BetaThompson
from bandits.simulate import BernoulliArms, ShiftingArms, simulate
from bandits.spec import PolicySpec, build

# A promotion on the last variant ends halfway; the second becomes the best.
PROMOTION = ShiftingArms([0.04, 0.05, 0.06, 0.10], [0.04, 0.08, 0.06, 0.03], at=10_000)


def test_change_detection_follows_the_new_best_variant() -> None:
    for seed in range(3):
        detecting = BetaThompson(4, detect_changes=True, seed=seed)
        plain = BetaThompson(4, seed=seed)
        runs = {name: simulate(policy, PROMOTION, rounds=20_000, seed=seed)
                for name, policy in (("detecting", detecting), ("plain", plain))}  # fmt: skip
        # The last quarter: the detecting policy shows the new best variant; plain Thompson
        # sampling is held back by the promotion's evidence, and loses far more after it.
        assert (runs["detecting"].arms[15_000:] == 1).mean() > 0.85
        lost = {name: run.regret[-1] - run.regret[9_999] for name, run in runs.items()}
        assert lost["detecting"] < 0.5 * lost["plain"]
        assert detecting.restarts >= 1


def test_without_a_change_it_stays_with_plain_thompson_sampling() -> None:
    env = BernoulliArms([0.04, 0.05, 0.06, 0.08, 0.10])
    earned = {"detecting": 0.0, "plain": 0.0}
    restarts = 0
    for seed in range(3):
        detecting = BetaThompson(5, detect_changes=True, seed=seed)
        earned["detecting"] += simulate(detecting, env, rounds=20_000, seed=seed).regret[-1]
        earned["plain"] += simulate(BetaThompson(5, seed=seed), env, 20_000, seed).regret[-1]
        restarts += detecting.restarts
    assert restarts == 0  # no false alarm at the default threshold on these seeds
    assert earned["detecting"] == pytest.approx(earned["plain"])


def test_a_change_is_taken_once_and_restarts_every_arm() -> None:
    policy = BetaThompson(2, detect_changes=True, seed=1)
    for i in range(400):  # arm 0 converts every other time...
        policy.update(0, float(i % 2 == 0))
        policy.update(1, float(i % 4 == 0))
    assert policy.take_changes() == []
    for _ in range(200):  # ...and then never
        policy.update(0, 0.0)
        if policy.restarts:
            break
    changes = policy.take_changes()
    assert [(c.arm, c.direction) for c in changes] == [(0, "fell")]
    assert 0.3 < changes[0].rate < 0.5
    assert policy.take_changes() == []  # taken
    assert policy.n.tolist() == [0.0, 0.0] and policy.s.tolist() == [0.0, 0.0]
    state = json.loads(json.dumps(policy.state()))
    assert state["restarts"] == 1 and len(state["down"]) == len(state["up"]) == 2


def test_detection_can_be_turned_on_for_a_state_saved_without_it() -> None:
    plain = BetaThompson(2, seed=3)
    for i in range(50):
        plain.update(i % 2, 1.0)
    detecting = BetaThompson(2, detect_changes=True, seed=3)
    detecting.load(plain.state())
    assert detecting.n.tolist() == plain.n.tolist() and detecting.restarts == 0
    assert detecting.detector is not None and detecting.detector.down.tolist() == [0.0, 0.0]


def test_window_sets_the_memory_in_decisions() -> None:
    spec = PolicySpec(window=200)
    assert spec.forgetting() == pytest.approx(0.995)
    policy = build(spec, ["a", "b"], salt="s")
    assert policy.discount == pytest.approx(0.995)
    for _ in range(5000):
        policy.update(0, 0.0)
    assert policy.pulls == pytest.approx(200, rel=1e-3)  # it holds about `window` decisions


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: ChangeDetector(2, threshold=0), "threshold must be above 0", id="threshold"),
        pytest.param(lambda: ChangeDetector(2, shift=1.0), r"shift must lie in \(0, 1\)", id="shift"),
        pytest.param(lambda: PolicySpec(kind="ucb1", detect_changes=True),
                     "`detect_changes` must go with kind thompson, top_two_thompson, revenue_thompson, got 'ucb1'", id="kind"),
        pytest.param(lambda: PolicySpec(window=10, discount=0.9),
                     "`window` must not be given with `discount`", id="window-and-discount"),
    ],
)  # fmt: skip
def test_bad_arguments_say_what_is_wrong(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_the_detector_is_scale_free() -> None:
    """The same threshold finds a halving of a 1% rate and of a 30% rate, and no change in
    either when the rate holds (seeded streams)."""
    rng = np.random.default_rng(4)
    for rate in (0.01, 0.30):
        for after, expected in ((rate, None), (rate / 2, "fell")):
            detector, n, c, found = ChangeDetector(1), 0.0, 0.0, None
            for t in range(int(400 / rate)):
                p = rate if t < 200 / rate else after
                n += 1
                found = found or detector.pulled(0, n, c)
                if rng.random() < p:
                    c += 1
                    found = found or detector.converted(0, n, c)
            assert found == expected, (rate, after)
