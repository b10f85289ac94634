"""``POST /v1/sql``: read-only SQL over the event store (secret key).

Read-only is enforced by ClickHouse (``readonly=1`` on a client used for nothing else), not by
parsing the statement: writes, DDL, SET and the file()/url() table functions are refused.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector import Unauthorized
from collector.errors import with_path
from edge.auth import key_from_header, require_key
from edge.responses import error, json

__all__ = ["routes"]


class SqlRequest(msgspec.Struct, forbid_unknown_fields=True):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]


_decode = msgspec.json.Decoder(SqlRequest).decode
_READONLY = 164  # ClickHouse error code READONLY


async def sql(request: Request) -> Response:
    state = request.state
    try:
        require_key(
            key_from_header(request.headers.get("authorization")),
            state.settings.secret_key,
            "secret key",
        )
    except Unauthorized as exc:
        return error(401, exc.code, exc.message)
    try:
        query = _decode(await request.body()).query
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc)))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    try:
        result = await run_in_threadpool(state.sql_client.query, query)
    except Exception as exc:  # ClickHouse refused or failed the query: the user's SQL, not a 500
        text = str(exc)
        code = "read_only" if f"Code: {_READONLY}" in text or "READONLY" in text else "query_failed"
        message = _first_line(text)
        if code == "read_only":
            message = f"the SQL endpoint is read-only: {message}"
        return error(400, code, message)
    return json(
        {
            "columns": list(result.column_names),
            "types": [t.name for t in result.column_types],
            "rows": result.result_rows,
        }
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:1000]
    return text[:1000]


routes = [Route("/v1/sql", sql, methods=["POST"])]
