"""How the dashboard words counts and times: "1 visitor", "2 visitors"; readable moments in UTC
instead of epoch milliseconds; the verdict's words."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge.pages.dashboard import verdict
from edge.pages.frame import _TEMPLATES
from edge.pages.text import exact, plural, when

NOW = datetime(2026, 12, 1, 14, 3, 22, tzinfo=UTC)
NOW_MS = 1796133802000  # NOW in epoch milliseconds


@pytest.mark.parametrize(
    ("count", "word", "words", "shown"),
    [
        pytest.param(0, "visitor", None, "0 visitors", id="zero"),
        pytest.param(1, "visitor", None, "1 visitor", id="one"),
        pytest.param(2, "visitor", None, "2 visitors", id="two"),
        pytest.param(1, "person", "people", "1 person", id="one-person"),
        pytest.param(2, "person", "people", "2 people", id="two-people"),
        pytest.param(12_345, "item", None, "12,345 items", id="thousands"),
    ],
)
def test_plural(count: int, word: str, words: str | None, shown: str) -> None:
    assert plural(count, word, words) == shown


def test_times_read_in_utc_from_whatever_the_store_holds() -> None:
    for value in (NOW_MS, NOW, NOW.replace(tzinfo=None), "2026-12-01T14:03:22",
                  "2026-12-01T15:03:22+01:00", NOW.isoformat()):  # fmt: skip
        assert exact(value) == "2026-12-01 14:03:22 UTC", value


@pytest.mark.parametrize(
    ("ago", "shown"),
    [
        pytest.param(timedelta(seconds=2), "just now", id="now"),
        pytest.param(timedelta(seconds=42), "42 s ago", id="seconds"),
        pytest.param(timedelta(minutes=3, seconds=8), "3 min ago", id="minutes"),
        pytest.param(timedelta(hours=5, minutes=1), "5 h ago", id="hours"),
        pytest.param(timedelta(days=1, hours=2), "1 day ago", id="a-day"),
        pytest.param(timedelta(days=3), "3 days ago", id="days"),
        pytest.param(timedelta(days=-2), "in 2 days", id="future"),
        pytest.param(timedelta(days=45), "2026-12-01", id="long-ago-the-date"),
    ],
)
def test_when_says_how_long_ago_with_the_exact_time_as_its_title(
    ago: timedelta, shown: str
) -> None:
    html = str(when(NOW_MS, now=NOW + ago))
    assert html == (f'<time datetime="2026-12-01T14:03:22Z" title="2026-12-01 14:03:22 UTC">'
                    f"{shown}</time>")  # fmt: skip
    assert str(when(NOW_MS, relative=False)).endswith(">2026-12-01 14:03:22 UTC</time>")
    assert str(when(None)) == "–"


def _found(policy: str, units: list[int], **extra: Any) -> dict[str, Any]:
    names = ["plain", "bold", "bolder"][: len(units)]
    variants = [{"variant": n, "units": u, "pValue": 0.5, "pValueHolm": 0.5, "lift": 0.0,
                 "chanceToBeatControl": 0.5, **extra.get(n, {})}
                for n, u in zip(names, units)]  # fmt: skip
    return {"policy": policy, "control": "plain", "srm": False, "variants": variants,
            "allocation": extra.get("allocation", [])}  # fmt: skip


@pytest.mark.parametrize(
    ("units", "said"),
    [
        pytest.param([1, 0], "(1 visitor)", id="one"),
        pytest.param([1, 1], "(2 visitors)", id="two"),
        pytest.param([600, 634], "(1,234 visitors)", id="many"),
    ],
)
def test_the_verdict_counts_visitors_in_words(units: list[int], said: str) -> None:
    assert verdict(_found("ab", units)) == f"No clear difference yet {said}."
    bandit = _found("thompson", units, plain={"posterior": {"probability": 0.2}},
                    bold={"posterior": {"probability": 0.8}})  # fmt: skip
    assert verdict(bandit) == f"The bandit shows bold 80% of the time {said}."
    assert verdict(_found("ab", [0, 0])) == "Waiting for traffic."


def test_a_contextual_bandit_verdict_says_what_it_did_lately() -> None:
    """A contextual policy has no one share per variant (it depends on who asks): the verdict
    reads the latest allocation step instead of claiming 0%."""
    latest = {"at": NOW, "decisions": {"plain": 3, "bold": 9}}
    found = _found("linucb", [40, 60], plain={"posterior": {"decisions": 3.0}},
                   allocation=[{"at": NOW, "decisions": {"plain": 5}}, latest])  # fmt: skip
    assert verdict(found) == "The bandit showed bold in 75% of its latest decisions (100 visitors)."
    assert verdict(_found("linucb", [1, 0])) == "The bandit has not decided yet (1 visitor)."


def _html(template: str, **context: Any) -> str:
    return _TEMPLATES.get_template(template).render(signed_in=True, logout_token="t", **context)


def _render(template: str, **context: Any) -> str:
    """The page's text, as a person reads it."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", _html(template, **context)))


@pytest.mark.parametrize(("n", "noun"), [(0, "examples"), (1, "example"), (2, "examples")])
def test_the_models_page_words_its_counts_and_times(n: int, noun: str) -> None:
    model = {"target": "churn", "estimator": "logistic", "examples": n, "positives": n,
             "window": n, "roc_auc": None, "log_loss": None, "calibration": []}  # fmt: skip
    ltv = {"fitted_at": "2026-12-01T14:03:22.123456+00:00", "customers": n,
           "repeat_customers": n, "horizon_days": n, "beta_geo": {}, "gamma_gamma": {}}  # fmt: skip
    context = {"models": [model], "ltv": ltv, "calibration": {"churn": ""},
               "updated": datetime.now(UTC) - timedelta(minutes=3, seconds=5)}  # fmt: skip
    text = _render("models.html", **context)
    assert f"{n} labelled {noun} ({n} positive)" in text
    assert f"Over the last {n} {noun}:" in text
    assert f"on {n} buyer{'' if n == 1 else 's'} ({n} repeat)" in text
    assert f"horizon {n} day{'' if n == 1 else 's'}." in text
    assert "published 3 min ago" in text
    assert "14:03:22.123456" not in text  # the fit's time is not shown raw …
    assert 'title="2026-12-01 14:03:22 UTC"' in _html("models.html", **context)  # … but exact


def test_the_models_page_shows_calibration_error_beside_roc_auc() -> None:
    model = {"target": "conversion", "estimator": "logistic", "examples": 10, "positives": 3,
             "window": 10, "roc_auc": 0.8123, "log_loss": 0.41, "ece": 0.0321,
             "calibrated": True, "calibration": [],
             "uncalibrated": {"roc_auc": 0.8101, "log_loss": 0.45, "ece": 0.0876}}  # fmt: skip
    text = _render("models.html", models=[model], ltv=None, calibration={"conversion": ""},
                   updated=None)  # fmt: skip
    assert "ROC AUC 0.812, log loss 0.410, calibration error (ECE) 0.032." in text
    assert "Calibrated scores; the raw scores: ROC AUC 0.810, ECE 0.088." in text


@pytest.mark.parametrize("n", [0, 1, 2])
def test_the_journeys_page_words_its_counts(n: int) -> None:
    people = "person" if n == 1 else "people"
    journey = {"key": "welcome", "journey": {"name": "Welcome", "active": True},
               "stats": {"people": n, "entered": n, "exited": {"unsubscribed": n}},
               "active": {"wait": n}, "chart": ""}  # fmt: skip
    text = _render("journeys.html", journeys=[journey])
    assert f"{n} {people} entered ({n} time{'' if n == 1 else 's'})." in text
    assert f"Waiting now: {n} {people} in wait." in text
    assert f"Exited: {n} (unsubscribed)." in text  # exits, not people: one may enter twice
