"""Lead score: points per event rule, decaying with a half-life.

A rule matches an event by name and, optionally, by property values (equality, or prefix with a
trailing ``*``). The score held on a profile is the sum of each award halved every
``half_life_days`` since it was earned; it is stored with the time it was last brought up to
date and decayed again when read.

Examples:
    >>> scoring = LeadScoring(rules=[ScoreRule("Page Viewed", 10, {"path": "/pricing*"}),
    ...                              ScoreRule("Webinar Signed Up", 25)], half_life_days=30)
    >>> scoring.points("Page Viewed", {"path": "/pricing/teams"}), scoring.points("Page Viewed", {})
    (10.0, 0.0)
    >>> round(decayed(20.0, at_ms=0, now_ms=30 * 86_400_000, half_life_days=30), 6)
    10.0
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["LeadScoring", "ScoreRule", "decayed"]


class ScoreRule(msgspec.Struct, forbid_unknown_fields=True):
    event: str
    points: float
    properties: dict[str, Any] = msgspec.field(default_factory=dict)

    def matches(self, event: str, properties: dict[str, Any]) -> bool:
        if event != self.event:
            return False
        for key, want in self.properties.items():
            have = properties.get(key)
            if isinstance(want, str) and want.endswith("*"):
                if not (isinstance(have, str) and have.startswith(want[:-1])):
                    return False
            elif have != want:
                return False
        return True


class LeadScoring(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[ScoreRule] = msgspec.field(default_factory=list)
    half_life_days: float = 30.0

    def points(self, event: str, properties: dict[str, Any]) -> float:
        return float(sum(rule.points for rule in self.rules if rule.matches(event, properties)))

    @property
    def half_life_ms(self) -> float:
        return self.half_life_days * 86_400_000


def decayed(score: float, at_ms: int, now_ms: int, half_life_days: float) -> float:
    """``score`` as of ``at_ms``, decayed to ``now_ms``."""
    if score == 0 or now_ms <= at_ms or half_life_days <= 0:
        return score
    return score * 0.5 ** ((now_ms - at_ms) / (half_life_days * 86_400_000))
