"""Identifiers a message carries, checked and normalised at intake.

Identity resolution (profiles) trusts what passes here: blocked placeholder values never become
identities, emails are compared lower-cased, wallet addresses are EIP-55 checksummed. A
``wallet`` trait is only a trait: a wallet becomes a person's identity when they prove it
(``POST /v1/wallets/link``), never because a message names it.

Examples:
    >>> checksum_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
    '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed'
    >>> identities(wire.MESSAGE.decode(b'{"type": "identify", "userId": "u1", "anonymousId": "a1",'
    ...                                b' "traits": {"email": "Ada@Example.com"}}'))
    [('user_id', 'u1'), ('anonymous_id', 'a1'), ('email', 'ada@example.com')]
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import msgspec
from Crypto.Hash import keccak

from collector import wire

__all__ = [
    "BLOCKED",
    "KINDS",
    "check_identifiers",
    "checksum_address",
    "identify_traits",
    "identities",
]

BLOCKED = wire.BLOCKED
KINDS = ("user_id", "anonymous_id", "email", "wallet", "external")
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_IDENTITY_TRAITS = (b'"email"', b'"wallet"')


def checksum_address(address: str) -> str:
    """The EIP-55 form of an Ethereum address; ValueError if it is not one, or if its mixed
    case is a checksum that does not match."""
    if not _HEX_ADDRESS.fullmatch(address):
        raise ValueError("must be 0x followed by 40 hexadecimal digits")
    lower = address[2:].lower()
    digest = keccak.new(digest_bits=256, data=lower.encode()).hexdigest()
    checked = "0x" + "".join(
        char.upper() if int(digest[i], 16) >= 8 else char for i, char in enumerate(lower)
    )
    body = address[2:]
    if body not in (lower, body.upper()) and address != checked:
        raise ValueError(f"fails its EIP-55 checksum (expected {checked})")
    return checked


def check_identifiers(msg: wire.Message, context: bytes | None = None) -> None:
    """Check identity traits and external ids (placeholder ids are refused by ``wire.check``);
    checksum wallets in place.

    ``context`` is ``bytes(msg.context)`` when the caller has it already. Raises ValueError as
    "`field` must …" so the collector reports the field path.
    """
    context = bytes(msg.context) if context is None else context
    if type(msg) is wire.Identify:
        if any(key in bytes(msg.traits) for key in _IDENTITY_TRAITS):
            msg.traits = _checked_traits(msg.traits, "traits")
        if b'"traits"' in context and any(key in context for key in _IDENTITY_TRAITS):
            # RudderStack sends identify traits in context.traits
            full = wire.as_dict(msg.context)
            if isinstance(full.get("traits"), dict):
                raw = msgspec.Raw(msgspec.json.encode(full["traits"]))
                full["traits"] = wire.as_dict(_checked_traits(raw, "context.traits"))
                msg.context = msgspec.Raw(msgspec.json.encode(full))
    if b'"externalIds"' in context:
        _check_external_ids(wire.as_dict(msg.context).get("externalIds"))


def _checked_traits(raw: msgspec.Raw, where: str) -> msgspec.Raw:
    traits = wire.as_dict(raw)
    email = traits.get("email")
    if email is not None and (not isinstance(email, str) or not _EMAIL.fullmatch(email.strip())):
        raise ValueError(f"`{where}.email` must be an email address, got {email!r}")
    wallet = traits.get("wallet")
    if wallet is None:
        return raw
    if not isinstance(wallet, str):
        raise ValueError(f"`{where}.wallet` must be an Ethereum address, got {wallet!r}")
    try:
        checked = checksum_address(wallet.strip())
    except ValueError as exc:
        raise ValueError(f"`{where}.wallet` must be a valid Ethereum address: {exc}") from None
    if checked == wallet:
        return raw
    traits["wallet"] = checked
    return msgspec.Raw(msgspec.json.encode(traits))


def identify_traits(msg: wire.Message) -> dict[str, Any]:
    """An identify's traits, with those RudderStack sends in ``context.traits`` underneath."""
    traits = wire.as_dict(msg.traits) if type(msg) is wire.Identify else {}
    if type(msg) is wire.Identify and b'"traits"' in bytes(msg.context):
        nested = wire.as_dict(msg.context).get("traits")
        if isinstance(nested, dict):
            traits = {**nested, **traits}
    return traits


def _check_external_ids(external: Any) -> None:
    if not isinstance(external, list):
        raise ValueError("`context.externalIds` must be a list of {id, type} objects")
    for item in external:
        if not (isinstance(item, dict) and isinstance(item.get("type"), str)):
            raise ValueError("`context.externalIds` must be a list of {id, type} objects")
        if not isinstance(item.get("id"), str) or item["id"].strip().lower() in BLOCKED:
            raise ValueError(f"`context.externalIds` must hold real ids, not {item.get('id')!r}")


def identities(msg: wire.Message) -> list[tuple[str, str]]:
    """The (kind, value) identities of a message that passed ``check_identifiers``."""
    found: list[tuple[str, str]] = []
    if msg.user_id is not None:
        found.append(("user_id", str(msg.user_id)))
    if msg.anonymous_id is not None:
        found.append(("anonymous_id", str(msg.anonymous_id)))
    if type(msg) is wire.Identify:
        traits = identify_traits(msg)
        if isinstance(traits.get("email"), str):
            found.append(("email", traits["email"].strip().lower()))
    if b'"externalIds"' in bytes(msg.context):
        for item in wire.as_dict(msg.context).get("externalIds") or []:
            found.append(("external", f"{item['type']}:{item['id']}"))
    return found


def user_hash(secret: str, user_id: str) -> str:
    """What a site's server sends beside ``user_id`` to prove who is signed in (identity
    verification, ``decisions.identity``): lowercase hex HMAC-SHA256 under the identity secret.

    Examples:
        >>> user_hash("idsec_x", "u1")[:12]
        'eb69ee435069'
    """
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()
