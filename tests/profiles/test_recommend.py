"""Items for a person by each strategy, on real Redis: what may and may never be shown."""

from __future__ import annotations

import msgspec
import pytest
import redis

from profiles.products import Item, put_items
from profiles.recommend import STRATEGIES, person, recommend
from profiles.store import profile_keys
from profiles.strategies import RECS


@pytest.fixture
def shop(r: redis.Redis) -> redis.Redis:
    def item(i: str, category: str, price: float, **more: object) -> Item:
        return Item(id=i, name=f"Item {i}", url=f"https://shop.example/p/{i}", price=price,
                    category=category, **more)  # type: ignore[arg-type]  # fmt: skip

    put_items(r, [
        item("hat1", "hats", 20), item("hat2", "hats", 35), item("hat3", "hats", 50),
        item("shoe1", "shoes", 80), item("shoe2", "shoes", 120),
        item("gone", "hats", 10, stock=0), item("hidden", "hats", 10, available=False),
    ])  # fmt: skip
    lists = {
        "popular": [["shoe1", 9], ["gone", 8], ["hat1", 7], ["hidden", 6], ["shoe2", 5],
                    ["hat2", 4]],
        "popular:hats": [["hat2", 3], ["hat3", 2], ["gone", 1]],
        "trending": [["hat3", 2.0]],
        "viewed:hat1": [["gone", 0.9], ["hat2", 0.8], ["shoe2", 0.1]],
        "viewed:hat3": [["shoe1", 0.5]],
        "bought:shoe1": [["hat1", 0.7], ["hidden", 0.6], ["hat3", 0.5]],
    }  # fmt: skip
    r.hset(RECS, mapping={k: msgspec.json.encode(v) for k, v in lists.items()})
    keys = profile_keys("p_ada")
    r.rpush(keys[1], "hat1", "hat3", "hat2")  # newest first, as the profile worker keeps it
    r.hset(keys[2], "shoe1", "{}")
    return r


def ids(items: list[Item]) -> list[str]:
    return [i.id or "" for i in items]


def test_each_strategy(shop: redis.Redis) -> None:
    ada = person(shop, "p_ada")
    assert ada.viewed == ["hat1", "hat3", "hat2"] and ada.cart == ["shoe1"]
    got = {name: ids(recommend(shop, name, ada, n=3)) for name in STRATEGIES}
    assert got["popular"] == ["shoe2", "hat2"]  # not the cart, the item in view, nor unavailable
    assert got["trending"] == ["hat3"]
    assert got["viewed_together"] == ["hat2", "shoe2"]  # from hat1 (newest), then hat3's shoe1
    assert got["bought_together"] == ["hat3"]  # with the cart's shoe1: not hat1, in view
    assert got["recently_viewed"] == ["hat1", "hat3", "hat2"]
    assert got["abandoned_cart"] == ["shoe1"]
    assert got["favourite_category"] == ["hat2", "hat3"]
    every = [i for name in STRATEGIES for i in got[name]]
    assert "gone" not in every and "hidden" not in every


def test_exclusions_and_filters(shop: redis.Redis) -> None:
    ada = person(shop, "p_ada")
    assert ids(recommend(shop, "recently_viewed", ada, exclude={"hat3"})) == ["hat1", "hat2"]
    assert ids(recommend(shop, "popular", ada, category="hats")) == ["hat2"]
    assert ids(recommend(shop, "popular", ada, price=(100, None))) == ["shoe2"]
    assert ids(recommend(shop, "recently_viewed", ada, n=1)) == ["hat1"]
    nobody = person(shop, "p_new")
    assert ids(recommend(shop, "viewed_together", nobody)) == []
    assert ids(recommend(shop, "popular", nobody, n=2)) == ["shoe1", "hat1"]
    with pytest.raises(ValueError, match="strategy must be one of"):
        recommend(shop, "random", nobody)
