"""Decisions after the answer: the log line each one leaves in the spool, what a decision id
carries, and what the reward worker keeps in Redis to attribute rewards.

What is kept is bounded by people × placements, plus the rewards of one attribution window;
never by how many decisions were made (no key per decision):

    {dv:<kind>:<value>}      hash    per identity (``user_id`` / ``anonymous_id``):
                                     ``dl:<placement>`` -> ``Latest`` (JSON ``[id, features]``),
                                     the latest decision (last touch), with its features when the
                                     placement's policy is contextual; ``dr:<placement>`` -> the
                                     newest recommendations, ``[[id, [item, …]], …]`` (at most
                                     ``RECENT_RECS``); ``ab:<placement>`` -> the sticky A/B
                                     variant (expires ``VISITOR_TTL`` after the last decision)
    {rw:<placement>:<hour>}  hash    decision id -> the spool position of the event that rewarded
                                     it, for the decisions of that hour that earned a reward:
                                     what makes a reward exactly once (expires a window and two
                                     margins after the hour, ``reward_expiry``)
    {dsig}                   string  the key decision ids are signed with (``SIGNING_KEY``)

A decision the policy made has a **signed id**: ``d_`` and 36 characters, 27 bytes written in
base64url's alphabet sorted in ASCII order (``-0-9A-Z_a-z``), so that ids sort by time::

    ms since the epoch (6) | placement tag (4) | arm (1) | variant tag (2) |
    propensity (half float, 2) | random (4) | HMAC-SHA256 of the 19 bytes before it (first 8)

A click carries everything its reward needs, and a page cannot forge one: the tag is a hash of
the placement's key (``Resolver`` finds it among the placements known now) and the variant tag
tells an arm that moved in an edit. The key is derived from the engine's secret key
(``DecisionIds.of_secret``); the API processes publish it in ``{dsig}`` (the secret key
itself never reaches Redis, and cannot be recovered from the derived key), where the reward
worker, which is not given the secret key, reads it. Decisions that earn nothing (fallbacks)
and A/B units take a plain id, ``new_decision_id``: ``d_`` and 24 hex digits.

Examples:
    >>> ids = DecisionIds.of_secret("sk_example")
    >>> decision_id = ids.new("home_hero", 1, "bold", 0.25, 1_764_633_600_000)
    >>> len(decision_id), decision_id[:2]
    (38, 'd_')
    >>> claim = ids.verify(decision_id)
    >>> claim.at, claim.arm, claim.propensity
    (1764633600000, 1, 0.25)
    >>> Resolver({"home_hero": ["classic", "bold"]}).resolve(claim)
    ('home_hero', 1)
    >>> ids.verify(decision_id[:-1] + ("A" if decision_id[-1] != "A" else "B")) is None
    True
    >>> DecisionIds.of_secret("another secret").verify(decision_id) is None
    True
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import struct
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec

__all__ = [
    "DECISION_REWARDS",
    "LATEST",
    "LOGGED",
    "MARGIN_MS",
    "RECENT",
    "RECENT_RECS",
    "SIGNING_KEY",
    "VISITOR_TTL",
    "Claim",
    "DecisionIds",
    "Latest",
    "Logged",
    "Resolver",
    "Shown",
    "claim_of",
    "new_decision_id",
    "placement_tag",
    "plain_shape",
    "reward_expiry",
    "reward_key",
    "signed_shape",
    "variant_tag",
    "visitor_key",
]

VISITOR_TTL = 90 * 86_400
RECENT_RECS = 10  # recommendations per placement and identity an order may reward
SIGNING_KEY = "{dsig}"
MARGIN_MS = 3_600_000  # late, queued events: a reward mark outlives its window by this, twice
_HOUR_MS = 3_600_000

# SQL: each decision of a placement and the reward it earned, from the "Decision Rewarded" events
# the reward worker writes (join it ``ON r.decision_id = d.decisionId``).
DECISION_REWARDS = """(
    SELECT JSONExtractString(properties, 'decisionId') AS decision_id,
           sum(JSONExtractFloat(properties, 'reward')) AS reward
    FROM events
    WHERE type = 'track' AND event = 'Decision Rewarded'
      AND JSONExtractString(properties, 'placement') = {placement:String}
    GROUP BY decision_id
)"""


class Logged(msgspec.Struct, rename="camel", kw_only=True):
    """One line of the decision log (the ``decisions`` table's columns)."""

    decision_id: str
    timestamp: datetime
    placement: str
    variant: str
    arm: int
    policy: str
    policy_revision: int
    propensity: float
    profile_id: str
    anonymous_id: str
    user_id: str
    features: list[float]
    context: msgspec.Raw
    fallback: str
    items: list[str] = []  # a recommendation's item ids, in the order shown


LOGGED = msgspec.json.Decoder(Logged)


class Latest(msgspec.Struct, array_like=True):
    """A person's latest decision of a placement (``dl:<placement>``): its id says the rest."""

    id: str
    features: list[float] = []  # kept only for a contextual policy, which learns from them


class Shown(msgspec.Struct, array_like=True):
    """One of a person's recent recommendations (``dr:<placement>``): what an order may match."""

    id: str
    items: list[str] = []


# Values written before this layout ("<id> <ms>") do not decode: read as absent, never an error.
LATEST = msgspec.json.Decoder(Latest)
RECENT = msgspec.json.Decoder(list[Shown])


def visitor_key(kind: str, value: str) -> str:
    """The decision memory of one identity (``kind`` is ``user_id`` or ``anonymous_id``)."""
    return f"{{dv:{kind}:{value}}}"


def reward_key(placement: str, at_ms: int) -> str:
    """The rewarded decisions of ``placement`` made in the hour of ``at_ms``. Bucketed by the
    decision's time, which its id carries: one HGET says whether a decision earned already."""
    return f"{{rw:{placement}:{at_ms // _HOUR_MS}}}"


def reward_expiry(at_ms: int, window_ms: int) -> int:
    """When (ms since the epoch) the bucket of a decision made at ``at_ms`` may go: past the
    end of its hour, the window and two margins. The reward worker attributes nothing later
    than one margin after the window (``rewards_late``), so a mark is there while it counts,
    whatever the worker's lag and a clock skew of up to a margin."""
    return (at_ms // _HOUR_MS + 1) * _HOUR_MS + window_ms + 2 * MARGIN_MS


# -- decision ids --

# ms, placement tag, arm, variant tag, propensity (a half float: the relative precision 1/p
# needs, 0.05 % from 1 down to 1e-4), random
_LAYOUT = struct.Struct(">6sIBHe4s")
_BODY = _LAYOUT.size  # 19 bytes, then the MAC
_MAC = 8
_URLSAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SORTED = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_TO_SORTED = bytes.maketrans(_URLSAFE, _SORTED)
_FROM_SORTED = bytes.maketrans(_SORTED, _URLSAFE)
_SIGNED = re.compile(r"d_[-0-9A-Za-z_]{36}")
_PLAIN = re.compile(r"d_[0-9a-f]{24}")
_CONTEXT = b"kairos decision ids"


class Claim(msgspec.Struct, frozen=True):
    """What a signed decision id says about its decision."""

    at: int  # ms since the epoch
    placement: int  # the placement's tag (``Resolver`` finds its key)
    arm: int
    variant: int  # the variant's tag
    propensity: float  # to 0.05 %


class DecisionIds:
    """Makes and checks signed decision ids under one key (see the module's docstring).

    Examples:
        >>> ids = DecisionIds.of_secret("sk_example")
        >>> first = ids.new("hero", 0, "a", 1.0, 1_000)
        >>> later = ids.new("hero", 0, "a", 1.0, 2_000)
        >>> first < later and first != ids.new("hero", 0, "a", 1.0, 1_000)
        True
    """

    def __init__(self, key: bytes):
        self.key = key

    @classmethod
    def of_secret(cls, secret: str) -> DecisionIds:
        """The ids of an engine whose secret key is ``secret``: a key of their own, derived
        from it (the secret key is never used to sign anything else with)."""
        if not secret:
            raise ValueError("decision ids need the engine's secret key")
        return cls(hmac.digest(secret.encode(), _CONTEXT, "sha256"))

    def new(self, placement: str, arm: int, variant: str, propensity: float, at_ms: int) -> str:
        """A new signed id for a decision of ``placement`` showing ``variant`` (arm ``arm``)."""
        body = _LAYOUT.pack(at_ms.to_bytes(6, "big"), placement_tag(placement), arm,
                            variant_tag(variant), propensity, _random_bytes())  # fmt: skip
        raw = body + hmac.digest(self.key, body, "sha256")[:_MAC]
        return "d_" + base64.urlsafe_b64encode(raw).translate(_TO_SORTED).decode()

    def verify(self, decision_id: str) -> Claim | None:
        """What ``decision_id`` says, if this key signed it (None: forged, tampered with, or not
        a signed id at all)."""
        raw = _raw(decision_id)
        if raw is None:
            return None
        mac = hmac.digest(self.key, raw[:_BODY], "sha256")[:_MAC]
        return _claim(raw) if hmac.compare_digest(mac, raw[_BODY:]) else None


def signed_shape(decision_id: str) -> bool:
    """Whether ``decision_id`` is shaped like a signed id (whoever signed it)."""
    return _SIGNED.fullmatch(decision_id) is not None


def plain_shape(decision_id: str) -> bool:
    """Whether ``decision_id`` is shaped like a plain id (``new_decision_id``)."""
    return _PLAIN.fullmatch(decision_id) is not None


def claim_of(decision_id: str) -> Claim | None:
    """What a signed id says, unchecked: for ids the reward worker itself kept (in a visitor
    hash) from the decision log, which only the API writes."""
    raw = _raw(decision_id)
    return None if raw is None else _claim(raw)


def _raw(decision_id: str) -> bytes | None:
    if not signed_shape(decision_id):
        return None
    return base64.urlsafe_b64decode(decision_id[2:].encode().translate(_FROM_SORTED))


def _claim(raw: bytes) -> Claim:
    at, placement, arm, variant, propensity, _ = _LAYOUT.unpack(raw[:_BODY])
    return Claim(int.from_bytes(at, "big"), placement, arm, variant, propensity)


@functools.lru_cache(maxsize=4096)
def placement_tag(key: str) -> int:
    """A placement key's 32-bit tag (a versioned hash: ids in flight must keep meaning it)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4, person=b"kairos-p").digest())


@functools.lru_cache(maxsize=16384)
def variant_tag(key: str) -> int:
    """A variant key's 16-bit tag: tells which variant an arm index meant before an edit."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=2, person=b"kairos-v").digest())


class Resolver:
    """Finds the placement and arm a claim names among the placements known now: the tags
    select the placement (and, after an edit that moved the variant, its new arm); a claim
    that fits none, or more than one, resolves to None.

    Examples:
        >>> claim = claim_of(DecisionIds(b"k").new("hero", 0, "a", 0.5, 0))
        >>> Resolver({"hero": ["b", "a"]}).resolve(claim)  # "a" moved to arm 1
        ('hero', 1)
        >>> Resolver({"hero": ["b"], "other": ["a"]}).resolve(claim) is None
        True
    """

    def __init__(self, arms: Mapping[str, Sequence[str]]):
        self._by_tag: dict[int, list[tuple[str, Sequence[str]]]] = {}
        for key, variants in arms.items():
            self._by_tag.setdefault(placement_tag(key), []).append((key, variants))

    def resolve(self, claim: Claim) -> tuple[str, int] | None:
        found = []
        for key, variants in self._by_tag.get(claim.placement, ()):
            if claim.arm < len(variants) and variant_tag(variants[claim.arm]) == claim.variant:
                found.append((key, claim.arm))
                continue
            moved = [i for i, v in enumerate(variants) if variant_tag(v) == claim.variant]
            if len(moved) == 1:
                found.append((key, moved[0]))
        return found[0] if len(found) == 1 else None


def new_decision_id() -> str:
    """A plain id (no claim, no signature): unique, and sorts by time: ``d_`` + ms since the
    epoch (hex) + 48 random bits. For decisions that earn nothing, and A/B units."""
    return f"d_{time.time_ns() // 1_000_000:012x}{_random_bits()}"


# Random bits from os.urandom, drawn for many ids at once: one system call per 4,096 ids
# instead of one each. Deques because popleft is atomic, so threads never share one; emptied in
# a forked child, which must not repeat its parent's.
_SUFFIXES: deque[str] = deque()
_RANDOM: deque[bytes] = deque()
_BATCH = 4096
os.register_at_fork(after_in_child=_SUFFIXES.clear)
os.register_at_fork(after_in_child=_RANDOM.clear)


def _random_bits() -> str:
    """48 random bits, as 12 hex digits."""
    try:
        return _SUFFIXES.popleft()
    except IndexError:
        digits = os.urandom(6 * _BATCH).hex()
        _SUFFIXES.extend(digits[i : i + 12] for i in range(12, len(digits), 12))
        return digits[:12]


def _random_bytes() -> bytes:
    """32 random bits."""
    try:
        return _RANDOM.popleft()
    except IndexError:
        drawn = os.urandom(4 * _BATCH)
        _RANDOM.extend(drawn[i : i + 4] for i in range(4, len(drawn), 4))
        return drawn[:4]
