"""CORS for the browser-facing API only: a shop's pages call ``/v1/decide`` and the tracking API
(with the public write key) from their own origin; nothing else is for browsers on other sites.

A lean ASGI middleware rather than Starlette's ``CORSMiddleware``: this one sits in front of the
decide path, where Starlette's (header objects built per request, a wrapper on every response,
with or without an ``Origin``) cost about a quarter of a bare endpoint's throughput.

- Requests without ``Origin`` (servers, SDKs) pass untouched.
- On the browser paths, allowed origins get ``Access-Control-Allow-Origin`` (``*`` when every
  origin is allowed, else the origin itself with ``Vary: Origin``); their preflights are
  answered here, cached by browsers for a day; other origins' preflights are refused (400).
- Everywhere else (the admin API takes the secret key, which never belongs in a web page; the
  dashboard is same-origin) no CORS header is ever sent and every preflight is refused (403), so
  no page on another origin can call it with credentials or read an answer.
- ``Access-Control-Allow-Credentials`` is never sent: cross-origin calls carry no cookies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORS"]

_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
_MAX_AGE = b"86400"
_NOT_FOR_BROWSERS = (
    b"cross-origin calls are not allowed here: only the browser API (decide, tracking, wallets) "
    b"takes them"
)


class CORS:
    """``origins``: the allowed origins (``*``: any); ``paths``: the browser-facing paths."""

    def __init__(self, app: ASGIApp, origins: Iterable[str], paths: Iterable[str]):
        self.app = app
        allowed = {o.rstrip("/") for o in origins}
        self.any = "*" in allowed
        self.origins = {o.encode() for o in allowed}
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # in C: each header's last value, as a loop would
        origin = headers.get(b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        requested = headers.get(b"access-control-request-headers")
        method = headers.get(b"access-control-request-method")
        preflight = scope["method"] == "OPTIONS" and method is not None
        if scope["path"] not in self.paths:
            if preflight:
                await _send(send, 403, _NOT_FOR_BROWSERS, [])
            else:
                await self.app(scope, receive, send)
            return
        allowed = self.any or origin in self.origins
        headers = self.headers_for(origin)
        if preflight:
            if allowed:
                await _preflight(send, headers, requested)
            else:
                await _send(send, 400, b"Disallowed CORS origin", headers)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def headers_for(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """The CORS headers of an answer on a browser path to a request from ``origin``."""
        allowed = self.any or origin in self.origins
        headers = (
            [(b"access-control-allow-origin", b"*" if self.any else origin)] if allowed else []
        )
        if not self.any:
            headers.append((b"vary", b"Origin"))
        return headers


async def _preflight(
    send: Send, headers: list[tuple[bytes, bytes]], requested: bytes | None
) -> None:
    extra: list[Any] = [(b"access-control-allow-methods", _METHODS),
                        (b"access-control-max-age", _MAX_AGE)]  # fmt: skip
    if requested:
        extra.append((b"access-control-allow-headers", requested))
    await _send(send, 200, b"OK", [*headers, *extra])


async def _send(send: Send, status: int, body: bytes, headers: list[Any]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *headers,
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
