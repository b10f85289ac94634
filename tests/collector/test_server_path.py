"""The ClickHouse server path: clickhouse-connect's HTTP client, against the test front over the
embedded engine (tests/clickhouse_http.py) or, with CLICKHOUSE_URL set, a real server:

    CLICKHOUSE_URL=http://user:pass@host:8123/db pytest

(the rest of the suite then runs on that server too). These tests pin what only the HTTP path
shows: the client's own settings, its compressed inserts and answers, authentication.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from collector import connect, migrate
from collector.reader import SpoolReader
from collector.schema import MIGRATIONS
from collector.sink import Sink
from edge.runtime.stores import redis_client
from tests.helpers import count, fill

pytestmark = pytest.mark.clickhouse_http(only=True)


def test_http_client_migrates_inserts_and_deduplicates(
    redis_url: str, clickhouse_url: str, ch: Any
) -> None:
    assert migrate(ch) == [version for version, _, _ in MIGRATIONS]
    assert migrate(ch) == []  # idempotent
    fill(redis_url, batches=3, size=10)
    reader = SpoolReader(redis_client(redis_url), "sink", "server-test")
    reader.ensure_group()
    batch = reader.read(10, 100)
    sink = Sink(reader, connect(clickhouse_url))
    sink.store_batch(batch, threading.Event())
    sink.store_batch(batch, threading.Event())  # the replay after a crash
    assert count(ch) == 30


def test_http_readonly_client_refuses_writes(clickhouse_url: str, ch: Any) -> None:
    migrate(ch)
    readonly = connect(clickhouse_url, readonly=True)
    assert readonly.query("SELECT count() FROM events").result_rows == [(0,)]
    with pytest.raises(DatabaseError, match=r"Code: 164\..*\(READONLY\)"):
        readonly.query("INSERT INTO events (message_id) VALUES ('x')")


def test_compressed_native_inserts_and_answers_round_trip(ch: Any) -> None:
    """clickhouse-connect's own inserts (Native, lz4) and answers (Native, compressed), with
    the types the engine's tables use, and parameters too long for the URL (a form body)."""
    ch.command("DROP TABLE IF EXISTS round_trip SYNC")
    ch.command(
        "CREATE TABLE round_trip (n UInt64, name LowCardinality(String), at DateTime64(3, 'UTC'), "
        "items Array(String), score Nullable(Float64)) ENGINE = MergeTree ORDER BY n"
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [[n, f"kind-{n % 7}", start + timedelta(milliseconds=n), [f"i{n}"] * (n % 3),
             None if n % 5 else n / 2] for n in range(20_000)]  # fmt: skip
    ch.insert("round_trip", rows, column_names=["n", "name", "at", "items", "score"])
    wanted = [f"kind-{k}" for k in range(7)] + [f"other-{k}" for k in range(3_000)]
    answer = ch.query(
        "SELECT count(), sum(n), max(at), sum(length(items)), sum(score) FROM round_trip "
        "WHERE name IN {names:Array(String)}",
        parameters={"names": wanted},
    )
    assert answer.result_rows == [(
        20_000, sum(range(20_000)), (start + timedelta(milliseconds=19_999)).replace(tzinfo=None),
        sum(n % 3 for n in range(20_000)), sum(n / 2 for n in range(0, 20_000, 5)),
    )]  # fmt: skip
    ch.command("DROP TABLE round_trip SYNC")


def test_a_wrong_password_is_refused(clickhouse_url: str) -> None:
    parts = urlsplit(clickhouse_url)
    wrong = parts._replace(netloc=f"{parts.username}:wrong@{parts.hostname}:{parts.port}")
    with pytest.raises(DatabaseError, match=r"Code: 516\..*Authentication failed"):
        connect(urlunsplit(wrong))
