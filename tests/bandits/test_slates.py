"""Position probabilities of a Thompson sampler over a list, and off-policy evaluation per
position."""

from __future__ import annotations

import numpy as np
import pytest

from bandits.mab import BetaThompson
from bandits.ope import Log, evaluate_positions
from bandits.slates import position_shares


def _sure(means: list[float], seed: int = 3) -> BetaThompson:
    """A sampler that has seen 10,000 pulls of each arm at these means."""
    ts = BetaThompson(len(means), seed=seed)
    n = np.full(len(means), 10_000.0)
    ts.absorb(np.arange(len(means)), np.array(means), n)
    return ts


def test_a_confident_sampler_ranks_the_arms_by_their_means() -> None:
    shares = position_shares(_sure([0.1, 0.5, 0.3, 0.2]), positions=3, draws=3_000)
    assert shares.shape == (4, 3)
    assert np.allclose(shares.sum(axis=0), 1.0)
    assert [int(a) for a in shares.argmax(axis=0)] == [1, 2, 3]
    assert shares[1, 0] == 1.0


def test_the_same_seed_gives_the_same_shares() -> None:
    first = position_shares(BetaThompson(5, seed=11), positions=2, draws=25_000)
    again = position_shares(BetaThompson(5, seed=11), positions=2, draws=25_000)
    assert np.array_equal(first, again)
    assert np.allclose(first, 0.2, atol=0.02)  # no evidence: every arm alike at each position


@pytest.mark.parametrize(("positions", "draws", "message"), [
    (0, 10, r"positions must lie in \[1, 3\], got 0"),
    (4, 10, r"positions must lie in \[1, 3\], got 4"),
    (1, 0, "draws must be at least 1, got 0"),
])  # fmt: skip
def test_bad_arguments_are_refused(positions: int, draws: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        position_shares(BetaThompson(3, seed=1), positions, draws)


def test_evaluation_per_position_recovers_a_known_value() -> None:
    """A uniform logging policy over 3 arms at 2 positions; arm a at position k pays with
    probability rate[a, k]. A candidate that always puts arm 2 first and arm 0 second earns
    rate[2, 0] at position 1 and rate[0, 1] at position 2: on a log with both positions
    equally often, their mean."""
    rng = np.random.default_rng(5)
    rate = np.array([[0.1, 0.3], [0.2, 0.05], [0.6, 0.4]])
    n = 40_000
    arms, positions = rng.integers(0, 3, n), rng.integers(0, 2, n)
    rewards = (rng.random(n) < rate[arms, positions]).astype(float)
    log = Log(arms=arms, propensities=np.full(n, 1 / 3), rewards=rewards, counts=np.ones(n),
              contexts=np.zeros((n, 0)), positions=positions)  # fmt: skip
    shares = np.array([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    found = evaluate_positions(shares, log, resamples=200, seed=1)
    truth = (rate[2, 0] + rate[0, 1]) / 2
    for name in ("ips", "snips", "dr"):
        assert found[name].low < truth < found[name].high, name
        assert found[name].value == pytest.approx(truth, abs=0.02), name
    assert found["logged"].value == pytest.approx(rate.mean(), abs=0.01)
