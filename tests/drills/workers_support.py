"""Helpers of the worker drills: a webhook receiver that can be down, tagged shopper traffic, what
that traffic implies, and a killer that SIGKILLs a ``kairos up`` worker while it is busy."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from collector.partitions import layout_of
from profiles.shoppers import ShopperStream, send
from tests.conftest import SECRET_KEY, WRITE_KEY, Process, basic, free_port


def eventually(
    check: Callable[[], Any],
    timeout: float = 120.0,
    every: float = 0.25,
    status: Callable[[], object] = lambda: "",
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds,
    saying what ``check`` waited for (its docstring) and ``status()``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, (
            f"not within {timeout:.0f} s: {check.__doc__ or ''} {status()}"
        )
        time.sleep(every)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # the same port again, once the receiver comes back
    daemon_threads = True


class Receiver:
    """A webhook receiver on a fixed localhost port: down (refusing connections) until
    ``start``, answering ``status`` (200, or 503 to play a failing service) once up. Each
    request is recorded as (Idempotency-Key, status answered); ``delay`` holds each answer
    back, so a delivery is in flight long enough to be killed in the middle of."""

    def __init__(self, delay: float = 0.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status = 200
        self.delay = delay
        self.requests: list[tuple[str, int]] = []
        self.handling = 0  # requests being answered right now
        self._lock = threading.Lock()
        self._server: _Server | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = outer.status
                with outer._lock:
                    outer.requests.append((self.headers["Idempotency-Key"], status))
                    outer.handling += 1
                try:
                    time.sleep(outer.delay)
                    self.send_response(status)
                    self.end_headers()
                except OSError:  # the worker died while we answered
                    pass
                finally:
                    with outer._lock:
                        outer.handling -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self, prefix: str = "") -> Counter[str]:
        """How many times each action key (starting with ``prefix``) was answered 2xx."""
        with self._lock:
            requests = list(self.requests)
        return Counter(k for k, status in requests if k.startswith(prefix) and 200 <= status < 300)


@dataclass
class Stack:
    """``kairos up`` as the drills run it, with direct access to its Redis."""

    process: Process
    redis: redis.Redis
    receiver: Receiver
    outage: Receiver
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    outage_minute: threading.Thread | None = None  # the outage drill, run beside the others

    @property
    def run_dir(self) -> Path:
        return self.process.data_dir / "run"

    def sql(self, query: str, timeout: float = 120.0) -> list[list[Any]]:
        """A read query; retried while the sink (which serves queries) restarts."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = self.http.post(self.process.url + "/v1/sql", json={"query": query},
                                        headers=basic(SECRET_KEY))  # fmt: skip
                if answer.status_code == 200:
                    return list(answer.json()["rows"])
                assert answer.status_code >= 500, answer.text
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"/v1/sql kept failing: {query}"
            time.sleep(0.5)

    def decide(self, placement: str, anonymous_id: str) -> dict[str, Any]:
        answer = self.http.post(
            self.process.url + "/v1/decide",
            headers=basic(WRITE_KEY),
            json={"placements": [placement], "anonymousId": anonymous_id},
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json()["decisions"][placement])

    def send(self, messages: list[dict[str, Any]]) -> int:
        return send(messages, self.process.url, WRITE_KEY, batch=100)

    def pid(self, worker: str) -> int | None:
        try:
            return int((self.run_dir / f"{worker}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def busy(self, worker: str, since: float) -> bool:
        """The worker's process (the first instance of its kind: ``run/<worker>.pid``; its
        consumer's name ends in its pid) holds a batch it has read but not acknowledged, and has
        read from the spool since ``since`` (monotonic seconds): the process started then is
        working on it, rather than a dead one holding it, or a new one still starting."""
        ago_ms = (time.monotonic() - since) * 1000
        mine = f"-{self.pid(worker)}".encode()
        for partition in layout_of(self.redis).partitions:
            for consumer in self.redis.xinfo_consumers(partition.log, worker):
                if (
                    consumer["name"].endswith(mine)
                    and consumer["pending"]
                    and consumer["idle"] < ago_ms
                ):
                    return True
        return False

    def drained(self, worker: str) -> bool:
        """The worker's group has read and acknowledged every spool entry, in every
        partition."""
        return all(self._drained(worker, p.log) for p in layout_of(self.redis).partitions)

    def _drained(self, worker: str, stream: str) -> bool:
        for info in self.redis.xinfo_groups(stream):
            if info["name"].decode() == worker:
                last = self.redis.xrevrange(stream, count=1)
                head = _position(last[0][0]) if last else (0, 0)
                return bool(info["pending"] == 0 and _position(info["last-delivered-id"]) >= head)
        return False


def _position(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq or 0)


def kill_while_busy(
    stack: Stack,
    worker: str,
    times: int,
    busy: Callable[[float], bool],
    until: Callable[[], bool],
    grace: float = 1.0,
) -> int:
    """SIGKILL ``worker`` up to ``times`` times, each time while ``busy(since)`` (``since``:
    when its current process was seen first) and after it has been busy for ``grace`` seconds
    (so it has finished some batches: a kill then tests what it saved, not only its start);
    stops early once ``until()``. Returns the kills made."""
    kills = 0
    while kills < times:
        pid = eventually(lambda: stack.pid(worker) if _alive(stack.pid(worker)) else None, 60)
        since = time.monotonic()
        deadline = since + 60
        working, ready = None, False
        while not ready and time.monotonic() < deadline:
            if busy(since):
                working = working or time.monotonic()
                ready = time.monotonic() - working >= grace
            elif until():
                break
            if not ready:
                time.sleep(0.01)
        if not ready:
            break
        os.kill(pid, signal.SIGKILL)
        kills += 1
        eventually(lambda: stack.pid(worker) not in (None, pid), 60)  # restarted
    return kills


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def shoppers(tag: str, count: int, days: float, seed: int) -> Iterator[dict[str, Any]]:
    """Seeded simulated shoppers whose ids (message, anonymous, user, email) all carry ``tag``,
    so each drill's people are its own; made as they are sent (thousands take seconds)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for message in ShopperStream(shoppers=count, days=days, seed=seed, start=start).messages():
        message["messageId"] = f"{tag}-{message['messageId']}"
        message["anonymousId"] = f"{tag}-{message['anonymousId']}"
        if "userId" in message:
            message["userId"] = f"{tag}-{message['userId']}"
        if "email" in message.get("traits", {}):
            message["traits"] = {
                **message["traits"],
                "email": f"{tag}-{message['traits']['email']}",
            }
        yield message


def in_thread(run: Callable[[], object]) -> threading.Thread:
    """``run()`` in a started daemon thread; what it raised is in the thread's ``failures``."""
    failures: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # the test asserts on it
            failures.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.failures = failures  # type: ignore[attr-defined]
    thread.start()
    return thread


class Traffic:
    """``messages`` sent in batches of 100, one every ``pause`` seconds, in a thread, until all
    are sent or — once ``least`` are — ``enough()`` says so. ``sent`` is what went out."""

    def __init__(
        self,
        stack: Stack,
        messages: Iterable[dict[str, Any]],
        enough: Callable[[], bool],
        least: int = 2_000,
        pause: float = 0.25,
    ):
        self.sent: list[dict[str, Any]] = []
        source = iter(messages)

        def run() -> None:
            while chunk := list(itertools.islice(source, 100)):
                if len(self.sent) >= least and enough():
                    return
                assert stack.send(chunk) == len(chunk)
                self.sent += chunk
                time.sleep(pause)

        self.thread = in_thread(run)

    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "traffic still running"
        assert not self.thread.failures, self.thread.failures  # type: ignore[attr-defined]


def event_name(message: dict[str, Any]) -> str | None:
    if message["type"] == "page":
        return "Page Viewed"
    if message["type"] == "track":
        return str(message["event"])
    return None


def second_devices(
    messages: Iterable[dict[str, Any]], tag: str, seed: int
) -> Iterator[dict[str, Any]]:
    """``messages`` with every user also shopping on a second device, some way into the
    stream after their first login: anonymous page views, a login with the same userId (the
    engine merges that device's profile into the user's), and a product view after it."""
    rng = np.random.default_rng(seed)
    later: dict[int, list[dict[str, Any]]] = {}
    users: set[str] = set()
    for i, message in enumerate(messages):
        yield message
        yield from later.pop(i, [])
        user = message.get("userId")
        if user is None or user in users:
            continue
        users.add(user)
        device = f"{tag}-dev2-{user}"
        steps = [("page", {}), ("page", {}), ("identify", {"userId": user}),
                 ("track", {"userId": user, "event": "Product Viewed"})]  # fmt: skip
        block = [{"type": kind, "anonymousId": device, "messageId": f"{device}-{j}",
                  "timestamp": message["timestamp"], "properties": {"path": "/"}, **more}
                 for j, (kind, more) in enumerate(steps)]  # fmt: skip
        later.setdefault(i + int(rng.integers(20, 400)), []).extend(block)
    for block in later.values():
        yield from block


@dataclass
class Expected:
    """What a person's sent messages imply for their counters."""

    anonymous_ids: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    orders: int = 0
    revenue: float = 0.0


def expected(messages: list[dict[str, Any]]) -> dict[str, Expected]:
    """Per person (their userId, else their anonymous id): their anonymous ids, and the event
    counts, orders and revenue their messages imply."""
    user_of = {m["anonymousId"]: m["userId"] for m in messages if m.get("userId")}
    people: dict[str, Expected] = {}
    for message in messages:
        anonymous_id = message["anonymousId"]
        person = people.setdefault(user_of.get(anonymous_id, anonymous_id), Expected())
        person.anonymous_ids.add(anonymous_id)
        name = event_name(message)
        if name is None:
            continue
        person.counts[name] += 1
        if name == "Order Completed":
            person.orders += 1
            person.revenue += float(message["properties"]["revenue"])
    return people


def profile_of(client: redis.Redis, anonymous_id: str) -> str | None:
    """The profile id an anonymous id resolves to now (following merges)."""
    pid = client.get(f"{{id:anonymous_id:{anonymous_id}}}")
    for _ in range(16):
        if pid is None:
            return None
        moved = client.hget(f"{{p:{pid.decode()}}}", "merged_into")
        if moved is None:
            return pid.decode()
        pid = moved
    return None
