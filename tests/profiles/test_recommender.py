"""The recommendations worker fills the product catalog from e-commerce events."""

from __future__ import annotations

import redis

from bench.profiles import fill
from collector import SpoolReader
from collector.spool import ensure_group
from profiles.products import ITEMS, get_items
from profiles.recommender import Recommender
from profiles.shoppers import CATALOG, ShopperStream


def test_the_catalog_fills_from_events(r: redis.Redis, redis_url: str) -> None:
    fill(redis_url, list(ShopperStream(shoppers=300, days=10, seed=5).messages()))
    ensure_group(r, "recs")
    worker = Recommender(SpoolReader(r, "recs", "t"), r, store=None)
    while entries := worker.reader.read(50, 10):
        worker.reader.ack(entries, worker.process(entries))
    items = [i for i in get_items(r, [p.id for p in CATALOG]) if i is not None]
    assert len(items) == r.hlen(ITEMS) >= 55  # nearly every product was seen
    by_id = {p.id: p for p in CATALOG}
    for item in items:
        assert item.source == "events" and item.recommendable()
        assert item.name == by_id[item.id].name and item.category == by_id[item.id].category
        assert item.url.endswith(f"/products/{item.id}")
    # A replay (another group over the same spool) changes nothing.
    before = r.hgetall(ITEMS)
    ensure_group(r, "replay")
    replay = Recommender(SpoolReader(r, "replay", "t"), r, store=None)
    changed = 0
    while entries := replay.reader.read(50, 10):
        changed += replay.process(entries)["catalog_items_changed"]
    assert changed == 0 and r.hgetall(ITEMS) == before
