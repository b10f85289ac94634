from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from collector import InvalidInput, read_request
from collector.wire import Alias, Identify, Track, as_dict

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def read(body: object, kind: str = "batch", **kwargs: object):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    options = {"content_type": "application/json", "content_encoding": None, "ip": "203.0.113.9"}
    options.update(kwargs)
    return read_request(raw, kind=kind, received_at=NOW, **options)


def track(**fields: object) -> dict[str, object]:
    return {"type": "track", "event": "Product Viewed", "userId": "u1", **fields}


def test_batch_of_each_type_is_read_in_order() -> None:
    intake = read(
        {
            "batch": [
                track(messageId="m1"),
                {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}},
                {"type": "alias", "userId": "u1", "previousId": "a1"},
                {"type": "page", "anonymousId": "a1", "name": "Home"},
                {"type": "screen", "userId": 42, "name": "Cart"},
                {"type": "group", "userId": "u1", "groupId": "g1"},
            ],
            "writeKey": "wk",
        }
    )
    kinds = [m.__struct_config__.tag for m in intake.messages]
    assert kinds == ["track", "identify", "alias", "page", "screen", "group"]
    assert intake.write_key == "wk"
    assert intake.messages[4].user_id == "42"  # numeric ids become strings
    assert isinstance(intake.messages[1], Identify) and isinstance(intake.messages[2], Alias)
    assert all(m.received_at == NOW for m in intake.messages)
    assert all(m.message_id for m in intake.messages)  # generated when missing
    assert len(intake.ids) == 6 and all(len(i) == 16 for i in intake.ids)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        pytest.param(b"{not json", "invalid_json", r"^\$: JSON is malformed", id="malformed-json"),
        pytest.param(
            b'{"batch": [{"type": "track", "event": "\xff", "userId": "u"}]}',
            "invalid_json",
            r"^\$: the body is not UTF-8 \(byte 39\)$",
            id="not-utf8",
        ),
        pytest.param(
            b'{"batch": [{"type": "track", "event": "E", "userId": "u", '
            b'"properties": {"k": "\xc3"}}]}',
            "invalid_json",
            r"^\$: the body is not UTF-8",
            id="not-utf8-in-raw-properties",
        ),
        pytest.param(
            {"batch": {}}, "invalid_message", r"^\$.batch: Expected `array`", id="batch-not-list"
        ),
        pytest.param({"batch": []}, "invalid_message", r"^\$.batch: must hold", id="empty-batch"),
        pytest.param(
            {"batch": [track(), track(), track(), {"type": "track", "userId": "u"}]},
            "invalid_message",
            r"^\$.batch\[3\].event: required field is missing$",
            id="track-without-event",
        ),
        pytest.param(
            {"batch": [{"type": "track", "event": "x"}]},
            "invalid_message",
            r"^\$.batch\[0\]: one of `userId` or `anonymousId` is required",
            id="no-identity",
        ),
        pytest.param(
            {"batch": [{"type": "identify", "traits": {}}]},
            "invalid_message",
            r"^\$.batch\[0\]: one of `userId` or `anonymousId`",
            id="identify-without-id",
        ),
        pytest.param(
            {"batch": [{"type": "launch", "userId": "u"}]},
            "invalid_message",
            r"^\$.batch\[0\].type: Invalid value 'launch'",
            id="unknown-type",
        ),
        pytest.param(
            {"batch": [{"event": "x", "userId": "u"}]},
            "invalid_message",
            r"^\$.batch\[0\].type: required field is missing",
            id="missing-type",
        ),
        pytest.param(
            {"batch": [track(properties=[1, 2])]},
            "invalid_message",
            r"^\$.batch\[0\].properties: must be a JSON object$",
            id="properties-not-object",
        ),
        pytest.param(
            {"batch": [track(userId=["u"])]},
            "invalid_message",
            r"^\$.batch\[0\].userId: Expected `int \| str \| null`, got `array`",
            id="id-wrong-type",
        ),
        pytest.param(
            {"batch": [track(timestamp="yesterday")]},
            "invalid_message",
            r"^\$.batch\[0\].timestamp: Invalid RFC3339",
            id="bad-timestamp",
        ),
        pytest.param(
            {"batch": [track(timestamp="0001-01-01T00:00:00Z")]},
            "invalid_message",
            r"^\$.batch\[0\].timestamp: must lie between 1970 and 2200",
            id="timestamp-out-of-range",
        ),
        pytest.param(
            {"batch": [{"type": "alias", "anonymousId": "a", "previousId": "p"}]},
            "invalid_message",
            r"^\$.batch\[0\].userId: must be set",
            id="alias-without-user",
        ),
        pytest.param(
            {"batch": [track(context={"ip": "not-an-ip"})]},
            "invalid_message",
            r"^\$.batch\[0\].context.ip: must be an IP address, got 'not-an-ip'$",
            id="bad-context-ip",
        ),
        pytest.param(
            {"batch": [track(context="web")]},
            "invalid_message",
            r"^\$.batch\[0\].context: must be a JSON object$",
            id="context-not-object",
        ),
        pytest.param(
            {"batch": [{"type": "identify", "userId": "u", "traits": None}]},
            "invalid_message",
            r"^\$.batch\[0\].traits: must be a JSON object$",
            id="traits-null",
        ),
        pytest.param(
            {"batch": [track(properties={"blob": "x" * 33_000})]},
            "message_too_large",
            r"^\$.batch\[0\]: the message is over 32 KB",
            id="message-over-32kb",
        ),
        pytest.param(
            {"batch": [track(properties={"blob": "x" * 30_000}) for _ in range(18)]},
            "batch_too_large",
            r"^the batch is over 500 KB",
            id="batch-over-500kb",
        ),
    ],
)
def test_bad_batches_are_refused_with_the_field_path(body: object, code: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        read(body)
    assert caught.value.code == code


def test_a_batch_with_bad_messages_lists_each_by_index() -> None:
    with pytest.raises(InvalidInput) as caught:
        read({"batch": [track(), {"type": "track", "userId": "u"}, track(), track(event="")]})
    assert [e["index"] for e in caught.value.errors] == [1, 3]
    assert caught.value.errors[1]["path"] == "$.batch[3].event"
    assert caught.value.message.endswith("(and 1 more invalid messages)")


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        pytest.param("track", {"userId": "u"}, r"^\$.event: required field is missing", id="track"),
        pytest.param("identify", {"traits": {}}, r"^\$: one of `userId`", id="identify"),
        pytest.param("group", {"userId": "u"}, r"^\$.groupId: required field", id="group"),
        pytest.param("alias", {"userId": "u"}, r"^\$.previousId: required field", id="alias"),
        pytest.param(
            "page",
            {"type": "track", "userId": "u"},
            r"^\$.type: Invalid value 'track'",
            id="type-mismatch",
        ),
        pytest.param("track", [1], r"^\$: Expected `object`, got `array`", id="not-object"),
    ],
)
def test_single_message_endpoints_validate_their_type(
    kind: str, body: object, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        read(body, kind=kind)


def test_single_message_over_32kb_is_refused() -> None:
    with pytest.raises(InvalidInput, match="the message is over 32 KB") as caught:
        read(track(properties={"blob": "x" * 33_000}), kind="track")
    assert caught.value.code == "message_too_large"


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        pytest.param("application/json", True, id="json"),
        pytest.param("application/json; charset=utf-8", True, id="json-charset"),
        pytest.param("text/plain;charset=UTF-8", True, id="beacon"),
        pytest.param("application/x-www-form-urlencoded", False, id="form"),
        pytest.param(None, False, id="missing"),
    ],
)
def test_content_type(content_type: str | None, ok: bool) -> None:
    body = {"batch": [track()]}
    if ok:
        assert len(read(body, content_type=content_type).messages) == 1
    else:
        with pytest.raises(InvalidInput, match="Content-Type must be application/json") as caught:
            read(body, content_type=content_type)
        assert caught.value.code == "unsupported_media_type"


def test_gzip_bodies_are_inflated_and_broken_ones_refused() -> None:
    raw = json.dumps({"batch": [track()]}).encode()
    assert len(read(gzip.compress(raw), content_encoding="gzip").messages) == 1
    with pytest.raises(InvalidInput, match="not valid gzip") as caught:
        read(b"\x1f\x8b\x08garbage", content_encoding="gzip")
    assert caught.value.code == "invalid_gzip"
    with pytest.raises(InvalidInput, match="truncated"):
        read(gzip.compress(raw)[:-12], content_encoding="gzip")
    with pytest.raises(InvalidInput, match="Content-Encoding must be gzip"):
        read(raw, content_encoding="br")


def test_gzip_bomb_is_refused_without_inflating_it_all() -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}")
    with pytest.raises(InvalidInput, match="the batch is over 500 KB"):
        read(bomb, content_encoding="gzip")


def test_repeats_within_one_request_are_kept_once() -> None:
    intake = read({"batch": [track(messageId="m"), track(messageId="m"), track(messageId="n")]})
    assert [m.message_id for m in intake.messages] == ["m", "n"]
    assert intake.duplicates == 1


def test_batch_context_and_sent_at_apply_to_each_message() -> None:
    intake = read(
        {
            "batch": [track(context={"locale": "de"}), track()],
            "context": {"library": {"name": "x"}, "locale": "en"},
            "sentAt": "2026-11-26T11:59:00Z",
        }
    )
    first, second = (as_dict(m.context) for m in intake.messages)
    assert first["locale"] == "de" and second["locale"] == "en"
    assert first["library"] == {"name": "x"}
    assert intake.messages[0].request_ip == "203.0.113.0"
    assert intake.messages[0].sent_at == datetime(2026, 11, 26, 11, 59, tzinfo=UTC)


def test_naive_timestamps_are_utc() -> None:
    (msg,) = read({"batch": [track(timestamp="2026-11-26T10:00:00")]}).messages
    assert isinstance(msg, Track) and msg.timestamp == datetime(2026, 11, 26, 10, tzinfo=UTC)
