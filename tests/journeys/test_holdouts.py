"""Holdouts that measure lift: held-out people enter and are counted but are sent nothing, and
``GET /v1/journeys/{key}/results`` sets the treated against them (journeys.lift), end to end on
real Redis and ClickHouse with a real webhook receiver and a known, simulated effect."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from playwright.sync_api import Browser

from edge.runtime.stores import redis_client
from journeys.runs import group_of
from journeys.shards import layout_now, shards
from journeys.spec import parse
from journeys.store import actions_key
from tests.browser import shot, watched
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import LAYOUT, bearer, eventually
from tests.journeys.conftest import Clock, Receiver, put_journey, run_of

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

_HOUR = 3_600_000


def _journey(url: str, holdout: float = 0.3) -> dict[str, Any]:
    return {
        "name": "Cart lift",
        "trigger": {"kind": "event", "event": "Product Added"},
        "entry": {"reentry": "always"},
        "goal": "Order Completed",
        "goal_window": "7d",
        "holdout": holdout,
        "start": "remind",
        "steps": {
            "remind": {"type": "webhook", "url": f"{url}/remind", "next": "end"},
            "end": {"type": "end"},
        },
    }


@dataclass
class Simulated:
    """What the test sent, per group: the expected results."""

    groups: dict[str, str] = field(default_factory=dict)  # person -> group
    pids: dict[str, str] = field(default_factory=dict)  # person -> profile id
    converted: dict[str, int] = field(default_factory=lambda: {"treated": 0, "holdout": 0})
    revenue: dict[str, list[float]] = field(
        default_factory=lambda: {"treated": [], "holdout": []}
    )  # per converted person: their revenue in the window


def _send(engine: Engine, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 100):
        answer = engine.post("/v1/batch", {"batch": messages[start : start + 100]})
        assert answer.status_code == 200, answer.text


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _simulate(
    engine: Engine, key: str, people: int, rates: dict[str, float], seed: int
) -> Simulated:
    """``people`` add to cart ten days ago (entering the journey); then each converts with
    their group's rate, at a random time within the 7-day window, with a random revenue. Orders
    that must not count are sent too: before entering, and 8 days after it."""
    rng = np.random.default_rng(seed)
    entered = int((datetime.now(UTC) - timedelta(days=10)).timestamp() * 1000)
    who = [f"{key}-{i}" for i in range(people)]
    _send(engine, [{"type": "track", "anonymousId": w, "event": "Product Added",
                    "timestamp": _stamp(entered + i * 1000)} for i, w in enumerate(who)])  # fmt: skip
    eventually(lambda: all(run_of(engine, w, key) for w in who), timeout=60)
    found = Simulated()
    orders = []
    for i, w in enumerate(who):
        run = run_of(engine, w, key)
        assert run is not None
        group = run.get("group", "treated")
        found.groups[w], found.pids[w] = group, run["pid"]
        at = entered + i * 1000
        if rng.random() < rates[group]:
            revenue = round(float(rng.uniform(40, 60)), 2)
            when = at + int(rng.uniform(1, 6 * 24)) * _HOUR
            orders.append({"event": "Order Completed", "anonymousId": w, "timestamp": _stamp(when),
                           "properties": {"revenue": revenue}})  # fmt: skip
            found.converted[group] += 1
            found.revenue[group].append(revenue)
        if i % 10 == 0:  # outside the window: neither counts
            for when in (at - _HOUR, at + 8 * 24 * _HOUR):
                orders.append({"event": "Order Completed", "anonymousId": w,
                               "timestamp": _stamp(when), "properties": {"revenue": 1000}})  # fmt: skip
    _send(engine, [{"type": "track", **o} for o in orders])
    query = "SELECT count() FROM events WHERE event = 'Order Completed'"
    eventually(lambda: engine.sql(query)[0][0] >= len(orders), timeout=60)
    return found


def _results(engine: Engine, key: str, **query: str) -> httpx.Response:
    return engine.client.get(f"{engine.url}/v1/journeys/{key}/results", params=query,
                             headers=bearer())  # fmt: skip


def _group(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(g for g in document["groups"] if g["group"] == name)
    return found


def test_a_holdout_is_sent_nothing_and_measures_the_lift(
    engine: Engine, clock: Clock, receiver: Receiver
) -> None:
    key = "cart_lift"
    put_journey(engine, key, _journey(receiver.url))
    rates = {"treated": 0.5, "holdout": 0.1}  # the journey adds 40 points, and 0.4 × 50 revenue
    sent = _simulate(engine, key, 500, rates, seed=19)
    held = {w for w, g in sent.groups.items() if g == "holdout"}
    treated = set(sent.groups) - held
    assert 0.23 <= len(held) / 500 <= 0.37  # the share asked for, by a hash
    definition = parse(msgspec.json.encode(_journey(receiver.url)))
    assert all(group_of(definition, key, sent.pids[w]) == g for w, g in sent.groups.items())
    for w in held:
        assert (run_of(engine, w, key) or {})["ended"] == "exited: holdout"

    # Held-out people are never treated: not on entering, not on entering again (sticky).
    eventually(lambda: len(receiver.received) >= len(treated))  # (a re-entry cancels the
    again = sorted(sent.groups)[:60]  # action of the entry before, if it is still queued)
    _send(engine, [{"type": "track", "anonymousId": w, "event": "Product Added"} for w in again])
    eventually(lambda: all((run_of(engine, w, key) or {}).get("entry") == 2 for w in again))
    assert all(run_of(engine, w, key).get("group", "treated") == sent.groups[w] for w in again)  # type: ignore[union-attr]
    expected = len(treated) + len(set(again) & treated)
    eventually(lambda: len(receiver.received) >= expected)
    time.sleep(1.0)  # nothing more comes
    reached = [r["json"]["person"]["identities"]["anonymous_id"][0] for r in receiver.received]
    assert len(reached) == expected and set(reached) == treated
    with redis_client(engine.settings.redis_url) as r:  # the outbox, as the worker left it
        assert not any(r.hlen(actions_key(sent.pids[w])) for w in held)
        queued = [k.decode() for s in shards(layout_now(r)) for k in r.zrange(s.outbox, 0, -1)]
        delivered = [k.decode() for s in shards(layout_now(r)) for k in r.hkeys(s.sent)]
    assert len(delivered) == expected
    assert not {k.split("|")[1] for k in queued + delivered} & {sent.pids[w] for w in held}
    rows = engine.sql(
        "SELECT JSONExtractString(properties, 'group') AS g, count(), uniqExact(anonymous_id) "
        f"FROM events WHERE event = 'Journey Entered' AND anonymous_id LIKE '{key}-%' "
        "GROUP BY g ORDER BY g"
    )
    assert rows == [["holdout", len(held) + len(set(again) & held), len(held)],
                    ["treated", len(treated) + len(set(again) & treated), len(treated)]]  # fmt: skip
    silent = engine.sql(
        "SELECT count() FROM events WHERE event IN ('Journey Action Sent', "
        "'Journey Step Completed') AND anonymous_id IN ("
        + ", ".join(f"'{w}'" for w in sorted(held)) + ")"
    )  # fmt: skip
    assert silent == [[0]]

    answer = _results(engine, key)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["goal"] == "Order Completed" and document["goalWindow"] == "7d"
    assert [g["group"] for g in document["groups"]] == ["treated", "holdout"]
    for name, people in (("treated", treated), ("holdout", held)):
        shown = _group(document, name)
        revenue = sent.revenue[name]
        assert shown["people"] == len(people) and shown["converted"] == sent.converted[name]
        assert shown["rate"] == pytest.approx(sent.converted[name] / len(people))
        assert shown["revenue"] == pytest.approx(sum(revenue))
        assert shown["revenuePerPerson"] == pytest.approx(sum(revenue) / len(people))
        values = revenue + [0.0] * (len(people) - len(revenue))
        assert shown["revenueVariance"] == pytest.approx(float(np.var(values, ddof=1)))
    assert _group(document, "holdout")["vsHoldout"] is None
    against = _group(document, "treated")["vsHoldout"]
    conversion, revenue = against["conversion"], against["revenue"]
    low, high = conversion["differenceCI"]
    assert low <= 0.40 <= high and low > 0 and conversion["pValue"] < 0.01
    assert conversion["lift"] == pytest.approx(
        _group(document, "treated")["rate"] / _group(document, "holdout")["rate"] - 1
    )
    low, high = revenue["differenceCI"]
    assert low <= 0.40 * 50 <= high and low > 0 and revenue["pValue"] < 0.01
    summary = _group(document, "treated")["summary"]
    assert summary.startswith("Treated people converted ") and "points more often" in summary

    # ?since=&until= choose who counts by when they entered: the last day, those who entered
    # again; two weeks ago, no one.
    day = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    late = _results(engine, key, since=day).json()
    assert [(g["group"], g["people"]) for g in late["groups"]] == [
        ("treated", len(set(again) & treated)), ("holdout", len(set(again) & held))]  # fmt: skip
    weeks = [(datetime.now(UTC) - timedelta(days=d)).isoformat() for d in (20, 14)]
    empty = _results(engine, key, since=weeks[0], until=weeks[1]).json()
    assert [(g["group"], g["people"]) for g in empty["groups"]] == [("treated", 0), ("holdout", 0)]

    # The dry run sends nothing either way, and says who would have been held out.
    since = (datetime.now(UTC) - timedelta(days=11)).isoformat()
    dry = engine.client.post(f"{engine.url}/v1/journeys/{key}/simulate", json={"since": since},
                             headers=bearer()).json()  # fmt: skip
    assert dry["exited"] == {"exited: holdout": len(held) + len(set(again) & held)}
    assert dry["actions"] == {"remind": expected}

    # The dashboard shows the lift beside the funnel.
    with httpx.Client(base_url=engine.url) as client:
        form = client.get("/dashboard/login").text
        token = form.split('name="csrf" value="')[1].split('"')[0]
        client.post("/dashboard/login", data={"key": SECRET_KEY, "csrf": token})
        page = client.get("/dashboard/journeys")
    assert page.status_code == 200, page.text
    assert "Cart lift: people by stage" in page.text and summary in page.text
    assert "Cart lift: conversion lift against the holdout, 95% interval" in page.text


def test_without_an_effect_the_interval_covers_zero(
    engine: Engine, clock: Clock, receiver: Receiver
) -> None:
    key = "no_lift"
    put_journey(engine, key, _journey(receiver.url))
    sent = _simulate(engine, key, 300, {"treated": 0.25, "holdout": 0.25}, seed=7)
    document = _results(engine, key).json()
    held = sum(g == "holdout" for g in sent.groups.values())
    assert _group(document, "holdout")["people"] == held
    assert _group(document, "treated")["converted"] == sent.converted["treated"]
    against = _group(document, "treated")["vsHoldout"]
    for metric in ("conversion", "revenue"):
        low, high = against[metric]["differenceCI"]
        assert low < 0 < high and against[metric]["pValue"] > 0.05
    assert "not distinguishable from no difference yet" in _group(document, "treated")["summary"]


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["laptop", "phone"])
def test_the_journey_results_fit_a_laptop_and_a_phone(
    browser: Browser, engine: Engine, clock: Clock, receiver: Receiver, width: int, height: int
) -> None:
    put_journey(engine, "fits", _journey(receiver.url))
    _simulate(engine, "fits", 120, {"treated": 0.5, "holdout": 0.1}, seed=3)
    page = browser.new_page(viewport={"width": width, "height": height},
                            is_mobile=width < 600)  # fmt: skip
    errors = watched(page)
    page.goto(f"{engine.url}/dashboard/login")
    page.fill("input[name=key]", SECRET_KEY)
    page.click("button[type=submit]")
    page.goto(f"{engine.url}/dashboard/journeys")
    layout = page.evaluate(LAYOUT)
    shot(page, "dashboard", f"journey-results-{width}")
    assert layout == {"page": 0, "table": 0, "cut": []}, layout
    assert page.locator("table.results tbody td:visible").count() >= 12  # every figure shows
    assert page.locator("p.verdict").inner_text().startswith("Treated people converted")
    page.close()
    assert errors == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"holdout": 0.6}, r"Expected `float` <= 0.5 - at `\$.holdout`", id="above"),
        pytest.param({"holdout": -0.1}, r"Expected `float` >= 0.0 - at `\$.holdout`", id="below"),
        pytest.param({"goal": None}, "`holdout` must come with a `goal`", id="no-goal"),
        pytest.param({"goal_window": "a week"}, "`goal_window` must be a number and a unit",
                     id="window"),
    ],
)  # fmt: skip
def test_a_holdout_is_checked(change: dict[str, Any], message: str) -> None:
    body = {k: v for k, v in {**_journey("http://127.0.0.1:9"), **change}.items() if v is not None}
    with pytest.raises(msgspec.ValidationError, match=message):
        parse(msgspec.json.encode(body))


def test_the_api_names_the_field(engine: Engine) -> None:
    def put(body: dict[str, Any]) -> httpx.Response:
        return engine.client.put(f"{engine.url}/v1/journeys/x", json=body, headers=bearer())

    without_goal = {k: v for k, v in _journey("http://127.0.0.1:9").items() if k != "goal"}
    answer = put(without_goal)
    assert answer.status_code == 400 and answer.json() == {
        "code": "invalid_journey",
        "message": "$.holdout: must come with a `goal`: the event whose lift it measures",
    }
    answer = put({**_journey("http://127.0.0.1:9"), "holdout": 0.9})
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("$.holdout: Expected `float` <= 0.5")
    assert _results(engine, "x").status_code == 404
    put({**without_goal, "holdout": 0})
    answer = _results(engine, "x")
    assert answer.status_code == 400 and answer.json()["message"].startswith("$.goal: journey 'x'")
    put(_journey("http://127.0.0.1:9"))
    answer = _results(engine, "x", since="yesterday")
    assert answer.status_code == 400 and answer.json()["message"].startswith("$.since: ")
    answer = _results(engine, "x", metric="revenue")
    assert answer.status_code == 400 and "metric" in answer.json()["message"]
