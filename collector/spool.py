"""The spool: a Redis Stream that every event and decision enters before the HTTP 200.

Appending is one round trip: a Lua script checks the batch's message ids against the dedup
window, refuses when the spool is at its limit, records the ids, appends one stream entry for the
whole batch and counts it, atomically. Workers downstream each read the stream with their own
consumer group and acknowledge only what they have durably applied.

Keys share the ``{spool}`` hash tag: one slot, as a script on Redis Cluster requires.

Dedup window: ids live in sets bucketed by four hours; an append checks the buckets that cover
the last 24 hours (seven sets) and adds to the current one, which expires 28 hours after it opens.
Memory: about 64 bytes per id, i.e. ~5.5 GB per day at a steady 1,000 messages/s, ~55 MB per day at
10 messages/s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
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
from collector.scripts import lua

__all__ = [
    "STATS",
    "STREAM",
    "Appended",
    "DecisionLog",
    "Entry",
    "Spool",
    "SpoolReader",
    "append_command",
    "append_now",
    "group_lags",
    "spool_state",
]

log = logging.getLogger("kairos.spool")

STREAM = "{spool}:log"
STATS = "{spool}:stats"
DEAD = "{spool}:dead"  # entries ClickHouse refused as data, kept for people to look at
PIDS = "{spool}:pids:"  # + entry id: JSON list of each message's profile id (profile updater)
SUPPRESSED = "!"  # in such a list: the message is an erased person's, not to be stored
SEEN = "{spool}:seen:"
EVENTS = b"e"  # stream field holding the messages, one JSON line each
COUNT = b"n"  # stream field holding how many
COMMAND = b"x"  # stream field of a command entry (JSON)
DECISIONS = b"d"  # stream field holding decisions, one JSON line each
DEDUP_WINDOW = 24 * 3600
DEDUP_BUCKET = 4 * 3600

# One round trip per request: dedup, limit, append and count, atomically (all ``{spool}`` keys).
APPEND = lua(__file__, "append.lua")


@dataclass(frozen=True, slots=True)
class Appended:
    accepted: int
    duplicates: int
    entry_id: str | None


@lru_cache(maxsize=2)
def _seen_keys(bucket: int) -> list[str]:
    """The stream, the stats hash, then the dedup sets covering the window, newest first."""
    count = -(-DEDUP_WINDOW // DEDUP_BUCKET) + 1
    return [STREAM, STATS, *(f"{SEEN}{bucket - back}" for back in range(count))]


def _message_ids(messages: list[wire.Message]) -> list[bytes]:
    return [blake2b(str(m.message_id).encode(), digest_size=ID_BYTES).digest() for m in messages]


def _arguments(
    messages: list[wire.Message], ids: list[bytes], limit: int, duplicates: int
) -> tuple[list[str], list[Any]]:
    keys = _seen_keys(int(time.time()) // DEDUP_BUCKET)
    ttl = DEDUP_WINDOW + DEDUP_BUCKET
    return keys, [b"".join(ids), limit, ttl, ID_BYTES, duplicates, wire.to_lines(messages)]


def _settle(
    reply: Any, messages: list[wire.Message], ids: list[bytes], duplicates: int, limit: int
) -> tuple[Appended | None, list[wire.Message], list[bytes], int]:
    """Read the script's reply: done, or the messages left once repeats are dropped."""
    status, detail = reply
    if status == 1:
        return Appended(len(messages), duplicates, detail.decode()), messages, ids, duplicates
    if status == -1:
        raise SpoolFull(int(detail), limit)
    seen = set(detail)  # some ids were seen before: drop them and try again
    kept = [i for i in range(len(messages)) if i not in seen]
    return None, [messages[i] for i in kept], [ids[i] for i in kept], duplicates + len(seen)


class Spool:
    """The append side, used by the collector on the request path (asyncio).

    ``replicas``: an append is done only once that many replicas of the spool's Redis have it
    (``WAIT``, at most ``replica_timeout_ms``; else ``NotReplicated``), so that a failover
    loses no acknowledged message. 0: done when the master has it (and its AOF, every second).
    """

    def __init__(self, client: redis.asyncio.Redis, *, limit: int = 0, replicas: int = 0,
                 replica_timeout_ms: int = 1000):  # fmt: skip
        self.client = client
        self.limit = limit
        self.replicas = replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.calls = Coalescer(client)  # shared by everything on the request path

    async def aclose(self) -> None:
        """Close the spool's own connection (the client stays the caller's)."""
        await self.calls.aclose()

    async def append(self, intake: Intake) -> Appended:
        """Append the request's messages, dropping ids seen in the last 24 hours.

        Raises SpoolFull when the spool holds ``limit`` entries or more.
        """
        messages, ids, duplicates = intake.messages, intake.ids, intake.duplicates
        while messages:
            keys, args = _arguments(messages, ids, self.limit, duplicates)
            reply = await self.calls.run(APPEND, keys, args)
            done, messages, ids, duplicates = _settle(reply, messages, ids, duplicates, self.limit)
            if done is not None:
                if self.replicas:
                    await self._replicated()
                return done
        if duplicates:
            await self.client.hincrby(STATS, "duplicates", duplicates)
        return Appended(0, duplicates, None)

    async def _replicated(self) -> None:
        wait = ("WAIT", self.replicas, self.replica_timeout_ms)
        confirmed = int(await self.calls.command_on(STREAM, *wait))
        if confirmed < self.replicas:
            raise NotReplicated(confirmed, self.replicas, self.replica_timeout_ms)

    async def append_messages(self, messages: list[wire.Message]) -> Appended:
        """Append messages the engine made itself (a tracked link, …), like a request's."""
        return await self.append(Intake(messages, _message_ids(messages), None))


class DecisionLog:
    """The decide path's side of the spool: the decisions of every request in one event-loop
    tick go out as one entry (one JSON line each), one XADD. No dedup (decision ids are new)
    and no limit: refusing a decision's log would break the page it is for."""

    def __init__(self, calls: Coalescer):
        self.calls = calls
        self._lines: list[bytes] = []
        self._waiting: list[asyncio.Future[Any]] = []

    def append(self, lines: list[bytes]) -> asyncio.Future[Any]:
        """Queue ``lines``; the future is done when they are in the spool (or failed)."""
        if not self._waiting:
            self.calls.before_flush(self._flush)
        self._lines += lines
        done = self.calls.future()  # one per caller: a caller that gives up cancels only its own
        self._waiting.append(done)
        return done

    def _flush(self) -> None:
        lines, waiting = self._lines, self._waiting
        self._lines, self._waiting = [], []
        sent = self.calls.command("XADD", STREAM, "*", "n", len(lines), "d", b"".join(lines))
        sent.add_done_callback(lambda reply: _relay(reply, waiting))


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


def append_now(client: redis.Redis, messages: list[wire.Message]) -> Appended:
    """Append messages a worker made (segment announcements, …): same script, same dedup,
    no limit (they are few, and refusing them would lose them)."""
    ids, duplicates = _message_ids(messages), 0
    while messages:
        keys, args = _arguments(messages, ids, 0, duplicates)
        done, messages, ids, duplicates = _settle(
            APPEND(client, keys, args), messages, ids, duplicates, 0
        )
        if done is not None:
            return done
    return Appended(0, duplicates, None)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry, in order with all others. ``kind`` is:

    - ``events``: the messages of one accepted request, one JSON line each;
    - ``decisions``: decisions /v1/decide made, one JSON line each;
    - ``command``: an instruction for the workers (an erasure);
    - ``gone``: deleted while pending (acknowledge it, nothing to apply).
    """

    id: str
    payload: bytes
    count: int
    kind: str = "events"
    command: dict[str, Any] | None = None

    def messages(self) -> list[wire.Message]:
        return wire.from_lines(self.payload) if self.kind == "events" else []


def append_command(client: redis.Redis, command: dict[str, Any]) -> str:
    """Put a command in the spool, behind every message accepted before it."""
    return _text(client.xadd(STREAM, {"n": 0, "x": msgspec.json.encode(command)}))


class SpoolReader:
    """One consumer of one consumer group (blocking client: workers run in threads or processes).

    A consumer keeps at most one batch in flight, so its pending list *is* that batch: after a
    crash the same consumer re-reads exactly that batch, and a peer that claims a dead consumer's
    pending list gets exactly that batch too. Replays are therefore identical and can carry an
    insert-dedup token.
    """

    def __init__(self, client: redis.Redis, group: str, consumer: str):
        self.client = client
        self.group = group
        self.consumer = consumer

    def ensure_group(self) -> None:
        ensure_group(self.client, self.group)

    def pending(self, count: int) -> list[Entry]:
        """This consumer's own unacknowledged entries (what it held when it last stopped)."""
        reply = self.client.xreadgroup(self.group, self.consumer, {STREAM: "0"}, count=count)
        return _entries(reply)

    def read(self, count: int, block_ms: int) -> list[Entry]:
        """New entries, waiting up to ``block_ms`` for the first."""
        reply = self.client.xreadgroup(
            self.group, self.consumer, {STREAM: ">"}, count=count, block=block_ms
        )
        return _entries(reply)

    def claim_dead(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over the whole pending batch of a peer silent for ``min_idle_ms`` or more."""
        for info in self.client.xinfo_consumers(STREAM, self.group):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name == self.consumer or not info["pending"] or info["idle"] < min_idle_ms:
                continue
            rows = self.client.xpending_range(STREAM, self.group, "-", "+", count, name)
            ids: list[Any] = [row["message_id"] for row in rows]
            if not ids:
                continue
            claimed: Any = self.client.xclaim(STREAM, self.group, self.consumer, min_idle_ms, ids)
            return [_entry(entry_id, fields) for entry_id, fields in claimed]
        return []

    def dead_letter(self, entry: Entry, error: str) -> None:
        """Keep ``entry`` in the dead-letter stream under its own id (so twice is once)."""
        try:
            self.client.xadd(
                DEAD, {"error": error, "n": entry.count, "e": entry.payload}, id=entry.id
            )
        except redis.ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise

    def ack(self, entries: list[Entry], counters: Mapping[str, float]) -> None:
        """Acknowledge ``entries`` and bump ``counters`` in the stats hash, in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        if entries:
            pipe.xack(STREAM, self.group, *[e.id for e in entries])
        for name, value in counters.items():
            if isinstance(value, int):
                pipe.hincrby(STATS, name, value)
            else:
                pipe.hincrbyfloat(STATS, name, value)
        pipe.execute()


def profile_ids(
    client: redis.Redis, entries: list[Entry], wait: float = 10.0
) -> dict[str, list[str]]:
    """Each entry's messages' profile ids, as the profile updater resolved them (``PIDS``),
    waiting up to ``wait`` seconds for it; entries it has not reached are left out."""
    if not entries:
        return {}
    keys = [PIDS + e.id for e in entries]
    deadline = time.monotonic() + wait
    while True:
        values = client.mget(keys)
        if all(values) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return {e.id: msgspec.json.decode(v) for e, v in zip(entries, values) if v is not None}


def ensure_group(client: redis.Redis, group: str) -> None:
    """Create ``group`` at the start of the stream if it does not exist yet."""
    try:
        client.xgroup_create(STREAM, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def trim(client: redis.Redis) -> int:
    """Delete entries every consumer group has acknowledged; returns how many went."""
    floor = _safe_floor(client)
    if floor is None:
        return 0
    return int(client.xtrim(STREAM, minid=floor, approximate=False))


def _safe_floor(client: redis.Redis) -> str | None:
    try:
        groups = client.xinfo_groups(STREAM)
    except redis.ResponseError:
        return None
    if not groups:
        return None
    floors = []
    for group in groups:
        name = group["name"]
        summary = client.xpending(STREAM, name) if group["pending"] else None
        if summary and summary["min"] is not None:
            floors.append(_parse_id(summary["min"]))
        else:  # nothing pending (or acknowledged since xinfo answered): all delivered is done
            ms, seq = _parse_id(group["last-delivered-id"])
            floors.append((ms, seq + 1))
    ms, seq = min(floors)
    return f"{ms}-{seq}"


def spool_state(client: redis.Redis, group: str) -> dict[str, Any]:
    """Length of the stream and how far ``group`` lags behind its head."""
    length = int(client.xlen(STREAM))
    return {"length": length, "lag_seconds": group_lags(client).get(group, 0.0) if length else 0.0}


def group_lags(client: redis.Redis) -> dict[str, float]:
    """Each consumer group's lag: seconds since the oldest entry it has not acknowledged was
    appended (0 when it is done with the stream)."""
    lags = {}
    try:
        groups = client.xinfo_groups(STREAM)
    except redis.ResponseError:  # no stream yet
        return {}
    for info in groups:
        group = _text(info["name"])
        pending = client.xpending(STREAM, group)["min"] if info["pending"] else None
        if pending is not None:
            oldest_ms: int | None = _parse_id(pending)[0]
        else:
            after: Any = client.xrange(STREAM, min=f"({_text(info['last-delivered-id'])}", count=1)
            oldest_ms = _parse_id(after[0][0])[0] if after else None
        lags[group] = round(max(0.0, time.time() - oldest_ms / 1000), 3) if oldest_ms else 0.0
    return lags


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> Entry:
    # An entry deleted while pending comes back without fields: acknowledge it, nothing to apply.
    if not fields:
        return Entry(_text(entry_id), b"", 0, "gone")
    if COMMAND in fields:
        return Entry(_text(entry_id), b"", 0, "command", msgspec.json.decode(fields[COMMAND]))
    if DECISIONS in fields:
        return Entry(_text(entry_id), fields[DECISIONS], int(fields[COUNT]), "decisions")
    return Entry(_text(entry_id), fields[EVENTS], int(fields[COUNT]))


def _entries(reply: Any) -> list[Entry]:
    if not reply:
        return []
    ((_, items),) = reply
    return [_entry(entry_id, fields) for entry_id, fields in items]
