"""BG/NBD and Gamma-Gamma on the CDNOW sample: the published estimates, and the published
prediction for one customer (Fader, Hardie & Lee 2005; Fader & Hardie 2013)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from profiles.ltv import BetaGeo, GammaGamma, NotFitted, lifetime_value


def cdnow(name: str) -> np.ndarray:
    """A CDNOW file the ``lifetimes`` package ships (test-only data; read without importing the
    package, whose datasets module needs pkg_resources)."""
    path = Path(str(importlib.metadata.distribution("lifetimes").locate_file(
        f"lifetimes/datasets/{name}")))  # fmt: skip
    return np.genfromtxt(path, delimiter=",", names=True)


@pytest.fixture(scope="module")
def summary() -> np.ndarray:
    return cdnow("cdnow_customers_summary.csv")  # 2,357 customers, times in weeks


def test_bg_nbd_reproduces_the_published_cdnow_estimates(summary: np.ndarray) -> None:
    bg = BetaGeo().fit(summary["frequency"], summary["recency"], summary["T"])
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert round(bg.params_[name], 2) == round(value, 2), (name, bg.params_[name])
    # The paper's worked example: x = 2, t_x = 30.43, T = 38.86 -> 1.226 purchases in 39 weeks.
    expected = bg.conditional_expected_purchases(39, [2], [30.43], [38.86])
    assert expected[0] == pytest.approx(1.226, abs=0.001)
    # The published log-likelihood at the optimum is -9582.4.
    assert bg.log_likelihood(summary["frequency"], summary["recency"], summary["T"]) == (
        pytest.approx(-9582.4, abs=0.1)
    )


def test_bg_nbd_predictions_behave(summary: np.ndarray) -> None:
    bg = BetaGeo().fit(summary["frequency"], summary["recency"], summary["T"])
    # No repeat purchase yet: certainly alive (the model's assumption).
    assert bg.probability_alive([0], [0.0], [38.86])[0] == 1.0
    # The same frequency, but the last purchase long ago: less likely alive, fewer purchases.
    alive = bg.probability_alive([5, 5], [35.0, 5.0], [38.86, 38.86])
    assert alive[0] > 0.8 and alive[1] < 0.01
    purchases = bg.conditional_expected_purchases(52, [5, 5], [35.0, 5.0], [38.86, 38.86])
    assert purchases[0] > 5 * purchases[1]
    # A new customer's expected purchases start at 0 and grow, ever more slowly.
    new = bg.expected_purchases(np.array([0.0, 39.0, 78.0]))
    assert new[0] == 0.0 and 0 < new[1] < new[2] < 2 * new[1]


def test_gamma_gamma_reproduces_the_published_cdnow_estimates() -> None:
    data = cdnow("cdnow_customers_summary_with_transactions.csv")  # x, t_x, T, zbar
    gg = GammaGamma().fit(data["x"], data["zbar"])
    published = {"p": 6.25, "q": 3.74, "v": 15.44}  # Fader & Hardie (2013)
    for name, value in published.items():
        assert gg.params_[name] == pytest.approx(value, abs=0.01), (name, gg.params_[name])
    spend = gg.conditional_expected_average_profit([0, 1, 10], [0.0, 100.0, 100.0])
    population = gg.p_ * gg.v_ / (gg.q_ - 1)
    assert spend[0] == pytest.approx(population)  # no repeat purchase: the population mean
    assert population < spend[1] < spend[2] < 100  # shrunk toward it, less with more evidence

    bg = BetaGeo().fit(data["x"], data["t_x"], data["T"])
    purchases, value = lifetime_value(bg, gg, 52, data["x"], data["t_x"], data["T"], data["zbar"])
    assert np.all(purchases >= 0) and np.all(value >= 0)
    assert value.argmax() == (purchases * gg.conditional_expected_average_profit(
        data["x"], data["zbar"])).argmax()  # fmt: skip


def test_bad_input_is_refused() -> None:
    with pytest.raises(NotFitted):
        BetaGeo().probability_alive([1], [1.0], [2.0])
    with pytest.raises(ValueError, match="recency ≤ T"):
        BetaGeo().fit([1, 2], [3.0, 1.0], [2.0, 5.0])
    with pytest.raises(ValueError, match="one shape"):
        BetaGeo().fit([1, 2], [1.0], [2.0, 5.0])
    with pytest.raises(ValueError, match="repeat purchases"):
        GammaGamma().fit([0, 0], [10.0, 12.0])
