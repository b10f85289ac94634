from __future__ import annotations

import gzip
import json
import time

import pytest

from tests.conftest import WRITE_KEY, Engine, basic


def track(**fields: object) -> dict[str, object]:
    return {"type": "track", "event": "Product Viewed", "userId": "u1", **fields}


def stored_after_marker(engine: Engine) -> int:
    """Send one good message and wait for it: the spool is FIFO, so anything accepted before it
    is stored by then. Returns the rows stored apart from the marker."""
    answer = engine.post("/v1/track", track(messageId="marker"))
    assert answer.status_code == 200
    deadline = time.monotonic() + 30
    while engine.sql("SELECT count() FROM events WHERE message_id = 'marker'") != [[1]]:
        assert time.monotonic() < deadline, "the marker was never stored"
        time.sleep(0.05)
    return engine.sql("SELECT count() FROM events")[0][0] - 1


def test_track_is_acknowledged_and_stored(engine: Engine) -> None:
    answer = engine.post("/v1/track", track(properties={"sku": "A-1"}, messageId="m1"))
    assert answer.status_code == 200
    assert answer.json() == {"success": True}
    assert engine.wait_stored(1) == 1
    assert engine.sql("SELECT type, event, user_id, properties FROM events") == [
        ["track", "Product Viewed", "u1", '{"sku":"A-1"}']
    ]


@pytest.mark.parametrize("kind", ["track", "page", "screen", "identify", "alias", "group"])
def test_each_single_message_endpoint(engine: Engine, kind: str) -> None:
    body = {"userId": "u1", "anonymousId": "a1", "messageId": f"m-{kind}"}
    body.update(
        {"track": {"event": "E"}, "alias": {"previousId": "a0"}, "group": {"groupId": "g"}}.get(
            kind, {}
        )
    )
    assert engine.post(f"/v1/{kind}", body).status_code == 200
    engine.wait_stored(1)
    assert engine.sql("SELECT type FROM events") == [[kind]]


def test_write_key_in_body_or_bearer(engine: Engine) -> None:
    assert (
        engine.post("/v1/batch", {"batch": [track()], "writeKey": WRITE_KEY}, key=None).status_code
        == 200
    )
    answer = engine.post("/v1/track", {**track(), "writeKey": WRITE_KEY}, key=None)
    assert answer.status_code == 200
    bearer = engine.post(
        "/v1/track", track(), key=None, headers={"Authorization": f"Bearer {WRITE_KEY}"}
    )
    assert bearer.status_code == 200


@pytest.mark.parametrize(
    ("key", "body_key", "message"),
    [
        pytest.param(None, None, "missing key", id="missing"),
        pytest.param("wk_wrong", None, "wrong key", id="wrong-basic"),
        pytest.param(None, "wk_wrong", "wrong key", id="wrong-body"),
    ],
)
def test_missing_or_wrong_write_key_is_401(
    engine: Engine, key: str | None, body_key: str | None, message: str
) -> None:
    body: dict[str, object] = {"batch": [track()]}
    if body_key:
        body["writeKey"] = body_key
    answer = engine.post("/v1/batch", body, key=key)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"
    assert answer.json()["message"].startswith(message)
    assert stored_after_marker(engine) == 0


BAD = [
    pytest.param(b"{nope", {}, "invalid_json", "$: JSON is malformed", id="malformed-json"),
    pytest.param(
        json.dumps({"batch": [track(userId=5.5)]}).encode(),
        {},
        "invalid_message",
        "$.batch[0].userId: Expected",
        id="wrong-type",
    ),
    pytest.param(
        json.dumps({"batch": [track(), {"type": "track", "userId": "u"}]}).encode(),
        {},
        "invalid_message",
        "$.batch[1].event: required field is missing",
        id="track-without-event",
    ),
    pytest.param(
        json.dumps({"batch": [{"type": "track", "event": "E"}]}).encode(),
        {},
        "invalid_message",
        "$.batch[0]: one of `userId` or `anonymousId` is required",
        id="no-ids",
    ),
    pytest.param(
        json.dumps({"batch": [{"type": "identify", "traits": {"a": 1}}]}).encode(),
        {},
        "invalid_message",
        "$.batch[0]: one of `userId` or `anonymousId` is required",
        id="identify-without-ids",
    ),
    pytest.param(
        json.dumps({"batch": [{"type": "purchase", "userId": "u"}]}).encode(),
        {},
        "invalid_message",
        "$.batch[0].type: Invalid value 'purchase'",
        id="unknown-type",
    ),
    pytest.param(
        json.dumps({"batch": [track(properties={"x": "y" * 33_000})]}).encode(),
        {},
        "message_too_large",
        "$.batch[0]: the message is over 32 KB",
        id="event-over-32kb",
    ),
    pytest.param(
        json.dumps({"batch": [track(properties={"x": "y" * 30_000}) for _ in range(18)]}).encode(),
        {},
        "batch_too_large",
        "the batch is over 500 KB",
        id="batch-over-500kb",
    ),
    pytest.param(
        json.dumps({"batch": [track()]}).encode(),
        {"content-type": "application/x-www-form-urlencoded"},
        "unsupported_media_type",
        "Content-Type must be application/json",
        id="wrong-content-type",
    ),
    pytest.param(
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 40,
        {"content-encoding": "gzip"},
        "invalid_gzip",
        "the body is not valid gzip",
        id="broken-gzip",
    ),
]


@pytest.mark.parametrize(("body", "headers", "code", "message"), BAD)
def test_bad_input_is_400_naming_the_field_and_stores_nothing(
    engine: Engine, body: bytes, headers: dict[str, str], code: str, message: str
) -> None:
    answer = engine.client.post(
        engine.url + "/v1/batch",
        content=body,
        headers={"content-type": "application/json", **basic(WRITE_KEY), **headers},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == code
    assert answer.json()["message"].startswith(message)
    assert stored_after_marker(engine) == 0
    metrics = engine.client.get(engine.url + "/metrics").text
    assert f'kairos_events_rejected_total{{reason="{code}"}} 1' in metrics


def test_oversized_body_without_content_length_is_refused(engine: Engine) -> None:
    def chunks():
        yield b'{"batch": ['
        for _ in range(30):
            yield json.dumps(track(properties={"x": "y" * 20_000})).encode() + b","
        yield b"{}]}"

    answer = engine.client.post(
        engine.url + "/v1/batch",
        content=chunks(),
        headers={"content-type": "application/json", **basic(WRITE_KEY)},
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == "batch_too_large"


def test_gzip_body_is_accepted(engine: Engine) -> None:
    body = gzip.compress(json.dumps({"batch": [track(messageId="gz")]}).encode())
    answer = engine.client.post(
        engine.url + "/v1/batch",
        content=body,
        headers={
            "content-type": "application/json",
            "content-encoding": "gzip",
            **basic(WRITE_KEY),
        },
    )
    assert answer.status_code == 200
    assert engine.wait_stored(1) == 1


def test_a_repeated_message_id_is_stored_once(engine: Engine) -> None:
    batch = {"batch": [track(messageId="retry-1"), track(messageId="retry-2")]}
    assert engine.post("/v1/batch", batch).status_code == 200
    # An SDK retry: the same messageIds again, plus one new message.
    batch["batch"].append(track(messageId="retry-3"))
    assert engine.post("/v1/batch", batch, headers={"X-Retry-Count": "1"}).status_code == 200
    assert engine.wait_stored(3) == 3
    assert stored_after_marker(engine) == 3
    metrics = engine.client.get(engine.url + "/metrics").text
    assert "kairos_events_duplicates_total 2" in metrics


def test_full_spool_answers_503_with_retry_after(engine_factory, settings) -> None:
    engine = engine_factory(settings, sink=False, spool_limit=1)
    assert engine.post("/v1/track", track()).status_code == 200
    answer = engine.post("/v1/track", track())
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["code"] == "spool_full"


def test_browser_preflight_is_allowed(engine: Engine) -> None:
    answer = engine.client.options(
        engine.url + "/v1/batch",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
