"""Errors the collector raises; the edge turns them into HTTP answers."""

from __future__ import annotations

__all__ = ["InvalidInput", "SpoolFull", "Unauthorized"]


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
