"""The OpenAPI document covers the router exactly: every route is documented, every documented
operation is routed, and the only things left out are the ones ``EXCLUDED`` names."""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from starlette.routing import Route

from edge.api.app import create_app
from edge.openapi.document import EXCLUDED, spec
from edge.runtime.settings import Settings

_CONVERTER = re.compile(r"\{(\w+):\w+\}")  # Starlette's {id:path} is OpenAPI's {id}


def _routed() -> set[tuple[str, str]]:
    """(method, path) of everything the composed app answers, HEAD and OPTIONS aside."""
    app: Any = create_app(Settings("redis://unused", "unused", "wk", "sk"))
    while not hasattr(app, "routes"):  # through the middleware (CORS, limits, _DecideFirst…)
        app = app.app
    found = {("post", "/v1/decide")}  # served ahead of the router by _DecideFirst
    for route in app.routes:
        assert isinstance(route, Route), f"not a plain route: {route!r}"
        for method in route.methods or ():
            if method not in EXCLUDED:
                found.add((method.lower(), _CONVERTER.sub(r"{\1}", route.path)))
    return found


def _documented() -> set[tuple[str, str]]:
    return {(method, path) for path, item in spec()["paths"].items() for method in item}


def test_exclusions_are_the_methods_every_path_answers() -> None:
    assert set(EXCLUDED) == {"HEAD", "OPTIONS"}
    assert all(f"{method} (" in spec()["info"]["description"] for method in EXCLUDED)


def test_every_route_is_documented() -> None:
    missing = _routed() - _documented()
    assert not missing, f"routes missing from /openapi.json: {sorted(missing)}"


def test_every_documented_operation_is_routed() -> None:
    extra = _documented() - _routed()
    assert not extra, f"documented but not routed: {sorted(extra)}"


def test_every_operation_says_who_may_call_it_and_what_it_answers() -> None:
    document = spec()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation["summary"], where
            schemes = {s for alternative in operation["security"] for s in alternative}
            assert schemes <= set(document["components"]["securitySchemes"]), where
            answers = operation["responses"]
            assert {"413", "429"} <= set(answers), where
            assert any(code.startswith("2") or code.startswith("3") for code in answers), where
            if schemes & {"writeKey", "secretKey"}:
                assert "401" in answers, where
            body = operation.get("requestBody")
            if body is not None:
                assert "400" in answers or "application/x-www-form-urlencoded" in body["content"]


def test_bodies_are_generated_from_the_wire_types() -> None:
    schemas = spec()["components"]["schemas"]
    assert not [name for name in schemas if "." in name]  # no clash of two Structs' names
    track = schemas["Track"]
    assert "event" in track["required"] and "userId" in track["properties"]
    assert schemas["Ask"]["properties"]["context"] == {"type": "object"}
    assert schemas["Ask"]["additionalProperties"] is False  # forbid_unknown_fields
    assert {"format": "date-time", "type": "string"} in track["properties"]["timestamp"]["anyOf"]
    decide = spec()["paths"]["/v1/decide"]["post"]
    assert decide["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Ask"
    }


def test_the_document_is_valid_openapi() -> None:
    loaded = schemathesis.openapi.from_dict(spec())
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == len(_documented())
    ids = [op["operationId"] for item in spec()["paths"].values() for op in item.values()]
    assert len(set(ids)) == len(ids)
