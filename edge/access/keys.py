"""Named API keys: each with a name, scopes, optional allowed origins (browser keys) or IP
networks (server keys), and an expiry.

A key is shown once, when it is made: Redis keeps only its SHA-256 digest (a key is 32 random
bytes, so a fast digest is as safe as a slow one and costs the hot path a microsecond). Every
engine instance keeps every key's record in memory (``Keyring``) and reloads them every
``REFRESH_SECONDS``: no request waits on Redis for its key, and a key revoked elsewhere may
still work on an instance for up to that long (on the instance that revoked it, not at all).

Redis, all in one hash slot (``{access}``): ``{access}:keys`` digest -> the record's JSON,
``{access}:key_names`` name -> digest, ``{access}:key_used`` name -> last use (unix seconds,
written at each reload: up to ``REFRESH_SECONDS`` behind).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import time
from typing import Annotated, Any

import msgspec
import redis

from edge.access.scopes import SCOPES, Principal

__all__ = ["KEYS", "NAME", "NAMES", "REFRESH_SECONDS", "USED", "KeyAsk", "KeyRecord", "Keyring",
           "create", "digest", "listed", "revoke"]  # fmt: skip

KEYS, NAMES, USED = "{access}:keys", "{access}:key_names", "{access}:key_used"
REFRESH_SECONDS = 5.0
PREFIX = "kk_"
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_ORIGIN = re.compile(r"https?://[^/\s]+")


class KeyAsk(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``POST /v1/keys``: a new key."""

    name: Annotated[str, msgspec.Meta(pattern=f"^{NAME.pattern}$",
                                      description="lower-case letters, digits, . _ -")]  # fmt: skip
    scopes: Annotated[list[str], msgspec.Meta(min_length=1)]
    origins: list[str] = []  # e.g. https://shop.example: the only pages that may use it
    networks: list[str] = []  # e.g. 10.0.0.0/8: the only addresses that may use it
    expires: Annotated[int, msgspec.Meta(ge=0)] = 0  # unix seconds; 0 = never
    rate: Annotated[float, msgspec.Meta(ge=0.0, description="its own limit in requests/s; 0: "
                                        "the [limits] per_key rate")] = 0.0  # fmt: skip


class KeyRecord(msgspec.Struct, omit_defaults=True):
    """What Redis keeps of a key (never the key itself)."""

    name: str
    scopes: list[str]
    created: int
    prefix: str  # the key's first characters, to tell keys apart in a listing
    origins: list[str] = []
    networks: list[str] = []
    expires: int = 0
    rate: float = 0.0  # its own requests/s (0: the [limits] per_key rate)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def check(ask: KeyAsk) -> None:
    """ValueError naming the field of ``ask`` that is wrong (and what it may be)."""
    for i, scope in enumerate(ask.scopes):
        if scope not in SCOPES:
            raise ValueError(f"$.scopes[{i}]: unknown scope {scope!r}; one of: {', '.join(SCOPES)}")
    for i, origin in enumerate(ask.origins):
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(f"$.origins[{i}]: an origin is scheme://host[:port], got {origin!r}")
    for i, network in enumerate(ask.networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"$.networks[{i}]: not an IP network: {network!r}") from None
    if ask.expires and ask.expires <= time.time():
        raise ValueError(f"$.expires: {ask.expires} is in the past (unix seconds)")


def create(client: redis.Redis, ask: KeyAsk) -> tuple[str, KeyRecord]:
    """A new key and its record; ValueError if the ask is wrong, KeyError if the name is
    taken."""
    check(ask)
    key = PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord(ask.name, sorted(set(ask.scopes)), int(time.time()), key[:7],
                       ask.origins, ask.networks, ask.expires, ask.rate)  # fmt: skip
    found = digest(key)
    if not client.hsetnx(NAMES, ask.name, found):
        raise KeyError(ask.name)
    client.hset(KEYS, found, msgspec.json.encode(record))
    return key, record


def listed(client: redis.Redis) -> list[dict[str, Any]]:
    """Every key's record (no key, no digest) with its last use, by name."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(KEYS)
    pipe.hgetall(USED)
    raw, used = pipe.execute()
    found = []
    for value in raw.values():
        record = msgspec.to_builtins(msgspec.json.decode(value, type=KeyRecord))
        last = used.get(record["name"].encode()) or used.get(record["name"])
        found.append({**record, "last_used": int(float(last)) if last else None})
    return sorted(found, key=lambda r: r["name"])


def revoke(client: redis.Redis, name: str) -> KeyRecord | None:
    """Forget the key named ``name``; its record, or None if there is none."""
    found = client.hget(NAMES, name)
    if found is None:
        return None
    raw = client.hget(KEYS, found)
    pipe = client.pipeline(transaction=False)
    pipe.hdel(KEYS, found)
    pipe.hdel(NAMES, name)
    pipe.hdel(USED, name)
    pipe.execute()
    return msgspec.json.decode(raw, type=KeyRecord) if raw else None


class Keyring:
    """Every named key, in memory: ``find`` is a dict lookup on the key's digest."""

    def __init__(self) -> None:
        self._by_digest: dict[str, tuple[Principal, int]] = {}  # digest -> (who, expires)
        self._used: dict[str, float] = {}  # name -> last use since the last reload

    def load(self, raw: dict[Any, Any]) -> None:
        found = {}
        for key, value in raw.items():
            record = msgspec.json.decode(value, type=KeyRecord)
            who = Principal(record.name, "key", frozenset(record.scopes),
                            origins=tuple(record.origins),
                            networks=tuple(record.networks), rate=record.rate)  # fmt: skip
            found[key.decode() if isinstance(key, bytes) else key] = (who, record.expires)
        self._by_digest = found

    def find(self, key: str) -> Principal | None:
        """The key's holder, or None: no such key, revoked, or expired (alike, on purpose)."""
        found = self._by_digest.get(digest(key))
        if found is None:
            return None
        who, expires = found
        now = time.time()
        if expires and expires <= now:
            return None
        self._used[who.name] = now
        return who

    def forget(self, name: str) -> None:
        """Drop the key named ``name`` now (this instance revoked it)."""
        self._by_digest = {d: f for d, f in self._by_digest.items() if f[0].name != name}

    async def refresh(self, client: Any) -> None:
        """Write the last uses seen since the last call, then reload every key (async
        client)."""
        used, self._used = self._used, {}
        known = {who.name for who, _ in self._by_digest.values()}
        used = {name: t for name, t in used.items() if name in known}  # not one revoked since
        if used:
            await client.hset(USED, mapping={name: f"{t:.0f}" for name, t in used.items()})
        self.load(await client.hgetall(KEYS))
