"""Journeys admin API (secret key): ``PUT/GET/DELETE /v1/journeys/{key}``, ``GET
/v1/journeys/{key}/stats`` (``journeys.stats``), ``GET /v1/journeys/{key}/results`` (treated
against held-out people: ``journeys.lift``) and ``GET /v1/journeys`` (every journey, and the
secret their webhooks are signed with).

A definition is checked on the way in (``journeys.spec``): a 400 names the step or field at
fault, e.g. ``steps.remind.next: no step 'rmind'``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import with_path
from collector.store import QueryFailed, StoreUnavailable
from edge.access import audit
from edge.api.auth import holds, needs
from edge.api.responses import Problem, error, json, path_key
from edge.routes.placements import check_window
from journeys.actions import webhook_secret
from journeys.dryrun import simulate
from journeys.lift import journey_results
from journeys.spec import JOURNEY, Journey, parse
from journeys.stats import active_by_step, counts
from journeys.store import DEFS, delete_journey, journeys, put_journey
from journeys.templates import examples

__all__ = ["routes"]


@needs("journeys:write")
async def put(request: Request) -> Response:
    key = path_key(request)
    try:
        journey = parse(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_journey", with_path(str(exc), of=Journey))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    client = request.state.redis_sync
    before = await audit.stored(request, "journey", key)
    changed = await run_in_threadpool(put_journey, client, key, journey)
    await audit.changed(request, "journey", key, before)
    return json({"key": key, "created": before is None, "changed": changed},
                201 if before is None else 200)  # fmt: skip


async def _journey(request: Request, key: str) -> Journey:
    raw = await run_in_threadpool(request.state.redis_sync.hget, DEFS, key)
    if raw is None:
        raise Problem(404, "not_found", f"no journey {key!r}")
    return JOURNEY.decode(raw)


@needs("read")
async def get_one(request: Request) -> Response:
    key = path_key(request)
    return json({"key": key, **msgspec.to_builtins(await _journey(request, key))})


@needs("journeys:write")
async def delete(request: Request) -> Response:
    key = path_key(request)
    before = await audit.stored(request, "journey", key)
    if not await run_in_threadpool(delete_journey, request.state.redis_sync, key):
        return error(404, "not_found", f"no journey {key!r}")
    await audit.changed(request, "journey", key, before)
    return json({"key": key, "deleted": True})


@needs("read")
async def stats(request: Request) -> Response:
    """Entered, active per step, completed, exited by reason, converted, actions per step."""
    key = path_key(request)
    journey = await _journey(request, key)
    try:
        found = await run_in_threadpool(counts, request.state.store, key, journey)
    except (StoreUnavailable, QueryFailed) as exc:
        return error(503, "store_unavailable", str(exc), headers={"Retry-After": "5"})
    active = await run_in_threadpool(active_by_step, request.state.redis_sync, key)
    return json({"key": key, **found, "active": active})


class ResultsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """What ``/results`` takes as query parameters: who entered when (as placement results)."""

    since: datetime | None = None
    until: datetime | None = None


@needs("read")
async def results(request: Request) -> Response:
    """Per group (treated, holdout): people entered, converted within the goal window, revenue
    per person; the treated against the holdout with always-valid intervals."""
    key = path_key(request)
    journey = await _journey(request, key)
    try:
        ask = msgspec.convert(dict(request.query_params), ResultsQuery, strict=False)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=ResultsQuery))
    since, until = check_window(ask.since, ask.until)
    if not journey.goal:
        message = f"$.goal: journey {key!r} has no goal to measure: set `goal` (and `holdout`)"
        return error(400, "no_goal", message)
    try:
        found = await run_in_threadpool(journey_results, request.state.store, key, journey,
                                        since, until)  # fmt: skip
    except (StoreUnavailable, QueryFailed) as exc:
        return error(503, "store_unavailable", str(exc), headers={"Retry-After": "5"})
    return json(found)


class SimulateAsk(msgspec.Struct, forbid_unknown_fields=True):
    since: datetime | None = None
    until: datetime | None = None
    # a definition to try before saving it (a factory keeps the Raw out of the JSON schema)
    journey: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


@needs("journeys:write")
async def simulate_journey(request: Request) -> Response:
    """Replay ``since``..``until`` (default: the last 7 days) through the journey, sending
    nothing: who would have entered, what each step would have sent, who would have converted."""
    key = path_key(request)
    body = await request.body()
    try:
        ask = msgspec.json.decode(body or b"{}", type=SimulateAsk)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=SimulateAsk))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    try:
        journey = parse(bytes(ask.journey)) if bytes(ask.journey) != b"null" else None
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), "$.journey", of=Journey))
    journey = journey or await _journey(request, key)
    until = ask.until or datetime.now(UTC)
    since = ask.since or until - timedelta(days=7)
    if since.tzinfo is None or until.tzinfo is None or since >= until:
        return error(400, "invalid_request", "$.since: must be before `until`, both with a zone")
    check_window(since if ask.since else None, until if ask.until else None)
    try:
        report = await run_in_threadpool(simulate, request.state.store, request.state.profiles,
                                         key, journey, since, until)  # fmt: skip
    except ValueError as exc:
        return error(400, "invalid_request", str(exc))
    except (StoreUnavailable, QueryFailed) as exc:
        return error(503, "store_unavailable", str(exc), headers={"Retry-After": "5"})
    return json({"key": key, "since": since, "until": until, **dataclasses.asdict(report)})


@needs("read")
async def templates(request: Request) -> Response:
    """The journey templates, filled with example URLs: change them and PUT."""
    return json({"templates": examples()})


@needs("read")
async def list_all(request: Request) -> Response:
    client = request.state.redis_sync
    found = await run_in_threadpool(journeys, client)
    listed = [{"key": k, "name": j.name, "trigger": msgspec.to_builtins(j.trigger),
               "active": j.active, "steps": len(j.steps), "revision": j.revision}
              for k, j in sorted(found.items())]  # fmt: skip
    body: dict[str, Any] = {"journeys": listed}
    if holds(request, "admin"):  # what webhooks are signed with: not for every reader
        body["webhook_secret"] = (await run_in_threadpool(webhook_secret, client)).decode()
    return json(body)


routes = [
    Route("/v1/journeys", list_all, methods=["GET"]),
    Route("/v1/journeys/templates", templates, methods=["GET"]),
    Route("/v1/journeys/{key}/stats", stats, methods=["GET"]),
    Route("/v1/journeys/{key}/results", results, methods=["GET"]),
    Route("/v1/journeys/{key}/simulate", simulate_journey, methods=["POST"]),
    Route("/v1/journeys/{key}", put, methods=["PUT"]),
    Route("/v1/journeys/{key}", get_one, methods=["GET"]),
    Route("/v1/journeys/{key}", delete, methods=["DELETE"]),
]
