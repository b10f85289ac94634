"""Product catalog API (secret key): ``PUT/GET/DELETE /v1/catalog/items/{id}``, bulk upsert
``POST /v1/catalog/items`` (up to 1,000 items, all or nothing: a bad item is named by its
index), and ``GET /v1/catalog/items?cursor=`` to page through it (``profiles.products``)."""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import with_path
from edge.access import audit
from edge.api.auth import needs
from edge.api.responses import Problem, error, json
from profiles.products import ITEM, ITEMS, Item, delete_item, get_items, put_items

__all__ = ["routes"]

MAX_BULK = 1_000
T = TypeVar("T")


class Bulk(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[Item], msgspec.Meta(min_length=1, max_length=MAX_BULK)]


BULK = msgspec.json.Decoder(Bulk)


def _id(request: Request) -> str:
    item_id: str = request.path_params["id"]
    if not 0 < len(item_id) <= 200:
        raise Problem(400, "invalid_id", "$.id: 1 to 200 characters")
    return item_id


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise Problem(400, "invalid_item", with_path(str(exc), of=decoder.type)) from None
    except msgspec.DecodeError as exc:
        raise Problem(400, "invalid_json", f"$: {exc}") from None


@needs("catalog:write")
async def put(request: Request) -> Response:
    item_id = _id(request)
    item = _decode(ITEM, await request.body())
    if item.id is not None and item.id != item_id:
        return error(400, "invalid_item", f"$.id: {item.id!r} is not the id in the path")
    client = request.state.redis_sync
    before = await audit.stored(request, "catalog_item", item_id)
    saved = msgspec.structs.replace(item, id=item_id, source="api")
    await run_in_threadpool(put_items, client, [saved])
    await audit.changed(request, "catalog_item", item_id, before)
    return json({"item": saved, "created": before is None}, 201 if before is None else 200)


@needs("catalog:write")
async def bulk(request: Request) -> Response:
    found = _decode(BULK, await request.body())
    for index, item in enumerate(found.items):
        if item.id is None:
            return error(400, "invalid_item", f"$.items[{index}].id: required in a bulk upsert")
    items = [msgspec.structs.replace(item, source="api") for item in found.items]
    client = request.state.redis_sync
    ids = [str(item.id) for item in items]
    was = await run_in_threadpool(get_items, client, ids)
    await run_in_threadpool(put_items, client, items)
    before, after = audit.changed_items(ids, was, await run_in_threadpool(get_items, client, ids))
    await audit.record(request, "catalog", "items", "upsert", before, after)
    return json({"upserted": len(items)})


@needs("read")
async def get_one(request: Request) -> Response:
    item_id = _id(request)
    (item,) = await run_in_threadpool(get_items, request.state.redis_sync, [item_id])
    if item is None:
        return error(404, "not_found", f"no item {item_id!r}")
    return json({"item": item, "recommendable": item.recommendable()})


@needs("catalog:write")
async def delete(request: Request) -> Response:
    item_id = _id(request)
    before = await audit.stored(request, "catalog_item", item_id)
    if not await run_in_threadpool(delete_item, request.state.redis_sync, item_id):
        return error(404, "not_found", f"no item {item_id!r}")
    await audit.changed(request, "catalog_item", item_id, before)
    return json({"id": item_id, "deleted": True})


@needs("read")
async def list_items(request: Request) -> Response:
    cursor = request.query_params.get("cursor", "0")
    if not cursor.isdecimal():
        return error(400, "invalid_request", "$.cursor: not a cursor this API returned")
    following, found = await run_in_threadpool(
        request.state.redis_sync.hscan, ITEMS, int(cursor), None, 500
    )
    items = sorted((ITEM.decode(raw) for raw in found.values()), key=lambda i: i.id or "")
    return json({"items": items, "next_cursor": str(following) if following else None})


routes = [
    Route("/v1/catalog/items", list_items, methods=["GET"]),
    Route("/v1/catalog/items", bulk, methods=["POST"]),
    Route("/v1/catalog/items/{id:path}", put, methods=["PUT"]),
    Route("/v1/catalog/items/{id:path}", get_one, methods=["GET"]),
    Route("/v1/catalog/items/{id:path}", delete, methods=["DELETE"]),
]
