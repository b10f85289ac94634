"""The read side of the spool: entries, and one consumer of one consumer group per worker.

Each worker kind is a consumer group on every partition's stream. A consumer reads only the
partitions it holds leases on (``collector.leases``), one partition per batch, and keeps at
most one batch in flight per partition, so a partition's pending list *is* that batch: when a
partition comes to a consumer (at start, from a dead or departing peer, after Redis failed) it
first claims and replays exactly that batch. Replays are therefore identical and can carry an
insert-dedup token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import redis

from collector import wire
from collector.leases import LEASE_MS, Leases
from collector.partitions import Layout, Partition, layout_of
from collector.scripts import lua

__all__ = [
    "COMMAND",
    "COUNT",
    "DECISIONS",
    "EVENTS",
    "SUPPRESSED",
    "Entry",
    "LeaseLost",
    "SpoolReader",
    "ensure_group",
    "group_lags",
    "profile_ids",
    "spool_state",
    "trim",
]

SUPPRESSED = "!"  # in a profile id list: the message is an erased person's, not to be stored
EVENTS = b"e"  # stream field holding the messages, one JSON line each
COUNT = b"n"  # stream field holding how many
COMMAND = b"x"  # stream field of a command entry (JSON)
DECISIONS = b"d"  # stream field holding decisions, one JSON line each
log = logging.getLogger("kairos.spool")

ACK = lua(__file__, "ack.lua")
_FIRST = Partition(0, "{spool}")


class LeaseLost(Exception):
    """The partition of a batch went to another consumer before the batch was acknowledged:
    that consumer replays it."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry, in order with all others of its partition. ``kind`` is:

    - ``events``: the messages of one accepted request (of one partition), one JSON line each;
    - ``decisions``: decisions /v1/decide made, one JSON line each;
    - ``command``: an instruction for the workers (an erasure);
    - ``gone``: deleted while pending (acknowledge it, nothing to apply).

    ``id`` is unique within its partition only: two streams can make the same ids.
    """

    id: str
    payload: bytes
    count: int
    kind: str = "events"
    command: dict[str, Any] | None = None
    partition: Partition = _FIRST

    @property
    def ref(self) -> str:
        """Unique in the whole spool: the partition and the id."""
        return f"{self.partition.index}/{self.id}"

    def messages(self) -> list[wire.Message]:
        return wire.from_lines(self.payload) if self.kind == "events" else []


class SpoolReader:
    """One consumer (``consumer``, unique per running instance) of ``group`` (blocking client:
    workers run in threads or processes)."""

    def __init__(self, client: redis.Redis, group: str, consumer: str,
                 layout: Layout | None = None, lease_ms: int = LEASE_MS,
                 exclusive: bool = False):  # fmt: skip
        self.client = client
        self.group = group
        self.consumer = consumer
        self.layout = layout or layout_of(client)
        self.leases = Leases(client, self.layout, group, consumer, lease_ms, exclusive)
        self._replay: set[int] = set()  # held partitions whose pending batch comes first
        self._next = 0  # round robin over held partitions
        self.replayed = False  # the last read was a replay: that batch goes alone, as it was

    @property
    def held(self) -> list[Partition]:
        return [self.layout.partition(i) for i in self.leases.held]

    def ensure_group(self) -> None:
        for partition in self.layout.partitions:
            ensure_group(self.client, self.group, partition)

    def balance(self, force: bool = False) -> bool:
        """Rebalance leases; True when the held partitions changed (new ones replay first)."""
        before = set(self.leases.held)
        changed = self.leases.balance(force)
        held = set(self.leases.held)
        self._replay = (self._replay & held) | (held - before)
        return changed

    def replay_all(self) -> None:
        """After a failure mid-batch: every held partition's pending batch comes first."""
        self._replay = set(self.leases.held)

    def release(self) -> None:
        self.leases.release_all()

    def read(self, count: int, block_ms: int, partition: Partition | None = None) -> list[Entry]:
        """The next batch of one partition: its pending batch when it just came to this
        consumer, else new entries. Held partitions take turns; with one, the read waits up to
        ``block_ms`` for the first entry; with several, or ``partition`` (more of that one's),
        they are polled and an empty round waits ``block_ms``."""
        if not self.leases.held:
            self.balance(force=True)
        held = self.leases.held if partition is None else [partition.index]
        held = [i for i in held if i in self.leases.held]
        if not held:
            time.sleep(block_ms / 1000)
            return []
        for turn in range(len(held)):
            index = held[(self._next + turn) % len(held)]
            entries = self._read_one(self.layout.partition(index), count,
                                     block_ms if len(held) == 1 else None)  # fmt: skip
            if entries:
                self._next = (self._next + turn + 1) % len(held)
                return entries
        if len(held) > 1:
            time.sleep(block_ms / 1000)
        return []

    def _read_one(self, partition: Partition, count: int, block_ms: int | None) -> list[Entry]:
        if partition.index in self._replay:
            # The whole pending list, whatever ``count``: it is the batch in flight, and its
            # replay must be that same batch (the sink's dedup token names it).
            self._claim_pending(partition)
            reply = self.client.xreadgroup(self.group, self.consumer, {partition.log: "0"})
            self._replay.discard(partition.index)
            entries = _entries(reply, partition)
            self.replayed = bool(entries)
            if entries:
                log.info(
                    "replaying the unacknowledged batch",
                    extra={
                        "group": self.group,
                        "partition": partition.index,
                        "entries": len(entries),
                    },
                )
                return entries
        self.replayed = False
        reply = self.client.xreadgroup(
            self.group, self.consumer, {partition.log: ">"}, count=count, block=block_ms
        )
        return _entries(reply, partition)

    def _claim_pending(self, partition: Partition) -> None:
        """Make the partition's pending batch ours (its former holder's), and forget former
        holders: the lease says nobody else works on this partition now."""
        try:
            consumers = self.client.xinfo_consumers(partition.log, self.group)
        except redis.ResponseError:  # no group yet
            ensure_group(self.client, self.group, partition)
            return
        for info in consumers:
            name = _text(info["name"])
            if name == self.consumer:
                continue
            if info["pending"]:
                rows = self.client.xpending_range(
                    partition.log, self.group, "-", "+", info["pending"], name
                )
                ids: list[Any] = [row["message_id"] for row in rows]
                if ids:
                    self.client.xclaim(partition.log, self.group, self.consumer, 0, ids,
                                       justid=True)  # fmt: skip
            self.client.xgroup_delconsumer(partition.log, self.group, name)

    def ack(self, entries: list[Entry], counters: Mapping[str, float]) -> None:
        """Acknowledge ``entries`` (all of one partition) and bump ``counters`` in its stats
        hash, atomically and only while its lease is ours (else ``LeaseLost``)."""
        partition = entries[0].partition if entries else self._any()
        args: list[Any] = [self.group, self.consumer, len(entries), *[e.id for e in entries]]
        for name, value in counters.items():
            args += [name, int(value) if isinstance(value, int) else repr(float(value))]
        if entries:
            done = ACK(self.client, [partition.log, partition.stats,
                                     partition.lease(self.group)], args)  # fmt: skip
            if not done:
                raise LeaseLost(f"{self.group}: partition {partition.index}")
        elif counters:
            count(self.client, counters, partition)

    def dead_letter(self, entry: Entry, error: str) -> None:
        """Keep ``entry`` in its partition's dead-letter stream under its own id (so twice is
        once)."""
        try:
            self.client.xadd(
                entry.partition.dead,
                {"error": error, "n": entry.count, "e": entry.payload},
                id=entry.id,
            )
        except redis.ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise

    def _any(self) -> Partition:
        held = self.leases.held
        return self.layout.partition(held[0] if held else 0)


def count(client: redis.Redis, counters: Mapping[str, float], partition: Partition) -> None:
    """Bump counters that go with no acknowledgement."""
    pipe = client.pipeline(transaction=False)
    for name, value in counters.items():
        if isinstance(value, int):
            pipe.hincrby(partition.stats, name, value)
        else:
            pipe.hincrbyfloat(partition.stats, name, value)
    pipe.execute()


def profile_ids(
    client: redis.Redis, entries: list[Entry], wait: float = 10.0
) -> dict[str, list[str]]:
    """Each entry's messages' profile ids (by ``Entry.ref``), as the profile updater resolved
    them, waiting up to ``wait`` seconds for it; entries it has not reached are left out."""
    if not entries:
        return {}
    keys = [e.partition.pids + e.id for e in entries]
    deadline = time.monotonic() + wait
    while True:
        values = client.mget(keys)  # one batch, one partition: one slot
        if all(values) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return {e.ref: msgspec.json.decode(v) for e, v in zip(entries, values) if v is not None}


def ensure_group(client: redis.Redis, group: str, partition: Partition = _FIRST) -> None:
    """Create ``group`` at the start of the partition's stream if it does not exist yet."""
    try:
        client.xgroup_create(partition.log, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def trim(client: redis.Redis, partition: Partition = _FIRST) -> int:
    """Delete the partition's entries every consumer group has acknowledged; how many went."""
    floor = _safe_floor(client, partition)
    if floor is None:
        return 0
    return int(client.xtrim(partition.log, minid=floor, approximate=False))


def _safe_floor(client: redis.Redis, partition: Partition) -> str | None:
    try:
        groups = client.xinfo_groups(partition.log)
    except redis.ResponseError:
        return None
    if not groups:
        return None
    floors = []
    for group in groups:
        name = group["name"]
        summary = client.xpending(partition.log, name) if group["pending"] else None
        if summary and summary["min"] is not None:
            floors.append(_parse_id(summary["min"]))
        else:  # nothing pending (or acknowledged since xinfo answered): all delivered is done
            ms, seq = _parse_id(group["last-delivered-id"])
            floors.append((ms, seq + 1))
    ms, seq = min(floors)
    return f"{ms}-{seq}"


def spool_state(client: redis.Redis, group: str, layout: Layout | None = None) -> dict[str, Any]:
    """Entries in the spool (all partitions) and how far ``group`` lags behind (its most
    behind partition)."""
    layout = layout or layout_of(client)
    length = sum(int(client.xlen(p.log)) for p in layout.partitions)
    lag = group_lags(client, layout).get(group, 0.0) if length else 0.0
    return {"length": length, "partitions": layout.count, "lag_seconds": lag}


def group_lags(client: redis.Redis, layout: Layout | None = None) -> dict[str, float]:
    """Each consumer group's lag: seconds since the oldest entry it has not acknowledged was
    appended, in its most behind partition (0 when it is done with the spool)."""
    lags: dict[str, float] = {}
    for partition in (layout or layout_of(client)).partitions:
        for group, lag in partition_lags(client, partition).items():
            lags[group] = max(lags.get(group, 0.0), lag)
    return lags


def partition_lags(client: redis.Redis, partition: Partition) -> dict[str, float]:
    """``group_lags`` of one partition."""
    lags = {}
    try:
        groups = client.xinfo_groups(partition.log)
    except redis.ResponseError:  # no stream yet
        return {}
    for info in groups:
        group = _text(info["name"])
        oldest = oldest_unapplied(client, partition, info)
        lags[group] = round(max(0.0, time.time() - oldest / 1000), 3) if oldest else 0.0
    return lags


def oldest_unapplied(client: redis.Redis, partition: Partition, info: Any) -> int | None:
    """When (ms) the oldest entry a group (``info``, from XINFO GROUPS) has not acknowledged
    was appended; None when it has acknowledged everything.

    A group that has read nothing yet (made at "0-0", before its worker started) or everything
    before a quiet night is not behind by 56 years or a night: what it has yet to read is new.
    """
    if info["pending"]:
        oldest: Any = client.xpending(partition.log, _text(info["name"]))["min"]
    else:
        delivered = _text(info["last-delivered-id"])
        after: Any = client.xrange(partition.log, min=f"({delivered}", count=1)
        oldest = after[0][0] if after else None
    return _parse_id(oldest)[0] if oldest is not None else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes] | None, partition: Partition) -> Entry:
    # An entry deleted while pending comes back without fields: acknowledge it, nothing to apply.
    at = _text(entry_id)
    if not fields:
        return Entry(at, b"", 0, "gone", partition=partition)
    if COMMAND in fields:
        command = msgspec.json.decode(fields[COMMAND])
        return Entry(at, b"", 0, "command", command, partition=partition)
    if DECISIONS in fields:
        return Entry(at, fields[DECISIONS], int(fields[COUNT]), "decisions", partition=partition)
    return Entry(at, fields[EVENTS], int(fields[COUNT]), partition=partition)


def _entries(reply: Any, partition: Partition) -> list[Entry]:
    if not reply:
        return []
    ((_, items),) = reply
    return [_entry(entry_id, fields, partition) for entry_id, fields in items]
