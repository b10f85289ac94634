from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import redis.asyncio

from collector import STATS, Sink, SpoolReader, connect, migrate
from collector.reader import ensure_group
from edge.runtime.stores import redis_client
from edge.runtime.workers import start
from tests.conftest import worker_needs
from tests.helpers import count, die, fill

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def run_sink(
    redis_url: str, clickhouse_url: str, until: Any, consumer: str = "s1", **options: Any
) -> Sink:
    reader = SpoolReader(redis_client(redis_url), "sink", consumer)
    sink = Sink(reader, connect(clickhouse_url), interval=0.1, **options)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not until() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
        reader.client.close()  # a cluster client's node connections, not left to the GC
    return sink


def test_sink_drains_the_spool_into_events(
    redis_url: str, ch: Any, clickhouse_url: str, r: redis.Redis
) -> None:
    migrate(ch)
    fill(redis_url, batches=30, size=100)
    run_sink(redis_url, clickhouse_url, until=lambda: count(ch) >= 3000)
    assert count(ch) == 3000
    row = ch.query(
        "SELECT type, event, user_id, ip, JSONExtractInt(properties, 'revenue') FROM events "
        "WHERE message_id = 'm3-42'"
    ).result_rows
    assert row == [("track", "Order Completed", "u0", "198.51.100.0", 42)]
    assert r.hget(STATS, "sink_inserted") == b"3000"
    assert r.xpending("{spool}:log", "sink")["pending"] == 0


def test_a_batch_stored_but_not_acknowledged_is_replayed_once(
    redis_url: str, ch: Any, clickhouse_url: str, r: redis.Redis
) -> None:
    """The crash window of the sink: ClickHouse took the batch, the ack never happened."""
    migrate(ch)
    fill(redis_url, batches=5, size=100)
    reader = SpoolReader(r, "sink", "s1")
    reader.ensure_group()
    crashed = Sink(reader, connect(clickhouse_url))
    in_flight = reader.read(3, 100)
    assert crashed.store_batch(in_flight, threading.Event()) is not None  # then "dies"
    assert count(ch) == 300
    run_sink(
        redis_url,
        clickhouse_url,
        until=lambda: (
            r.xpending("{spool}:log", "sink")["pending"] == 0
            and r.hget(STATS, "sink_inserted") == b"500"
        ),
    )
    assert count(ch) == 500
    assert ch.query("SELECT uniqExact(message_id) FROM events").result_rows[0][0] == 500
    # The copy by person, one view further (read without FINAL: no duplicate to collapse).
    assert ch.query("SELECT count() FROM events_by_person").result_rows == [(500,)]


def test_a_dead_peers_batch_is_stored_once_by_another_sink(
    redis_url: str, ch: Any, clickhouse_url: str, r: redis.Redis
) -> None:
    migrate(ch)
    fill(redis_url, batches=4, size=50)
    reader = SpoolReader(r, "sink", "dead-peer")
    reader.ensure_group()
    held = reader.read(2, 100)
    Sink(reader, connect(clickhouse_url)).store_batch(held, threading.Event())
    die(reader)  # stored, not acknowledged: its lease lapses, the batch is the next holder's
    reader_alive = SpoolReader(r, "sink", "alive")
    sink = Sink(reader_alive, connect(clickhouse_url), interval=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 30
    while r.xpending("{spool}:log", "sink")["pending"] or r.hget(STATS, "sink_inserted") != b"200":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    assert count(ch) == 200


def test_an_entry_clickhouse_refuses_is_set_aside_and_the_rest_stored(
    redis_url: str, ch: Any, clickhouse_url: str, r: redis.Redis
) -> None:
    """A spool entry that passed no validation (written by something else, or a bug) must not
    stop the pipeline: it goes to the dead-letter stream, everything around it is stored."""
    migrate(ch)
    ensure_group(r, "sink")
    fill(redis_url, batches=3, size=10, prefix="a")
    poison = b'{"type":"track","messageId":"bad","receivedAt":"not a time"}\n'
    poison_id = r.xadd("{spool}:log", {"n": 1, "e": poison}).decode()
    fill(redis_url, batches=3, size=10, prefix="b")
    run_sink(redis_url, clickhouse_url, until=lambda: r.xpending("{spool}:log", "sink")["pending"]
             == 0 and r.hget(STATS, "sink_inserted") == b"60")  # fmt: skip
    assert count(ch) == 60
    ((dead_id, fields),) = r.xrange("{spool}:dead")
    assert dead_id.decode() == poison_id and fields[b"e"] == poison
    assert b"Code: " in fields[b"error"]
    assert r.hget(STATS, "sink_dead_letters") == b"1"


@pytest.mark.parametrize(
    "read_up_to",
    [
        pytest.param("0", id="updater-not-started-yet"),  # `kairos up` made its group at 0
        pytest.param(f"{int(time.time() * 1000) - 86_400_000}-0", id="after-a-quiet-day"),
    ],
)
def test_events_wait_for_an_updater_that_is_about_to_read_them(
    redis_url: str, ch: Any, clickhouse_url: str, r: redis.Redis, read_up_to: str
) -> None:
    """The profile updater's group exists but it has read nothing yet (or nothing since
    yesterday): it is about to read these events, not 56 years (a day) behind, so the sink
    waits for their profile ids, and the updater starting a second late leaves none without."""
    migrate(ch)
    ensure_group(r, "profiles")
    r.xgroup_setid("{spool}:log", "profiles", read_up_to)
    fill(redis_url, batches=20, size=50)
    _sink_with_a_late_updater(redis_url, ch, clickhouse_url, r)


def test_events_wait_for_an_updater_far_behind_within_the_bound(
    redis_url: str, ch: Any, clickhouse_url: str, r: redis.Redis
) -> None:
    """Under sustained overload the updater trails by more than a few seconds: the sink waits
    for it (the spool is the buffer) rather than storing events without their profile ids."""
    migrate(ch)
    ensure_group(r, "profiles")
    fill(redis_url, batches=10, size=50)
    time.sleep(6.0)  # the updater is now 6 s behind the newest entries (formerly: 5 s at most)
    fill(redis_url, batches=10, size=50, prefix="later")
    _sink_with_a_late_updater(redis_url, ch, clickhouse_url, r)


def test_past_the_bound_events_are_stored_without_ids_and_said_loudly(
    redis_url: str, ch: Any, clickhouse_url: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """An updater that stopped: once it is ``profile_wait`` behind, ClickHouse is not held back
    any longer; the events are counted, logged as an error and flagged for /healthz."""
    migrate(ch)
    ensure_group(r, "profiles")  # its updater never runs
    fill(redis_url, batches=4, size=50)
    began = time.monotonic()
    run_sink(redis_url, clickhouse_url, until=lambda: count(ch) >= 200, profile_wait=1.5)
    assert time.monotonic() - began >= 1.0  # it did wait for the updater first
    assert count(ch) == 200
    assert ch.query("SELECT count() FROM events WHERE profile_id = ''").result_rows == [(200,)]
    assert r.hget(STATS, "sink_unresolved") == b"200"
    assert abs(int(r.hget(STATS, "sink_unresolved_at") or 0) - time.time()) < 30
    assert any(record.levelname == "ERROR" and "too far behind" in record.getMessage()
               for record in caplog.records)  # fmt: skip


def _sink_with_a_late_updater(redis_url: str, ch: Any, clickhouse_url: str, r: redis.Redis) -> None:
    """Run the sink over the 1,000 spooled events; the profile updater starts a second after the
    sink took its first batch. Every event must be stored with its profile id."""
    stop = threading.Event()
    updater: list[threading.Thread] = []

    def late_updater() -> bool:
        if not updater and count(ch) == 0:
            time.sleep(1.0)  # the sink is holding the first batch by now
            updater.append(start("profiles", worker_needs(redis_url, "late"), stop, interval=0.05))
        return count(ch) >= 1000

    try:
        run_sink(redis_url, clickhouse_url, until=late_updater)
    finally:
        stop.set()
        for thread in updater:
            thread.join(30)
    assert count(ch) == 1000
    assert ch.query("SELECT count() FROM events WHERE profile_id = ''").result_rows == [(0,)]
    assert r.hget(STATS, "sink_unresolved") in (None, b"0")
