"""Sticky bucketing: a pure, versioned hash from (unit, salt) to a number in [0, 1).

Version 2 is GrowthBook's: FNV-1a 32-bit of the salted value, hashed again, modulo 10,000. It is
versioned because changing it would silently move every running experiment's users between
variants; ``tests/bandits/cases.json`` pins its values for every implementation (Python here,
the browser SDK later).

Examples:
    >>> bucket("user-1", "home_hero")
    0.1666
    >>> pick(bucket("user-1", "home_hero"), [50, 50])
    0
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["bucket", "fnv1a32", "pick"]

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(text: str) -> int:
    """FNV-1a over the text's code points (as GrowthBook's SDKs do, not its UTF-8 bytes)."""
    value = _FNV_OFFSET
    for char in text:
        value = ((value ^ ord(char)) * _FNV_PRIME) & 0xFFFFFFFF
    return value


def bucket(unit: str, salt: str, version: int = 2) -> float:
    """Where ``unit`` falls in [0, 1) for ``salt`` (a placement's salt): the same every time."""
    if version == 1:
        return (fnv1a32(unit + salt) % 1000) / 1000
    if version == 2:
        return (fnv1a32(str(fnv1a32(salt + unit))) % 10_000) / 10_000
    raise ValueError(f"unknown bucketing version {version}")


def pick(point: float, weights: Sequence[float]) -> int:
    """The index whose share of ``weights`` (any non-negative numbers) covers ``point``."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must add up to more than zero")
    edge = 0.0
    for index, weight in enumerate(weights):
        edge += weight / total
        if point < edge:
            return index
    return len(weights) - 1
