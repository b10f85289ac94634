"""The product catalog: what recommendations may show, kept in Redis.

``{cat}:items`` is a hash of item id -> JSON ``Item``. Items arrive through the catalog API
(``PUT /v1/catalog/items/{id}``, bulk ``POST /v1/catalog/items``) and from e-commerce events
(Product Viewed/Added/Removed, Order Completed ``products[]``): an event adds an item the catalog
does not know and fills fields it lacks, but never overrides what the API set. An item is
recommendable only while ``available`` and, when ``stock`` is known, in stock; a deleted item is
gone.

Examples:
    >>> ITEM.decode(b'{"name": "Red shoe", "url": "https://shop.example/p/1", "price": 40}').price
    40.0
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import msgspec
import redis

__all__ = [
    "ITEM",
    "ITEMS",
    "Item",
    "absorb",
    "delete_item",
    "get_items",
    "item_from_event",
    "put_items",
    "recommendable",
]

ITEMS = "{cat}:items"
ItemId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Url = Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", max_length=2000)]


class Item(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    url: Url
    id: ItemId | None = None  # the key; a body may repeat it
    image: Url | None = None
    price: Annotated[float, msgspec.Meta(ge=0)] | None = None
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] | None = None
    category: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    stock: Annotated[int, msgspec.Meta(ge=0)] | None = None
    available: bool = True
    source: str = "api"  # or "events": learned from e-commerce events, filled in by the API

    def recommendable(self) -> bool:
        return self.available and (self.stock is None or self.stock > 0)


ITEM = msgspec.json.Decoder(Item)


def recommendable(items: Iterable[Item | None]) -> list[Item]:
    return [item for item in items if item is not None and item.recommendable()]


def put_items(client: redis.Redis, items: list[Item]) -> None:
    """Create or replace ``items`` (each with its ``id``) in one round trip."""
    if items:
        client.hset(ITEMS, mapping={item.id: msgspec.json.encode(item) for item in items})


def get_items(client: redis.Redis, ids: list[str]) -> list[Item | None]:
    if not ids:
        return []
    return [ITEM.decode(raw) if raw else None for raw in client.hmget(ITEMS, ids)]


def delete_item(client: redis.Redis, item_id: str) -> bool:
    return bool(client.hdel(ITEMS, item_id))


def item_from_event(properties: dict[str, Any]) -> Item | None:
    """What an e-commerce event (or one ``products[]`` entry) says of its product, if it says
    enough (an id, a name and a URL)."""
    product = properties.get("product_id") or properties.get("sku") or properties.get("id")
    name, url = properties.get("name"), properties.get("url")
    if not isinstance(product, str | int) or not isinstance(name, str) or not isinstance(url, str):
        return None
    fields = {"id": str(product), "name": name, "url": url, "source": "events",
              "image": properties.get("image_url") or properties.get("image"),
              "price": properties.get("price"), "category": properties.get("category")}  # fmt: skip
    try:
        return msgspec.convert({k: v for k, v in fields.items() if v is not None}, Item)
    except msgspec.ValidationError:
        return None  # not enough to show it: leave the catalog as it is


def absorb(client: redis.Redis, seen: list[Item]) -> int:
    """Add what events said of products: new items, and fields an existing item lacks (the
    API's values win). Returns how many items changed."""
    latest = {item.id: item for item in seen if item.id}
    if not latest:
        return 0
    known = dict(zip(latest, get_items(client, list(latest))))
    changed = []
    for item_id, item in latest.items():
        current = known[item_id]
        if current is None:
            changed.append(item)
            continue
        filled = {k: v for k, v in msgspec.structs.asdict(item).items()
                  if getattr(current, k) is None and v is not None}  # fmt: skip
        if filled:
            changed.append(msgspec.structs.replace(current, **filled))
    put_items(client, changed)
    return len(changed)
