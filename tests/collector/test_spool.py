from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio

from collector import STATS, Layout, SpoolFull, SpoolReader, read_request
from collector.reader import ensure_group, spool_state, trim
from collector.spool import Spool
from edge.runtime.stores import async_redis_client

STREAM = Layout(1).partition(0).log  # a one-partition spool's stream
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def intake(*ids: str, **fields: object):
    batch = [{"type": "track", "event": "E", "userId": "u", "messageId": i, **fields} for i in ids]
    return read_request(
        json.dumps({"batch": batch}).encode(),
        kind="batch",
        content_type="application/json",
        content_encoding=None,
        received_at=NOW,
        ip=None,
    )


def append(redis_url: str, *batches, limit: int = 0):
    async def run():
        client = async_redis_client(redis_url)
        try:
            spool = Spool(client, limit=limit)
            return [await spool.append(b) for b in batches]
        finally:
            await spool.aclose()
            await client.aclose()

    return asyncio.run(run())


def test_one_entry_per_request_and_counters(redis_url: str, r: redis.Redis) -> None:
    first, second = append(redis_url, intake("a", "b", "c"), intake("d"))
    assert (first.accepted, first.duplicates, second.accepted) == (3, 0, 1)
    assert r.xlen(STREAM) == 2
    assert r.hget(STATS, "accepted") == b"4"


def test_ids_seen_before_are_dropped_across_requests(redis_url: str, r: redis.Redis) -> None:
    append(redis_url, intake("a", "b"))
    (again,) = append(redis_url, intake("b", "c", "a"))
    assert (again.accepted, again.duplicates) == (1, 2)
    (only_dups,) = append(redis_url, intake("a", "c"))
    assert (only_dups.accepted, only_dups.duplicates, only_dups.entry_id) == (0, 2, None)
    assert r.xlen(STREAM) == 2
    assert r.hget(STATS, "duplicates") == b"4"
    reader = SpoolReader(r, "g", "c1")
    reader.ensure_group()
    entries = reader.read(10, 10)
    assert [[m.message_id for m in e.messages()] for e in entries] == [["a", "b"], ["c"]]


def test_seen_ids_expire_after_the_window(redis_url: str, r: redis.Redis) -> None:
    append(redis_url, intake("a"))
    (key,) = r.scan_iter("{spool}:seen:*")
    ttl = r.ttl(key)
    assert 24 * 3600 < ttl <= 28 * 3600


def test_full_spool_refuses_with_retry_after(redis_url: str, r: redis.Redis) -> None:
    append(redis_url, intake("a"), intake("b"), limit=2)
    with pytest.raises(SpoolFull, match="spool holds 2 entries, its limit is 2") as caught:
        append(redis_url, intake("c"), limit=2)
    assert caught.value.retry_after > 0
    assert r.xlen(STREAM) == 2
    # Refused ids were not recorded as seen: the client's retry is accepted later.
    (retry,) = append(redis_url, intake("c"), limit=3)
    assert retry.accepted == 1


def test_large_batches_cross_the_lua_unpack_limit(redis_url: str, r: redis.Redis) -> None:
    ids = [f"m{i}" for i in range(3000)]
    (done,) = append(redis_url, intake(*ids))
    assert done.accepted == 3000
    (again,) = append(redis_url, intake(*ids[-1500:], "new"))
    assert (again.accepted, again.duplicates) == (1, 1500)


def test_trim_keeps_what_any_group_has_not_acknowledged(redis_url: str, r: redis.Redis) -> None:
    ensure_group(r, "sink")
    ensure_group(r, "profiles")
    append(redis_url, intake("a"), intake("b"), intake("c"))
    sink = SpoolReader(r, "sink", "s1")
    profiles = SpoolReader(r, "profiles", "p1")
    batch = sink.read(2, 10)
    sink.ack(batch, {"sink_inserted": 2})
    assert trim(r) == 0  # profiles has read nothing yet
    profiles.ack(profiles.read(10, 10), {})
    assert trim(r) == 2  # a and b are done for every group; c waits for the sink
    assert [e.messages()[0].message_id for e in sink.read(10, 10)] == ["c"]
    assert spool_state(r, "sink")["length"] == 1
