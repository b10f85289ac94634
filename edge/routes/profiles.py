"""The profile API (secret key): read a person, their history, export and erase them.

``{id}`` is ``user_id:…``, ``anonymous_id:…``, ``email:…``, ``wallet:…``, ``external:<type>:<id>``
or a profile id (``p_…``); a merged profile id leads to the profile it was merged into.

A person's events are those stamped with their profile id or any profile merged into theirs,
plus events stored without a profile id that carry one of their anonymous or user ids
(rewrite on read, from the merge map the profile keeps in Redis).
"""

from __future__ import annotations

import base64
import time
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import QueryFailed, StoreUnavailable
from collector.identifiers import checksum_address
from edge.access import audit
from edge.api.auth import needs
from edge.api.responses import Problem, error, json
from profiles.privacy import erase
from profiles.store import ProfileStore, Snapshot
from profiles.views import describe

__all__ = ["FORMS", "HISTORY_PAGE", "NotFound", "find_profile", "parse_identity", "routes"]

_KINDS = ("user_id", "anonymous_id", "email", "wallet", "external")
# What ``{id}`` may be, for the messages that refuse one (the forms parse_identity reads).
FORMS = (
    "a profile id (p_ and 16 hexadecimal digits, as the API returns it) or an identity: "
    "user_id:<id>, anonymous_id:<id>, email:<address>, wallet:<0x address>, external:<type>:<id>"
)
_COLUMNS = (
    "timestamp, message_id, type, event, name, anonymous_id, user_id, profile_id, "
    "page_url, properties, traits, context"
)
_WHERE = (
    "(profile_id IN {profiles:Array(String)} OR (profile_id = '' AND "
    "(anonymous_id IN {anonymous:Array(String)} OR user_id IN {users:Array(String)})))"
)
_BEFORE = (
    "(timestamp, message_id) < (parseDateTime64BestEffort({ts:String}, 3, 'UTC'), {mid:String})"
)


def _history(where: str, order: str, limit: str) -> str:
    """A person's events, from the events ordered by person (collector.schema)."""
    return f"SELECT {_COLUMNS} FROM events_by_person WHERE {where} ORDER BY {order} LIMIT {limit}"


# One page of a person's history, newest first (GET /v1/profiles/{id}/events); the next pages.
HISTORY_PAGE = _history(_WHERE, "timestamp DESC, message_id DESC", "{limit:UInt32}")
_HISTORY_NEXT = _history(f"{_WHERE} AND {_BEFORE}", "timestamp DESC, message_id DESC",
                         "{limit:UInt32}")  # fmt: skip
_EXPORT_PAGE = _history(_WHERE, "timestamp, message_id", "{page:UInt32} OFFSET {offset:UInt64}")
_JSON_COLUMNS = ("properties", "traits", "context")
_PAGE = 5_000


class NotFound(Exception):
    pass


def parse_identity(raw: str) -> str | None:
    """``raw`` as a "kind:value" identity, or None if it is a profile id."""
    kind, sep, value = raw.partition(":")
    if not sep:
        return None
    if kind not in _KINDS or not value:
        raise ValueError(f"{raw!r} is not a profile id nor an identity: give {FORMS}")
    if kind == "email":
        value = value.strip().lower()
    if kind == "wallet":  # a wallet's identity is the engine's anonymous one (collector.onchain)
        return f"anonymous_id:wallet:{checksum_address(value)}"
    return f"{kind}:{value}"


def find_profile(store: ProfileStore, raw: str) -> Snapshot:
    identity = parse_identity(raw)
    if identity is None:
        pid = raw
    else:
        found = store.lookup([identity])
        if not found:
            raise NotFound(f"no profile for {identity}")
        pid = found[identity]
    snapshot = store.read(store.resolve(pid))
    if not snapshot.exists:
        if identity is None and not pid.startswith("p_"):  # likely an identity without its kind
            raise NotFound(f"no profile {raw!r}: give {FORMS}, e.g. user_id:{raw}")
        raise NotFound(f"no profile {raw!r}")
    return snapshot


async def _profile(request: Request) -> Snapshot:
    try:
        return await run_in_threadpool(
            find_profile, request.state.profiles, request.path_params["id"]
        )
    except ValueError as exc:
        raise Problem(400, "invalid_profile_id", f"$.id: {exc}") from None
    except NotFound as exc:
        raise Problem(404, "not_found", str(exc)) from None


def _history_parameters(snapshot: Snapshot) -> dict[str, Any]:
    values = [identity.partition(":") for identity in snapshot.identities]
    return {
        "profiles": [snapshot.id, *snapshot.merged_from],
        "anonymous": [v for k, _, v in values if k == "anonymous_id"],
        "users": [v for k, _, v in values if k == "user_id"],
    }


def _rows(result: Any) -> list[dict[str, Any]]:
    events = []
    for row in result.rows:
        event = dict(zip(result.columns, row))
        for name in _JSON_COLUMNS:
            event[name] = msgspec.json.decode(event[name]) if event[name] else {}
        events.append(event)
    return events


@needs("profiles:read")
async def get_profile(request: Request) -> Response:
    found = await _profile(request)
    return json(describe(found, int(time.time() * 1000)))


@needs("profiles:read")
async def get_events(request: Request) -> Response:
    found = await _profile(request)
    try:
        limit = int(request.query_params.get("limit", "50"))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        return error(400, "invalid_request", "$.limit: must be a whole number from 1 to 1000")
    parameters = {**_history_parameters(found), "limit": limit}
    sql = HISTORY_PAGE
    cursor = request.query_params.get("cursor")
    if cursor:
        try:
            ts, mid = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()))
            parameters.update(ts=str(ts), mid=str(mid))
        except (ValueError, TypeError, msgspec.DecodeError):
            return error(400, "invalid_request", "$.cursor: not a cursor this API returned")
        sql = _HISTORY_NEXT
    try:
        result = await request.state.store.query(sql, parameters, limited=False)
    except StoreUnavailable as exc:
        return error(503, exc.code, exc.message, headers={"Retry-After": "5"})
    except QueryFailed as exc:
        return error(500 if exc.code != "read_only" else 400, exc.code, exc.message)
    events = _rows(result)
    next_cursor = None
    if len(events) == limit:
        last = events[-1]
        token = msgspec.json.encode([last["timestamp"], last["message_id"]])
        next_cursor = base64.urlsafe_b64encode(token).decode()
    return json({"profile": found.id, "events": events, "next_cursor": next_cursor})


@needs("profiles:read")
async def export(request: Request) -> Response:
    found = await _profile(request)
    parameters = _history_parameters(found)
    events: list[dict[str, Any]] = []
    try:
        while True:
            page = {**parameters, "page": _PAGE, "offset": len(events)}
            batch = _rows(await request.state.store.query(_EXPORT_PAGE, page, limited=False))
            events.extend(batch)
            if len(batch) < _PAGE:
                break
    except StoreUnavailable as exc:
        return error(503, exc.code, exc.message, headers={"Retry-After": "5"})
    return json(
        {"profile": describe(found, int(time.time() * 1000)), "events": events},
        headers={"Content-Disposition": f'attachment; filename="{found.id}.json"'},
    )


@needs("profiles:erase")
async def delete_profile(request: Request) -> Response:
    found = await _profile(request)
    erasure = await run_in_threadpool(erase, request.state.profiles, found.id)
    await request.state.suppression.refresh(request.state.redis)
    # The request, never the person: no id, identity or path of theirs in the log.
    await audit.record(
        request,
        "erasure",
        erasure.request,
        "erase",
        None,
        {"profiles": len(erasure.profiles), "identities": len(erasure.identities)},
    )
    return json(erasure.as_json(), 202)


routes = [
    Route("/v1/profiles/{id}", get_profile, methods=["GET"]),
    Route("/v1/profiles/{id}", delete_profile, methods=["DELETE"]),
    Route("/v1/profiles/{id}/events", get_events, methods=["GET"]),
    Route("/v1/profiles/{id}/export", export, methods=["GET"]),
]
