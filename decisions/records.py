"""Decisions after the answer: the log line each one leaves in the spool, and the records the
reward worker keeps in Redis to attribute rewards.

    {d:<decisionId>}        string  JSON ``Record``: placement, arm, features, identities, time,
                                    and the spool position of the event that rewarded it
                                    (expires one attribution window after the decision)
    {dv:<kind>:<value>}     hash    per identity (``user_id`` / ``anonymous_id``):
                                    ``dl:<placement>`` -> "<decisionId> <ms>", the latest
                                    decision (last touch); ``dr:<placement>`` -> the newest
                                    recommendations "<id> <ms> <id> <ms> …" (``RECENT_RECS``);
                                    ``ab:<placement>`` -> the sticky A/B variant
                                    (expires ``VISITOR_TTL`` after the last decision)
"""

from __future__ import annotations

import os
import time
from collections import deque
from datetime import datetime

import msgspec

__all__ = [
    "DECISION_REWARDS",
    "LOGGED",
    "RECENT_RECS",
    "RECORD",
    "VISITOR_TTL",
    "Logged",
    "Record",
    "decision_key",
    "new_decision_id",
    "visitor_key",
]

VISITOR_TTL = 90 * 86_400
RECENT_RECS = 10  # recommendations per placement and identity an order may reward

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


class Record(msgspec.Struct, omit_defaults=True, kw_only=True):
    placement: str
    arm: int
    variant: str
    at: int  # ms since the epoch
    features: list[float] = []
    anonymous_id: str = ""
    user_id: str = ""
    rewarded: str = ""  # the spool position of the event that rewarded it
    items: list[str] = []  # a recommendation's items


RECORD = msgspec.json.Decoder(Record)


def new_decision_id() -> str:
    """Unique, and sorts by time: ``d_`` + ms since the epoch (hex) + 48 random bits."""
    return f"d_{time.time_ns() // 1_000_000:012x}{_random_bits()}"


# 48-bit random suffixes (12 hex digits) from os.urandom, drawn for many ids at once: one
# system call per 4,096 decisions instead of one each. A deque because popleft is atomic, so
# threads never share a suffix; emptied in a forked child, which must not repeat its parent's.
_SUFFIXES: deque[str] = deque()
_BATCH = 4096
os.register_at_fork(after_in_child=_SUFFIXES.clear)


def _random_bits() -> str:
    try:
        return _SUFFIXES.popleft()
    except IndexError:
        digits = os.urandom(6 * _BATCH).hex()
        _SUFFIXES.extend(digits[i : i + 12] for i in range(12, len(digits), 12))
        return digits[:12]


def decision_key(decision_id: str) -> str:
    return f"{{d:{decision_id}}}"


def visitor_key(kind: str, value: str) -> str:
    """The decision record of one identity (``kind`` is ``user_id`` or ``anonymous_id``)."""
    return f"{{dv:{kind}:{value}}}"
