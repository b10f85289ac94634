"""Identity verification on the public decide path, and which traits a browser may be shown.

The write key is in every page, so anyone can send ``POST /v1/decide`` naming any ``userId``.
As chat widgets do (Intercom's ``user_hash``), the site's own server proves who is signed in:
it signs the user id with the site's identity secret (``KAIROS_IDENTITY_SECRET``, kept in the
data dir's ``keys.json``; never in a page) and the page sends the signature with it::

    userHash = hex(HMAC-SHA256(identity_secret, userId))      # lowercase hex, 64 characters

A browser request (write key) whose ``userId`` comes without a valid ``userHash`` is decided
for the device only, as if it had sent its ``anonymousId`` alone (no anonymous id: an unknown
visitor), and only from a profile that is still anonymous: a profile that belongs to a
signed-in person (it has a user id; a device is linked to one by an ``identify``, which the
write key can send for anyone) needs that person's ``userHash``. And contact traits
(``is_contact``) never reach a template on such a request, even from the device's own profile.
The secret key (servers) is trusted as it is. With ``[identity] verification = "off"`` every
``userId`` is taken as given (the behaviour before verification existed).

Examples:
    >>> user_hash("s3cret", "u1")[:16]
    '8f0d05b747219f7d'
    >>> signed = user_hash("s3cret", "u1")
    >>> Verifier("s3cret").verified("u1", signed), Verifier("").verified("u1", signed)
    (True, False)
    >>> [n for n in ("email", "workEmail", "first_name", "zip", "zipper", "city") if is_contact(n)]
    ['email', 'workEmail', 'zip']
    >>> without_contact({"first_name": "Ada", "phone": "+44", "billing": {"street": "1 Rd"}})
    {'first_name': 'Ada', 'billing': {}}
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from typing import Any, Literal

import msgspec

from collector.identifiers import user_hash

__all__ = [
    "CONTACT_NAMES",
    "CONTACT_WORDS",
    "IdentityPolicy",
    "Verifier",
    "is_contact",
    "user_hash",
    "without_contact",
]

# A trait is contact data when one of the words of its name (snake_case, camelCase, kebab-case
# or spaces all split into words) is one of these, or when its whole name is one of
# CONTACT_NAMES: what reaches, locates or names a person beyond the first name a page greets
# them by. Whole words (or their plurals), so that `zipper_size` or `mailing_list` stay usable.
CONTACT_WORDS = frozenset({
    "email", "mail", "phone", "mobile", "tel", "telephone", "fax", "sms", "whatsapp", "contact",
    "address", "street", "postcode", "postal", "zip", "zipcode", "birthday", "birthdate", "birth",
    "dob", "ip", "ssn", "passport", "iban",
})  # fmt: skip
CONTACT_NAMES = frozenset({
    "name", "full_name", "fullname", "last_name", "lastname", "surname", "family_name",
    "maiden_name", "e_mail",
})  # fmt: skip
_WORDS = re.compile(r"[a-z]+(?=[A-Z]|\b|_|\d|$)|[A-Z][a-z]+|[A-Z]+(?![a-z])|\d+")


@functools.lru_cache(maxsize=4096)
def is_contact(name: str) -> bool:
    """Whether trait ``name`` is contact data (never shown to an unverified browser)."""
    words = [w.lower() for w in _WORDS.findall(name)]
    return "_".join(words) in CONTACT_NAMES or any(
        w in CONTACT_WORDS or (w[-1:] == "s" and _singular(w) in CONTACT_WORDS) for w in words
    )


def _singular(word: str) -> str:
    """emails -> email, addresses -> address (enough for the words above)."""
    return word[:-2] if word.endswith(("sses", "xes")) else word[:-1]


def without_contact(traits: dict[str, Any]) -> dict[str, Any]:
    """``traits`` without contact fields, at any depth (``billing.email`` too)."""
    return {k: _clean(v) for k, v in traits.items() if not is_contact(k)}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return without_contact(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class Verifier:
    """Checks ``userHash`` for one site: one HMAC per request that names a ``userId``, no store
    read. ``required=False`` is ``[identity] verification = "off"``."""

    def __init__(self, secret: str, required: bool = True):
        self.required = required
        # No secret: nothing verifies (an empty HMAC key would let anyone sign).
        self._key = secret.encode() if secret else None

    def verified(self, user_id: str, given: str | None) -> bool:
        if self._key is None or not given:
            return False
        expected = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


class IdentityPolicy(msgspec.Struct, forbid_unknown_fields=True):
    """The config file's ``[identity]`` section."""

    # required: a browser's userId counts only with its userHash; off: every userId is taken
    # as given (for sites that cannot sign yet; the engine warns at start).
    verification: Literal["required", "off"] = "required"
