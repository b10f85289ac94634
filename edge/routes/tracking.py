"""The Segment HTTP tracking API: ``POST /v1/batch|track|page|screen|identify|alias|group``.

A 200 ``{"success": true}`` means every message of the request is in the spool (Redis, AOF on);
see collector.intake for what a batch with invalid messages gets.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import partial

import redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector import STATS, InvalidInput, SpoolFull, Unauthorized, read_request
from collector.errors import NotReplicated
from collector.wire import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from edge.api.auth import key_from_header, require
from edge.api.responses import Problem, error

__all__ = ["KINDS", "routes"]

log = logging.getLogger("kairos.collector")

KINDS = ("batch", "track", "page", "screen", "identify", "alias", "group")
_SUCCESS = b'{"success":true}'


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (never buffered beyond that)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdecimal() or int(declared) > limit):
        what = "batch" if limit == MAX_BATCH_BYTES else "message"
        raise InvalidInput(f"{what}_too_large", f"the {what} is over {limit // 1024} KB")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            what = "batch" if limit == MAX_BATCH_BYTES else "message"
            raise InvalidInput(f"{what}_too_large", f"the {what} is over {limit // 1024} KB")
        chunks.append(chunk)
    return b"".join(chunks)


async def collect(request: Request, kind: str) -> Response:
    state = request.state
    received_at = datetime.now(UTC)
    try:
        header_key = key_from_header(request.headers.get("authorization"))
        if header_key is not None:
            require(request, "track")
        body = await read_body(request, MAX_BATCH_BYTES if kind == "batch" else MAX_MESSAGE_BYTES)
        intake = read_request(
            body,
            kind=kind,
            content_type=request.headers.get("content-type"),
            content_encoding=request.headers.get("content-encoding"),
            received_at=received_at,
            ip=request.client.host if request.client else None,
            consent=state.settings.consent,
            suppressed=state.suppression.hashes,
        )
        if header_key is None:
            require(request, "track", intake.write_key)
        await state.spool.append(intake)
        if intake.withheld:
            await state.redis.hincrby(STATS, "withheld", intake.withheld)
    except InvalidInput as exc:
        await _count_rejected(state, exc.code)
        return error(400, exc.code, exc.message, **({"errors": exc.errors} if exc.errors else {}))
    except Unauthorized as exc:
        await _count_rejected(state, exc.code)
        return error(
            401, exc.code, exc.message, headers={"WWW-Authenticate": 'Basic realm="kairos"'}
        )
    except Problem as exc:  # a key without the track scope, or from elsewhere than allowed
        await _count_rejected(state, exc.code)
        return exc.response()
    except (SpoolFull, NotReplicated) as exc:
        await _count_rejected(state, exc.code)
        return error(503, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after)})
    except redis.RedisError as exc:
        log.error("spool unreachable", extra={"error": str(exc)})
        return error(
            503,
            "spool_unavailable",
            f"the spool is unreachable: {exc}",
            headers={"Retry-After": "1"},
        )
    return Response(_SUCCESS, media_type="application/json")


async def _count_rejected(state: object, code: str) -> None:
    try:
        await state.redis.hincrby(STATS, f"rejected:{code}", 1)  # type: ignore[attr-defined]
    except redis.RedisError:
        pass


routes = [Route(f"/v1/{kind}", partial(collect, kind=kind), methods=["POST"]) for kind in KINDS]
