"""The journeys' keys per spool partition: each partition's timers and outbox, and how far each
partition's events have been applied (the watermark timers and actions wait for).

A run lives in the partition of the event that entered it (``Run.home``): its timer and its
actions go to that partition's keys, worked only by the journeys instance holding that
partition's lease, so instances share the timers and the outbox as they share the spool.
Partition 0 keeps the keys of before (``{jrn}:timers``, ``{jrn}:outbox``, ``{jrn}:sent``),
whatever the partition count: a one-partition engine is what it was, and the timers and outbox
of an engine from before partitions are partition 0's, with no migration. The others' tags are
chosen like the spool's (``collector.partitions``): the p-th one's slot lies in the p-th P-th
of the slot range, so they spread over a cluster's masters.

One person's events can come through several partitions (two devices, a server's events by
``userId``), so an exit can arrive through another partition than the run's. Each instance
therefore marks, per partition it holds, when a poll last found that partition caught up
(``{jrn}:caught``, on the worker's clock), and a timer or an action falls due only once every
partition's mark has passed its time: an exit sent before then has been applied, whichever
partition it came through. The price: a partition that stalls (its holder dead, until its lease
lapses) holds back every partition's timers and actions for as long.

Examples:
    >>> [shard_of(Layout(1), 0).timers, shard_of(Layout(4), 0).timers]
    ['{jrn}:timers', '{jrn}:timers']
    >>> four = [shard_of(Layout(4), p) for p in range(1, 4)]
    >>> [key_slot(s.tag) * 4 // SLOTS for s in four]
    [1, 2, 3]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import redis

from collector.partitions import PARTITIONS, SLOTS, Layout
from collector.slots import key_slot

__all__ = ["CAUGHT", "Shard", "caught_up", "layout_now", "shard_of", "shards"]

CAUGHT = "{jrn}:caught"  # hash: partition -> worker clock (ms) of its last caught-up poll
_FIRST = "{jrn}"


@dataclass(frozen=True, slots=True)
class Shard:
    """The timers and the outbox of one partition (all under ``tag``: one slot)."""

    index: int
    tag: str

    @property
    def timers(self) -> str:
        return f"{self.tag}:timers"  # zset "<pid> <journey>" -> when its wait ends (ms)

    @property
    def outbox(self) -> str:
        return f"{self.tag}:outbox"  # zset action key -> when to (re)try sending it (ms)

    @property
    def sent(self) -> str:
        return f"{self.tag}:sent"  # hash action key -> when it was delivered (ms): never twice

    @property
    def claims(self) -> str:
        return f"{self.tag}:claims"  # hash action key -> "<holder>|<until ms>": being delivered

    @property
    def legacy(self) -> str | None:
        """Where actions queued before partitions wait (partition 0 only)."""
        return f"{_FIRST}:actions" if self.index == 0 else None


@lru_cache(maxsize=256)
def shard_of(layout: Layout, index: int) -> Shard:
    if index == 0:
        return Shard(0, _FIRST)
    low, high = index * SLOTS // layout.count, (index + 1) * SLOTS // layout.count
    n = 0
    while not low <= key_slot(f"jrn.{index}.{n}") < high:
        n += 1
    return Shard(index, f"{{jrn.{index}.{n}}}")


def shards(layout: Layout) -> list[Shard]:
    return [shard_of(layout, p) for p in range(layout.count)]


def layout_now(client: redis.Redis) -> Layout:
    """The spool's layout, read without creating the spool (for readers such as the stats)."""
    return Layout(int(client.get(PARTITIONS) or 1))


def caught_up(client: redis.Redis, layout: Layout, marks: dict[int, int], now: int) -> int:
    """Record ``marks`` (partition -> when a poll found it caught up) and return the time up to
    which every partition is caught up (at most ``now``; -1 while one has never been)."""
    pipe = client.pipeline(transaction=True)  # one slot ({jrn})
    if marks:
        pipe.hset(CAUGHT, mapping={str(p): at for p, at in marks.items()})
    pipe.hgetall(CAUGHT)
    found = {int(p): int(at) for p, at in pipe.execute()[-1].items()}
    if any(p not in found for p in range(layout.count)):
        return -1
    return min(now, *(found[p] for p in range(layout.count)))
