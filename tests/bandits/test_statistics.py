"""The statistics engine: textbook values, simulated A/A tests, CUPED, SRM (all seeded)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp

from bandits.bayesian import beta_binomial, normal
from bandits.frequentist import cuped, holm, means, proportions, sequential, srm
from bandits.stats import Paired, Sample


def sample(values: np.ndarray) -> Sample:
    return Sample(len(values), float(values.sum()), float((values**2).sum()))


def test_textbook_values() -> None:
    control, treatment = Sample(10_000, 1_000, 1_000), Sample(10_000, 1_100, 1_100)
    z = proportions(control, treatment)
    assert z.p_value == pytest.approx(0.0211, abs=5e-5)  # pooled two-sided z-test
    assert z.lift == pytest.approx(0.10) and z.lift_ci[0] > 0  # significant at 95%
    assert z.difference_ci[0] < 0.01 < z.difference_ci[1]
    bayes = beta_binomial(control, treatment)
    assert bayes.chance_to_beat_control == pytest.approx(0.9895, abs=5e-5)  # exact Beta(1, 1)
    assert 0 < bayes.expected_loss < 0.001 and bayes.lift_ci[0] < 0.10 < bayes.lift_ci[1]


def test_welch_and_the_normal_model_agree_with_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.gamma(2.0, 20.0, 800), rng.gamma(2.0, 22.0, 1_200)
    ours = means(sample(a), sample(b))
    theirs = sp.ttest_ind(b, a, equal_var=False)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.difference == pytest.approx(b.mean() - a.mean())
    posterior = normal(sample(a), sample(b))
    draws = rng.normal(b.mean(), b.std(ddof=1) / np.sqrt(len(b)), 400_000) - rng.normal(
        a.mean(), a.std(ddof=1) / np.sqrt(len(a)), 400_000
    )
    assert posterior.chance_to_beat_control == pytest.approx((draws > 0).mean(), abs=0.003)
    assert posterior.expected_loss == pytest.approx(np.maximum(-draws, 0).mean(), rel=0.02)


def test_samples_merge_like_the_data_they_summarise() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(5, 2, 300), rng.normal(5, 2, 500)
    merged = sample(a) + sample(b)
    assert merged.mean == pytest.approx(np.concatenate([a, b]).mean())
    assert merged.variance == pytest.approx(np.concatenate([a, b]).var(ddof=1))
    assert Sample(1, 3.0, 9.0).variance == 0.0 and Sample(0, 0, 0).mean == 0.0  # defined


def test_aa_tests_keep_their_false_positive_rates() -> None:
    """2,000 simulated A/A tests on a 10% conversion rate, 10,000 units per arm, looked at
    after every 500 units per arm: the fixed-horizon test at the end is wrong ~5% of the time;
    peeking at it after every look would be wrong far more often; the sequential p-value,
    peeked at just as often, stays under 5%."""
    rng = np.random.default_rng(42)
    runs, looks, step = 2_000, 20, 500
    conversions = rng.binomial(step, 0.10, size=(runs, 2, looks)).cumsum(axis=2)
    fixed = peeking = always_valid = 0
    for run in range(runs):
        peeked = sequential_hit = False
        for look in range(looks):
            n = step * (look + 1)
            c, t = (Sample(n, float(conversions[run, arm, look]), float(conversions[run, arm, look]))
                    for arm in (0, 1))  # fmt: skip
            p = proportions(c, t).p_value
            peeked |= p < 0.05
            sequential_hit |= sequential(c, t).p_value < 0.05
        fixed += p < 0.05
        peeking += peeked
        always_valid += sequential_hit
    assert 0.04 <= fixed / runs <= 0.06
    assert peeking / runs > 0.12  # why sequential testing exists
    assert always_valid / runs < 0.05


def test_the_sequential_test_still_finds_a_real_effect() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    c, t = rng.binomial(n, 0.10), rng.binomial(n, 0.12)
    result = sequential(Sample(n, c, c), Sample(n, t, t))
    assert result.p_value < 0.001
    fixed = proportions(Sample(n, c, c), Sample(n, t, t))
    width = result.difference_ci[1] - result.difference_ci[0]
    assert width > fixed.difference_ci[1] - fixed.difference_ci[0]  # the price of peeking
    assert result.difference_ci[0] < 0.02 < result.difference_ci[1]


def test_cuped_shrinks_the_interval_on_correlated_data() -> None:
    rng = np.random.default_rng(9)

    def arm(n: int, effect: float) -> Paired:
        pre = rng.gamma(2.0, 25.0, n)  # last month's spend
        post = 0.8 * pre + rng.normal(10 + effect, 15, n)  # this month's, correlated
        return Paired(sample(post), sample(pre), float((post * pre).sum()))

    control, treatment = arm(2_000, 0.0), arm(2_000, 3.0)
    plain = means(control.post, treatment.post)
    adjusted = cuped(control, treatment)
    plain_width = plain.difference_ci[1] - plain.difference_ci[0]
    adjusted_width = adjusted.difference_ci[1] - adjusted.difference_ci[0]
    assert adjusted_width < 0.6 * plain_width
    assert adjusted.difference_ci[0] < 3.0 < adjusted.difference_ci[1]
    assert adjusted.p_value < plain.p_value
    # No correlation, no change.
    flat = Paired(control.post, control.pre, control.post.mean * control.pre.total)
    assert cuped(flat, flat).difference == pytest.approx(0.0)


def test_sample_ratio_mismatch_and_holm() -> None:
    assert srm([10_400, 9_600], [50, 50]) < 0.001  # flagged
    assert srm([10_040, 9_960], [50, 50]) > 0.05
    assert srm([7_500, 2_500], [3, 1]) == pytest.approx(1.0)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
