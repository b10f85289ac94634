"""The external-server path (docker-compose): runs only when real servers are given.

    CLICKHOUSE_URL=http://user:pass@host:8123/db REDIS_URL=redis://host:6379/0 pytest -m server

The rest of the suite then runs on those servers too; these tests pin what only a server shows.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from collector import connect, migrate
from collector.reader import SpoolReader
from collector.sink import Sink
from edge.runtime.stores import redis_client
from tests.helpers import count, fill

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not (
            os.environ.get("CLICKHOUSE_URL", "").startswith("http") and os.environ.get("REDIS_URL")
        ),
        reason="set CLICKHOUSE_URL (http://…) and REDIS_URL to run against real servers",
    ),
]


def test_http_client_migrates_inserts_and_deduplicates(
    redis_url: str, clickhouse_url: str, ch: Any
) -> None:

    assert migrate(ch) == [1]
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
    with pytest.raises(Exception, match="readonly"):
        readonly.query("INSERT INTO events (message_id) VALUES ('x')")
