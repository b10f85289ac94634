"""Broadcasts (secret key): ``PUT/GET/DELETE /v1/broadcasts/{key}``, ``GET /v1/broadcasts``,
``POST /v1/broadcasts/{key}/start|pause|resume|cancel``, ``POST /v1/broadcasts/{key}/dry-run``
and ``GET /v1/broadcasts/{key}/results`` (``journeys.broadcasts``, ``journeys.reports``).

A definition is checked on the way in, and so is what it names: a 400 says which segment,
template or placement does not exist. Only a draft may change; a 409 says what it is now.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import with_path
from collector.store import QueryFailed, StoreUnavailable
from decisions.placements import DEFS as PLACEMENTS
from edge.access import audit
from edge.api.auth import needs
from edge.api.responses import Problem, error, json, path_key
from journeys.broadcasts import (
    ACTIONS,
    BROADCAST,
    DEFS,
    Broadcast,
    control,
    delete_broadcast,
    put_broadcast,
    state_of,
)
from journeys.emails import DEFS as TEMPLATES
from journeys.reports import broadcast_results, dry_run
from profiles.membership import DEFS as SEGMENTS

__all__ = ["routes"]


def _missing(client: Any, broadcast: Broadcast) -> str | None:
    """The first thing the broadcast names that does not exist, as a field path message."""
    if not client.hexists(SEGMENTS, broadcast.segment):
        return f"$.segment: no segment {broadcast.segment!r}"
    names = [("$.template", broadcast.template)] if broadcast.template else []
    if broadcast.variants is not None:
        placement = broadcast.variants.placement
        if not client.hexists(PLACEMENTS, placement):
            return f"$.variants.placement: no placement {placement!r}"
        names = [(f"$.variants.templates.{v}", t) for v, t in broadcast.variants.templates.items()]
    for field, template in names:
        if not client.hexists(TEMPLATES, template):
            return f"{field}: no template {template!r}"
    return None


@needs("messaging:write")
async def put(request: Request) -> Response:
    key = path_key(request)
    try:
        broadcast = BROADCAST.decode(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_broadcast", with_path(str(exc), of=Broadcast))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    client = request.state.redis_sync
    missing = await run_in_threadpool(_missing, client, broadcast)
    if missing is not None:
        return error(400, "invalid_broadcast", missing)
    before = await audit.stored(request, "broadcast", key)
    try:
        changed = await run_in_threadpool(put_broadcast, client, key, broadcast)
    except ValueError as exc:
        return error(409, "not_a_draft", str(exc))
    await audit.changed(request, "broadcast", key, before)
    return json({"key": key, "created": before is None, "changed": changed},
                201 if before is None else 200)  # fmt: skip


async def _broadcast(request: Request, key: str) -> Broadcast:
    raw = await run_in_threadpool(request.state.redis_sync.hget, DEFS, key)
    if raw is None:
        raise Problem(404, "not_found", f"no broadcast {key!r}")
    return BROADCAST.decode(raw)


def _progress(state: dict[str, str]) -> dict[str, Any]:
    counts = {name: int(state.get(name, 0)) for name in ("scanned", "held_out", "fed",
                                                         "pending")}  # fmt: skip
    stamps = {k: int(v) for k, v in state.items() if k.endswith("_at") and k != "fed_at"}
    return {"status": state["status"], **counts, **stamps}


@needs("read")
async def get_one(request: Request) -> Response:
    """The definition and its progress: status, members read, held out, fed to the outbox,
    still queued (for their send time or the throttle)."""
    key = path_key(request)
    broadcast = await _broadcast(request, key)
    state = await run_in_threadpool(state_of, request.state.redis_sync, key)
    return json({"key": key, **msgspec.to_builtins(broadcast), "progress": _progress(state)})


@needs("read")
async def list_all(request: Request) -> Response:
    client = request.state.redis_sync
    found = await run_in_threadpool(client.hgetall, DEFS)
    rows = []
    for raw_key, raw in sorted(found.items()):
        key = raw_key.decode()
        state = await run_in_threadpool(state_of, client, key)
        rows.append({"key": key, **msgspec.to_builtins(BROADCAST.decode(raw)),
                     "progress": _progress(state)})  # fmt: skip
    return json({"broadcasts": rows})


@needs("messaging:write")
async def delete(request: Request) -> Response:
    key = path_key(request)
    before = await audit.stored(request, "broadcast", key)
    try:
        deleted = await run_in_threadpool(delete_broadcast, request.state.redis_sync, key)
    except ValueError as exc:
        return error(409, "running", str(exc))
    if not deleted:
        return error(404, "not_found", f"no broadcast {key!r}")
    await audit.changed(request, "broadcast", key, before)
    return json({"key": key, "deleted": True})


async def act(request: Request, action: str) -> Response:
    """Start, pause, resume or cancel; a 409 says what the broadcast is now and what the
    action is for."""
    key = path_key(request)
    await _broadcast(request, key)
    client = request.state.redis_sync
    was = (await run_in_threadpool(state_of, client, key))["status"]
    try:
        status = await run_in_threadpool(control, client, key, action, _now())
    except ValueError as exc:
        return error(409, "wrong_status", str(exc))
    await audit.record(request, "broadcast", key, action, {"status": was}, {"status": status})
    return json({"key": key, "status": status})


def _now() -> int:
    return int(time.time() * 1000)


@needs("read")
async def preview_audience(request: Request) -> Response:
    """Who would receive it now (nothing is sent): audience, held out, skipped by reason."""
    key = path_key(request)
    broadcast = await _broadcast(request, key)
    report = await run_in_threadpool(dry_run, request.state.redis_sync, key, broadcast,
                                     request.state.settings.messaging,
                                     _now())  # fmt: skip
    return json({"key": key, **report})


@needs("read")
async def results(request: Request) -> Response:
    """Per variant and the holdout: targeted, sent, skipped by reason, bounced, opened and
    clicked (people), with their rates; with a goal, conversion and revenue against the
    holdout, with always-valid intervals."""
    key = path_key(request)
    broadcast = await _broadcast(request, key)
    state = await run_in_threadpool(state_of, request.state.redis_sync, key)
    started = int(state["started_at"]) if "started_at" in state else None
    try:
        found = await run_in_threadpool(broadcast_results, request.state.store, key, broadcast,
                                        started)  # fmt: skip
    except (StoreUnavailable, QueryFailed) as exc:
        return error(503, "store_unavailable", str(exc), headers={"Retry-After": "5"})
    return json(found)


routes = [
    Route("/v1/broadcasts", list_all, methods=["GET"]),
    Route("/v1/broadcasts/{key}/dry-run", preview_audience, methods=["POST"]),
    Route("/v1/broadcasts/{key}/results", results, methods=["GET"]),
    *(
        Route(
            f"/v1/broadcasts/{{key}}/{action}",
            needs("messaging:send")(partial(act, action=action)),
            methods=["POST"],
        )
        for action in ACTIONS
    ),
    Route("/v1/broadcasts/{key}", put, methods=["PUT"]),
    Route("/v1/broadcasts/{key}", get_one, methods=["GET"]),
    Route("/v1/broadcasts/{key}", delete, methods=["DELETE"]),
]
