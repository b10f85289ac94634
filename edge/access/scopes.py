"""The scopes an API key may hold, the roles a dashboard user may have, and who is asking.

A scope names one kind of work (``placements:write``); ``admin`` holds every scope. A role is a
set of scopes (a dashboard user's). The bootstrap keys keep their old powers: the write key is
``track`` and ``decide``, the secret key is ``admin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BOOTSTRAP_SECRET", "BOOTSTRAP_WRITE", "ROLES", "SCOPES", "Principal", "for_role"]

SCOPES: dict[str, str] = {
    "track": "send events: the tracking API (browsers, SDKs, servers)",
    "decide": "ask for decisions and link wallets; a userId counts only with its userHash",
    "decide:trusted": "decide for any userId without its userHash (servers only)",
    "read": "read definitions and results: placements, segments, journeys, templates, "
    "broadcasts, subscription groups, models, the catalog",
    "profiles:read": "read a person's profile, events, export and subscriptions, contact "
    "fields included",
    "profiles:erase": "erase a person",
    "placements:write": "create, change, delete and evaluate placements",
    "segments:write": "create, change and delete segments",
    "journeys:write": "create, change, delete and simulate journeys",
    "messaging:write": "create, change and delete email templates, broadcasts and subscription "
    "groups",
    "messaging:send": "start, pause, resume and cancel broadcasts; set a person's "
    "subscriptions; the suppression list; delivery feedback",
    "catalog:write": "change catalog items and refresh recommendations",
    "recommendations": "pull recommendations and rendered blocks (email systems)",
    "onchain": "send on-chain events (an indexer)",
    "sql": "run read-only SQL over the event store",
    "admin": "everything: keys, users, sessions, the audit log and webhook secrets too",
}

ROLES: dict[str, frozenset[str]] = {
    # Results and definitions; a profile's contact fields are hidden.
    "viewer": frozenset({"read"}),
    "editor": frozenset(
        (
            "read profiles:read placements:write segments:write journeys:write messaging:write "
            "messaging:send catalog:write recommendations"
        ).split()
    ),  # fmt: skip
    "admin": frozenset({"admin"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a key (bootstrap or named) or a dashboard user."""

    name: str  # the key's name, or the user's email
    kind: str  # "key" (a named key), "bootstrap" (the write or secret key), "user"
    scopes: frozenset[str]
    role: str = ""  # a user's role
    origins: tuple[str, ...] = ()  # a browser key's allowed origins (empty: any)
    networks: tuple[str, ...] = field(default=())  # a server key's allowed networks (empty: any)
    rate: float = 0.0  # a named key's own requests/s (0: the [limits] per_key rate)

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def actor(self) -> str:
        """How the audit log names it: ``key:<name>``, ``user:<email>``."""
        return f"{'user' if self.kind == 'user' else 'key'}:{self.name}"


BOOTSTRAP_WRITE = Principal("write key", "bootstrap", frozenset({"track", "decide"}))
BOOTSTRAP_SECRET = Principal("secret key", "bootstrap", frozenset({"admin"}))


def for_role(email: str, role: str) -> Principal:
    return Principal(email, "user", ROLES[role], role=role)
