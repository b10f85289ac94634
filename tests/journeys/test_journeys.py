"""Journeys end to end on real Redis and embedded ClickHouse, with a real local HTTP server as
the webhook receiver and the journeys worker's clock moved by hand."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from edge.worker import start_journeys
from journeys.store import runs_key
from tests.conftest import Engine
from tests.edge.test_profiles_api import bearer, eventually


class Receiver:
    """A webhook receiver on localhost that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append({"path": self.path, "headers": dict(self.headers),
                                       "raw": body, "json": json.loads(body)})  # fmt: skip
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


class Clock:
    """Wall time plus what the test has moved it by (ms)."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset

    def forward(self, minutes: float) -> None:
        self.offset += int(minutes * 60_000)


@pytest.fixture
def clock(engine: Engine) -> Iterator[Clock]:
    found = Clock()
    stop = threading.Event()
    thread = start_journeys(engine.settings.redis_url, "test-journeys", stop, interval=0.05,
                            clock=found)  # fmt: skip
    yield found
    stop.set()
    thread.join(timeout=30)


def put_journey(engine: Engine, key: str, body: dict[str, Any]) -> None:
    answer = engine.client.put(f"{engine.url}/v1/journeys/{key}", json=body, headers=bearer())
    assert answer.status_code in (200, 201), answer.text


def abandoned_cart(url: str) -> dict[str, Any]:
    return {
        "name": "Abandoned cart",
        "trigger": {"kind": "event", "event": "Product Added"},
        "entry": {"reentry": "days", "reentry_days": 7},
        "exit": [{"event": "Order Completed"}],
        "goal": "Order Completed",
        "start": "wait",
        "steps": {
            "wait": {"type": "wait", "duration": "1h", "next": "remind"},
            "remind": {"type": "webhook", "url": f"{url}/remind", "body": {"template": "cart"},
                       "next": "end"},
            "end": {"type": "end"},
        },
    }  # fmt: skip


def track(engine: Engine, who: str, event: str, **properties: Any) -> None:
    answer = engine.post(
        "/v1/track", {"anonymousId": who, "event": event, "properties": properties}
    )
    assert answer.status_code == 200


def run_of(engine: Engine, who: str, journey: str) -> dict[str, Any] | None:
    r = redis.Redis.from_url(engine.settings.redis_url)
    pid = r.get(f"{{id:anonymous_id:{who}}}")
    raw = r.hget(runs_key(pid.decode()), journey) if pid else None
    return json.loads(raw) if raw else None


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
        "SELECT event, anonymous_id, JSONExtractString(properties, 'reason') FROM events "
        "WHERE event LIKE 'Journey %' ORDER BY anonymous_id, event"
    ) if len(engine.sql("SELECT 1 FROM events WHERE event LIKE 'Journey %'")) >= 5 else None)  # fmt: skip
    assert rows == [["Journey Action Sent", "ada", ""], ["Journey Completed", "ada", ""],
                    ["Journey Entered", "ada", ""], ["Journey Entered", "bob", ""],
                    ["Journey Exited", "bob", "exited: Order Completed"]]  # fmt: skip


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
