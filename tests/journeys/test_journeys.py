"""Journeys end to end on real Redis and embedded ClickHouse, with a real local HTTP server as
the webhook receiver and the journeys worker's clock moved by hand."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from edge.runtime.config import ConfigError, load_config
from edge.runtime.workers import start
from tests.conftest import SECRET_KEY, Engine, worker_needs
from tests.helpers import bearer, eventually
from tests.journeys.conftest import Clock, Receiver, abandoned_cart, put_journey, run_of, track

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path


def test_abandoned_cart_reminds_after_the_wait_and_never_after_an_order(
    engine: Engine, clock: Clock, receiver: Receiver
) -> None:
    put_journey(engine, "abandoned_cart", abandoned_cart(receiver.url))
    track(engine, "ada", "Product Added", product_id="hat1")
    track(engine, "bob", "Product Added", product_id="shoe1")
    eventually(
        lambda: run_of(engine, "ada", "abandoned_cart") and run_of(engine, "bob", "abandoned_cart")
    )
    track(engine, "bob", "Order Completed", revenue=20)
    eventually(lambda: (run_of(engine, "bob", "abandoned_cart") or {}).get("ended"))
    assert run_of(engine, "bob", "abandoned_cart")["ended"] == "exited: Order Completed"
    time.sleep(0.5)
    assert receiver.received == []  # the hour has not passed
    waiting = engine.client.get(f"{engine.url}/v1/journeys/abandoned_cart/stats", headers=bearer())
    assert waiting.json()["active"] == {"wait": 1}  # ada; bob has left
    clock.forward(61)
    eventually(lambda: receiver.received)
    time.sleep(0.5)  # nothing more comes
    assert len(receiver.received) == 1
    sent = receiver.received[0]
    assert sent["path"] == "/remind" and sent["json"]["template"] == "cart"
    assert sent["json"]["journey"] == "abandoned_cart" and sent["json"]["step"] == "remind"
    assert sent["json"]["person"]["identities"]["anonymous_id"] == ["ada"]
    assert sent["headers"]["Idempotency-Key"] == sent["json"]["idempotencyKey"]
    # The signature verifies with the shared secret.
    secret = engine.client.get(f"{engine.url}/v1/journeys", headers=bearer()).json()[
        "webhook_secret"
    ]
    stamp, _, digest = sent["headers"]["X-Kairos-Signature"].partition(",v1=")
    expected = hmac.new(secret.encode(), stamp[2:].encode() + b"." + sent["raw"], hashlib.sha256)
    assert hmac.compare_digest(digest, expected.hexdigest())
    assert run_of(engine, "ada", "abandoned_cart")["ended"] == "completed"
    # Journey events land in ClickHouse.
    rows = eventually(lambda: engine.sql(
        "SELECT event, anonymous_id, if(event = 'Journey Step Completed', "
        "JSONExtractString(properties, 'step'), JSONExtractString(properties, 'reason')) "
        "FROM events WHERE event LIKE 'Journey %' ORDER BY anonymous_id, event, 3"
    ) if len(engine.sql("SELECT 1 FROM events WHERE event LIKE 'Journey %'")) >= 7 else None)  # fmt: skip
    assert rows == [["Journey Action Sent", "ada", ""], ["Journey Completed", "ada", ""],
                    ["Journey Entered", "ada", ""], ["Journey Step Completed", "ada", "remind"],
                    ["Journey Step Completed", "ada", "wait"], ["Journey Entered", "bob", ""],
                    ["Journey Exited", "bob", "exited: Order Completed"]]  # fmt: skip
    stats = engine.client.get(f"{engine.url}/v1/journeys/abandoned_cart/stats", headers=bearer())
    assert stats.json() == {"key": "abandoned_cart", "entered": 2, "people": 2, "completed": 1,
                            "exited": {"exited: Order Completed": 1}, "converted": 1,
                            "actions": {"remind": 1}, "active": {}}  # fmt: skip
    # The dashboard draws it as a funnel.
    with httpx.Client(base_url=engine.url) as client:
        form = client.get("/dashboard/login").text
        token = form.split('name="csrf" value="')[1].split('"')[0]
        client.post("/dashboard/login", data={"key": SECRET_KEY, "csrf": token})
        page = client.get("/dashboard/journeys")
    assert page.status_code == 200 and "Abandoned cart: people by stage" in page.text
    assert "<title>remind: 1</title>" in page.text and "2 people entered (2 times)" in page.text
    assert "1 (exited: Order Completed)" in page.text


def test_journey_events_carry_the_time_of_what_caused_them(
    engine: Engine, clock: Clock, receiver: Receiver
) -> None:
    """The worker runs three hours behind the events it reads (its clock is ahead of their
    times): "Journey Entered" and "Journey Exited" still carry the times of the add to cart and
    the order that caused them, so an order ten minutes after the entry converts, and one
    placed before the entry does not."""
    put_journey(engine, "abandoned_cart", abandoned_cart(receiver.url))
    clock.forward(180)
    start = datetime.now(UTC) - timedelta(hours=2)

    def at(minutes: float) -> str:
        return (start + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")

    batch = [
        {"type": "track", "anonymousId": "ada", "event": "Product Added", "timestamp": at(0)},
        {"type": "track", "anonymousId": "ada", "event": "Order Completed", "timestamp": at(10)},
        {"type": "track", "anonymousId": "cy", "event": "Order Completed", "timestamp": at(-5)},
        {"type": "track", "anonymousId": "cy", "event": "Product Added", "timestamp": at(0)},
    ]  # fmt: skip
    for message in batch:  # one at a time: ada's order must reach the worker after her entry
        assert engine.post("/v1/batch", {"batch": [message]}).status_code == 200
        time.sleep(0.3)
    eventually(lambda: (run_of(engine, "ada", "abandoned_cart") or {}).get("ended"))
    query = ("SELECT anonymous_id, event, toUnixTimestamp64Milli(timestamp) FROM events "
             "WHERE event IN ('Journey Entered', 'Journey Exited') ORDER BY anonymous_id, event")  # fmt: skip
    rows = eventually(lambda: rows if len(rows := engine.sql(query)) == 3 else None)
    ms = [int((start + timedelta(minutes=m)).timestamp() * 1000) for m in (0, 10)]
    assert rows == [["ada", "Journey Entered", ms[0]], ["ada", "Journey Exited", ms[1]],
                    ["cy", "Journey Entered", ms[0]]]  # fmt: skip
    stats = engine.client.get(f"{engine.url}/v1/journeys/abandoned_cart/stats", headers=bearer())
    assert stats.json()["entered"] == 2 and stats.json()["converted"] == 1  # ada, not cy


def test_a_holdout_stays_untouched(engine: Engine, clock: Clock, receiver: Receiver) -> None:
    put_journey(engine, "welcome", {
        "trigger": {"kind": "event", "event": "Signed Up"},
        "start": "split",
        "steps": {
            "split": {"type": "split", "paths": [{"weight": 1, "next": "holdout", "name": "holdout"},
                                                 {"weight": 1, "next": "hello", "name": "test"}]},
            "hello": {"type": "webhook", "url": f"{receiver.url}/hello", "next": "holdout"},
            "holdout": {"type": "end"},
        },
    })  # fmt: skip
    people = [f"p{i}" for i in range(30)]
    for who in people:
        track(engine, who, "Signed Up")
    eventually(lambda: all(run_of(engine, w, "welcome") for w in people))
    stats = engine.client.get(f"{engine.url}/v1/journeys/welcome/stats", headers=bearer()).json()
    assert stats["active"] == {}  # no waits: everyone passed straight through
    eventually(lambda: len(receiver.received) >= 8)
    time.sleep(0.5)
    greeted = {r["json"]["person"]["identities"]["anonymous_id"][0] for r in receiver.received}
    assert len(greeted) == len(receiver.received)  # once each
    assert 8 <= len(greeted) <= 22  # about half, by a sticky hash
    # Signing up again does not enter again (entry once), so the holdout stays untouched.
    for who in people:
        track(engine, who, "Signed Up")
    time.sleep(1.0)
    assert len(receiver.received) == len(greeted)


def test_definitions_are_checked(engine: Engine) -> None:
    bad = abandoned_cart("http://127.0.0.1:9")
    bad["steps"]["wait"]["next"] = "rmind"
    answer = engine.client.put(f"{engine.url}/v1/journeys/x", json=bad, headers=bearer())
    assert (
        answer.status_code == 400 and "steps.wait.next: no step 'rmind'" in answer.json()["message"]
    )
    loop = abandoned_cart("http://127.0.0.1:9")
    loop["steps"]["remind"]["next"] = "remind"
    answer = engine.client.put(f"{engine.url}/v1/journeys/x", json=loop, headers=bearer())
    assert answer.status_code == 400 and "loop without a wait" in answer.json()["message"]
    wrong = abandoned_cart("http://127.0.0.1:9")
    wrong["steps"]["wait"]["duration"] = "soon"
    answer = engine.client.put(f"{engine.url}/v1/journeys/x", json=wrong, headers=bearer())
    assert answer.status_code == 400 and "$.steps.wait.duration" in answer.json()["message"]
    assert engine.client.get(f"{engine.url}/v1/journeys/x", headers=bearer()).status_code == 404


def test_journeys_from_the_config_file_are_installed(engine: Engine, tmp_path: Any) -> None:
    config = tmp_path / "kairos.toml"
    config.write_text(
        "[journeys.cart]\n"
        'trigger = { kind = "event", event = "Product Added" }\n'
        'start = "wait"\n'
        'steps.wait = { type = "wait", duration = "1h", next = "end" }\n'
        'steps.end = { type = "end" }\n'
    )
    stop = threading.Event()
    needs = worker_needs(engine.settings.redis_url, "cfg", load_config(config))
    thread = start("journeys", needs, stop)
    stop.set()
    thread.join(timeout=30)
    found = engine.client.get(f"{engine.url}/v1/journeys/cart", headers=bearer())
    assert found.status_code == 200 and found.json()["steps"]["wait"]["duration"] == "1h"
    config.write_text("[journeys.cart]\nstart = 1\n")
    with pytest.raises(ConfigError, match="journeys"):
        load_config(config)
