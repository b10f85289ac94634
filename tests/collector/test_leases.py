"""Leases: instances of a worker kind share the partitions, a dead one's move to the others
within the lease time, and an instance that lost a partition cannot acknowledge for it."""

from __future__ import annotations

import time

import pytest
import redis

from collector import Layout, SpoolReader, layout_of, wire
from collector.reader import LeaseLost
from collector.spool import append_now

FOUR = Layout(4)


def fill(r: redis.Redis, count: int = 40) -> None:
    messages = [wire.Track(event="E", anonymous_id=f"anon-{i}", message_id=f"m{i}")
                for i in range(count)]  # fmt: skip
    append_now(r, messages, FOUR)


def reader(r: redis.Redis, name: str, lease_ms: int = 10_000) -> SpoolReader:
    made = SpoolReader(r, "g", name, FOUR, lease_ms=lease_ms)
    made.ensure_group()
    return made


def settle(*readers: SpoolReader) -> None:
    for _ in range(3):
        for each in readers:
            each.balance(force=True)


def test_two_instances_take_two_partitions_each(r: redis.Redis) -> None:
    layout_of(r, 4)
    a, b = reader(r, "a"), reader(r, "b")
    settle(a, b)
    held_a, held_b = {p.index for p in a.held}, {p.index for p in b.held}
    assert len(held_a) == len(held_b) == 2 and not held_a & held_b
    b.release()  # a clean stop: a takes everything at its next balance
    a.balance(force=True)
    assert len(a.held) == 4


def test_a_dead_instances_partitions_and_its_batch_move_after_the_lease(r: redis.Redis) -> None:
    layout_of(r, 4)
    fill(r)
    dead = reader(r, "dead", lease_ms=300)
    dead.balance(force=True)
    assert len(dead.held) == 4
    in_flight = dead.read(100, 10)  # then it dies without acknowledging
    dead.leases._closed.set()  # (its renewals stop with it)
    alive = reader(r, "alive", lease_ms=300)
    alive.balance(force=True)
    assert alive.held == []  # leases still running
    time.sleep(0.5)
    alive.balance(force=True)
    assert len(alive.held) == 4
    replayed = alive.read(100, 10)
    assert [(e.partition, e.id) for e in replayed] == [(e.partition, e.id) for e in in_flight]
    with pytest.raises(LeaseLost):
        dead.ack(in_flight, {})  # woke up late: its acknowledgement is refused
    alive.ack(replayed, {})
    assert r.xpending(replayed[0].partition.log, "g")["pending"] == 0


def test_every_message_is_read_once_by_two_instances(r: redis.Redis) -> None:
    layout_of(r, 4)
    fill(r, 200)
    a, b = reader(r, "a"), reader(r, "b")
    settle(a, b)
    seen: list[str] = []
    for _ in range(20):
        for each in (a, b):
            entries = each.read(5, 1)
            seen += [str(m.message_id) for e in entries for m in e.messages()]
            if entries:
                each.ack(entries, {"read": sum(e.count for e in entries)})
    assert sorted(seen) == sorted(f"m{i}" for i in range(200))


def test_an_instance_beyond_the_partition_count_stands_by(r: redis.Redis) -> None:
    one = Layout(1)
    layout_of(r, 1)
    first = SpoolReader(r, "g", "first", one)
    second = SpoolReader(r, "g", "second", one)
    settle(first, second)
    assert [len(first.held), len(second.held)] == [1, 0]
    first.release()
    second.balance(force=True)
    assert len(second.held) == 1
