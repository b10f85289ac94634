"""A profile's contact fields, and the profile without them: what a dashboard user whose role
lacks ``profiles:read`` (a viewer) is shown.

Contact fields are the traits that reach or name a person (``CONTACT_TRAITS``, matched without
regard to case, ``_`` or ``-``: ``firstName``, ``first_name`` and ``FIRST-NAME`` alike; an
``address`` object as a whole) and the identities of the kinds in ``CONTACT_IDENTITIES``. Their
values are replaced by ``HIDDEN``; everything else (ids, scores, segments, counts) is kept.

Examples:
    >>> shown = masked({"id": "p_1", "identities": {"email": ["ada@example.com"],
    ...                 "user_id": ["u1"]}, "traits": {"firstName": "Ada", "plan": "pro"}})
    >>> shown["identities"]
    {'email': ['hidden (viewer)'], 'user_id': ['u1']}
    >>> shown["traits"]
    {'firstName': 'hidden (viewer)', 'plan': 'pro'}
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONTACT_IDENTITIES", "CONTACT_TRAITS", "HIDDEN", "is_contact", "masked"]

HIDDEN = "hidden (viewer)"
CONTACT_TRAITS = frozenset(
    "email phone mobile phonenumber name firstname lastname fullname username address street "
    "city postalcode zip zipcode birthday avatar".split()
)  # fmt: skip
CONTACT_IDENTITIES = frozenset({"email", "phone"})


def is_contact(trait: str) -> bool:
    return trait.lower().replace("_", "").replace("-", "") in CONTACT_TRAITS


def _traits(traits: Any) -> Any:
    if not isinstance(traits, dict):
        return traits
    return {k: HIDDEN if is_contact(k) else v for k, v in traits.items()}


def masked(profile: dict[str, Any]) -> dict[str, Any]:
    """``profile`` (as ``profiles.views.describe`` makes it) with its contact fields hidden."""
    identities = {kind: [HIDDEN] * len(values) if kind in CONTACT_IDENTITIES else values
                  for kind, values in (profile.get("identities") or {}).items()}  # fmt: skip
    return {**profile, "identities": identities, "traits": _traits(profile.get("traits"))}
