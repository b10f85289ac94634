"""JSON answers shared by every route: success bodies and ``{"code", "message"}`` errors."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

__all__ = ["Problem", "error", "json"]

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
