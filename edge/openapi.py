"""``GET /openapi.json``: the public HTTP contract, generated from the wire types."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector import wire
from edge.responses import json
from edge.sql import SqlRequest

__all__ = ["routes", "spec"]


class Error(msgspec.Struct):
    """What every 4xx and 5xx answer carries."""

    code: str
    message: str
    errors: list[dict[str, Any]] | None = None


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema:
        answer["content"] = {"application/json": {"schema": schema}}
    return answer


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def spec() -> dict[str, Any]:
    types = [wire.Batch, wire.Track, wire.Page, wire.Screen, wire.Identify, wire.Alias, wire.Group]
    (_, *_), components = msgspec.json.schema_components(
        [*types, SqlRequest, Error], ref_template="#/components/schemas/{name}"
    )
    errors = {
        "400": _answer("Invalid input; the message leads with the field path", _ref("Error")),
        "401": _answer("Missing or wrong key", _ref("Error")),
        "503": _answer("Spool full or unreachable; retry after Retry-After", _ref("Error")),
    }
    ok = {"200": _answer("Durable in the spool", {"example": {"success": True}})}
    paths: dict[str, Any] = {
        "/v1/batch": {
            "post": {
                "summary": "Segment batch: up to 500 KB, each message up to 32 KB; atomic",
                "security": [{"writeKey": []}],
                "requestBody": {"content": {"application/json": {"schema": _ref("Batch")}}},
                "responses": {**ok, **errors},
            }
        },
    }
    for cls in types[1:]:
        tag = cls.__struct_config__.tag
        paths[f"/v1/{tag}"] = {
            "post": {
                "summary": f"One Segment {tag} message (up to 32 KB)",
                "security": [{"writeKey": []}],
                "requestBody": {"content": {"application/json": {"schema": _ref(cls.__name__)}}},
                "responses": {**ok, **errors},
            }
        }
    paths["/v1/sql"] = {
        "post": {
            "summary": "Read-only SQL over the event store",
            "security": [{"secretKey": []}],
            "requestBody": {"content": {"application/json": {"schema": _ref("SqlRequest")}}},
            "responses": {"200": _answer("columns, types, rows"), **errors},
        }
    }
    paths["/healthz"] = {
        "get": {
            "summary": "Stores and spool lag",
            "responses": {"200": _answer("healthy"), "503": _answer("degraded")},
        }
    }
    paths["/metrics"] = {
        "get": {"summary": "Prometheus text", "responses": {"200": _answer("metrics")}}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kairos", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "write key as the username, empty password",
                },
                "secretKey": {"type": "http", "scheme": "bearer"},
            },
        },
    }


_SPEC = spec()


async def openapi(request: Request) -> Response:
    return json(_SPEC)


routes = [Route("/openapi.json", openapi)]
