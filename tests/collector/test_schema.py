"""The schema maps spool messages to ``events`` rows (in ClickHouse, through the intake view)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from collector import Sink, SpoolReader, connect, migrate, read_request, schema
from collector.intake import truncate_ip
from collector.reader import Entry
from collector.schema import StoreSettings, retain
from collector.wire import to_lines

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
COLUMNS = (
    "message_id, type, event, name, timestamp, original_timestamp, anonymous_id, user_id, "
    "previous_id, group_id, page_url, page_path, page_referrer, page_title, user_agent, ip, "
    "library_name, library_version, properties, traits, context"
)


@pytest.fixture
def store(ch: Any, clickhouse_url: str, r: redis.Redis) -> Any:
    migrate(ch)

    def rows(*messages: dict[str, Any], ip: str | None = "203.0.113.9") -> list[dict[str, Any]]:
        intake = read_request(
            json.dumps({"batch": list(messages)}).encode(), kind="batch",
            content_type="application/json", content_encoding=None, received_at=NOW, ip=ip,
        )  # fmt: skip
        entry = Entry("1-1", to_lines(intake.messages), len(intake.messages))
        sink = Sink(SpoolReader(r, "sink", "t"), connect(clickhouse_url))
        assert sink.store_batch([entry], threading.Event()) is not None
        result = ch.query(f"SELECT {COLUMNS} FROM events ORDER BY message_id")
        return [dict(zip(result.column_names, row)) for row in result.result_rows]

    return rows


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


def test_ip_is_truncated_from_the_message_else_the_request(store: Any) -> None:
    own, fallback = store(
        {"type": "track", "event": "E", "userId": "u", "messageId": "a",
         "context": {"ip": "2001:db8:1:2::7", "locale": "de"}},
        {"type": "track", "event": "E", "userId": "u", "messageId": "b"},
    )  # fmt: skip
    assert own["ip"] == "2001:db8:1::"
    assert json.loads(own["context"]) == {"ip": "2001:db8:1::", "locale": "de"}
    assert fallback["ip"] == "203.0.113.0" and json.loads(fallback["context"]) == {}


def test_timestamps_are_corrected_for_clock_skew(store: Any) -> None:
    skewed = {  # the device clock runs an hour fast
        "type": "track", "event": "E", "userId": "u", "messageId": "skew",
        "timestamp": (NOW + timedelta(minutes=59)).isoformat(),
        "sentAt": (NOW + timedelta(hours=1)).isoformat(),
    }  # fmt: skip
    future = {"type": "track", "event": "E", "userId": "u", "messageId": "future",
              "timestamp": (NOW + timedelta(days=3)).isoformat()}  # fmt: skip
    plain = {"type": "track", "event": "E", "userId": "u", "messageId": "plain"}
    rows = {row["message_id"]: row for row in store(skewed, future, plain)}
    naive = NOW.replace(tzinfo=None)
    assert rows["skew"]["timestamp"] == naive - timedelta(minutes=1)
    assert rows["skew"]["original_timestamp"] == naive + timedelta(minutes=59)
    assert rows["future"]["timestamp"] == naive  # never later than receivedAt
    assert rows["plain"]["timestamp"] == rows["plain"]["original_timestamp"] == naive


def test_properties_traits_and_context_are_stored_as_sent(store: Any) -> None:
    properties = {"a.b": 1, "n": None, "deep": {"x": [1, "y"]}, "price": 89.9}
    (row,) = store({"type": "track", "event": "E", "userId": "u", "properties": properties})
    assert json.loads(row["properties"]) == properties


def test_identify_traits_merge_context_traits(store: Any) -> None:
    (row,) = store({"type": "identify", "userId": "u", "traits": {"plan": "pro"},
                    "context": {"traits": {"plan": "free", "email": "a@b.c"}}})  # fmt: skip
    assert json.loads(row["traits"]) == {"plan": "pro", "email": "a@b.c"}


def test_columns_of_each_message_type(store: Any) -> None:
    rows = store(
        {"type": "page", "anonymousId": "a", "name": "Home", "messageId": "1",
         "properties": {"url": "https://s.example/a", "title": "A"}},
        {"type": "track", "event": "E", "anonymousId": "a", "messageId": "2",
         "context": {"page": {"url": "https://s.example/b", "path": "/b",
                              "referrer": "https://r.example/"},
                     "userAgent": "UA", "library": {"name": "lib", "version": "1.2"}}},
        {"type": "alias", "userId": "u", "previousId": "a", "messageId": "3"},
        {"type": "group", "userId": "u", "groupId": "g", "messageId": "4"},
        {"type": "screen", "userId": "u", "name": "Cart", "messageId": "5"},
    )  # fmt: skip
    page, track, alias, group, screen = rows
    assert (page["type"], page["name"], page["page_url"], page["page_title"]) == (
        "page", "Home", "https://s.example/a", "A")  # fmt: skip
    assert (track["event"], track["page_url"], track["page_path"], track["page_referrer"]) == (
        "E", "https://s.example/b", "/b", "https://r.example/")  # fmt: skip
    assert (track["user_agent"], track["library_name"], track["library_version"]) == (
        "UA", "lib", "1.2")  # fmt: skip
    assert (alias["previous_id"], alias["user_id"]) == ("a", "u")
    assert group["group_id"] == "g" and screen["name"] == "Cart"
    assert page["event"] == "" and screen["event"] == ""


def test_fields_of_odd_types_do_not_fail_the_insert(store: Any) -> None:
    (row,) = store(
        {
            "type": "page",
            "anonymousId": "a",
            "properties": {"url": 42, "title": "T"},
            "context": {"userAgent": ["x"], "library": {"name": "lib", "version": 2}},
        }
    )
    assert (row["page_url"], row["page_title"]) == ("42", "T")
    assert (row["library_name"], row["library_version"]) == ("lib", "2")
    assert json.loads(row["properties"]) == {"url": 42, "title": "T"}


def test_retention_drops_old_rows_and_is_changed_only_when_it_differs(ch: Any) -> None:
    migrate(ch)
    now = datetime.now(UTC)
    for message_id, age in (("old", 40), ("new", 1)):
        ch.command(
            "INSERT INTO events (message_id, timestamp, received_at) "
            "VALUES ({id:String}, {at:DateTime64(3)}, {at:DateTime64(3)})",
            parameters={"id": message_id, "at": (now - timedelta(days=age)).replace(tzinfo=None)},
        )
    thirty = StoreSettings(retention_days={"events": 30})
    assert retain(ch, thirty) == [
        f"ALTER TABLE {table} MODIFY TTL toDateTime(timestamp) + toIntervalDay(30)"
        for table in ("events", "events_by_person")
    ]
    assert retain(ch, thirty) == []  # as configured: no rewrite at every start
    for table in ("events", "events_by_person"):
        ch.command(f"OPTIMIZE TABLE {table} FINAL")
        assert ch.query(f"SELECT message_id FROM {table}").result_rows == [("new",)]
    assert retain(ch, StoreSettings()) == [
        "ALTER TABLE events REMOVE TTL",
        "ALTER TABLE events_by_person REMOVE TTL",
    ]
    assert retain(ch, StoreSettings()) == []


def test_the_audit_log_keeps_what_its_retention_says(ch: Any) -> None:
    migrate(ch)
    year = StoreSettings(retention_days={"audit": 365})
    assert retain(ch, year) == [
        "ALTER TABLE audit MODIFY TTL toDateTime(timestamp) + toIntervalDay(365)"
    ]
    assert retain(ch, year) == []


def test_migration_4_copies_the_events_stored_before_it_once(
    ch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store of an earlier version: its events get a person-ordered copy, each once."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
    assert migrate(ch) == [1, 2, 3]
    ch.command("INSERT INTO events (message_id, profile_id) SELECT concat('m', toString(number)), "
               "concat('p', toString(number % 10)) FROM numbers(1000)")  # fmt: skip
    monkeypatch.undo()
    assert migrate(ch) == [4, 5]
    ch.command("INSERT INTO events (message_id, profile_id) VALUES ('later', 'p1')")  # the view's
    assert ch.query("SELECT count(), uniqExact(message_id) FROM events_by_person").result_rows == [
        (1001, 1001)
    ]
