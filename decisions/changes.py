"""The changes a placement's policy detected (``policy.detect_changes``), kept for the dashboard.

When the reward worker's policy finds that a variant's rate moved and restarts
(``bandits.change``), the worker writes a ``Detected`` record to ``{pol:<key>}:changes``, a list
in the slot of the placement's learned state (newest first, the latest ``KEPT``), in the same
pipeline as the state it saves, and counts it (``policy_changes`` in the spool's stats). The
placement page marks each one on its allocation chart; ``GET /v1/placements/{key}`` lists them.

Examples:
    >>> changes_key("hero")
    '{pol:hero}:changes'
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis

__all__ = ["DETECTED", "KEPT", "Detected", "changes_key", "detected", "record"]

KEPT = 100


class Detected(msgspec.Struct, kw_only=True):
    """One change: when (ms since the epoch, the time of the decision or event that showed
    it), the variant whose rate moved, which way ("fell" or "rose"), its rate since the
    previous restart (the change's own decisions included), and the spool partition whose
    worker found it (each partition's policy tests its own traffic)."""

    at: int
    variant: str
    direction: str
    rate: float
    partition: int = 0


DETECTED = msgspec.json.Decoder(Detected)
_encode = msgspec.json.Encoder().encode


def changes_key(placement: str) -> str:
    return f"{{pol:{placement}}}:changes"


def record(pipe: Any, placement: str, found: list[Detected]) -> None:
    """Queue ``found`` (oldest first) on ``pipe``: pushed newest first, the list capped."""
    if found:
        pipe.lpush(changes_key(placement), *(_encode(change) for change in found))
        pipe.ltrim(changes_key(placement), 0, KEPT - 1)


def detected(client: redis.Redis, placement: str) -> list[Detected]:
    """The placement's recorded changes, newest first (one that no longer decodes is left
    out)."""
    found = []
    for raw in client.lrange(changes_key(placement), 0, KEPT - 1):
        try:
            found.append(DETECTED.decode(raw))
        except msgspec.DecodeError:
            continue
    return found
