"""Segment admin API (secret key): ``PUT/GET/DELETE /v1/segments/{key}``, ``GET /v1/segments``,
``GET /v1/segments/{key}/members``.

A PUT that creates or changes a segment queues its backfill: the profiles worker evaluates every
profile, counting events over ClickHouse history.
"""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import with_path
from edge.access import audit
from edge.api.auth import needs
from edge.api.responses import error, json, path_key
from profiles.membership import delete_segment, member_key, put_segment, segments
from profiles.segments import SEGMENT

__all__ = ["routes"]


@needs("segments:write")
async def put(request: Request) -> Response:
    key = path_key(request)
    try:
        segment = SEGMENT.decode(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_segment", with_path(str(exc), of=SEGMENT.type))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    client = request.state.profiles.client
    before = await audit.stored(request, "segment", key)
    changed = await run_in_threadpool(put_segment, client, key, segment)
    await audit.changed(request, "segment", key, before)
    body = {"key": key, "created": before is None, "changed": changed, "backfill": changed}
    return json(body, 201 if before is None else 200)


@needs("read")
async def get_one(request: Request) -> Response:
    key = path_key(request)
    client = request.state.profiles.client
    found = (await run_in_threadpool(segments, client)).get(key)
    if found is None:
        return error(404, "not_found", f"no segment {key!r}")
    members = await run_in_threadpool(client.scard, member_key(key))
    return json({"key": key, **msgspec.to_builtins(found), "members": members})


@needs("read")
async def list_all(request: Request) -> Response:
    client = request.state.profiles.client
    found = await run_in_threadpool(segments, client)
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.scard(member_key(key))
    counts = await run_in_threadpool(pipe.execute)
    return json(
        {
            "segments": [
                {"key": key, **msgspec.to_builtins(segment), "members": count}
                for (key, segment), count in zip(found.items(), counts)
            ]
        }
    )


@needs("read")
async def members(request: Request) -> Response:
    key = path_key(request)
    client = request.state.profiles.client
    cursor = request.query_params.get("cursor", "0")
    if not cursor.isdecimal():
        return error(400, "invalid_request", "$.cursor: not a cursor this API returned")
    following, found = await run_in_threadpool(
        client.sscan, member_key(key), int(cursor), None, 500
    )
    return json(
        {
            "segment": key,
            "profiles": sorted(m.decode() for m in found),
            "next_cursor": str(following) if following else None,
        }
    )


@needs("segments:write")
async def delete(request: Request) -> Response:
    key = path_key(request)
    before = await audit.stored(request, "segment", key)
    if not await run_in_threadpool(delete_segment, request.state.profiles.client, key):
        return error(404, "not_found", f"no segment {key!r}")
    await audit.changed(request, "segment", key, before)
    return json({"key": key, "deleted": True})


routes = [
    Route("/v1/segments", list_all, methods=["GET"]),
    Route("/v1/segments/{key}", put, methods=["PUT"]),
    Route("/v1/segments/{key}", get_one, methods=["GET"]),
    Route("/v1/segments/{key}", delete, methods=["DELETE"]),
    Route("/v1/segments/{key}/members", members, methods=["GET"]),
]
