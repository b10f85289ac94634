"""JSON answers shared by every route: success bodies and ``{"code", "message"}`` errors."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["KEY", "Problem", "error", "json", "path_key"]

_encoder = msgspec.json.Encoder(enc_hook=str)


def json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(content), status, headers, media_type="application/json")


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    headers = extra.pop("headers", None)
    return json({"code": code, "message": message, **extra}, status, headers)


class Problem(Exception):
    """An answer other than success, raised from deep in a handler: ``status``, ``code`` and a
    message that names the field."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return error(self.status, self.code, self.message, headers=self.headers)


KEY = re.compile(r"[a-z0-9_][a-z0-9_-]{0,63}")  # a definition's key: placements, journeys, …


def path_key(request: Request) -> str:
    """The ``{key}`` of the path, or a 400 ``Problem`` that says what a key may be."""
    key: str = request.path_params["key"]
    if not KEY.fullmatch(key):
        message = f"$.key: lower-case letters, digits, _ and -, up to 64; got {key!r}"
        raise Problem(400, "invalid_key", message)
    return key
