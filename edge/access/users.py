"""Dashboard users: an email, a role (``edge.access.scopes.ROLES``) and a hash of their
password.

Only the password's Argon2id hash is kept (argon2-cffi's defaults, RFC 9106's second
recommended parameters: 64 MiB of memory, 3 passes, 4 lanes, a random 16-byte salt; a hash made
with other parameters is remade at the owner's next sign-in). Emails are kept and compared
lower-cased. Resetting a password or removing a user ends their sessions at once; a role change
counts from their next request (the dashboard reads the user at every page). The last admin
cannot be demoted or removed while other users remain (``LastAdmin``), so there is always a
user who can manage the rest from the dashboard; checked and written in one script.

Redis, in the ``{access}`` slot beside the keys: ``{access}:users`` email -> the record's JSON.
"""

from __future__ import annotations

import re
import time
from functools import cache
from typing import Annotated, Literal

import argon2
import msgspec
import redis

from collector.scripts import lua
from edge.access import sessions

__all__ = ["EMAIL", "MIN_PASSWORD", "USERS", "LastAdmin", "UserAsk", "UserChange", "UserRecord",
           "add", "change", "email_of", "find", "listed", "remove", "verify"]  # fmt: skip

USERS = "{access}:users"
MIN_PASSWORD, MAX_PASSWORD = 12, 1024  # characters; past 1 KiB it is a body, not a password
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
_HASHER = argon2.PasswordHasher()
_WRITE = lua(__file__, "user_write.lua")
Role = Literal["viewer", "editor", "admin"]
Password = Annotated[
    str,
    msgspec.Meta(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD,
                 description=f"at least {MIN_PASSWORD} characters"),
]  # fmt: skip
Email = Annotated[str, msgspec.Meta(pattern=f"^{EMAIL.pattern}$", max_length=254)]


class UserAsk(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/users``: a new user."""

    email: Email
    role: Role
    password: Password


class UserChange(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``PUT /v1/users/{email}``: a new role, a new password, or both."""

    role: Role | None = None
    password: Password | None = None


class LastAdmin(Exception):
    """The change would leave the other users without an admin."""

    def __init__(self, email: str):
        super().__init__(f"{email} is the last admin: make another user admin first (the "
                         "secret key stays admin on the API)")  # fmt: skip


class UserRecord(msgspec.Struct):
    """What Redis keeps of a user (the password's hash, never the password)."""

    email: str
    role: str
    hash: str
    created: int  # unix seconds
    password_changed: int


def email_of(text: str) -> str:
    """``text`` as a user's email (trimmed, lower-cased); ValueError naming ``$.email``.

    Examples:
        >>> email_of(" Ada@Example.com ")
        'ada@example.com'
        >>> email_of("ada")
        Traceback (most recent call last):
        ...
        ValueError: $.email: not an email address: 'ada'
    """
    email = text.strip().lower()
    if len(email) > 254 or not EMAIL.fullmatch(email):
        raise ValueError(f"$.email: not an email address: {text[:254]!r}")
    return email


def _checked(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"$.password: at least {MIN_PASSWORD} characters (got {len(password)})")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"$.password: at most {MAX_PASSWORD} characters")
    return password


def add(client: redis.Redis, ask: UserAsk) -> UserRecord:
    """A new user; ValueError names the wrong field, KeyError if the email has an account."""
    email, now = email_of(ask.email), int(time.time())
    record = UserRecord(email, ask.role, _HASHER.hash(_checked(ask.password)), now, now)
    if not client.hsetnx(USERS, email, msgspec.json.encode(record)):
        raise KeyError(email)
    return record


def find(client: redis.Redis, email: str) -> UserRecord | None:
    raw = client.hget(USERS, email)
    return msgspec.json.decode(raw, type=UserRecord) if raw else None


def listed(client: redis.Redis) -> list[UserRecord]:
    """Every user, by email."""
    found = [msgspec.json.decode(raw, type=UserRecord) for raw in client.hvals(USERS)]
    return sorted(found, key=lambda u: u.email)


def _written(client: redis.Redis, email: str, record: UserRecord | None) -> bool:
    """Write (None: remove) the user's record; False if there is no such user, LastAdmin if
    it would demote or remove the last admin while other users remain."""
    done = _WRITE(client, [USERS], [email, msgspec.json.encode(record) if record else ""])
    if done == -1:
        raise LastAdmin(email)
    return bool(done)


def change(client: redis.Redis, email: str, ask: UserChange) -> tuple[UserRecord, int] | None:
    """The user with the new role or password, and how many sessions a new password ended;
    None if there is no such user, ValueError if the ask is empty or wrong, LastAdmin if it
    demotes the last admin."""
    if ask.role is None and ask.password is None:
        raise ValueError("$: give a role, a password, or both")
    record = find(client, email)
    if record is None:
        return None
    if ask.role is not None:
        record.role = ask.role
    if ask.password is not None:
        record.hash = _HASHER.hash(_checked(ask.password))
        record.password_changed = int(time.time())
    if not _written(client, email, record):
        return None
    ended = sessions.end_for(client, email) if ask.password is not None else 0
    return record, ended


def remove(client: redis.Redis, email: str) -> tuple[UserRecord, int] | None:
    """Forget the user and end their sessions: their record and how many ended, or None;
    LastAdmin if they are the last admin and other users remain."""
    record = find(client, email)
    if record is None or not _written(client, email, None):
        return None
    return record, sessions.end_for(client, email)


@cache
def _dummy() -> str:
    return _HASHER.hash("not anyone's password")


def verify(client: redis.Redis, record: UserRecord | None, password: str) -> bool:
    """Whether ``password`` is the user's. Without a user a dummy hash is checked, so an
    unknown email costs the same time as a wrong password. A hash of old parameters is
    remade."""
    if len(password) > MAX_PASSWORD:  # no one's (and hashing a body costs too much)
        record, password = None, password[:MAX_PASSWORD]
    try:
        _HASHER.verify(record.hash if record else _dummy(), password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False
    if record is None:
        return False
    if _HASHER.check_needs_rehash(record.hash):
        record.hash = _HASHER.hash(password)
        client.hset(USERS, record.email, msgspec.json.encode(record))
    return True
