"""No input may produce a 500: seeded random mutations of valid requests get 200, 400 or 401."""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.conftest import WRITE_KEY, Engine, basic

CASES = int(os.environ.get("KAIROS_FUZZ_CASES", "150"))  # per path; raise it to search longer
VALID = {
    "batch": [
        {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1",
         "timestamp": "2026-11-26T10:00:00Z", "properties": {"revenue": 12.5, "items": [1, 2]},
         "context": {"page": {"url": "https://s.example/"}, "ip": "203.0.113.4"}},
        {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}},
        {"type": "alias", "userId": "u1", "previousId": "a1"},
    ],
    "sentAt": "2026-11-26T10:00:01Z",
}  # fmt: skip
ODD_VALUES = [
    None, 0, -1, 1e308, "", "x" * 300, [], {}, True, "2026-13-45T99:00:00Z", "\u0000", "\ud7ff",
    {"nested": {"deep": [None]}}, 2**70, "::1", "1.2.3.999",
]  # fmt: skip


def _mutate(value: object, rng: random.Random) -> object:
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        copy = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del copy[key]
        elif roll < 0.6:
            copy[key] = _mutate(copy[key], rng)
        else:
            copy[key] = rng.choice(ODD_VALUES)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.8:
        copy = list(value)
        index = rng.randrange(len(copy))
        copy[index] = _mutate(copy[index], rng)
        return copy
    return rng.choice(ODD_VALUES)


def _bodies(count: int) -> list[bytes]:
    rng = random.Random(20261126)
    bodies = []
    for _ in range(count):
        body = json.dumps(_mutate(VALID, rng)).encode()
        if rng.random() < 0.2:  # byte-level damage too
            at = rng.randrange(len(body))
            body = body[:at] + bytes([rng.randrange(256)]) + body[at + 1 :]
        bodies.append(body)
    return bodies


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/track", "/v1/identify", "/v1/alias"])
def test_mutated_requests_never_get_a_500(engine: Engine, path: str) -> None:
    statuses: dict[int, int] = {}
    for body in _bodies(CASES):
        answer = engine.client.post(
            engine.url + path, content=body,
            headers={"content-type": "application/json", **basic(WRITE_KEY)},
        )  # fmt: skip
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        assert answer.status_code in (200, 400), (answer.status_code, body[:300], answer.text)
        if answer.status_code == 400:
            assert set(answer.json()) >= {"code", "message"}
    assert statuses.get(400, 0) > 0  # the mutations do hit the validators
    health = engine.client.get(engine.url + "/healthz").json()
    assert health["status"] == "ok"
