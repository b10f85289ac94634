"""``POST /v1/decide`` (write key, or the secret key): the decide path as a plain ASGI endpoint.

The choice itself is ``decisions.choice``; this module reads the request, checks the key and
writes the answer (see ``decisions.choice`` for the request and answer shapes). A request with
the secret key in its header comes from a server: its ``userId`` is trusted as it is; a browser's
needs its ``userHash`` (``decisions.identity``).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from collector.errors import InvalidInput, Unauthorized, with_path
from decisions.choice import Answer, UnknownPlacement, read_ask
from edge.api.auth import identify, key_from_header, permit
from edge.api.responses import Problem, error

__all__ = ["MAX_BODY", "DecideEndpoint", "routes"]

MAX_BODY = 64 * 1024
_JSON = b"application/json"
_encoder = msgspec.json.Encoder()


@functools.lru_cache(maxsize=256)
def _key(authorization: str | None) -> str | None:
    return key_from_header(authorization)  # the same few headers over and over: parse once


async def _read(receive: Receive, declared: bytes | None) -> bytes:
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise InvalidInput("message_too_large", f"the request is over {MAX_BODY // 1024} KB")
    chunks: list[bytes] = []  # a decide body nearly always comes in one message: none kept
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise InvalidInput("message_too_large", f"the request is over {MAX_BODY // 1024} KB")
        if not message.get("more_body", False):
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)


def _trusted(
    header_key: str | None, body_key: str | None, scope: Scope, headers: dict[bytes, bytes]
) -> bool:
    """Whether the key may name a userId without its userHash: a key with ``decide:trusted``
    (the secret key: a server) in the header. Unauthorized (401) or ``Problem`` (403) for a
    key that may not decide here."""
    state = scope["state"]
    who = identify(header_key or body_key, state)
    permit(who, "decide", scope, headers, state)
    return header_key is not None and who.allows("decide:trusted")


async def _answer(
    scope: Scope, receive: Receive, state: dict[str, Any], headers: dict[bytes, bytes]
) -> Response | bytes:
    """The answer's JSON, or an error response."""
    try:
        authorization = headers.get(b"authorization")
        header_key = _key(authorization.decode("latin-1") if authorization else None)
        ask = read_ask(await _read(receive, headers.get(b"content-length")))
        trusted = _trusted(header_key, ask.write_key, scope, headers)
        agent = headers.get(b"user-agent")
        try:
            decisions, identity = await state["decider"].decide(
                ask, agent.decode("latin-1") if agent else None, trusted
            )
        except ValueError as exc:
            raise InvalidInput("invalid_request", with_path(str(exc))) from None
        except UnknownPlacement as exc:
            return error(404, "unknown_placement", str(exc))
    except InvalidInput as exc:
        return error(400, exc.code, exc.message)
    except Unauthorized as exc:
        return error(
            401, exc.code, exc.message, headers={"WWW-Authenticate": 'Basic realm="kairos"'}
        )
    except Problem as exc:
        return exc.response()
    unknown = {k: f"no placement {k!r}" for k in ask.placements if k not in decisions}
    return _encoder.encode(Answer(decisions, unknown or None, identity))


class DecideEndpoint:
    """``POST /v1/decide`` as a plain ASGI app: the hottest route skips building a Request and
    a Response per call (most of a bare Starlette endpoint's own cost)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(scope, receive, send, dict(scope["headers"]))

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Answer with ``headers`` already read (``dict(scope["headers"])``) and ``extra``
        response headers (CORS's, when the app's front has applied its policy)."""
        answer = await _answer(scope, receive, scope["state"], headers)
        if isinstance(answer, Response):
            if extra:
                answer.raw_headers.extend(extra)
            await answer(scope, receive, send)
            return
        start = [(b"content-type", _JSON), (b"content-length", b"%d" % len(answer))]
        if extra:
            start += extra
        await send({"type": "http.response.start", "status": 200, "headers": start})
        await send({"type": "http.response.body", "body": answer})


routes = [Route("/v1/decide", DecideEndpoint(), methods=["POST"])]
