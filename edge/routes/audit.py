"""The audit log (admin): ``GET /v1/audit?resource=&key=&actor=&via=&action=&since=&until=
&limit=&cursor=``, newest first (``collector.audit``; the dashboard's audit page reads the same
``entries``).

Every parameter is checked: a 400 names the one at fault. Entries reach ClickHouse within a
second or two of their change (the sink drains them); ``since`` and ``until`` are ISO 8601
times (without a zone: UTC).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.audit import RESOURCES, VIAS
from collector.errors import QueryFailed, StoreUnavailable, with_path
from collector.store import EventStore, sql_time
from decisions.results import store_time
from edge.api.auth import needs
from edge.api.responses import Problem, error, json
from edge.routes.placements import check_window
from journeys.suppression import address_hash

__all__ = ["AuditQuery", "asked", "entries", "routes"]

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=320)]


class AuditQuery(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What ``GET /v1/audit`` takes as query parameters (every one optional)."""

    resource: str | None = None  # one of collector.audit.RESOURCES
    key: _Text | None = None
    actor: _Text | None = None  # key:<name>, user:<email>, config:file
    via: str | None = None  # one of collector.audit.VIAS
    action: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,32}$")] | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    cursor: str | None = None


_COLUMNS = "id, timestamp, actor, via, address, action, resource, resource_key, before, after, " \
           "changes"  # fmt: skip
_FILTERS = {  # parameter -> its condition (all bound, none quoted)
    "resource": "resource = {resource:String}",
    "key": "resource_key = {key:String}",
    "actor": "actor = {actor:String}",
    "via": "via = {via:String}",
    "action": "action = {action:String}",
    "since": "timestamp >= {since:DateTime64(3)}",
    "until": "timestamp < {until:DateTime64(3)}",
    "cursor": "(timestamp, id) < ({at:DateTime64(3)}, {after:String})",
}


def asked(query: dict[str, str]) -> AuditQuery:
    """The query parameters checked; a 400 ``Problem`` naming the one at fault."""
    try:
        ask = msgspec.convert(query, AuditQuery, strict=False)
    except msgspec.ValidationError as exc:
        raise Problem(400, "invalid_request", with_path(str(exc), of=AuditQuery)) from None
    if ask.resource is not None and ask.resource not in RESOURCES:
        raise Problem(400, "invalid_request", f"$.resource: no resource {ask.resource!r} (one "
                      f"of {', '.join(RESOURCES)})")  # fmt: skip
    if ask.via is not None and ask.via not in VIAS:
        raise Problem(400, "invalid_request", f"$.via: {ask.via!r} is not one of "
                      f"{', '.join(VIAS)}")  # fmt: skip
    since, until = check_window(ask.since, ask.until)
    ask = msgspec.structs.replace(ask, since=since, until=until)
    if ask.resource == "suppression" and ask.key and "@" in ask.key:  # as the list keeps it
        ask = msgspec.structs.replace(ask, key=address_hash("email", ask.key))
    if ask.cursor is not None:
        _cursor(ask.cursor)
    return ask


def _cursor(text: str) -> tuple[str, str]:
    """(time, id) of the last entry of the previous page, from its ``next_cursor``."""
    try:
        at, after = msgspec.json.decode(base64.urlsafe_b64decode(text.encode()))
        return sql_time(datetime.fromisoformat(str(at))), str(after)
    except (ValueError, TypeError, msgspec.DecodeError):
        raise Problem(400, "invalid_request", "$.cursor: not a cursor this API returned") from None


def _shown(row: list[Any]) -> dict[str, Any]:
    found = dict(zip(_COLUMNS.split(", "), row))
    return {
        "id": found["id"],
        "time": store_time(found["timestamp"]),
        "actor": found["actor"],
        "via": found["via"],
        "address": found["address"],
        "action": found["action"],
        "resource": found["resource"],
        "key": found["resource_key"],
        "before": msgspec.json.decode(found["before"]) if found["before"] else None,
        "after": msgspec.json.decode(found["after"]) if found["after"] else None,
        "changes": msgspec.json.decode(found["changes"] or "[]"),
    }


async def entries(store: EventStore, ask: AuditQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of entries, newest first, and the cursor of the next (None: the last page)."""
    wanted = msgspec.structs.asdict(ask)
    conditions = [_FILTERS[name] for name in _FILTERS if wanted.get(name) is not None]
    parameters: dict[str, Any] = {name: wanted[name] for name in ("resource", "key", "actor",
                                                                  "via", "action")}  # fmt: skip
    parameters.update(limit=ask.limit, since=ask.since and sql_time(ask.since),
                      until=ask.until and sql_time(ask.until))  # fmt: skip
    if ask.cursor is not None:
        parameters["at"], parameters["after"] = _cursor(ask.cursor)
    where = " AND ".join(conditions) or "1"
    sql = (f"SELECT {_COLUMNS} FROM audit FINAL WHERE {where} "
           "ORDER BY timestamp DESC, id DESC LIMIT {limit:UInt32}")  # fmt: skip
    bound = {name: value for name, value in parameters.items() if value is not None}
    rows = [_shown(row) for row in (await store.query(sql, bound, limited=False)).rows]
    following = None
    if len(rows) == ask.limit:
        last = rows[-1]
        token = msgspec.json.encode([last["time"].isoformat(), last["id"]])
        following = base64.urlsafe_b64encode(token).decode()
    return rows, following


@needs("admin")
async def list_entries(request: Request) -> Response:
    ask = asked(dict(request.query_params))
    try:
        found, following = await entries(request.state.store, ask)
    except (StoreUnavailable, QueryFailed) as exc:
        return error(503, "store_unavailable", str(exc), headers={"Retry-After": "5"})
    return json({"entries": found, "next_cursor": following})


routes = [Route("/v1/audit", list_entries, methods=["GET"])]
