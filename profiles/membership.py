"""Segment membership, kept current as profiles change, with entered/exited events.

Definitions live in Redis (``{seg}:defs``, key -> JSON; ``{seg}:version`` bumps on change) so
the admin API, the config file and every worker see the same set. Membership is stored both ways:
``{p:ID}:segments`` on the profile and ``{segm:<key>}`` per segment.

A change of membership is announced as a "Segment Entered" / "Segment Exited" track event
appended to the spool (so it lands in ClickHouse and can trigger automation) *before* the
membership sets change; its messageId is derived from the profile, segment, direction and cause,
so a replay after a crash is dropped by the spool's dedup instead of announced twice.

Segments with an ``event`` condition also change as time passes: ``sweep`` re-checks their
members. A new or changed segment is backfilled from all profiles, with event counts from
ClickHouse history; backfilled members are set without announcements.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis

from collector import wire
from collector.versioned import Versioned
from profiles.segments import SEGMENT, Segment, View, event_conditions, matches
from profiles.store import ProfileStore, Snapshot, profile_keys
from profiles.views import view_of

__all__ = [
    "DEFS",
    "RESCORED",
    "Membership",
    "delete_segment",
    "member_key",
    "put_segment",
    "segments",
]

log = logging.getLogger("kairos.segments")

DEFS = "{seg}:defs"
VERSION = "{seg}:version"
BACKFILL = "{seg}:backfill"
RESCORED = "{seg}:rescored"  # profiles whose predicted scores changed (the learner adds them)
_SWEEP_SECONDS = 60.0


def _uses_scores(segment: Segment) -> bool:
    return b'"scores.' in msgspec.json.encode(segment.rule)


def member_key(segment: str) -> str:
    return f"{{segm:{segment}}}"


def _definitions(client: redis.Redis) -> dict[str, Segment]:
    return {k.decode(): SEGMENT.decode(v) for k, v in client.hgetall(DEFS).items()}


class Membership:
    def __init__(
        self,
        store: ProfileStore,
        emit: Callable[[list[wire.Message]], Any],
        half_life_days: float = 30.0,
    ):
        self.store = store
        self.client: redis.Redis = store.client
        self.emit = emit
        self.half_life_days = half_life_days
        self._defs: Versioned[dict[str, Segment]] = Versioned(VERSION, {})
        self._next_sweep = 0.0

    def maintain(self, history: Callable[[str, int], dict[str, int]]) -> None:
        """Run queued backfills, re-check the profiles the learner re-scored (for segments on
        scores), and the time-window sweep once a minute."""
        while (key := self.client.rpop(BACKFILL)) is not None:
            self.backfill(key.decode(), history)
        while rescored := self.client.spop(RESCORED, 1_000):
            on_scores = {k: s for k, s in self.definitions().items() if _uses_scores(s)}
            if on_scores:
                pids = {pid.decode() for pid in rescored}
                self.evaluate(pids, f"scores:{time.time_ns()}", segments=on_scores)
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_SECONDS
            self.sweep(f"sweep:{int(time.time() // _SWEEP_SECONDS)}")

    def definitions(self) -> dict[str, Segment]:
        return self._defs.get(self.client, _definitions)

    def evaluate(
        self,
        pids: set[str],
        cause: str,
        announce: bool = True,
        segments: dict[str, Segment] | None = None,
        counts: Callable[[str, str, int], int] | None = None,
        now_ms: int | None = None,
    ) -> int:
        """Bring the membership of ``pids`` in ``segments`` (default: all) up to date.

        ``counts(profile, event, days)`` replaces the profile's own event counts (backfills
        count from ClickHouse history). Returns how many memberships changed.
        """
        defs = segments if segments is not None else self.definitions()
        if not defs or not pids:
            return 0
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        changes: list[tuple[Snapshot, str, bool]] = []
        for snapshot in self.store.read_many(sorted(pids)):
            if not snapshot.exists or "merged_into" in snapshot.fields:
                continue
            view = view_of(snapshot, now_ms, self.half_life_days)
            if counts is not None:
                pid = snapshot.id
                view = View(
                    view.traits,
                    view.computed,
                    view.scores,
                    view.first_touch,
                    lambda name, days, pid=pid: counts(pid, name, days),
                )
            current = set(snapshot.segments)
            for key, segment in defs.items():
                inside = matches(segment.rule, view)
                if inside != (key in current):
                    changes.append((snapshot, key, inside))
        if not changes:
            return 0
        if announce:
            self.emit(
                [
                    self._announcement(s, key, entered, cause, now_ms, defs[key])
                    for s, key, entered in changes
                ]
            )
        pipe = self.client.pipeline(transaction=False)
        now_in: dict[str, set[str]] = {}
        for snapshot, key, entered in changes:
            segments = profile_keys(snapshot.id)[5]
            mine = now_in.setdefault(snapshot.id, set(snapshot.segments))
            if entered:
                pipe.sadd(segments, key)
                pipe.sadd(member_key(key), snapshot.id)
                mine.add(key)
            else:
                pipe.srem(segments, key)
                pipe.srem(member_key(key), snapshot.id)
                mine.discard(key)
        for pid, mine in now_in.items():  # mirrored in the hash: one read serves /v1/decide
            pipe.hset(profile_keys(pid)[0], "segments", msgspec.json.encode(sorted(mine)))
        pipe.execute()
        return len(changes)

    def sweep(self, cause: str, now_ms: int | None = None) -> int:
        """Re-check the members of segments whose rules count events in a time window."""
        changed = 0
        for key, segment in self.definitions().items():
            if event_conditions(segment.rule):
                members = {m.decode() for m in self.client.smembers(member_key(key))}
                changed += self.evaluate(members, cause, segments={key: segment}, now_ms=now_ms)
        return changed

    def backfill(self, key: str, history: Callable[[str, int], dict[str, int]]) -> int:
        """Set the membership of segment ``key`` over every profile, silently.

        ``history(event, days)`` returns event counts per profile id from ClickHouse.
        """
        segment = self.definitions().get(key)
        if segment is None:
            return 0
        windows = {(c.event, c.days) for c in event_conditions(segment.rule) if c.event}
        totals: dict[tuple[str, int], dict[str, int]] = {}
        for event, days in windows:
            per_profile: dict[str, int] = {}
            for pid, count in history(event, days).items():
                current = self.store.resolve(pid)
                per_profile[current] = per_profile.get(current, 0) + count
            totals[(event, days)] = per_profile

        def counts(pid: str, event: str, days: int) -> int:
            return totals.get((event, days), {}).get(pid, 0)

        changes = 0
        for batch in _batches(self._all_profiles(), 500):
            changes += self.evaluate(
                set(batch),
                f"backfill:{key}",
                announce=False,
                segments={key: segment},
                counts=counts if windows else None,
            )
        log.info("segment backfilled", extra={"segment": key, "changes": changes})
        return changes

    def _all_profiles(self) -> list[str]:
        pids = []
        for key in self.client.scan_iter(match="{p:*}", count=1000, _type="HASH"):
            name = key.decode()
            if name.endswith("}"):
                pids.append(name[3:-1])
        return pids

    def _announcement(
        self, snapshot: Snapshot, key: str, entered: bool, cause: str, now_ms: int, segment: Segment
    ) -> wire.Message:
        event = "Segment Entered" if entered else "Segment Exited"
        identity = hashlib.blake2b(
            f"{snapshot.id}|{key}|{entered}|{cause}".encode(), digest_size=16
        ).hexdigest()
        user = snapshot.fields.get("user_id")
        anonymous = next(
            (i.partition(":")[2] for i in snapshot.identities if i.startswith("anonymous_id:")),
            None,
        )
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        properties = {
            "segment": key,
            "segment_name": segment.name or key,
            "profile_id": snapshot.id,
        }
        return wire.Track(
            event=event,
            user_id=user,
            anonymous_id=None if user else anonymous,
            message_id=f"seg-{identity}",
            timestamp=now,
            received_at=now,
            properties=msgspec.Raw(msgspec.json.encode(properties)),
            context=msgspec.Raw(b'{"library":{"name":"kairos-segments"}}'),
        )


def segments(client: redis.Redis) -> dict[str, Segment]:
    """Every segment definition."""
    return {k.decode(): SEGMENT.decode(v) for k, v in client.hgetall(DEFS).items()}


def put_segment(client: redis.Redis, key: str, segment: Segment) -> bool:
    """Create or replace segment ``key``; a new or changed rule is backfilled. True if it
    changed anything."""
    encoded = msgspec.json.encode(segment)
    if client.hget(DEFS, key) == encoded:
        return False
    pipe = client.pipeline(transaction=True)
    pipe.hset(DEFS, key, encoded)
    pipe.incr(VERSION)
    pipe.lpush(BACKFILL, key)
    pipe.execute()
    return True


def delete_segment(client: redis.Redis, key: str) -> bool:
    """Remove segment ``key`` and every membership in it (without exit announcements)."""
    if not client.hdel(DEFS, key):
        return False
    client.incr(VERSION)
    members = [m.decode() for m in client.smembers(member_key(key))]
    pipe = client.pipeline(transaction=False)
    for pid in members:
        pipe.srem(profile_keys(pid)[5], key)
        pipe.smembers(profile_keys(pid)[5])
    pipe.delete(member_key(key))
    left = pipe.execute()[1:-1:2]
    pipe = client.pipeline(transaction=False)
    for pid, segments in zip(members, left):
        names = sorted(m.decode() for m in segments)
        pipe.hset(profile_keys(pid)[0], "segments", msgspec.json.encode(names))
    pipe.execute()
    return True


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
