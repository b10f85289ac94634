"""Journeys test helpers: a real webhook receiver and a real SMTP server (aiosmtpd) on localhost,
and journeys through the API."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from edge.runtime.config import Config
from edge.runtime.stores import redis_client
from edge.runtime.workers import start
from journeys.mailer import SendPolicy
from journeys.smtp import EmailSettings
from journeys.store import runs_key
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, worker_needs
from tests.helpers import bearer


class Receiver:
    """A webhook receiver on localhost that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = outer.status
                outer.received.append({"path": self.path, "headers": dict(self.headers),
                                       "raw": body, "json": json.loads(body),
                                       "status": status})  # fmt: skip
                self.send_response(status)
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


_STORES: dict[str, Any] = {}


def _store(url: str) -> Any:
    """One client per Redis for the polls below (a cluster client per poll costs a slot-table
    read each, hundreds per test); closed when the session ends."""
    if url not in _STORES:
        _STORES[url] = redis_client(url)
    return _STORES[url]


@pytest.fixture(scope="session", autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    for client in _STORES.values():
        client.close()


def run_of(engine: Engine, who: str, journey: str) -> dict[str, Any] | None:
    r = _store(engine.settings.redis_url)
    pid = r.get(f"{{id:anonymous_id:{who}}}")
    raw = r.hget(runs_key(pid.decode()), journey) if pid else None
    return json.loads(raw) if raw else None


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
    api = (engine.url, WRITE_KEY, SECRET_KEY)
    needs = worker_needs(engine.settings.redis_url, "test-journeys", api=api)
    thread = start("journeys", needs, stop, interval=0.05, clock=found)
    yield found
    stop.set()
    thread.join(timeout=30)


class Inbox:
    """Accepts mail, except 550 for bounce@ and 451 for busy@ (as real servers answer)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.busy = 0  # answer the next this many recipients 451, whoever they are
        self.refused: list[str] = []  # who got a 451

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: ANN001
        if address.startswith("bounce@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@") or self.busy > 0:
            self.busy -= 1
            self.refused.append(address)
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        self.messages.append(envelope.content)
        return "250 Message accepted"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    with socket.socket() as probe:  # aiosmtpd's readiness check cannot connect to port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


MailWorker = Callable[..., Clock]


@pytest.fixture
def mail_worker(engine: Engine, inbox: tuple[Inbox, int]) -> Iterator[MailWorker]:
    """Start the journeys worker sending through the test's SMTP server, with a movable clock."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def launch(start_at: int | None = None, **rules: Any) -> Clock:
        found = Clock()
        if start_at is not None:
            found.offset = start_at - found()
        config = Config(email=EmailSettings(url=f"smtp://127.0.0.1:{inbox[1]}",
                                            from_address="Shop <shop@example.com>",
                                            public_url=engine.url),
                        messaging=SendPolicy(**rules))  # fmt: skip
        needs = worker_needs(engine.settings.redis_url, "test-journeys", config=config,
                             api=(engine.url, WRITE_KEY, SECRET_KEY))  # fmt: skip
        threads.append(start("journeys", needs, stop, interval=0.05, clock=found))
        return found

    yield launch
    stop.set()
    for thread in threads:
        thread.join(timeout=30)


def events(engine: Engine, name: str) -> list[dict[str, Any]]:
    rows = engine.sql(f"SELECT properties FROM events WHERE event = '{name}' ORDER BY timestamp")
    return [json.loads(row[0]) for row in rows]
