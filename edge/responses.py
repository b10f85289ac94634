"""JSON answers shared by every route: success bodies and ``{"code", "message"}`` errors."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

__all__ = ["error", "json"]

_encoder = msgspec.json.Encoder(enc_hook=str)


def json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(content), status, headers, media_type="application/json")


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    headers = extra.pop("headers", None)
    return json({"code": code, "message": message, **extra}, status, headers)
