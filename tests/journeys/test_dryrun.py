"""The dry run against a hand-computed fixture: five people's history, one journey."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Engine
from tests.helpers import bearer

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

T0 = datetime(2026, 10, 1, 10, tzinfo=UTC)
JOURNEY = {
    "trigger": {"kind": "event", "event": "Product Added"},
    "exit": [{"event": "Order Completed"}],
    "goal": "Order Completed",
    "start": "wait1",
    "steps": {
        "wait1": {"type": "wait", "duration": "1h", "next": "remind"},
        "remind": {"type": "webhook", "url": "http://127.0.0.1:9/remind", "next": "wait2"},
        "wait2": {"type": "wait", "duration": "1d", "next": "offer"},
        "offer": {"type": "webhook", "url": "http://127.0.0.1:9/offer", "next": "end"},
        "end": {"type": "end"},
    },
}


def event(who: str, name: str, hours: float) -> dict[str, Any]:
    at = (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
    return {"type": "track", "anonymousId": who, "event": name, "timestamp": at,
            "messageId": f"{who}-{name}-{hours}"}  # fmt: skip


def test_the_dry_run_matches_the_hand_count(engine: Engine) -> None:
    history = [
        event("ann", "Product Added", 0),  # remind at 1h, offer at 25h: completed
        event("ann", "Product Added", 2),  # already in it: does not enter again
        event("ben", "Product Added", 0),
        event("ben", "Order Completed", 0.5),  # exits before the reminder; converted
        event("cat", "Product Added", 0),
        event("cat", "Order Completed", 2),  # reminded, then exits; converted
        event("dan", "Product Added", 30),  # reminded at 31h, the offer falls after the period
        event("eve", "Order Completed", 1),  # never entered: not converted
        event("fay", "Page Viewed", 1),  # nothing the journey reacts to
    ]
    assert engine.post("/v1/batch", {"batch": history}).status_code == 200
    assert engine.wait_stored(len(history)) == len(history)
    answer = engine.client.post(
        f"{engine.url}/v1/journeys/abandoned/simulate", headers=bearer(),
        json={"since": (T0 - timedelta(hours=1)).isoformat(),
              "until": (T0 + timedelta(hours=48)).isoformat(), "journey": JOURNEY},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    report = answer.json()
    del report["since"], report["until"]
    assert report == {"key": "abandoned", "people": 4, "entered": 4,
                      "actions": {"remind": 3, "offer": 1}, "completed": 1,
                      "exited": {"exited: Order Completed": 2}, "waiting": 1,
                      "converted": 2}  # fmt: skip
    # Nothing was sent or stored: the journey does not even exist.
    assert (
        engine.client.get(f"{engine.url}/v1/journeys/abandoned", headers=bearer()).status_code
        == 404
    )
    unknown = engine.client.post(
        f"{engine.url}/v1/journeys/abandoned/simulate", headers=bearer(), json={}
    )
    assert unknown.status_code == 404
