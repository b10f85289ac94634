from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from collector import EVENT_COLUMNS, read_request
from collector.rows import to_columns, truncate_ip

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def rows(*messages: dict[str, object], ip: str | None = "203.0.113.9") -> list[dict[str, object]]:
    intake = read_request(
        json.dumps({"batch": list(messages)}).encode(),
        kind="batch",
        content_type="application/json",
        content_encoding=None,
        received_at=NOW,
        ip=ip,
    )
    columns = to_columns(intake.messages)
    return [dict(zip(EVENT_COLUMNS, values)) for values in zip(*columns)]


@pytest.mark.parametrize(
    ("address", "network"),
    [
        pytest.param("203.0.113.77", "203.0.113.0", id="ipv4"),
        pytest.param("010.001.002.003", "10.1.2.0", id="ipv4-leading-zeros"),
        pytest.param("2001:db8:abcd:12::1", "2001:db8:abcd::", id="ipv6"),
        pytest.param("::ffff:198.51.100.4", "198.51.100.0", id="ipv4-mapped"),
    ],
)
def test_truncate_ip(address: str, network: str) -> None:
    assert truncate_ip(address) == network


def test_ip_comes_truncated_from_the_message_or_else_the_request() -> None:
    own, fallback, broken = rows(
        {"type": "track", "event": "E", "userId": "u", "context": {"ip": "2001:db8:1:2::7"}},
        {"type": "track", "event": "E", "userId": "u"},
        {"type": "track", "event": "E", "userId": "u", "context": {"ip": "not-an-ip"}},
    )
    assert own["ip"] == "2001:db8:1::" and json.loads(own["context"])["ip"] == "2001:db8:1::"
    assert fallback["ip"] == "203.0.113.0" and json.loads(fallback["context"]) == {}
    assert broken["ip"] == "" and json.loads(broken["context"])["ip"] == ""


def test_properties_traits_and_context_are_stored_as_sent() -> None:
    (row,) = rows(
        {
            "type": "track",
            "event": "E",
            "userId": "u",
            "properties": {"a.b": 1, "n": None, "deep": {"x": [1, "y"]}},
        }
    )
    assert json.loads(row["properties"]) == {"a.b": 1, "n": None, "deep": {"x": [1, "y"]}}


def test_identify_traits_merge_context_traits() -> None:
    (row,) = rows(
        {
            "type": "identify",
            "userId": "u",
            "traits": {"plan": "pro"},
            "context": {"traits": {"plan": "free", "email": "a@b.c"}},
        }
    )
    assert json.loads(row["traits"]) == {"plan": "pro", "email": "a@b.c"}


def test_page_columns_from_properties_then_context() -> None:
    from_props, from_context = rows(
        {
            "type": "page",
            "anonymousId": "a",
            "properties": {"url": "https://s.example/a", "title": "A"},
        },
        {
            "type": "track",
            "event": "E",
            "anonymousId": "a",
            "context": {
                "page": {
                    "url": "https://s.example/b",
                    "path": "/b",
                    "referrer": "https://r.example/",
                }
            },
        },
    )
    assert (from_props["page_url"], from_props["page_title"]) == ("https://s.example/a", "A")
    assert (from_context["page_url"], from_context["page_path"], from_context["page_referrer"]) == (
        "https://s.example/b",
        "/b",
        "https://r.example/",
    )


def test_fields_of_odd_types_leave_their_column_empty_and_the_json_whole() -> None:
    (row,) = rows(
        {
            "type": "page",
            "anonymousId": "a",
            "properties": {"url": 42, "title": "T"},
            "context": {"userAgent": ["x"], "library": {"name": "lib", "version": 2}},
        }
    )
    assert (row["page_url"], row["page_title"], row["user_agent"]) == ("", "T", "")
    assert (row["library_name"], row["library_version"]) == ("lib", "")
    assert json.loads(row["properties"]) == {"url": 42, "title": "T"}
