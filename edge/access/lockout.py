"""Sign-in throttling: wrong passwords lock an account for a while, and failed sign-ins block
the address they come from.

``FAILURES`` wrong passwords for one email within ``WINDOW`` seconds lock it for ``LOCK``
seconds: every sign-in to it then fails alike, the right password too. Emails that have no
account count and lock the same, so the answers never tell whether an account exists.
``ADDRESS_FAILURES`` failed sign-ins (any email, or the secret key) from one address within
``WINDOW`` block that address for ``LOCK`` seconds. Each lock is logged (a warning naming the
email or the address, never a password); a right password clears its email's count.

Redis, in the ``{access}`` slot: ``{access}:failed:<digest>`` counts (expiring with their
window), ``{access}:locked:<digest>`` locks (expiring with the lock); the digest is of
``email:<email>`` or ``address:<address>``, so no email is a key name.
"""

from __future__ import annotations

import hashlib
import logging

import redis

from collector.scripts import lua

__all__ = ["ADDRESS_FAILURES", "FAILURES", "LOCK", "WINDOW", "clear", "fail", "locked"]

FAILURES, ADDRESS_FAILURES = 5, 20
WINDOW = LOCK = 15 * 60  # seconds
_FAILED = lua(__file__, "failed.lua")
log = logging.getLogger("kairos.access")


def _digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode("utf-8", "replace")).hexdigest()[:32]


def _keys(kind: str, value: str) -> list[str]:
    found = _digest(kind, value)
    return [f"{{access}}:failed:{found}", f"{{access}}:locked:{found}"]


def locked(client: redis.Redis, email: str | None, address: str | None) -> tuple[str, int]:
    """What is locked, ``"address"`` or ``"email"`` (or ``""``), and for how many more
    seconds."""
    for kind, value in (("address", address), ("email", email)):
        if value is not None:
            left = int(client.ttl(_keys(kind, value)[1]))
            if left > 0:
                return kind, left
    return "", 0


def fail(client: redis.Redis, email: str | None, address: str | None) -> None:
    """Count a failed sign-in against ``email`` (None: the secret key's) and ``address``; log
    the locks it sets."""
    if email is not None:
        if _FAILED(client, _keys("email", email), [WINDOW, FAILURES, LOCK]):
            log.warning("dashboard account locked: too many wrong passwords",
                        extra={"email": email, "address": address, "failures": FAILURES,
                               "lock_minutes": LOCK // 60})  # fmt: skip
    if address is not None:
        if _FAILED(client, _keys("address", address), [WINDOW, ADDRESS_FAILURES, LOCK]):
            log.warning("dashboard sign-in blocked for an address: too many failed sign-ins",
                        extra={"address": address, "email": email,
                               "failures": ADDRESS_FAILURES,
                               "lock_minutes": LOCK // 60})  # fmt: skip


def clear(client: redis.Redis, email: str) -> None:
    """A right password: forget the email's failures (not its lock, which stands)."""
    client.delete(_keys("email", email)[0])
