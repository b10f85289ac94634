"""``GET /openapi.json``: the public HTTP contract, an OpenAPI 3.1 document generated from the
wire types (``edge.openapi.paths`` lists the operations, ``edge.openapi.types`` the answers).

tests/fuzz runs schemathesis over it against a real engine: no answer may be a 5xx, and every
answer's status, media type and body must be the ones documented here.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.api.responses import json
from edge.openapi.paths import BODIES, Operation, operations
from edge.openapi.types import ANSWERS

__all__ = ["EXCLUDED", "routes", "spec"]

# What the document leaves out, and why (tests/edge/test_openapi.py holds the router to it).
EXCLUDED = {
    "HEAD": "every GET also answers HEAD (the same headers, no body); not listed again",
    "OPTIONS": "CORS preflight, answered by the CORS middleware on every path",
}
_DESCRIPTION = """\
Kairos: the tracking API (Segment-compatible), decisions, and the admin, results and profile
APIs. Keys travel as HTTP Basic username or as a Bearer token. Each operation names the
**scope** it needs (`x-kairos-scope`, and its description): a named key (`POST /v1/keys`)
holding that scope or `admin` may call it. The bootstrap keys keep working: the **write key**
(public, for browsers and SDKs) holds `track` and `decide`, the **secret key** holds `admin`.
A missing, wrong, revoked or expired key is a 401 (which of them is not said); a key without
the scope, or used from an origin or address it is not allowed from, is a 403 that says so.
Every error is JSON `{"code", "message"}` whose message leads with the field path.

Any operation may answer **413** (a body over `[limits] max_body_kb`) and **429** (over a
`[limits]` rate; retry after `Retry-After`).

The dashboard (`/dashboard…`, signed in through a form with a user's email and password, or
the secret key: a session cookie; a user's role must hold the operation's scope) and the demo
shop (`/demo…`) are HTML for people: they are listed so that the document covers every route,
but their markup is not a contract. Not listed: {excluded}.
"""
_NAMES = {
    "collector.wire.Batch": "Batch",
    "edge.routes.recommendations.Batch": "RecommendationBatch",
    "collector.wire.Group": "Group",
    "journeys.subscriptions.Group": "SubscriptionDefinition",
}
# Raw JSON fields (kept unparsed by the endpoints) are JSON objects.
_OBJECTS = ("context", "properties", "traits")
_FORM = {
    "type": "object",
    "properties": {
        "email": {"type": "string"},
        "password": {"type": "string"},
        "key": {"type": "string"},
        "csrf": {"type": "string"},
    },
    "description": "A urlencoded form: a user's email and password, or the secret key "
    "(sign-in), and the form's CSRF token",
}
_DEMO_FORM = {
    "type": "object",
    "properties": {"first_name": {"type": "string"}, "email": {"type": "string"}},
    "description": "A urlencoded form: the demo shopper's first name and (optional) email",
}
_SECURITY = {
    "writeKey": {"type": "http", "scheme": "basic",
                 "description": "the write key (or a named browser key with the scope) as the "
                                "username, empty password (or Bearer)"},
    "secretKey": {"type": "http", "scheme": "bearer",
                  "description": "a named key holding the operation's scope, or the secret key "
                                 "(admin); or as the HTTP Basic username"},
    "onchainSignature": {"type": "apiKey", "in": "header", "name": "X-Kairos-Signature",
                         "description": 't=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>"> '
                                        "under the on-chain secret (GET /v1/onchain)"},
    "feedbackSignature": {"type": "apiKey", "in": "header", "name": "X-Kairos-Signature",
                          "description": 't=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>"> '
                                         "under the feedback secret (GET /v1/subscriptions)"},
    "dashboardSession": {"type": "apiKey", "in": "cookie", "name": "kairos_session",
                         "description": "set by POST /dashboard/login; its role's scopes "
                                        "apply (x-kairos-scope)"},
}  # fmt: skip
_NO_ROUTE = "No such resource; text/plain when no route takes a path of this shape"
_LIMITS = {
    413: ("The body is over the engine's limit ([limits] max_body_kb)", "Error"),
    429: ("Over the rate limit ([limits]); retry after Retry-After", "Error"),
}


def _components() -> dict[str, Any]:
    _, found = msgspec.json.schema_components(
        [*BODIES, *ANSWERS], ref_template="#/components/schemas/{name}"
    )
    text = msgspec.json.encode(found).decode()
    for qualified, name in _NAMES.items():
        text = text.replace(qualified, name)
    schemas: dict[str, Any] = msgspec.json.decode(text)
    for schema in schemas.values():
        for name, field in schema.get("properties", {}).items():
            if name in _OBJECTS and field == {}:
                field["type"] = "object"
    for cls in _structs([*BODIES, *ANSWERS]):
        _mark_times(cls, schemas.get(_NAMES.get(f"{cls.__module__}.{cls.__name__}",
                                                cls.__name__)))  # fmt: skip
    schemas["SimulateAsk"]["properties"]["journey"] = {
        "anyOf": [_ref("Journey"), {"type": "null"}],
        "description": "a definition to try before saving it (default: the saved one)",
    }
    schemas["StateChange"] = {
        "type": "object", "minProperties": 1,
        "additionalProperties": {"enum": ["subscribed", "unsubscribed"]},
        "description": "group key -> the state asked for",
    }  # fmt: skip
    schemas["PreferencesForm"] = _form("g (repeated: each group ticked), save or all=email")
    schemas["OneClickForm"] = _form("List-Unsubscribe=One-Click (RFC 8058)")
    schemas["ConfirmForm"] = _form("confirm=1")
    schemas["Form"] = _FORM
    schemas["DemoForm"] = _DEMO_FORM
    return schemas


def _form(about: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": {"type": "string"},
            "description": f"A form: {about}"}  # fmt: skip


def _structs(types: list[Any]) -> list[type]:
    """Every Struct class the types reach."""
    found: dict[type, None] = {}
    pending = list(msgspec.inspect.multi_type_info(types))
    while pending:
        info = pending.pop()
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in found:
                continue
            found[info.cls] = None
            pending.extend(f.type for f in info.fields)
        for name in ("types", "item_type", "key_type", "value_type"):
            inner = getattr(info, name, None)
            if isinstance(inner, tuple):
                pending.extend(inner)
            elif inner is not None:
                pending.append(inner)
    return list(found)


def _mark_times(cls: type, schema: dict[str, Any] | None) -> None:
    """msgspec shows a datetime as a bare string: say it is RFC 3339."""
    if schema is None:
        return
    for info in msgspec.inspect.type_info(cls).fields:  # type: ignore[union-attr]
        inner = getattr(info.type, "types", (info.type,))
        if any(isinstance(t, msgspec.inspect.DateTimeType) for t in inner):
            field = schema["properties"][info.encode_name]
            for branch in field.get("anyOf", [field]):
                if branch.get("type") == "string":
                    branch["format"] = "date-time"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, body: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if body is None:
        return answer
    if body == "application/json":  # JSON, but not of a type of ours
        answer["content"] = {body: {"schema": {"type": "object"}}}
    elif "/" in body:  # a media type
        answer["content"] = {body: {"schema": {"type": "string"}}}
    else:
        answer["content"] = {"application/json": {"schema": _ref(body)}}
    return answer


def _operation(op: Operation) -> dict[str, Any]:
    answers = dict(op.answers)
    if op.security and op.security[0] != "dashboardSession":
        answers.setdefault(401, ("Missing or wrong key", "Error"))
    if op.scope and "dashboardSession" in op.security:
        answers.setdefault(403, (f"The signed-in user's role lacks {op.scope!r}", "text/html"))
    elif op.scope:
        answers.setdefault(403, (f"The key lacks {op.scope!r}, or is used from an origin or "
                                 "address it is not allowed from", "Error"))  # fmt: skip
    answers.update(_LIMITS)
    found: dict[str, Any] = {
        "summary": op.summary,
        **({"description": f"Scope: `{op.scope}`."} if op.scope else {}),
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{op.method}_{op.path}").strip("_"),
        "tags": [op.tag],
        "security": [{scheme: []} for scheme in op.security],
        **({"x-kairos-scope": op.scope} if op.scope else {}),
        "responses": {str(status): _answer(*answers[status]) for status in sorted(answers)},
    }
    if any(p["in"] == "path" for p in op.parameters):  # a path no route matches: the router's
        missing = found["responses"].setdefault("404", _answer(_NO_ROUTE, None))
        missing.setdefault("content", {})["text/plain"] = {"schema": {"type": "string"}}
    if op.parameters:
        found["parameters"] = op.parameters
    if op.body is not None:
        found["requestBody"] = {
            "required": op.body_required,
            "content": {media: {"schema": _ref(op.body)} for media in op.media},
        }
    return found


def spec() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations():
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    excluded = "; ".join(f"{method} ({why})" for method, why in EXCLUDED.items())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kairos",
            "version": "1",
            "description": _DESCRIPTION.replace("{excluded}", excluded),
        },
        "paths": paths,
        "components": {"schemas": _components(), "securitySchemes": _SECURITY},
    }


_SPEC = spec()


async def openapi(request: Request) -> Response:
    return json(_SPEC)


routes = [Route("/openapi.json", openapi)]
