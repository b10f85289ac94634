"""Schemathesis over ``/openapi.json`` against the real engine (HTTP, real Redis and ClickHouse).

Every operation is fuzzed with valid inputs (the schema's) and with invalid ones (schemathesis'
negative mode), then once more with path parameters that name resources the engine has (a
placement, a segment, an item, a journey, a profile), so that bodies and queries reach past
the 404. The key each operation's security names is sent with it. No answer may be a 5xx, and
each must have a documented status, the documented media type, and a body the schema allows.

Bounded: ``KAIROS_FUZZ_EXAMPLES`` (default 8) examples per operation and pass, derandomized (the
same cases every run; ``KAIROS_FUZZ_SEED`` picks other ones), no shrinking (a failure prints the
case as a curl command instead).
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from edge.openapi.document import spec
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, basic

# Every operation, fuzzed against a running engine (`pytest -m 'not slow'` skips it).
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("KAIROS_FUZZ_EXAMPLES", "8"))
SEED = os.environ.get("KAIROS_FUZZ_SEED")  # other cases than CI's, for a hunt
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SCHEMA = schemathesis.openapi.from_dict(spec())
# What the engine holds before the fuzzing starts: the path parameters of the third pass (an
# item's id where the path is the catalog's or the demo shop's).
KNOWN = {
    "key": "fuzz",
    "id": "user_id:fuzzer",
    "version": "v1",
    "name": "hats",
    "decision": "d_" + "0" * 24,
    "item": "fuzz-item",
    "placement": "recs",
}
_ITEMS = {"id": "fuzz-item", "name": "Hat", "url": "https://shop.example/hat", "price": 10}
_OBJECTS = {
    "/v1/catalog/items/fuzz-item": {k: v for k, v in _ITEMS.items() if k != "id"},
    "/v1/placements/fuzz": {"variants": [{"key": "a"}, {"key": "b"}], "policy": {"kind": "ab"}},
    "/v1/placements/recs": {"recommend": {"n": 2}, "variants": [{"key": "popular"}]},
    "/v1/segments/fuzz": {"rule": {"field": "traits.plan", "op": "eq", "value": "pro"}},
    "/v1/journeys/fuzz": {
        "trigger": {"kind": "event", "event": "Product Added"},
        "start": "wait",
        "steps": {"wait": {"type": "wait", "duration": "1h", "next": "end"},
                  "end": {"type": "end"}},
    },
}  # fmt: skip


def _seed(engine: Engine) -> None:
    secret = {"Authorization": f"Bearer {SECRET_KEY}"}
    for path, body in _OBJECTS.items():
        answer = engine.client.put(engine.url + path, json=body, headers=secret)
        assert answer.status_code in (200, 201), f"{path}: {answer.text}"
    person = {"userId": "fuzzer", "traits": {"plan": "pro"}}
    assert engine.post("/v1/identify", person).status_code == 200
    deadline = time.monotonic() + 30  # the profile updater makes the profile
    while engine.client.get(engine.url + "/v1/profiles/user_id:fuzzer",
                            headers=secret).status_code != 200:  # fmt: skip
        assert time.monotonic() < deadline, "the profile was not made"
        time.sleep(0.1)


def _session(engine: Engine) -> dict[str, str]:
    """The dashboard's session cookie, signed in through its form as a person would."""
    with httpx.Client(base_url=engine.url) as client:
        csrf = client.get("/dashboard/login").cookies["kairos_csrf"]
        signed = client.post("/dashboard/login", data={"key": SECRET_KEY, "csrf": csrf})
    assert signed.status_code == 303, signed.text
    return {"kairos_session": signed.cookies["kairos_session"]}


def _credentials(operation: Any, session: dict[str, str]) -> dict[str, Any]:
    schemes = {
        s for alternative in operation.definition.raw.get("security", []) for s in alternative
    }
    if "writeKey" in schemes:
        return {"headers": basic(WRITE_KEY)}
    if "secretKey" in schemes:
        return {"headers": {"Authorization": f"Bearer {SECRET_KEY}"}}
    if "dashboardSession" in schemes:
        return {"cookies": session}
    return {}


def _passes(operation: Any) -> list[tuple[GenerationMode, dict[str, str] | None]]:
    found = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
    names = {p.name for p in operation.path_parameters}
    if names:
        item = "/catalog/" in operation.path or "/demo/" in operation.path
        known = {**KNOWN, "id": "fuzz-item"} if item else KNOWN
        found.append((GenerationMode.POSITIVE, {n: known.get(n, "fuzz") for n in names}))
    return found


def _known_query(operation: Any, fixed: dict[str, str] | None) -> dict[str, str] | None:
    """With known path parameters, a known placement too (the recommendations' query)."""
    names = {p.name for p in operation.query}
    return {"placement": KNOWN["placement"]} if fixed and "placement" in names else None


def _order(operation: Any) -> int:
    """Deletes last, so the other operations meet the seeded resources."""
    return 1 if operation.method.lower() == "delete" else 0


def _fuzz(operation: Any, mode: GenerationMode, fixed: dict[str, str] | None,
          engine: Engine, http: requests.Session, auth: dict[str, Any]) -> None:  # fmt: skip
    strategy = operation.as_strategy(
        generation_mode=mode, path_parameters=fixed, query=_known_query(operation, fixed)
    )

    @settings(max_examples=EXAMPLES, derandomize=SEED is None, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @seed(int(SEED or 0))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=engine.url, session=http, allow_redirects=False, **auth)
        case.validate_response(response, checks=CHECKS)

    run()


def test_no_operation_answers_5xx_or_off_contract(engine: Engine) -> None:
    _seed(engine)
    session = _session(engine)
    operations = sorted((r.ok() for r in SCHEMA.get_all_operations()), key=_order)
    failures = []
    with requests.Session() as http:
        for operation in operations:
            auth = _credentials(operation, session)
            for mode, fixed in _passes(operation):
                try:
                    _fuzz(operation, mode, fixed, engine, http, auth)
                except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except (Exception, BaseExceptionGroup) as exc:  # every operation's findings
                    where = f"{operation.label} ({mode.value}{', known ids' if fixed else ''})"
                    failures.append(f"{where}:\n{exc}")
    assert not failures, f"{len(failures)} failing:\n\n" + "\n\n".join(failures)
