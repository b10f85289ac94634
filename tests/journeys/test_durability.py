"""The journeys worker survives kill -9 and replays without sending anything twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from collector.reader import SpoolReader, ensure_group
from edge.runtime.stores import redis_client
from journeys.store import OUTBOX, SENT, TIMERS
from journeys.worker import JourneyWorker
from tests.conftest import Engine
from tests.helpers import eventually
from tests.journeys.conftest import Receiver, abandoned_cart, put_journey, run_of, track


def quick(url: str, wait: str = "3s") -> dict[str, Any]:
    journey = abandoned_cart(url)
    journey["steps"]["wait"]["duration"] = wait
    return journey


@pytest.fixture
def worker_process(engine: Engine) -> Iterator[Any]:
    """``kairos worker journeys`` as a child process (started and restarted by the test)."""
    made: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "worker", "journeys",
                                 "--redis-url", engine.settings.redis_url, "--consumer", "w1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        made.append(proc)
        return proc

    yield start
    for proc in made:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # a worker process killed and restarted
def test_kill_9_between_scheduling_and_sending_delivers_once(
    engine: Engine, receiver: Receiver, worker_process: Any
) -> None:
    put_journey(engine, "abandoned_cart", quick(receiver.url))
    r = redis_client(engine.settings.redis_url)
    ensure_group(r, "journeys")  # as `kairos up` does before any append: nothing is trimmed unread
    worker = worker_process()
    track(engine, "ada", "Product Added", product_id="hat1")
    eventually(lambda: r.zcard(TIMERS) == 1)  # scheduled, not yet due
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert receiver.received == []
    time.sleep(3)  # it falls due while no worker runs
    worker_process()
    eventually(lambda: receiver.received)
    time.sleep(2)
    assert len(receiver.received) == 1
    assert run_of(engine, "ada", "abandoned_cart")["ended"] == "completed"


def test_a_replayed_batch_and_a_second_send_change_nothing(
    engine: Engine, receiver: Receiver
) -> None:
    put_journey(engine, "abandoned_cart", quick(receiver.url, wait="1m"))
    r = redis_client(engine.settings.redis_url)
    clock = [int(time.time() * 1000)]
    worker = JourneyWorker(SpoolReader(r, "journeys", "replay"), r, clock=lambda: clock[0])
    worker.reader.ensure_group()
    for who in ("ada", "bob"):
        track(engine, who, "Product Added", product_id="hat1")
    eventually(
        lambda: (
            run_of(engine, "bob", "abandoned_cart") is None and r.exists("{id:anonymous_id:bob}")
        )
    )
    entries = worker.reader.read(100, 100)
    worker.process(entries)
    first = {w: run_of(engine, w, "abandoned_cart") for w in ("ada", "bob")}
    assert all(run["step"] == "wait" for run in first.values())
    worker.process(entries)  # the same batch again, as after a crash before the ack
    assert {w: run_of(engine, w, "abandoned_cart") for w in ("ada", "bob")} == first
    assert r.zcard(TIMERS) == 2
    clock[0] += 61_000
    worker._caught_up = True
    worker.tick()
    assert len(receiver.received) == 2 and r.hlen(SENT) == 2 and r.zcard(OUTBOX) == 0
    worker.tick()  # again: nothing is due, nothing is sent twice
    worker.send(clock[0])
    assert len(receiver.received) == 2
    assert len({m["headers"]["Idempotency-Key"] for m in receiver.received}) == 2
