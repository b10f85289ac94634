"""The audit log's drain (``collector.audit.AuditDrain``) on real Redis and ClickHouse: entries
move from the stream into the ``audit`` table once each, a batch stored by a sink that died
before acknowledging it is not stored twice, and a failed insert keeps its batch for the next
try."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from collector import Sink, SpoolReader, connect, migrate
from collector.audit import GROUP, STREAM, AuditDrain, append, entry
from collector.schema import drop_tables
from edge.runtime.stores import redis_client

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path


def _append(r: redis.Redis, count: int) -> list[str]:
    made = [entry("key:ops", "api", "10.0.0.1", "update", "segment", f"s{n}", {"v": n},
                  {"v": n + 1}) for n in range(count)]  # fmt: skip
    for found in made:
        append(r, found)
    return [found.id for found in made]


def _rows(ch: Any) -> list[tuple[Any, ...]]:
    return list(ch.query("SELECT id, actor, changes FROM audit FINAL ORDER BY id").result_rows)


def test_entries_move_into_the_table_once_and_leave_the_stream(r: redis.Redis, ch: Any) -> None:
    migrate(ch)
    ids = _append(r, 7)
    drain = AuditDrain(r, ch, None, "sink-1", batch=5)
    assert [drain.once(), drain.once(), drain.once()] == [5, 2, 0]
    rows = _rows(ch)
    assert [row[0] for row in rows] == sorted(ids)
    first = next(row for row in rows if row[0] == ids[0])
    assert first[1:] == ("key:ops", '[{"path":"v","before":0,"after":1}]')
    assert r.xlen(STREAM) == 0 and r.xpending(STREAM, GROUP)["pending"] == 0


def test_a_batch_stored_by_a_sink_that_died_is_stored_once(r: redis.Redis, ch: Any) -> None:
    """The first sink inserts, then dies before it acknowledges; the next claims the batch
    (pending past its idle time) and stores it again: one row per entry."""
    migrate(ch)
    ids = _append(r, 4)
    dead = AuditDrain(r, ch, None, "sink-dead")
    taken = dead.take()
    assert dead.store_rows(taken[0][0], taken[-1][0], [p for _, p in taken if p])
    heir = AuditDrain(r, ch, None, "sink-heir", claim_idle_ms=0)
    assert heir.once() == 4
    assert [row[0] for row in _rows(ch)] == sorted(ids)
    assert ch.query("SELECT count() FROM audit FINAL").result_rows == [(4,)]
    assert r.xlen(STREAM) == 0


def test_a_failed_insert_keeps_the_batch_for_the_next_try(r: redis.Redis, ch: Any) -> None:
    drop_tables(ch)  # no audit table: ClickHouse refuses the insert
    ids = _append(r, 3)
    drain = AuditDrain(r, ch, None, "sink-1")
    assert drain.once() == 0
    assert r.xpending(STREAM, GROUP)["pending"] == 3 and r.xlen(STREAM) == 3
    migrate(ch)
    assert drain.once() == 3  # its own pending batch, first
    assert [row[0] for row in _rows(ch)] == sorted(ids)


def test_the_sink_drains_the_log_and_a_restarted_one_adds_no_duplicate(
    redis_url: str, r: redis.Redis, ch: Any, clickhouse_url: str
) -> None:
    migrate(ch)
    ids = _append(r, 3)
    for round in range(2):  # a sink, stopped; then another (a restart) with more entries
        reader = SpoolReader(redis_client(redis_url), "sink", f"s{round}")
        sink = Sink(reader, connect(clickhouse_url), interval=0.1, profiles_group=None)
        stop = threading.Event()
        thread = threading.Thread(target=sink.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 60
        while len(_rows(ch)) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(30)
        reader.client.close()
        ids += _append(r, 2) if round == 0 else []
    assert [row[0] for row in _rows(ch)] == sorted(ids)
    assert ch.query("SELECT count() FROM audit").result_rows == [(5,)]  # even without FINAL
