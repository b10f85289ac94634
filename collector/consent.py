"""Privacy at the door: the workspace consent policy and the suppression list.

Consent follows Segment's consent spec: ``context.consent.categoryPreferences`` maps category
names to true/false. When the analytics category (``ConsentPolicy.category``, matched without
regard to case) is false, the policy decides:

- ``anonymize`` (default): the event is kept for aggregate counts but loses everything that
  could tie it to a person: userId, traits, ip, user agent, external ids; its anonymousId becomes
  a random one-off; it joins no profile. Identify, alias and group calls, which are only
  identity, are dropped.
- ``drop``: the event is not stored at all.

Events without consent information, or granting it, pass unchanged.

The suppression list holds hashes of the identities of erased people; events carrying one are
dropped, so an erased person does not come back.
"""

from __future__ import annotations

import uuid
from hashlib import blake2b
from typing import Literal

import msgspec
import redis.asyncio

from collector import wire
from collector.versioned import Versioned

__all__ = [
    "SUPPRESSION",
    "SUPPRESSION_VERSION",
    "ConsentPolicy",
    "SuppressionCache",
    "identity_hash",
    "suppressed",
]

SUPPRESSION = "{privacy}:suppressed"  # set of identity hashes
SUPPRESSION_VERSION = "{privacy}:version"  # bumped on every change, for cached copies

_CONSENT = b'"consent"'
_PERSONAL_CONTEXT = ("ip", "userAgent", "traits", "externalIds", "device")


class ConsentPolicy(msgspec.Struct, forbid_unknown_fields=True):
    mode: Literal["anonymize", "drop"] = "anonymize"
    category: str = "analytics"

    def apply(self, msg: wire.Message) -> wire.Message | None:
        """``msg`` as the policy allows it to be kept, or None to drop it."""
        if _CONSENT not in bytes(msg.context) or not self._denied(wire.as_dict(msg.context)):
            return msg
        if self.mode == "drop" or type(msg) in (wire.Identify, wire.Alias, wire.Group):
            return None
        context = {k: v for k, v in wire.as_dict(msg.context).items() if k not in _PERSONAL_CONTEXT}
        msg.user_id = None
        msg.anonymous_id = f"anon-{uuid.uuid4().hex}"
        msg.context = msgspec.Raw(msgspec.json.encode(context))
        msg.request_ip = None
        msg.anonymized = True
        return msg

    def _denied(self, context: dict[str, object]) -> bool:
        consent = context.get("consent")
        preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
        if not isinstance(preferences, dict):
            return False
        wanted = self.category.lower()
        return any(k.lower() == wanted and v is False for k, v in preferences.items())


def identity_hash(kind: str, value: str) -> bytes:
    """How an identity is kept on the suppression list: no readable identifier stays behind."""
    return blake2b(f"{kind}:{value}".encode(), digest_size=16).digest()


def suppressed(msg: wire.Message, hashes: frozenset[bytes] | set[bytes]) -> bool:
    if not hashes:
        return False
    if msg.user_id is not None and identity_hash("user_id", str(msg.user_id)) in hashes:
        return True
    return (
        msg.anonymous_id is not None
        and identity_hash("anonymous_id", str(msg.anonymous_id)) in hashes
    )


async def _members(client: redis.asyncio.Redis) -> frozenset[bytes]:
    return frozenset(await client.smembers(SUPPRESSION))


class SuppressionCache:
    """This process's copy of the suppression list, refreshed when its version changes (the
    collector checks every message against it without a Redis call)."""

    def __init__(self) -> None:
        self._list: Versioned[frozenset[bytes]] = Versioned(SUPPRESSION_VERSION, frozenset())

    @property
    def hashes(self) -> frozenset[bytes]:
        return self._list.value

    async def refresh(self, client: redis.asyncio.Redis) -> None:
        await self._list.aget(client, _members)
