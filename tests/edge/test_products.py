"""The product catalog: its API on real Redis, and what e-commerce events add to it."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from profiles.products import Item, absorb, get_items, item_from_event, put_items, recommendable
from tests.conftest import Engine
from tests.helpers import bearer

SHOE = {"name": "Red <shoe>", "url": "https://shop.example/p/shoe", "price": 40,
        "category": "shoes", "image": "https://shop.example/i/shoe.jpg"}  # fmt: skip


def call(engine: Engine, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
    return engine.client.request(method, f"{engine.url}/v1/catalog/items{path}", json=body,
                                 headers=bearer(key) if key else bearer())  # fmt: skip


def test_catalog_api(engine: Engine) -> None:
    assert call(engine, "PUT", "/shoe", SHOE, key="wk_test").status_code == 403
    created = call(engine, "PUT", "/shoe", SHOE)
    assert created.status_code == 201 and created.json()["item"]["id"] == "shoe"
    assert call(engine, "PUT", "/shoe", {**SHOE, "stock": 0}).status_code == 200
    shown = call(engine, "GET", "/shoe").json()
    assert shown["item"]["name"] == "Red <shoe>" and shown["recommendable"] is False
    upserted = call(engine, "POST", "", {"items": [
        {**SHOE, "id": f"sku-{i}", "name": f"Item {i}"} for i in range(1_000)]})  # fmt: skip
    assert upserted.status_code == 200 and upserted.json()["upserted"] == 1_000
    listed, cursor = [], "0"
    while cursor is not None:
        page = engine.client.get(f"{engine.url}/v1/catalog/items", params={"cursor": cursor},
                                 headers=bearer()).json()  # fmt: skip
        listed += page["items"]
        cursor = page["next_cursor"]
    assert len({item["id"] for item in listed}) == 1_001
    assert call(engine, "DELETE", "/shoe").status_code == 200
    assert call(engine, "GET", "/shoe").status_code == 404
    assert call(engine, "DELETE", "/shoe").status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/x", {"name": "X"}, "url"),
        ("/x", {"name": "X", "url": "javascript:alert(1)"}, "$.url"),
        ("/x", {"name": "X", "url": "https://a.example/x", "price": -1}, "$.price"),
        ("/x", {"name": "X", "url": "https://a.example/x", "id": "y"}, "$.id"),
        ("/x", {"name": "X", "url": "https://a.example/x", "colour": "red"}, "colour"),
        ("", {"items": [{"name": "X", "url": "https://a.example/x"}]}, "$.items[0].id"),
        ("", {"items": [{"id": "a", "name": "A", "url": "https://a.example/a"},
                        {"id": "b", "url": "https://a.example/b"}]}, "$.items[1]"),
    ],
)  # fmt: skip
def test_bad_items_are_refused_with_the_field(
    engine: Engine, path: str, body: Any, fragment: str
) -> None:
    answer = call(engine, "PUT" if path else "POST", path, body)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["message"]
    assert call(engine, "GET", "/a").status_code == 404  # a bad bulk stores nothing


def test_events_add_products_but_never_override_the_api(r: redis.Redis) -> None:
    viewed = {"product_id": "sku-1", "name": "Blue hat", "url": "https://shop.example/p/1",
              "price": 20, "category": "hats", "image_url": "https://shop.example/i/1.jpg"}  # fmt: skip
    assert item_from_event({"product_id": "sku-2"}) is None  # not enough to show it
    assert absorb(r, [item_from_event(viewed)]) == 1  # type: ignore[list-item]
    (hat,) = get_items(r, ["sku-1"])
    assert hat is not None and hat.source == "events" and hat.image == viewed["image_url"]
    put_items(r, [Item(id="sku-1", name="Blue hat (API)", url="https://shop.example/p/1",
                       available=False)])  # fmt: skip
    assert absorb(r, [item_from_event({**viewed, "name": "Renamed by an event"})]) == 1  # type: ignore[list-item]
    (hat,) = get_items(r, ["sku-1"])
    assert hat is not None and hat.name == "Blue hat (API)" and hat.available is False
    assert hat.price == 20  # a field the API left empty is filled in
    assert recommendable([hat, None]) == []
