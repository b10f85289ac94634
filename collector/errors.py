"""Errors the collector raises; the edge turns them into HTTP answers."""

from __future__ import annotations

import re

__all__ = [
    "InvalidInput",
    "QueryFailed",
    "SpoolFull",
    "StoreUnavailable",
    "Unauthorized",
    "with_path",
]

_MISSING = re.compile(r"^Object missing required field `([^`]+)`(?: - at `\$(.*)`)?$")
_AT = re.compile(r"^(.*) - at `\$(.*)`$")
_OWN = re.compile(r"^`([\w.]+)` (must .*)$")  # our validators: "`field` must …"


def with_path(text: str, where: str = "$") -> str:
    """Rewrite a msgspec message ``… - at `$.x``` as ``$.batch[3].x: …``: the path leads.

    >>> with_path("Object missing required field `event`", "$.batch[3]")
    '$.batch[3].event: required field is missing'
    >>> with_path("Expected `object`, got `str` - at `$.context`")
    '$.context: Expected `object`, got `str`'
    >>> with_path("`properties` must be a JSON object", "$.batch[0]")
    '$.batch[0].properties: must be a JSON object'
    """
    missing = _MISSING.match(text)
    if missing:
        return f"{where}{missing.group(2) or ''}.{missing.group(1)}: required field is missing"
    at = _AT.match(text)
    if at:
        where, text = f"{where}{at.group(2)}", at.group(1)
    own = _OWN.match(text)
    if own:
        return f"{where}.{own.group(1)}: {own.group(2)}"
    return f"{where}: {text}"


class InvalidInput(Exception):
    """The request cannot be accepted as sent: HTTP 400.

    ``code`` is stable for programs, ``message`` names the field path for people, and
    ``errors`` lists every invalid message of a batch as ``{"index", "path", "message"}``.
    """

    def __init__(self, code: str, message: str, errors: list[dict[str, object]] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors or []


class Unauthorized(Exception):
    """The write or secret key is missing or wrong: HTTP 401."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = "unauthorized"
        self.message = message


class SpoolFull(Exception):
    """The spool reached its configured limit: HTTP 503 with Retry-After (back-pressure)."""

    def __init__(self, length: int, limit: int, retry_after: int = 5):
        message = f"spool holds {length} entries, its limit is {limit}; retry in {retry_after} s"
        super().__init__(message)
        self.code = "spool_full"
        self.message = message
        self.retry_after = retry_after


class QueryFailed(Exception):
    """ClickHouse refused or failed a read-only query: HTTP 400.

    ``code`` is ``read_only`` for a refused write, else ``query_failed``.
    """

    def __init__(self, message: str, code: str = "query_failed"):
        super().__init__(message)
        self.code = code
        self.message = message


class StoreUnavailable(Exception):
    """The event store does not answer: HTTP 503."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = "store_unavailable"
        self.message = message
