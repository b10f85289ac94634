"""How the dashboard words numbers and times: one place, so every page says them the same way.

``plural`` puts a count before its noun ("1 visitor", "2 visitors", "1,204 people"); ``when``
shows a moment as a ``<time>`` element: how long ago it was, with the exact time in UTC as its
title (hover) and its ``datetime``; or the exact time itself.

Examples:
    >>> plural(1, "visitor"), plural(0, "visitor"), plural(1204, "person", "people")
    ('1 visitor', '0 visitors', '1,204 people')
    >>> exact(1796133802000)
    '2026-12-01 14:03:22 UTC'
    >>> str(when(1796133802000, now=datetime(2026, 12, 1, 14, 6, 30, tzinfo=UTC)))
    '<time datetime="2026-12-01T14:03:22Z" title="2026-12-01 14:03:22 UTC">3 min ago</time>'
"""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup

__all__ = ["exact", "plural", "when"]

Moment = datetime | str | int | float


def plural(count: int, word: str, words: str | None = None) -> str:
    """``count`` (with thousands separators) and the noun in the form that count takes
    (``words``, else ``word`` + "s")."""
    return f"{count:,} {word if count == 1 else words or word + 's'}"


def _moment(value: Moment) -> datetime:
    """A datetime in UTC from what the stores hold: a datetime (naive means UTC), its ISO text,
    or epoch milliseconds (profiles, journeys and the spool count time in ms)."""
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, str):
        found = datetime.fromisoformat(value)
    else:
        found = datetime.fromtimestamp(value / 1000, UTC)
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)


def exact(value: Moment) -> str:
    """The moment to the second, in UTC: ``2026-12-01 14:03:22 UTC``."""
    return f"{_moment(value):%Y-%m-%d %H:%M:%S} UTC"


def _ago(seconds: float) -> str:
    size = abs(seconds)
    if size < 5:
        return "just now"
    if size < 60:
        amount = f"{int(size)} s"
    elif size < 3600:
        amount = f"{int(size // 60)} min"
    elif size < 86_400:
        amount = f"{int(size // 3600)} h"
    else:
        amount = plural(int(size // 86_400), "day")
    return f"{amount} ago" if seconds >= 0 else f"in {amount}"


def when(value: Moment | None, now: datetime | None = None, relative: bool = True) -> Markup:
    """A ``<time>`` element: how long ago (the exact time as its title), or with ``relative``
    false the exact time; an en dash for no time at all."""
    if value is None or value == "":
        return Markup("–")
    moment = _moment(value)
    iso = f"{moment:%Y-%m-%dT%H:%M:%S}Z"
    text = exact(moment)
    if relative:
        seen = (now or datetime.now(UTC)) - moment
        shown = _ago(seen.total_seconds()) if abs(seen.days) < 30 else f"{moment:%Y-%m-%d}"
    else:
        shown = text
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, text, shown)
