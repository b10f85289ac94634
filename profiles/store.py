"""Profiles in Redis: the key layout, the scripts that change a profile, and reading one.

Every key of one profile shares the hash tag ``{p:<id>}``, so each script touches one slot (as
Redis Cluster requires):

    {p:ID}            hash   scalars: first_seen, last_seen, sessions, session_last, page_views,
                             orders, revenue, lead_score, lead_score_at, user_id,
                             applied / applied:<partition> (spool position, per partition);
                             h:<contract> (tokens held, from on-chain events);
                             bought (JSON: product id -> ms of the newest order with it,
                             the last ``BOUGHT_MAX`` products);
                             t:<trait> / tt:<trait> (value, event time), f:<first-touch trait>,
                             c:<event> (count); merged_into (a forwarding pointer after a merge)
    {p:ID}:viewed     list   last viewed product ids, newest first (bounded)
    {p:ID}:cart       hash   product id -> JSON item with quantity
    {p:ID}:daily      hash   "<event>|<day>" -> count (day = ms since epoch // 86400000)
    {p:ID}:ids        set    "<kind>:<value>" identities (user_id, anonymous_id, email, ...)
    {p:ID}:segments   set    segment keys the profile is in
    {p:ID}:merged     set    ids of profiles merged into this one (their events stay theirs)
    {p:ID}:subs       hash   subscription group -> "<state>|<ms>|<source>" (journeys.subscriptions;
                             a merge keeps the newest change of each group)
    {id:<kind>:<value>} string  the profile id an identity resolves to (its own hash tag)

Applying a message is idempotent: the script records the message's spool position in the
field of its partition (``applied`` for partition 0, ``applied:<p>``) and skips positions at or
below it (one updater holds a partition at a time and applies it in order).

A merge seals its source first (``merged_into``: applies to it now answer -1 and go to the
target), then folds a snapshot into the target and leaves only the pointer, so an updater of
another partition applying to the source meanwhile loses nothing. A crash after the seal leaves
a pointer beside data (``first_seen`` still there): ``resolve_many`` reports such unfinished
merges and the updater finishes them before it plans.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from collector.pipeline import Pipeline
from collector.scripts import lua
from profiles.computed import Update

__all__ = [
    "ProfileStore",
    "Snapshot",
    "entry_position",
    "identity_key",
    "position",
    "profile_keys",
    "SET_SCORES",
]

VIEWED_MAX = 20
BOUGHT_MAX = 50
SESSION_GAP_MS = 30 * 60 * 1000
DAILY_KEEP_DAYS = 120

# Scripts (``collector.scripts``): one apply per profile and batch, one merge of two profiles,
# and writing scores only to a profile that still exists. ``newest.lua`` is their shared helper.
APPLY = lua(__file__, "newest.lua", "apply.lua")
MERGE = lua(__file__, "newest.lua", "merge.lua")
SET_SCORES = lua(__file__, "set_scores.lua")
_encode = msgspec.json.Encoder().encode


def profile_keys(pid: str) -> list[str]:
    """The keys of profile ``pid``: hash, viewed, cart, daily, ids, segments, merged, the
    learner's record of it (``profiles.learner``) and its subscriptions
    (``journeys.subscriptions``)."""
    tag = f"{{p:{pid}}}"
    return [
        tag,
        f"{tag}:viewed",
        f"{tag}:cart",
        f"{tag}:daily",
        f"{tag}:ids",
        f"{tag}:segments",
        f"{tag}:merged",
        f"{tag}:learn",
        f"{tag}:subs",
    ]


def identity_key(kind: str, value: str) -> str:
    return f"{{id:{kind}:{value}}}"


def position(entry_id: str, index: int) -> str:
    """A message's place in its spool partition as a string that sorts like the spool does."""
    return f"{entry_position(entry_id)}{index:06d}"


def entry_position(entry_id: str) -> str:
    """The part of ``position`` an entry's messages share."""
    ms, _, seq = entry_id.partition("-")
    return f"{int(ms):014d}-{int(seq or 0):08d}-"


def applied_field(partition: int) -> str:
    """The profile field holding the position applied in spool partition ``partition``."""
    return f"applied:{partition}" if partition else "applied"


def new_profile_id(at: str, partition: int = 0) -> str:
    """Deterministic from the spool position that created it (a replay creates the same one),
    and its partition (two partitions have the same positions)."""
    seed = f"{partition}/{at}" if partition else at
    return "p_" + hashlib.blake2b(seed.encode(), digest_size=8).hexdigest()


@dataclass(kw_only=True)
class Snapshot:
    """One profile as read from Redis."""

    id: str
    fields: dict[str, str]
    viewed: list[str]
    cart: dict[str, Any]
    daily: dict[str, int]
    identities: list[str]
    segments: list[str]
    merged_from: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return "first_seen" in self.fields or bool(self.identities)

    def traits(self) -> dict[str, Any]:
        return {k[2:]: msgspec.json.decode(v) for k, v in self.fields.items() if k.startswith("t:")}

    def first_touch(self) -> dict[str, str]:
        return {k[2:]: v for k, v in self.fields.items() if k.startswith("f:")}

    def counts(self) -> dict[str, int]:
        return {k[2:]: int(v) for k, v in self.fields.items() if k.startswith("c:")}

    def number(self, name: str) -> float:
        return float(self.fields.get(name, 0) or 0)

    def count_since(self, event: str, since_day: int) -> int:
        total = 0
        for key, count in self.daily.items():
            name, _, day = key.rpartition("|")
            if name == event and int(day) >= since_day:
                total += count
        return total


class ProfileStore:
    """Reads and changes profiles (blocking client: the updater and the API's threads)."""

    def __init__(self, client: redis.Redis, half_life_ms: float = 30 * 86_400_000):
        self.client = client
        self.half_life_ms = half_life_ms

    def apply(self, pipe: Pipeline, pid: str, items: list[tuple[str, Update, list[str]]],
              partition: int = 0) -> None:  # fmt: skip
        """Queue one apply script on ``pipe`` for a profile's messages of one spool partition,
        in its order: each item is (position, update, identities to add). Its reply is -1
        when the profile was merged away meanwhile."""
        args: list[Any] = [VIEWED_MAX, SESSION_GAP_MS, self.half_life_ms, DAILY_KEEP_DAYS,
                           BOUGHT_MAX, applied_field(partition)]  # fmt: skip
        for at, update, identities in items:
            traits = update.traits or {}
            if traits:
                update = msgspec.structs.replace(update, traits=None)
            args += [at, _encode(update), _encode(identities), len(traits)]
            for name, raw in traits.items():
                args += [name, bytes(raw)]
        pipe.script(APPLY, profile_keys(pid)[:5], args)

    def merge(self, source: Snapshot, target: str) -> int:
        """Fold ``source`` into profile ``target`` (once: a repeat is a no-op, 0); -1 when
        ``target`` was itself merged away (sealed): fold it into where that went."""
        keys = profile_keys(target)
        args = [
            source.id,
            msgspec.json.encode(source.fields),
            msgspec.json.encode(source.viewed),
            msgspec.json.encode(
                {k: msgspec.json.encode(v).decode() for k, v in source.cart.items()}
            ),
            msgspec.json.encode(source.daily),
            msgspec.json.encode(source.identities),
            VIEWED_MAX,
            self.half_life_ms,
            msgspec.json.encode(source.merged_from),
            BOUGHT_MAX,
            # Sealed: nothing writes the source's subscriptions any more (writers resolve first).
            msgspec.json.encode(_strings(self.client.hgetall(profile_keys(source.id)[8]))),
        ]
        return int(MERGE(self.client, [*keys[:5], keys[6], keys[8]], args))

    def seal(self, source: str, target: str) -> None:
        """Point ``source`` at ``target`` before its data moves: applies to it from now on
        answer -1 (and go to the target), readers resolve to the target."""
        self.client.hset(profile_keys(source)[0], "merged_into", target)

    def forward(self, source: str, target: str) -> None:
        """Leave only a pointer to ``target`` where ``source`` was."""
        keys = profile_keys(source)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*keys)
        pipe.hset(keys[0], "merged_into", target)
        pipe.execute()

    def read(self, pid: str) -> Snapshot:
        return self.read_many([pid])[0]

    def read_many(self, pids: list[str]) -> list[Snapshot]:
        pipe = self.client.pipeline(transaction=False)
        for pid in pids:
            profile, viewed, cart, daily, ids, segments, merged, *_ = profile_keys(pid)
            pipe.hgetall(profile)
            pipe.lrange(viewed, 0, -1)
            pipe.hgetall(cart)
            pipe.hgetall(daily)
            pipe.smembers(ids)
            pipe.smembers(segments)
            pipe.smembers(merged)
        replies = pipe.execute()
        snapshots = []
        for i, pid in enumerate(pids):
            fields, viewed, cart, daily, ids, segments, merged = replies[i * 7 : i * 7 + 7]
            snapshots.append(
                Snapshot(
                    id=pid,
                    fields={_s(k): _s(v) for k, v in fields.items()},
                    viewed=[_s(v) for v in viewed],
                    cart={_s(k): msgspec.json.decode(v) for k, v in cart.items()},
                    daily={_s(k): int(v) for k, v in daily.items()},
                    identities=sorted(_s(v) for v in ids),
                    segments=sorted(_s(v) for v in segments),
                    merged_from=sorted(_s(v) for v in merged),
                )
            )
        return snapshots

    def resolve(self, pid: str) -> str:
        """Follow merge pointers from ``pid`` to the profile that holds its data now."""
        return self.resolve_many([pid])[pid]

    def resolve_many(
        self, pids: list[str], hops: int = 16, unfinished: list[tuple[str, str]] | None = None
    ) -> dict[str, str]:
        """``resolve`` for many profiles, one round trip per hop; merges found sealed but not
        finished (a crash between seal and forward) go to ``unfinished`` as (source, target)."""
        final = {pid: pid for pid in pids}
        pending = sorted(set(pids))
        for _ in range(hops):
            if not pending:
                break
            pipe = self.client.pipeline(transaction=False)
            for pid in pending:
                pipe.hmget(profile_keys(pid)[0], "merged_into", "first_seen")
            moved = {}
            for pid, (target, first_seen) in zip(pending, pipe.execute()):
                if target is not None:
                    moved[pid] = _s(target)
                    if first_seen is not None and unfinished is not None:
                        unfinished.append((pid, _s(target)))
            for start, now in final.items():
                if now in moved:
                    final[start] = moved[now]
            pending = sorted(set(moved.values()))
        return final

    def lookup(self, identities: list[str]) -> dict[str, str]:
        """Profile ids of the given "kind:value" identities (those that have one)."""
        if not identities:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for identity in identities:
            kind, _, value = identity.partition(":")
            pipe.get(identity_key(kind, value))
        return {i: _s(p) for i, p in zip(identities, pipe.execute()) if p is not None}


def _strings(found: dict[bytes, bytes]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in found.items()}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
