"""What the decide path reads about a visitor: their profile and their earlier decisions.

One read per request in the common case, sent with every other request of the same event-loop
tick in one pipeline (``collector.coalesce``):

- the profile id of the visitor's identity, from a per-process cache (``IDENTITY_TTL``) or
  from Redis (``{id:<kind>:<value>}``, a first round trip) — unknown visitors are not cached, so
  a profile is found as soon as the profile worker creates it;
- the profile hash ``{p:<id>}`` (traits, computed traits, scores, segments), with the viewed
  list, cart and daily counts only when an eligibility rule needs them;
- the sticky A/B assignments of the A/B placements asked for, from the visitor's decision
  memory ``{dv:<kind>:<value>}`` (``decisions.records``): those fields alone (HMGET), not the
  latest decisions and recommendations the reward worker keeps beside them.

A profile that was merged into another is followed (one more round trip, then cached).

``anonymous=True`` (a browser that has not proven who it is, ``decisions.identity``): a profile
that belongs to a signed-in person (its ``user_id`` field is set) is read as no profile, since
the write key can link any device to any user id; the visitor's sticky A/B assignments, which
are the device's own, are kept. No extra round trip: the field comes with the profile.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgspec

from collector.coalesce import Coalescer
from decisions.records import visitor_key
from profiles.store import Snapshot, identity_key, profile_keys

__all__ = ["IDENTITY_TTL", "Visitor", "Visitors"]

IDENTITY_TTL = 60.0  # seconds a resolved identity -> profile id is trusted in process
_CACHE_SIZE = 100_000


@dataclass(slots=True)
class Visitor:
    profile_id: str = ""
    raw: dict[bytes, bytes] = field(default_factory=dict)  # the profile hash as Redis sent it
    snapshot: Snapshot | None = None  # with lists and counts, when eligibility needs them
    assignments: dict[str, str] = field(default_factory=dict)  # placement -> sticky variant
    identities: list[str] = field(default_factory=list)  # "kind:value", when asked for

    @property
    def fields(self) -> dict[str, str]:
        """The profile hash, decoded (what features and eligibility read)."""
        return {k.decode(): v.decode() for k, v in self.raw.items()}

    def logged_ids(self, asked: list[tuple[str, str]]) -> tuple[str, str]:
        """(user id, anonymous id) to log a decision under: those asked with, else the
        profile's own (its user id; an anonymous id of its identities, when read)."""
        found = dict(reversed(asked))
        if self.identities:
            for kind, value in sorted(i.partition(":")[::2] for i in self.identities):
                found.setdefault(kind, value)
        user_id = found.get("user_id") or self.raw.get(b"user_id", b"").decode()
        return user_id, found.get("anonymous_id", "")

    def traits(self) -> dict[str, Any]:
        return {k[2:].decode(): msgspec.json.decode(v) for k, v in self.raw.items()
                if k[:2] == b"t:"}  # fmt: skip


def _raw(reply: list[bytes] | dict[bytes, bytes]) -> dict[bytes, bytes]:
    """A hash as HGETALL sent it: a map (RESP3) or a flat list (RESP2)."""
    if isinstance(reply, dict):
        return reply
    pairs = iter(reply)
    return dict(zip(pairs, pairs))  # in C: a third of an indexed comprehension's cost


def _pairs(reply: list[bytes] | dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in _raw(reply).items()}


def _forget(futures: list[Any]) -> None:
    """Let go of replies not awaited (an error in one means all failed: say it once)."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


class Visitors:
    def __init__(self, calls: Coalescer):
        self.calls = calls
        self._ids: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def read(
        self,
        identities: list[tuple[str, str]],
        history: bool,
        assignments: list[str],
        ids: bool = False,
        anonymous: bool = False,
    ) -> Visitor:
        """The visitor known by ``identities`` (strongest first: user id, then anonymous id; a
        ``profile`` identity is the profile id itself); ``assignments``: the A/B placements
        whose sticky variant to read; ``ids``: read their identities too; ``anonymous``: only a
        profile without a user id (see the module's docstring)."""
        fields = [f"ab:{key}" for key in assignments]
        records = (
            [self.calls.command("HMGET", visitor_key(k, v), *fields) for k, v in identities]
            if fields
            else []
        )
        try:
            pid = self._known(identities)
            if pid is None:
                pid = await self._profile_id(identities)
            if pid:
                visitor = await self._profile(pid, history, ids)
                moved = visitor.raw.get(b"merged_into", b"").decode()
                if moved:
                    self._remember(identities, moved)
                    visitor = await self._profile(moved, history, ids)
                if anonymous and visitor.raw.get(b"user_id"):
                    visitor = Visitor()
            else:
                visitor = Visitor()
            for record in reversed(records):  # the strongest identity's assignment wins
                for key, value in zip(assignments, await record):
                    if value is not None:
                        visitor.assignments[key] = value.decode()
            return visitor
        finally:
            _forget(records)

    def _known(self, identities: list[tuple[str, str]]) -> str | None:
        """The profile id without a round trip (a ``profile`` identity, or cached), else None.
        Checked before any coroutine is made: most requests stop here."""
        if identities[0][0] == "profile":
            return identities[0][1]
        now = time.monotonic()
        for kind, value in identities:
            cached = self._ids.get(f"{kind}:{value}")
            if cached is not None and cached[1] > now:
                return cached[0]
        return None

    async def _profile_id(self, identities: list[tuple[str, str]]) -> str:
        """The profile id read from Redis (``""``: none yet); cached when found."""
        found = [self.calls.command("GET", identity_key(k, v)) for k, v in identities]
        try:
            for (kind, value), reply in zip(identities, found):
                pid = await reply
                if pid is not None:
                    self._remember([(kind, value)], pid.decode())
                    return str(pid.decode())
            return ""
        finally:
            _forget(found)

    def _remember(self, identities: list[tuple[str, str]], pid: str) -> None:
        expires = time.monotonic() + IDENTITY_TTL
        for kind, value in identities:
            key = f"{kind}:{value}"
            self._ids[key] = (pid, expires)
            self._ids.move_to_end(key)
        while len(self._ids) > _CACHE_SIZE:
            self._ids.popitem(last=False)

    async def _profile(self, pid: str, history: bool, ids: bool) -> Visitor:
        profile, viewed, cart, daily, identities, *_ = profile_keys(pid)
        if not history and not ids:  # the common case: the profile hash alone, one reply
            raw = _raw(await self.calls.command("HGETALL", profile))
            return Visitor(profile_id=pid if raw else "", raw=raw)
        replies = [self.calls.command("HGETALL", profile)]
        known = self.calls.command("SMEMBERS", identities) if ids else None
        if history:
            replies += [
                self.calls.command("LRANGE", viewed, 0, -1),
                self.calls.command("HGETALL", cart),
                self.calls.command("HGETALL", daily),
            ]
        try:
            visitor = await self._snapshot(pid, history, replies)
            if known is not None:
                visitor.identities = sorted(i.decode() for i in await known)
            return visitor
        finally:
            _forget(replies if known is None else [*replies, known])

    async def _snapshot(self, pid: str, history: bool, replies: list[Any]) -> Visitor:
        raw = _raw(await replies[0])
        visitor = Visitor(profile_id=pid if raw else "", raw=raw)
        if history:
            fields = visitor.fields
            segments = msgspec.json.decode(fields["segments"]) if "segments" in fields else []
            visitor.snapshot = Snapshot(
                id=pid,
                fields=fields,
                viewed=[v.decode() for v in await replies[1]],
                cart={k: msgspec.json.decode(v) for k, v in _pairs(await replies[2]).items()},
                daily={k: int(v) for k, v in _pairs(await replies[3]).items()},
                identities=[],
                segments=segments,
                merged_from=[],
            )
        return visitor
