"""CORS for the browser-facing API: the shop's pages call ``/v1/decide`` and the tracking API
from their own origin.

A lean ASGI middleware rather than Starlette's ``CORSMiddleware``: this one sits in front of the
decide path, where Starlette's (header objects built per request, a wrapper on every response,
with or without an ``Origin``) cost about a quarter of a bare endpoint's throughput. Requests
without ``Origin`` (servers, SDKs) pass untouched; allowed origins get
``Access-Control-Allow-Origin`` (``*`` when every origin is allowed, else the origin itself
with ``Vary: Origin``); preflights are answered here, cached by browsers for a day.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORS"]

_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
_MAX_AGE = b"86400"


class CORS:
    def __init__(self, app: ASGIApp, origins: Iterable[str]):
        self.app = app
        allowed = {o.rstrip("/") for o in origins}
        self.any = "*" in allowed
        self.origins = {o.encode() for o in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = requested = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-headers":
                requested = value
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self.any or origin in self.origins
        headers = (
            [(b"access-control-allow-origin", b"*" if self.any else origin)] if allowed else []
        )
        if not self.any:
            headers.append((b"vary", b"Origin"))
        if scope["method"] == "OPTIONS" and any(
            name == b"access-control-request-method" for name, _ in scope["headers"]
        ):
            await _preflight(send, allowed, headers, requested)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(
    send: Send, allowed: bool, headers: list[tuple[bytes, bytes]], requested: bytes | None
) -> None:
    body = b"OK" if allowed else b"Disallowed CORS origin"
    extra: list[Any] = [(b"access-control-allow-methods", _METHODS),
                        (b"access-control-max-age", _MAX_AGE)] if allowed else []  # fmt: skip
    if allowed and requested:
        extra.append((b"access-control-allow-headers", requested))
    await send(
        {
            "type": "http.response.start",
            "status": 200 if allowed else 400,
            "headers": [
                *headers,
                *extra,
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
