"""Fixtures for failure drills: ``kairos up`` child processes, their pids, senders that keep
count of what the engine acknowledged, and deadlines that bound each drill.

Every drill engine gets a ``kairos.toml`` with rate limits off: drills push many requests from
127.0.0.1 and must see the engine's own back-pressure, not the per-IP limit.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SECRET_KEY, WRITE_KEY, Process, basic

LIMITS_OFF = "[limits]\nper_ip = 0\nper_key = 0\n"


class Deadline:
    """A drill's time bound (the suite has no pytest-timeout): every wait checks it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        assert self.left() > 0, f"drill over its {self.seconds:.0f} s bound while {what}"

    def wait_for(self, what: str, condition: Callable[[], Any], every: float = 0.1) -> Any:
        while True:
            result = condition()
            if result:
                return result
            self.check(f"waiting for {what}")
            time.sleep(every)


@pytest.fixture
def drill_engine(kairos_process: Callable[..., Process]) -> Callable[..., Process]:
    """``kairos up ARGS`` on a fresh data dir with rate limits off and ``instances`` of each
    worker (two by default, sharing four partitions; the sink stays one: it owns embedded
    ClickHouse); not started yet."""

    def make(*args: str, instances: int = 2) -> Process:
        process = kairos_process("--worker-instances", str(instances), *args)
        (process.data_dir / "kairos.toml").write_text(LIMITS_OFF)
        return process

    return make


def pid_of(process: Process, name: str) -> int:
    """The pid of ``name``: "redis", or a supervised child ("sink", "api-1", …)."""
    path = (
        process.data_dir / "redis" / "redis.pid"
        if name == "redis"
        else process.data_dir / "run" / f"{name}.pid"
    )
    return int(path.read_text())


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie no one reaps counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(process: Process, deadline: Deadline) -> None:
    """Wait until every process a killed ``kairos up`` left (its pid files) has exited."""
    paths = [process.data_dir / "redis" / "redis.pid", *(process.data_dir / "run").glob("*.pid")]
    pids = [int(p.read_text()) for p in paths if p.exists() and p.read_text().strip()]
    deadline.wait_for("the killed engine's processes to exit", lambda: not any(map(alive, pids)))


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block (it takes connections and never answers), then SIGCONT."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class Sender(threading.Thread):
    """POSTs /v1/batch of ``size`` messages with ids ``<prefix>-<n>`` until stopped, and keeps
    count: ``acked`` (answered 200), ``sent`` (every id tried), ``statuses`` (status or error
    name), ``no_retry_after`` (503s without a Retry-After header)."""

    def __init__(self, url: str, prefix: str, size: int = 20, pause: float = 0.0):
        super().__init__(name=f"sender-{prefix}", daemon=True)
        self.url, self.prefix, self.size, self.pause = url, prefix, size, pause
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self.refused: set[str] = set()  # answered 503: not accepted
        self.statuses: Counter[int | str] = Counter()
        self.no_retry_after = 0
        self.stop = threading.Event()
        self._next = 0

    def batch(self, client: httpx.Client) -> int | str:
        ids = [f"{self.prefix}-{self._next + i}" for i in range(self.size)]
        self._next += self.size
        self.sent.update(ids)
        body = {"batch": [{"type": "track", "event": "Drill", "userId": f"u-{m}", "messageId": m}
                          for m in ids]}  # fmt: skip
        try:
            answer = client.post(self.url + "/v1/batch", json=body, headers=basic(WRITE_KEY))
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if answer.status_code == 200:
            self.acked.update(ids)
        elif answer.status_code == 503:
            self.refused.update(ids)
            self.no_retry_after += "retry-after" not in answer.headers
        return answer.status_code

    def run(self) -> None:
        # A connection per request: the API processes sharing the port all get some.
        with httpx.Client(timeout=15, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.stop.is_set():
                status = self.batch(client)
                self.statuses[status] += 1
                if isinstance(status, str):
                    time.sleep(0.05)  # the engine is down: do not spin
                elif self.pause:
                    time.sleep(self.pause)

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        assert not self.is_alive()


def sql(process: Process, query: str) -> list[list[Any]]:
    answer = httpx.post(
        process.url + "/v1/sql", json={"query": query}, headers=basic(SECRET_KEY), timeout=60
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["rows"])


def stored_counts(process: Process, prefix: str) -> dict[str, int]:
    """How many rows ``events`` holds of each message id starting with ``prefix``-."""
    counts: dict[str, int] = {}
    page = 5000  # under the SQL endpoint's 10,000-row cap
    while True:
        rows = sql(
            process,
            f"SELECT message_id, count() FROM events WHERE startsWith(message_id, '{prefix}-') "
            f"GROUP BY message_id ORDER BY message_id LIMIT {page} OFFSET {len(counts)}",
        )
        counts.update({row[0]: int(row[1]) for row in rows})
        if len(rows) < page:
            return counts


def wait_stored(process: Process, prefix: str, wanted: set[str], deadline: Deadline) -> None:
    """Wait until every id in ``wanted`` is stored (more may be), then for the sink to settle."""

    def done() -> bool:
        counts = stored_counts(process, prefix)
        return wanted <= counts.keys()

    deadline.wait_for(f"{len(wanted)} acknowledged messages in ClickHouse", done, every=0.5)
    time.sleep(1.5)  # anything still trickling in (a duplicate would) lands now
