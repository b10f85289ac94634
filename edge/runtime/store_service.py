"""The query service of the process that owns embedded ClickHouse (chdb allows one per data dir).

Other processes of the engine read through it over a Unix socket (collector.store.RemoteStore).
Internal: no keys, reachable only through the socket file (mode 600) in the data dir.
"""

from __future__ import annotations

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import QueryFailed, StoreUnavailable
from collector.store import LocalStore, Query
from edge.api.responses import error, json

__all__ = ["create_store_service"]


_decode = msgspec.json.Decoder(Query).decode


def create_store_service(store: LocalStore) -> Starlette:
    async def query(request: Request) -> Response:
        try:
            ask = _decode(await request.body())
            return json(await store.query(ask.query, ask.parameters, ask.limited))
        except msgspec.MsgspecError as exc:
            return error(400, "invalid_request", str(exc))
        except QueryFailed as exc:
            return error(400, exc.code, exc.message)
        except StoreUnavailable as exc:
            return error(503, exc.code, exc.message)

    async def ping(request: Request) -> Response:
        try:
            await store.query("SELECT 1")
        except (QueryFailed, StoreUnavailable) as exc:
            return error(503, "store_unavailable", exc.message)
        return json({"ok": True})

    return Starlette(routes=[Route("/query", query, methods=["POST"]), Route("/ping", ping)])
