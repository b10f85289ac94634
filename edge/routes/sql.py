"""``POST /v1/sql``: read-only SQL over the event store (secret key).

Read-only is enforced by ClickHouse (``readonly=1`` on a client used for nothing else), not by
parsing the statement: writes, DDL, SET and the file()/url() table functions are refused.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import QueryFailed, StoreUnavailable, with_path
from edge.api.auth import needs
from edge.api.responses import error, json

__all__ = ["routes"]


class SqlRequest(msgspec.Struct, forbid_unknown_fields=True):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]


_decode = msgspec.json.Decoder(SqlRequest).decode


@needs("sql")
async def sql(request: Request) -> Response:
    state = request.state
    try:
        query = _decode(await request.body()).query
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=SqlRequest))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    try:
        result = await state.store.query(query)
    except QueryFailed as exc:
        return error(400, exc.code, exc.message)
    except StoreUnavailable as exc:
        return error(503, exc.code, exc.message, headers={"Retry-After": "5"})
    return json(result)


routes = [Route("/v1/sql", sql, methods=["POST"])]
