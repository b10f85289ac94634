"""The suppression list of addresses: where nothing (or some groups' messages) must go.

An address is kept normalized and hashed (``address_hash``: BLAKE2b of ``<channel>:<address>``,
no readable address stays behind), one small hash per address under the ``{sup}`` tag:

    {sup}:a:<hash>   hash   block -> "<reason>|<ms>|<detail>"  (bounce, complaint, manual: nothing
                                      goes to the address, transactional mail included)
                            g:<group> -> "unsubscribe|<ms>"    (that group's messages only;
                                      g:* every group of the channel: "unsubscribe from all")
                            soft, soft_last -> soft bounces seen (recorded, never suppressing)
    {sup}:all        set    hashes with a block or a group entry (the list's size)

It is fed by unsubscribes (``journeys.subscriptions``), hard bounces (``record_bounce``, for the
SMTP path: a 5xx answer), complaints and bounces from the provider's feedback webhook
(``POST /v1/messaging/feedback``, signed like journeys' webhooks under ``feedback_secret``), and
admins. It is not ``collector.consent``'s list, which holds the identities of erased people.

Examples:
    >>> normalized("email", "  Ada@Example.ORG ")
    'ada@example.org'
    >>> address_hash("email", "Ada@example.org") == address_hash("email", "ada@example.org ")
    True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Annotated, Literal

import msgspec
import redis

from collector.scripts import lua

__all__ = [
    "ALL",
    "FEEDBACK_SECRET",
    "Feedback",
    "Listing",
    "address_hash",
    "block",
    "entry",
    "feedback_secret",
    "normalized",
    "record_bounce",
    "record_feedback",
    "record_soft_bounce",
    "size",
    "unblock",
    "unsubscribe_groups",
    "verify_signature",
    "resubscribe_group",
]

ALL = "{sup}:all"
FEEDBACK_SECRET = "{msg}:feedback_secret"
SIGNATURE_TOLERANCE = 300  # seconds a signed feedback call may be old (a replay after that fails)
_SUPPRESS = lua(__file__, "suppress.lua")

Reason = Literal["bounce", "complaint", "unsubscribe", "manual"]


def normalized(channel: str, address: str) -> str:
    """The address as it is compared: trimmed; an email address also lower-cased (mailbox
    providers treat the local part without case, and so must a list people are kept off)."""
    found = address.strip()
    return found.lower() if channel == "email" else found


def address_hash(channel: str, address: str) -> str:
    return hashlib.blake2b(
        f"{channel}:{normalized(channel, address)}".encode(), digest_size=16
    ).hexdigest()


def _key(digest: str) -> str:
    return f"{{sup}}:a:{digest}"


def _change(client: redis.Redis, digest: str, put: dict[str, str], drop: list[str]) -> bool:
    """Set and delete fields of one address's entry, keeping ``{sup}:all`` in step; whether the
    address is listed afterwards."""
    args: list[str] = [digest, str(len(put))]
    for name, value in put.items():
        args += [name, value]
    return bool(_SUPPRESS(client, [_key(digest), ALL], [*args, *drop]))


def block(client: redis.Redis, channel: str, address: str, reason: Reason, detail: str = "",
          at: int | None = None) -> None:  # fmt: skip
    """Send nothing more to ``address`` (a hard bounce, a complaint, an admin)."""
    at = _now() if at is None else at
    _change(client, address_hash(channel, address), {"block": f"{reason}|{at}|{detail[:200]}"}, [])


def unsubscribe_groups(client: redis.Redis, channel: str, address: str, groups: list[str],
                       at: int | None = None) -> None:  # fmt: skip
    """Keep ``groups`` (``*``: every group of the channel) from ``address``."""
    at = _now() if at is None else at
    _change(client, address_hash(channel, address),
            {f"g:{g}": f"unsubscribe|{at}" for g in groups}, [])  # fmt: skip


def resubscribe_group(client: redis.Redis, channel: str, address: str, group: str,
                      others: list[str]) -> None:  # fmt: skip
    """Let ``group`` reach ``address`` again. An "unsubscribe from all" entry is replaced by one
    per other group of the channel (``others``), which stay unsubscribed."""
    digest = address_hash(channel, address)
    every = client.hget(_key(digest), "g:*")
    put = {}
    if every is not None:
        held = set(client.hkeys(_key(digest)))
        put = {f"g:{o}": every.decode() for o in others if f"g:{o}".encode() not in held}
    _change(client, digest, put, [f"g:{group}", "g:*"] if every is not None else [f"g:{group}"])


def unblock(client: redis.Redis, channel: str, address: str) -> bool:
    """Take ``address`` off the list altogether (its block and its group entries); whether it
    was on it."""
    digest = address_hash(channel, address)
    listed = bool(client.sismember(ALL, digest))
    client.delete(_key(digest))
    client.srem(ALL, digest)
    return listed


class Listing(msgspec.Struct, kw_only=True):
    """One address's entry, as ``GET /v1/suppressions/{email}`` shows it."""

    suppressed: bool
    reason: str | None = None
    at: int | None = None
    detail: str = ""
    groups: dict[str, int] = msgspec.field(default_factory=dict)  # unsubscribed: group -> ms
    soft_bounces: int = 0


def entry(client: redis.Redis, channel: str, address: str) -> Listing:
    fields = {k.decode(): v.decode() for k, v in
              client.hgetall(_key(address_hash(channel, address))).items()}  # fmt: skip
    found = Listing(suppressed="block" in fields, soft_bounces=int(fields.get("soft", 0)))
    if "block" in fields:
        reason, at, detail = fields["block"].split("|", 2)
        found.reason, found.at, found.detail = reason, int(at), detail
    found.groups = {k[2:]: int(v.partition("|")[2]) for k, v in fields.items()
                    if k.startswith("g:")}  # fmt: skip
    return found


def size(client: redis.Redis) -> int:
    """How many addresses are on the list (blocked, or unsubscribed from a group)."""
    return int(client.scard(ALL))


def record_bounce(client: redis.Redis, address: str, detail: str) -> None:
    """What the SMTP path calls when the server answered 5xx for ``address``: a hard bounce
    suppresses the address (``detail``: the server's answer, kept for admins)."""
    block(client, "email", address, "bounce", detail)


def record_soft_bounce(client: redis.Redis, address: str, detail: str) -> None:
    """A soft bounce (a full mailbox, a 4xx): counted, never suppressing."""
    key = _key(address_hash("email", address))
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, "soft", 1)
    pipe.hset(key, "soft_last", f"{_now()}|{detail[:200]}")
    pipe.execute()


class Feedback(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A bounce or complaint from the email provider (``POST /v1/messaging/feedback``).

    Examples:
        >>> msgspec.json.decode(b'{"type": "bounce", "email": "a@b.c"}', type=Feedback).bounce_type
        'hard'
    """

    type: Literal["bounce", "complaint"]
    email: Annotated[str, msgspec.Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    bounce_type: Literal["hard", "soft"] = "hard"
    detail: str = ""


def record_feedback(client: redis.Redis, feedback: Feedback) -> str:
    """Apply a provider's report; what it did (``suppressed`` or ``recorded``)."""
    if feedback.type == "bounce" and feedback.bounce_type == "soft":
        record_soft_bounce(client, feedback.email, feedback.detail)
        return "recorded"
    block(client, "email", feedback.email, feedback.type, feedback.detail)
    return "suppressed"


def feedback_secret(client: redis.Redis) -> bytes:
    """The secret the feedback webhook's calls are signed with (made on first use)."""
    client.set(FEEDBACK_SECRET, "fbsec_" + secrets.token_urlsafe(24), nx=True)
    return bytes(client.get(FEEDBACK_SECRET) or b"")


def verify_signature(secret: bytes, body: bytes, header: str | None,
                     now: float | None = None) -> str | None:  # fmt: skip
    """None when ``header`` (``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, as
    ``journeys.actions.sign`` makes it) signs ``body`` under ``secret`` and is recent; else why
    not, for the 401.

    Examples:
        >>> from journeys.actions import sign
        >>> verify_signature(b"s", b"{}", sign(b"s", b"{}", 1800000000), now=1800000010) is None
        True
        >>> verify_signature(b"s", b"{}", sign(b"other", b"{}", 1800000000), now=1800000010)
        'X-Kairos-Signature: does not match the body under the feedback secret'
    """
    if not header:
        return "X-Kairos-Signature: missing (t=<unix seconds>,v1=<hex HMAC-SHA256>)"
    parts = dict(p.strip().partition("=")[::2] for p in header.split(","))
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdecimal() or not given:
        return "X-Kairos-Signature: expected t=<unix seconds>,v1=<hex HMAC-SHA256>"
    if abs((time.time() if now is None else now) - int(stamp)) > SIGNATURE_TOLERANCE:
        return f"X-Kairos-Signature: t is more than {SIGNATURE_TOLERANCE} seconds from now"
    expected = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "X-Kairos-Signature: does not match the body under the feedback secret"
    return None


def _now() -> int:
    return int(time.time() * 1000)
