"""The spool's partitions: which messages go where, and the keys each partition owns.

A spool has P partitions (a power of two), fixed when it is created (``{spool}:partitions``):
changing P would move people to other partitions and break the per-partition order every
worker relies on. Each partition is a stream with its own dedup sets, stats, profile ids and
leases under one hash tag, so a script sees only its own slot and partitions spread over a
cluster's shards. The tag of partition p is the first ``{spool.p.n}`` whose slot lies in the
p-th P-th of the slot range: a cluster's masters split the range evenly, so the partitions
split evenly over them. A one-partition spool keeps the ``{spool}`` tag, shared with the
spool-wide keys.

A message's partition comes from the person: ``anonymousId`` first (the browser's id, on every
message a browser sends, before and after login: one device's stream stays in one partition,
in order), else ``userId`` (server-side events), else the ``messageId``. One person's devices,
or a server's events for a user, can therefore land in different partitions: the profile
updater claims identities atomically so that concurrent logins on two partitions still end in
one profile; what is ordered is each device's (and each server identity's) stream, not the
whole person's.

How to pick P: one instance of a worker kind serves one partition or more, never fewer, so P
bounds how many instances of each kind can share the work. Take the number of worker hosts
you may run, times two, rounded up to a power of two: 8 for up to 4 hosts. Every partition
costs a poll per worker and a stream per Redis shard; one is right for one host.

Examples:
    >>> layout = Layout(1)
    >>> layout.partition(0).log, layout.of("a-device")
    ('{spool}:log', 0)
    >>> four = Layout(4)
    >>> [key_slot(four.partition(p).tag) * 4 // SLOTS for p in range(4)]
    [0, 1, 2, 3]
    >>> four.of("a-device") == four.of("a-device")
    True
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import redis
import redis.asyncio

from collector.slots import key_slot

__all__ = [
    "PARTITIONS",
    "SLOTS",
    "Layout",
    "Partition",
    "PartitionsMismatch",
    "layout_of",
    "layout_of_async",
]

PARTITIONS = "{spool}:partitions"  # how many, set once when the spool is created
SLOTS = 16_384
SPOOL_TAG = "{spool}"


class PartitionsMismatch(ValueError):
    """The spool exists with another partition count than the one asked for."""

    def __init__(self, stored: int, requested: int):
        super().__init__(
            f"--spool-partitions: the spool was created with {stored} partition(s) and keeps "
            f"them; {requested} would move people to other partitions (leave it unset, or "
            f"use {stored})"
        )


@dataclass(frozen=True, slots=True)
class Partition:
    """The keys of one partition (all under ``tag``: one slot)."""

    index: int
    tag: str

    @property
    def log(self) -> str:
        return f"{self.tag}:log"  # the stream

    @property
    def stats(self) -> str:
        return f"{self.tag}:stats"

    @property
    def dead(self) -> str:
        return f"{self.tag}:dead"  # entries ClickHouse refused as data, kept for people

    @property
    def seen(self) -> str:
        return f"{self.tag}:seen:"  # + dedup bucket

    @property
    def pids(self) -> str:
        return f"{self.tag}:pids:"  # + entry id: each message's profile id (profile updater)

    def lease(self, group: str) -> str:
        return f"{self.tag}:lease:{group}"  # who serves this partition for ``group``


class Layout:
    """A spool of ``count`` partitions."""

    def __init__(self, count: int):
        if count < 1 or count & (count - 1):
            raise ValueError(f"--spool-partitions: {count} is not a power of two (1, 2, 4, 8, …)")
        self.count = count

    @cached_property
    def partitions(self) -> tuple[Partition, ...]:
        if self.count == 1:
            return (Partition(0, SPOOL_TAG),)
        return tuple(Partition(p, _tag(p, self.count)) for p in range(self.count))

    def partition(self, index: int) -> Partition:
        return self.partitions[index]

    def of(self, identity: str) -> int:
        """The partition of a person's identity (``anonymousId``, else ``userId``, …)."""
        if self.count == 1:
            return 0
        return zlib.crc32(identity.encode()) & (self.count - 1)


def _tag(index: int, count: int) -> str:
    low, high = index * SLOTS // count, (index + 1) * SLOTS // count
    n = 0
    while not low <= key_slot(f"spool.{index}.{n}") < high:
        n += 1
    return f"{{spool.{index}.{n}}}"


def layout_of(client: redis.Redis, requested: int | None = None, new: int = 1) -> Layout:
    """The spool's layout: as created, or created now with ``requested`` partitions (``new``
    when not given: whoever touches a spool first fixes its count, so that one created by a
    worker started without the option cannot change under data). Raises
    ``PartitionsMismatch`` when it exists with another count than ``requested``."""
    Layout(requested or new)  # a bad count fails before anything is written
    client.set(PARTITIONS, requested or new, nx=True)
    return _checked(int(client.get(PARTITIONS) or 1), requested)


async def layout_of_async(client: redis.asyncio.Redis, requested: int | None = None) -> Layout:
    """``layout_of`` for the request path."""
    Layout(requested or 1)
    await client.set(PARTITIONS, requested or 1, nx=True)
    return _checked(int(await client.get(PARTITIONS) or 1), requested)


def _checked(stored: int, requested: int | None) -> Layout:
    if requested is not None and requested != stored:
        raise PartitionsMismatch(stored, requested)
    return Layout(stored)
