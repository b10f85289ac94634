"""Links in the messages Kairos sends (no key: recipients follow them from their mailbox):
``GET /v1/m/c/{token}``, the tracked redirect every link of a template goes through ("Email
Clicked"), and ``GET /v1/m/o/{token}.gif``, the open pixel ("Email Opened").

The token (``journeys.links``) is signed and names the person, the message and, for a click,
the URL: a forged or altered one is a 404, so the redirect cannot send anyone elsewhere. The
reader gets where they were going even when the event cannot be recorded (logged).
"""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from collector import wire
from edge.api.responses import error
from journeys.links import link_secret, verify

__all__ = ["routes"]

log = logging.getLogger("kairos.messaging")

_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, max-age=0"}


async def _parts(request: Request, purpose: str, count: int) -> list[str] | None:
    secret = await run_in_threadpool(link_secret, request.state.redis_sync)
    found = verify(secret, request.path_params["token"])
    if found is None or len(found) != count or found[0] != purpose:
        return None
    return found


async def _record(request: Request, event: str, parts: list[str], **properties: Any) -> None:
    _, pid, key, user_id, anonymous_id = parts[:5]
    now = datetime.now(UTC)
    message = wire.Track(
        event=event,
        user_id=user_id or None,
        anonymous_id=anonymous_id or (None if user_id else f"profile-{pid}"),
        message_id=f"{event.split()[-1].lower()}-{uuid.uuid4()}",
        timestamp=now,
        received_at=now,
        properties=msgspec.Raw(msgspec.json.encode(
            {"message": key, "profile_id": pid, "channel": "email", **properties})),
        context=msgspec.Raw(msgspec.json.encode({
            "library": {"name": "kairos-links"},
            "userAgent": request.headers.get("user-agent", ""),
        })),
    )  # fmt: skip
    try:
        await request.state.spool.append_messages([message])
    except redis.RedisError as exc:
        log.error("%s not recorded", event, extra={"error": str(exc), "message": key})


async def click(request: Request) -> Response:
    parts = await _parts(request, "c", 6)
    if parts is None:
        return error(404, "not_found", "$.token: not a link of a message from here")
    await _record(request, "Email Clicked", parts, url=parts[5])
    return RedirectResponse(parts[5], 302, headers=_NO_STORE)


async def opened(request: Request) -> Response:
    parts = await _parts(request, "o", 5)
    if parts is not None:
        await _record(request, "Email Opened", parts)
    return Response(_PIXEL, media_type="image/gif", headers=_NO_STORE)


routes = [
    Route("/v1/m/c/{token}", click, methods=["GET"]),
    Route("/v1/m/o/{token}.gif", opened, methods=["GET"]),
]
