"""Items for a person by each strategy, on real Redis: what may and may never be shown."""

from __future__ import annotations

import msgspec
import pytest
import redis

from profiles.products import Item, put_items
from profiles.recommend import STRATEGIES, Filters, Person, person, plan, recommend, recommend_many
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
    hats = Filters(category="hats", backfill=False)
    assert ids(recommend(shop, "popular", ada, filters=hats)) == ["hat2"]
    dear = Filters(min_price=100, backfill=False)
    assert ids(recommend(shop, "popular", ada, filters=dear)) == ["shoe2"]
    cheap = Filters(max_price=30, backfill=False)
    assert ids(recommend(shop, "recently_viewed", ada, filters=cheap)) == ["hat1"]
    assert ids(recommend(shop, "recently_viewed", ada, n=1)) == ["hat1"]
    nobody = person(shop, "p_new")
    assert ids(recommend(shop, "viewed_together", nobody)) == []
    assert ids(recommend(shop, "popular", nobody, n=2)) == ["shoe1", "hat1"]
    with pytest.raises(ValueError, match="strategy must be one of"):
        recommend(shop, "random", nobody)


def test_just_bought_never_shown_and_short_lists_backfilled(shop: redis.Redis) -> None:
    now = 1_800_000_000_000
    day = 86_400_000
    ada = Person(viewed=["hat1", "hat3", "hat2"], cart=[],
                 bought={"hat2": now - day, "shoe2": now - 40 * day})  # fmt: skip
    recent = Filters(n=3)  # excludes what was bought in the last 30 days, backfills
    got = ids(recommend(shop, "viewed_together", ada, filters=recent, now_ms=now))
    assert got == ["shoe1", "shoe2"]  # not hat2, bought yesterday; popular has nothing more
    assert ids(recommend(shop, "viewed_together", ada, n=3, now_ms=now)) == [
        "hat2",
        "shoe1",
        "shoe2",
    ]
    # Trending has one item: the rest comes from popular (not the item in view, hat1).
    assert ids(recommend(shop, "trending", ada, filters=recent, now_ms=now)) == [
        "hat3",
        "shoe1",
        "shoe2",
    ]
    # Run together, plans give what each gives alone.
    plans = [plan(name, ada, recent, now) for name in STRATEGIES]
    alone = [ids(recommend(shop, name, ada, filters=recent, now_ms=now)) for name in STRATEGIES]
    assert [ids(found) for found in recommend_many(shop, plans)] == alone
    assert all("hat2" not in found for found in alone)
