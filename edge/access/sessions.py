"""Dashboard sessions, kept server-side: the cookie carries a random token, nothing else.

A session is made at sign-in and lasts ``HOURS``; each page asks Redis for it, so revoking it
(or removing its user, or resetting their password) ends it at the next request. Redis keeps the
token's SHA-256 digest, not the token: its first ``ID_LENGTH`` hex digits are the session's id,
the name a listing shows and a revocation takes (an id signs no one in). A break-glass session
(the secret key's) remembers a digest of the key that made it: rotating the key ends it.

Redis, in the ``{access}`` slot: ``{access}:sessions`` id -> the record's JSON,
``{access}:session_seen`` id -> its last use (unix seconds, written at most once a minute; kept
apart so that a page view can never bring back a session revoked meanwhile). Expired sessions
are dropped whenever one is made or the sessions are listed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import msgspec
import redis

__all__ = ["HOURS", "ID", "ID_LENGTH", "SEEN", "SESSIONS", "SessionRecord", "end_for", "find",
           "listed", "open_session", "revoke", "session_id", "touch"]  # fmt: skip

SESSIONS, SEEN = "{access}:sessions", "{access}:session_seen"
HOURS = 12
ID_LENGTH = 32
ID = re.compile(f"[0-9a-f]{{{ID_LENGTH}}}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_SEEN_EVERY = 60  # seconds: a page view rewrites "seen" no more often


class SessionRecord(msgspec.Struct, omit_defaults=True):
    """What Redis keeps of a session (never its token)."""

    id: str
    user: str  # a user's email, or "secret key" (break-glass)
    kind: str  # "user" or "bootstrap"
    created: int  # unix seconds
    seen: int
    expires: int
    agent: str = ""  # the browser's User-Agent, cut to 200 characters
    address: str = ""
    key: str = ""  # break-glass: a digest of the secret key that signed it in


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:ID_LENGTH]


def _prune(client: redis.Redis, now: int) -> list[SessionRecord]:
    """The live sessions, with their last use; the expired ones are dropped."""
    pipe = client.pipeline(transaction=False)
    pipe.hvals(SESSIONS)
    pipe.hgetall(SEEN)
    raw, seen = pipe.execute()
    seen = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in seen.items()}
    found, gone = [], []
    for value in raw:
        record = msgspec.json.decode(value, type=SessionRecord)
        record.seen = max(record.seen, seen.get(record.id, 0))
        (found if record.expires > now else gone).append(record)
    if gone:
        client.hdel(SESSIONS, *(r.id for r in gone))
    orphans = set(seen) - {r.id for r in found}  # ended sessions' last uses
    if orphans:
        client.hdel(SEEN, *orphans)
    return found


def open_session(client: redis.Redis, user: str, kind: str, agent: str = "", address: str = "",
                 key: str = "") -> tuple[str, SessionRecord]:  # fmt: skip
    """A new session's token (for the cookie) and record."""
    now = int(time.time())
    _prune(client, now)
    token = secrets.token_urlsafe(32)
    record = SessionRecord(session_id(token), user, kind, now, now, now + HOURS * 3600,
                           agent[:200], address[:64], key)  # fmt: skip
    client.hset(SESSIONS, record.id, msgspec.json.encode(record))
    return token, record


def find(client: redis.Redis, token: str) -> SessionRecord | None:
    """The live session ``token`` opens, or None (malformed, unknown, revoked or expired)."""
    if not _TOKEN.fullmatch(token):
        return None
    found = session_id(token)
    pipe = client.pipeline(transaction=False)
    pipe.hget(SESSIONS, found)
    pipe.hget(SEEN, found)
    raw, seen = pipe.execute()
    if raw is None:
        return None
    record = msgspec.json.decode(raw, type=SessionRecord)
    if record.expires <= time.time():
        client.hdel(SESSIONS, record.id)
        return None
    record.seen = max(record.seen, int(seen or 0))
    return record


def touch(client: redis.Redis, record: SessionRecord) -> None:
    """Note that the session was used now (at most once a minute; only if it still exists)."""
    now = int(time.time())
    if now - record.seen < _SEEN_EVERY:
        return
    record.seen = now
    client.hset(SEEN, record.id, now)


def listed(client: redis.Redis, user: str | None = None) -> list[SessionRecord]:
    """The live sessions (of ``user`` only, if given), the newest first."""
    found = _prune(client, int(time.time()))
    if user is not None:
        found = [r for r in found if r.user == user]
    return sorted(found, key=lambda r: (-r.created, r.id))


def revoke(client: redis.Redis, id: str) -> SessionRecord | None:
    """End the session ``id``: its record, or None if there is none."""
    raw = client.hget(SESSIONS, id)
    if raw is None or not client.hdel(SESSIONS, id):
        return None
    client.hdel(SEEN, id)
    return msgspec.json.decode(raw, type=SessionRecord)


def end_for(client: redis.Redis, user: str) -> int:
    """End every session of ``user``; how many there were."""
    ids = [r.id for r in listed(client, user)]
    if not ids:
        return 0
    ended = int(client.hdel(SESSIONS, *ids))
    client.hdel(SEEN, *ids)
    return ended
