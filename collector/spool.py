"""The spool: Redis Streams that every event and decision enters before the HTTP 200.

The spool is split in partitions (``collector.partitions``: which person goes where, and each
partition's keys under one hash tag). Appending a request is one script per partition it
touches, all in one round trip: the script checks the messages' ids against the partition's
dedup window, refuses when the partition is at its limit, records the ids, appends one stream
entry for the part and counts it, atomically. A request whose messages span partitions is
answered 200 only when every part is in; when one part fails the client retries the whole
request, and the parts already in find their ids in the dedup window and are not stored again
(a person's messages always go to the same partition, so to the same dedup sets). Workers
downstream read the streams with their own consumer groups (``collector.reader``).

Dedup window: ids live in sets bucketed by four hours; an append checks the buckets that cover
the last 24 hours (seven sets) and adds to the current one, which expires 28 hours after it opens.
Memory: about 64 bytes per id, i.e. ~5.5 GB per day at a steady 1,000 messages/s, ~55 MB per day at
10 messages/s, spread over the partitions (so over a cluster's shards).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from typing import Any

import msgspec
import redis
import redis.asyncio

from collector import wire
from collector.coalesce import Coalescer
from collector.errors import NotReplicated, SpoolFull
from collector.intake import ID_BYTES, Intake
from collector.partitions import Layout, Partition, layout_of
from collector.scripts import lua

__all__ = [
    "STATS",
    "Appended",
    "DecisionLog",
    "Spool",
    "append_command",
    "append_now",
    "partition_of",
    "spool_stats",
]

log = logging.getLogger("kairos.spool")

STATS = "{spool}:stats"  # spool-wide counters (each partition has its own beside it)
DEDUP_WINDOW = 24 * 3600
DEDUP_BUCKET = 4 * 3600

# One script per partition and request: dedup, limit, append and count, atomically.
APPEND = lua(__file__, "append.lua")


def partition_of(layout: Layout, message: wire.Message) -> int:
    """The partition of a message: its person's ``anonymousId``, else ``userId``, else (no
    person: a rare server event) its ``messageId``."""
    identity = message.anonymous_id or message.user_id or message.message_id or ""
    return layout.of(str(identity))


@dataclass(frozen=True, slots=True)
class Appended:
    accepted: int
    duplicates: int
    entry_id: str | None  # the (first) entry made, ``partition/id``; None: all were repeats


@lru_cache(maxsize=64)
def _seen_keys(partition: Partition, bucket: int) -> list[str]:
    """The stream, the stats hash, then the dedup sets covering the window, newest first."""
    count = -(-DEDUP_WINDOW // DEDUP_BUCKET) + 1
    seen = partition.seen
    return [partition.log, partition.stats, *(f"{seen}{bucket - back}" for back in range(count))]


def _message_ids(messages: list[wire.Message]) -> list[bytes]:
    return [blake2b(str(m.message_id).encode(), digest_size=ID_BYTES).digest() for m in messages]


@dataclass(slots=True)
class _Part:
    """The messages of one request that go to one partition, as the script leaves them."""

    partition: Partition
    messages: list[wire.Message]
    ids: list[bytes]
    duplicates: int = 0
    entry_id: str | None = None

    def arguments(self, limit: int) -> tuple[list[str], list[Any]]:
        keys = _seen_keys(self.partition, int(time.time()) // DEDUP_BUCKET)
        ttl = DEDUP_WINDOW + DEDUP_BUCKET
        payload = wire.to_lines(self.messages)
        return keys, [b"".join(self.ids), limit, ttl, ID_BYTES, self.duplicates, payload]

    def settle(self, reply: Any, limit: int) -> bool:
        """Read the script's reply: True when done; else the repeats it found are dropped
        and the rest goes again."""
        status, detail = reply
        if status == 1:
            self.entry_id = f"{self.partition.index}/{detail.decode()}"
            return True
        if status == -1:
            raise SpoolFull(int(detail), limit)
        seen = set(detail)
        kept = [i for i in range(len(self.messages)) if i not in seen]
        self.messages = [self.messages[i] for i in kept]
        self.ids = [self.ids[i] for i in kept]
        self.duplicates += len(seen)
        return not self.messages


def _parts(layout: Layout, intake: Intake) -> list[_Part]:
    if layout.count == 1:
        return [_Part(layout.partition(0), intake.messages, intake.ids, intake.duplicates)]
    parts: dict[int, _Part] = {}
    for message, id_ in zip(intake.messages, intake.ids):
        index = partition_of(layout, message)
        part = parts.get(index)
        if part is None:
            part = parts[index] = _Part(layout.partition(index), [], [])
        part.messages.append(message)
        part.ids.append(id_)
    ordered = [parts[i] for i in sorted(parts)]
    if ordered:
        ordered[0].duplicates = intake.duplicates  # counted once, with the first part
    return ordered


def _appended(parts: list[_Part], duplicates: int) -> Appended:
    accepted = sum(len(p.messages) for p in parts if p.entry_id)
    repeats = sum(p.duplicates for p in parts) if parts else duplicates
    made = [p.entry_id for p in parts if p.entry_id]
    return Appended(accepted, repeats, made[0] if made else None)


class Spool:
    """The append side, used by the collector on the request path (asyncio).

    ``limit``: entries a partition may hold (a full one answers ``SpoolFull``: backpressure);
    ``replicas``: an append is done only once that many replicas of the partition's Redis have
    it (``WAIT``, at most ``replica_timeout_ms``; else ``NotReplicated``), so that a failover
    loses no acknowledged message. 0: done when the master has it (and its AOF, every second).
    """

    def __init__(self, client: redis.asyncio.Redis, layout: Layout | None = None, *,
                 limit: int = 0, replicas: int = 0, replica_timeout_ms: int = 1000):  # fmt: skip
        self.client = client
        self.layout = layout or Layout(1)
        self.limit = limit
        self.replicas = replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.calls = Coalescer(client)  # shared by everything on the request path

    async def aclose(self) -> None:
        """Close the spool's own connection (the client stays the caller's)."""
        await self.calls.aclose()

    async def append(self, intake: Intake) -> Appended:
        """Append the request's messages, dropping ids seen in the last 24 hours: done when
        every partition's part is in (the first failure is raised once all have answered).

        Raises SpoolFull when a partition holds ``limit`` entries or more.
        """
        parts = _parts(self.layout, intake)
        if len(parts) == 1:
            await self._append(parts[0])
        else:
            results = await asyncio.gather(*map(self._append, parts), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        appended = _appended(parts, intake.duplicates)
        if not appended.accepted and appended.duplicates:
            await self.client.hincrby(STATS, "duplicates", appended.duplicates)
        return appended

    async def _append(self, part: _Part) -> None:
        while part.messages:
            keys, args = part.arguments(self.limit)
            if part.settle(await self.calls.run(APPEND, keys, args), self.limit):
                break
        if self.replicas and part.entry_id:
            wait = ("WAIT", self.replicas, self.replica_timeout_ms)
            confirmed = int(await self.calls.command_on(part.partition.log, *wait))
            if confirmed < self.replicas:
                raise NotReplicated(confirmed, self.replicas, self.replica_timeout_ms)

    async def append_messages(self, messages: list[wire.Message]) -> Appended:
        """Append messages the engine made itself (a tracked link, …), like a request's."""
        return await self.append(Intake(messages, _message_ids(messages), None))


class DecisionLog:
    """The decide path's side of the spool: the decisions of every request in one event-loop
    tick go out as one entry per partition (one JSON line each), one XADD each, in the same
    round trip. A decision goes to its person's partition, with their events, so the reward
    worker sees a decision before the click on it. No dedup (decision ids are new) and no
    limit: refusing a decision's log would break the page it is for."""

    def __init__(self, calls: Coalescer, layout: Layout | None = None):
        self.calls = calls
        self.layout = layout or Layout(1)
        self._lines: dict[int, list[bytes]] = {}
        self._waiting: list[asyncio.Future[Any]] = []

    def append(self, lines: list[bytes], identity: str = "") -> asyncio.Future[Any]:
        """Queue the ``lines`` of a person's decisions (``identity``: their anonymousId, else
        userId, as for their events); the future is done when they are in the spool."""
        if not self._waiting:
            self.calls.before_flush(self._flush)
        self._lines.setdefault(self.layout.of(identity), []).extend(lines)
        done = self.calls.future()  # one per caller: a caller that gives up cancels only its own
        self._waiting.append(done)
        return done

    def _flush(self) -> None:
        parts, waiting = self._lines, self._waiting
        self._lines, self._waiting = {}, []
        sent = [
            self.calls.command(
                "XADD", self.layout.partition(index).log, "*", "n", len(lines), "d", b"".join(lines)
            )  # fmt: skip
            for index, lines in parts.items()
        ]
        if len(sent) == 1:
            sent[0].add_done_callback(lambda reply: _relay(reply, waiting))
        else:
            gathered = asyncio.gather(*sent)
            gathered.add_done_callback(lambda reply: _relay(reply, waiting))


def _relay(source: asyncio.Future[Any], targets: list[asyncio.Future[Any]]) -> None:
    error = None if source.cancelled() else source.exception()
    for target in targets:
        if target.done():
            continue
        if source.cancelled():
            target.cancel()
        elif error is not None:
            target.set_exception(error)
        else:
            target.set_result(source.result())


def append_now(client: redis.Redis, messages: list[wire.Message],
               layout: Layout | None = None) -> Appended:  # fmt: skip
    """Append messages a worker made (segment announcements, …): same script, same dedup,
    no limit (they are few, and refusing them would lose them)."""
    parts = _parts(layout or layout_of(client), Intake(messages, _message_ids(messages), None))
    for part in parts:
        while part.messages:
            keys, args = part.arguments(0)
            if part.settle(APPEND(client, keys, args), 0):
                break
    return _appended(parts, 0)


def append_command(client: redis.Redis, command: dict[str, Any],
                   layout: Layout | None = None) -> list[str]:  # fmt: skip
    """Put a command in every partition, behind every message accepted before it there (an
    erasure must reach the person's messages wherever they went); the entries made."""
    encoded = msgspec.json.encode(command)
    return [
        f"{p.index}/{_text(client.xadd(p.log, {'n': 0, 'x': encoded}))}"
        for p in (layout or layout_of(client)).partitions
    ]


def spool_stats(client: redis.Redis, layout: Layout | None = None) -> dict[str, float]:
    """The spool's counters: spool-wide ones and every partition's, summed."""
    totals: dict[str, float] = {}
    hashes = {STATS, *(p.stats for p in (layout or layout_of(client)).partitions)}
    for key in sorted(hashes):
        for name, value in client.hgetall(key).items():
            name = _text(name)
            number = float(value)
            if name.endswith("_at"):  # a time, not a count: the latest
                totals[name] = max(totals.get(name, 0.0), number)
            else:
                totals[name] = totals.get(name, 0.0) + number
    return totals


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
