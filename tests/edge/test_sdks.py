"""Unmodified traffic from the official Segment and RudderStack Python SDKs lands correctly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.conftest import WRITE_KEY, Engine

WHEN = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)


def drive(client: Any) -> None:
    client.identify("user-1", {"email": "ada@example.com", "plan": "pro"}, anonymous_id="anon-1")
    client.track("user-1", "Order Completed", {"revenue": 42.5, "currency": "EUR"}, timestamp=WHEN)
    client.page(
        "user-1",
        category="Docs",
        name="Pricing",
        properties={"url": "https://shop.example/pricing", "path": "/pricing"},
    )
    client.alias("anon-1", "user-1")
    client.group("user-1", "acme", {"industry": "retail"})
    client.screen("user-1", name="Cart")
    client.flush()
    client.join()


def rows(engine: Engine) -> dict[str, dict[str, Any]]:
    assert engine.wait_stored(6) == 6
    query = (
        "SELECT type, event, name, user_id, anonymous_id, previous_id, group_id, page_url, "
        "page_path, library_name, timestamp, properties, traits FROM events"
    )
    columns = [
        "type",
        "event",
        "name",
        "user_id",
        "anonymous_id",
        "previous_id",
        "group_id",
        "page_url",
        "page_path",
        "library_name",
        "timestamp",
        "properties",
        "traits",
    ]
    return {row[0]: dict(zip(columns, row)) for row in engine.sql(query)}


@pytest.mark.parametrize(
    ("make", "library"),
    [
        pytest.param(
            lambda url, errors: SegmentClient(
                WRITE_KEY, host=url, on_error=lambda e, b: errors.append(e)
            ),
            "analytics-python",
            id="segment-analytics-python",
        ),
        pytest.param(
            lambda url, errors: RudderClient(
                WRITE_KEY, host=url, on_error=lambda e, b: errors.append(e)
            ),
            "analytics-python",
            id="rudder-sdk-python-gzip",
        ),
    ],
)
def test_sdk_messages_land_with_the_right_columns(engine: Engine, make: Any, library: str) -> None:
    errors: list[Exception] = []
    drive(make(engine.url, errors))
    assert errors == []
    by_type = rows(engine)
    assert set(by_type) == {"identify", "track", "page", "alias", "group", "screen"}
    identify, track, page = by_type["identify"], by_type["track"], by_type["page"]
    assert (identify["user_id"], identify["anonymous_id"]) == ("user-1", "anon-1")
    assert json.loads(identify["traits"]) == {"email": "ada@example.com", "plan": "pro"}
    assert track["event"] == "Order Completed"
    assert json.loads(track["properties"]) == {"revenue": 42.5, "currency": "EUR"}
    # The SDK sent the event time and sentAt; sent and received moments are close, so the
    # skew correction keeps it within seconds of what the program said.
    sent = datetime.fromisoformat(track["timestamp"]).replace(tzinfo=UTC)
    assert abs((sent - WHEN).total_seconds()) < 5
    assert (page["name"], page["page_url"], page["page_path"]) == (
        "Pricing",
        "https://shop.example/pricing",
        "/pricing",
    )
    assert (by_type["alias"]["previous_id"], by_type["alias"]["user_id"]) == ("anon-1", "user-1")
    assert by_type["group"]["group_id"] == "acme"
    assert by_type["screen"]["name"] == "Cart"
    assert all(row["library_name"].startswith(library) for row in by_type.values())


def test_rudder_sends_gzip_and_identify_traits_in_context(engine: Engine) -> None:
    client = RudderClient(WRITE_KEY, host=engine.url, gzip=True)
    client.identify("user-9", {"plan": "team"})
    client.flush()
    client.join()
    assert engine.wait_stored(1) == 1
    (traits,) = engine.sql("SELECT traits FROM events WHERE type = 'identify'")[0]
    assert json.loads(traits) == {"plan": "team"}


def test_sdk_retries_do_not_double_count(engine: Engine) -> None:
    """Send the same SDK batch twice, as a retry after a lost answer would."""
    client = SegmentClient(WRITE_KEY, host=engine.url, sync_mode=True)
    client.track("user-1", "Signed Up", message_id="fixed-id")
    client.track("user-1", "Signed Up", message_id="fixed-id")
    client.track("user-1", "Signed Up", message_id="other-id")
    assert engine.wait_stored(2) == 2
    assert engine.sql("SELECT count() FROM events WHERE message_id = 'fixed-id'") == [[1]]
