from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from profiles import ProfileStore
from profiles.recommend import person
from tests.profiles.conftest import send


def profile_of(store: ProfileStore, identity: str) -> Any:
    (pid,) = store.lookup([identity]).values()
    return store.read(store.resolve(pid))


def test_computed_traits(redis_url: str, store: ProfileStore, drain: Any) -> None:
    base = "2026-11-26T10:00:00"
    send(
        redis_url,
        {"type": "page", "anonymousId": "a1", "timestamp": f"{base}Z",
         "properties": {"url": "https://shop.example/?utm_source=news&utm_campaign=fall", "path": "/",
                        "referrer": "https://www.google.com/"}},
        {"type": "page", "anonymousId": "a1", "timestamp": "2026-11-26T10:05:00Z",
         "properties": {"url": "https://shop.example/pricing", "path": "/pricing", "referrer": "https://shop.example/"}},
        {"type": "track", "anonymousId": "a1", "event": "Product Viewed", "timestamp": "2026-11-26T10:06:00Z",
         "properties": {"product_id": "sku-1"}},
        {"type": "track", "anonymousId": "a1", "event": "Product Viewed", "timestamp": "2026-11-26T10:07:00Z",
         "properties": {"product_id": "sku-2"}},
        {"type": "track", "anonymousId": "a1", "event": "Product Added", "timestamp": "2026-11-26T10:08:00Z",
         "properties": {"product_id": "sku-1", "price": 20, "quantity": 2, "name": "Shoe"}},
        {"type": "track", "anonymousId": "a1", "event": "Product Added", "timestamp": "2026-11-26T10:09:00Z",
         "properties": {"product_id": "sku-2", "price": 5}},
        {"type": "track", "anonymousId": "a1", "event": "Product Removed", "timestamp": "2026-11-26T10:10:00Z",
         "properties": {"product_id": "sku-1", "quantity": 1}},
        {"type": "track", "anonymousId": "a1", "event": "Webinar Signed Up", "timestamp": "2026-11-26T11:00:00Z"},
        {"type": "identify", "anonymousId": "a1", "timestamp": "2026-11-26T11:01:00Z",
         "traits": {"plan": "free", "name": "Ada"}},
        {"type": "identify", "anonymousId": "a1", "timestamp": "2026-11-26T11:00:30Z",
         "traits": {"plan": "older value, sent late"}},
    )  # fmt: skip
    assert drain() == 10
    p = profile_of(store, "anonymous_id:a1")
    assert p.counts() == {"Page Viewed": 2, "Product Viewed": 2, "Product Added": 2,
                          "Product Removed": 1, "Webinar Signed Up": 1}  # fmt: skip
    assert p.number("page_views") == 2
    assert p.number("sessions") == 2  # 50 minutes of silence before the webinar signup
    assert p.viewed == ["sku-2", "sku-1"]
    assert p.cart == {"sku-1": {"price": 20, "name": "Shoe", "quantity": 1},
                      "sku-2": {"price": 5, "quantity": 1}}  # fmt: skip
    assert p.traits() == {"plan": "free", "name": "Ada"}  # the newest value wins, by event time
    assert p.first_touch() == {"landing_page": "https://shop.example/?utm_source=news&utm_campaign=fall",
                               "utm_source": "news", "utm_campaign": "fall",
                               "initial_referrer": "https://www.google.com/"}  # fmt: skip
    assert p.number("lead_score") == pytest.approx(25 + 10 * 0.5 ** (55 / (30 * 24 * 60)), rel=1e-9)
    send(redis_url, {"type": "track", "anonymousId": "a1", "event": "Order Completed",
                     "timestamp": "2026-11-26T11:05:00Z", "properties": {"revenue": 25, "total": 30,
                     "products": [{"product_id": "sku-1"}, {"sku": "sku-2"}, {"name": "no id"}]}},
         {"type": "track", "anonymousId": "a1", "event": "Order Completed",
          "timestamp": "2026-11-26T11:06:00Z", "properties": {"total": 12.5,
                                                               "products": [{"product_id": 7}]}},
         {"type": "track", "anonymousId": "a1", "event": "Order Completed",  # sent late
          "timestamp": "2026-11-26T11:01:00Z", "properties": {"products": [{"product_id": "sku-1"}]}},
    )  # fmt: skip
    drain()
    p = profile_of(store, "anonymous_id:a1")
    assert (p.number("orders"), p.number("revenue")) == (3, 37.5)
    assert p.cart == {}
    ms = int(datetime(2026, 11, 26, 11, 5, tzinfo=UTC).timestamp() * 1000)
    assert person(store.client, p.id).bought == {"sku-1": ms, "sku-2": ms, "7": ms + 60_000}
    first = datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert p.fields["first_seen"] == str(int(first.timestamp() * 1000))
