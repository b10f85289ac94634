"""Signed links in messages: a click through the tracked redirect, the open pixel, the preference
page and the one-click unsubscribe all carry a token that says who and what, signed so that
nobody can forge one for another person (or turn the redirect into an open redirect).

A token is ``<base64url of the parts joined by \\x1f>.<base64url of 16 bytes of HMAC-SHA256>``
under the link secret (made once, kept in Redis like the webhook secret). Tokens do not expire:
an unsubscribe link in a mail from last year must still work (RFC 8058 asks for it).

Examples:
    >>> found = token(b"secret", "click", "p-1", "https://shop.example/cart")
    >>> verify(b"secret", found)
    ['click', 'p-1', 'https://shop.example/cart']
    >>> verify(b"other secret", found) is None
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

import redis

__all__ = ["SECRET", "link_secret", "token", "verify"]

SECRET = "{msg}:link_secret"
_SEPARATOR = "\x1f"  # a unit separator: never in an id, a key or a URL


def link_secret(client: redis.Redis) -> bytes:
    """The secret links are signed with (made on first use, the same for every process)."""
    client.set(SECRET, "lnk_" + secrets.token_urlsafe(32), nx=True)
    return bytes(client.get(SECRET) or b"")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()[:16]


def token(secret: bytes, *parts: str) -> str:
    """A token carrying ``parts`` (the first says what the link is for)."""
    payload = _SEPARATOR.join(parts).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify(secret: bytes, found: str) -> list[str] | None:
    """The parts of a token signed with ``secret``; None for a forged or mangled one."""
    body, dot, mac = found.partition(".")
    if not dot:
        return None
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(given, _mac(secret, payload)):
        return None
    return payload.decode().split(_SEPARATOR)
