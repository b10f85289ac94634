"""The partitioned spool: a person's messages in one partition, a batch across partitions
all-or-nothing, the count fixed at creation, partitions spread over a cluster's masters."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import redis

from collector import Layout, SpoolFull, SpoolReader, layout_of, read_request
from collector.coalesce import Coalescer
from collector.partitions import PartitionsMismatch
from collector.spool import DecisionLog, Spool, append_command, partition_of, spool_stats
from edge.runtime.stores import async_redis_client

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FOUR = Layout(4)


def intake(*people: str, prefix: str = "m"):
    batch = [{"type": "track", "event": "E", "anonymousId": who, "messageId": f"{prefix}{i}"}
             for i, who in enumerate(people)]  # fmt: skip
    return read_request(json.dumps({"batch": batch}).encode(), kind="batch",
                        content_type="application/json", content_encoding=None,
                        received_at=NOW, ip=None)  # fmt: skip


def append(redis_url: str, *batches, limit: int = 0):
    async def run():
        client = async_redis_client(redis_url)
        spool = Spool(client, FOUR, limit=limit)
        try:
            results = []
            for batch in batches:
                try:
                    results.append(await spool.append(batch))
                except SpoolFull as exc:
                    results.append(exc)
            return results
        finally:
            await spool.aclose()
            await client.aclose()

    return asyncio.run(run())


def people_in(partition: int, count: int) -> list[str]:
    found = [f"anon-{i}" for i in range(1000) if FOUR.of(f"anon-{i}") == partition]
    return found[:count]


def read_all(r: redis.Redis, layout: Layout = FOUR) -> dict[int, list[list[str]]]:
    reader = SpoolReader(r, "g", "c", layout)
    reader.ensure_group()
    seen: dict[int, list[list[str]]] = {}
    for _ in range(50):
        entries = reader.read(100, 1)
        if not entries:
            if len(reader.held) == layout.count and not any(
                r.xlen(p.log) > sum(len(x) for x in seen.get(p.index, []))
                for p in layout.partitions
            ):
                break
            continue
        for entry in entries:
            seen.setdefault(entry.partition.index, []).append(
                [str(m.anonymous_id) for m in entry.messages()] if entry.kind == "events" else []
            )
        reader.ack(entries, {})
    return seen


def test_the_count_is_fixed_when_the_spool_is_created(r: redis.Redis) -> None:
    assert layout_of(r, 4).count == 4
    assert layout_of(r).count == 4  # as created
    with pytest.raises(PartitionsMismatch, match="created with 4 partition"):
        layout_of(r, 8)
    with pytest.raises(ValueError, match="not a power of two"):
        Layout(6)


def test_a_spool_touched_without_a_count_stays_at_one(r: redis.Redis) -> None:
    assert layout_of(r).count == 1
    with pytest.raises(PartitionsMismatch):
        layout_of(r, 4)


def test_each_person_goes_to_one_partition_and_a_batch_to_every_part(
    redis_url: str, r: redis.Redis
) -> None:
    layout_of(r, 4)
    people = [f"anon-{i}" for i in range(40)]
    (done,) = append(redis_url, intake(*people, *people, prefix="x"))
    assert done.accepted == 80
    seen = read_all(r)
    assert set(seen) == {FOUR.of(p) for p in people}
    for index, entries in seen.items():
        assert len(entries) == 1  # one entry per partition the request touched
        assert all(FOUR.of(who) == index for who in entries[0])
    assert spool_stats(r)["accepted"] == 80


def test_a_retry_after_a_partial_failure_stores_nothing_twice(
    redis_url: str, r: redis.Redis
) -> None:
    layout_of(r, 4)
    full, other = people_in(0, 2), people_in(1, 2)
    append(redis_url, intake(full[0], prefix="a"), intake(full[1], prefix="b"))
    mixed = intake(full[0], other[0], other[1], prefix="c")
    (refused,) = append(redis_url, mixed, limit=2)  # partition 0 is full, 1 takes its part
    assert isinstance(refused, SpoolFull)
    assert r.xlen(FOUR.partition(1).log) == 1
    (retry,) = append(redis_url, intake(full[0], other[0], other[1], prefix="c"), limit=3)
    assert (retry.accepted, retry.duplicates) == (1, 2)
    stored = read_all(r)
    assert sorted(sum(stored[1], [])) == sorted(other)  # once, though sent twice
    assert sum(stored[0], []) == [full[0], full[1], full[0]]


def test_decisions_go_to_their_persons_partition(redis_url: str, r: redis.Redis) -> None:
    layout_of(r, 4)
    first, second = people_in(2, 1)[0], people_in(3, 1)[0]

    async def run():
        client = async_redis_client(redis_url)
        calls = Coalescer(client)
        log = DecisionLog(calls, FOUR)
        try:
            await asyncio.gather(log.append([b'{"d":1}\\n'], first),
                                 log.append([b'{"d":2}\\n'], second))  # fmt: skip
        finally:
            await calls.aclose()
            await client.aclose()

    asyncio.run(run())
    assert [r.xlen(p.log) for p in FOUR.partitions] == [0, 0, 1, 1]


def test_a_command_reaches_every_partition(r: redis.Redis) -> None:
    layout = layout_of(r, 4)
    made = append_command(r, {"kind": "erase", "profiles": ["p_1"]})
    assert [m.split("/")[0] for m in made] == ["0", "1", "2", "3"]
    assert all(r.xlen(p.log) == 1 for p in layout.partitions)


def test_messages_without_a_person_spread_by_message_id() -> None:
    from collector import wire

    spread = {partition_of(FOUR, wire.Track(event="E", message_id=f"m{i}")) for i in range(64)}
    assert spread == {0, 1, 2, 3}
    by_user = wire.Track(event="E", user_id="u1", message_id="x")
    assert partition_of(FOUR, by_user) == FOUR.of("u1")


@pytest.mark.parametrize("redis_server", ["cluster"], indirect=True)
def test_partitions_spread_over_a_clusters_masters(r: redis.Redis) -> None:
    layout = layout_of(r, 8)
    nodes = r.cluster_nodes()  # type: ignore[attr-defined]
    owners = set()
    for partition in layout.partitions:
        node = r.get_node_from_key(partition.log)  # type: ignore[attr-defined]
        owners.add((node.host, node.port))
    masters = {tuple(k.split("@")[0].rsplit(":", 1)) for k, v in nodes.items()
               if "master" in v["flags"]}  # fmt: skip
    assert len(owners) == len(masters) == 3
