"""The recommendations worker fills the product catalog from e-commerce events, and fills a new
shop's candidate lists as soon as its first events are in ClickHouse."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import redis

from bench.profiles import fill
from collector import SpoolReader
from collector.reader import ensure_group
from collector.store import open_store
from edge.runtime.stores import redis_client
from profiles.products import ITEMS, Item, get_items, put_items
from profiles.recommender import Recommender
from profiles.shoppers import CATALOG, ShopperStream, send
from profiles.strategies import RECS, WANTED
from tests.conftest import WRITE_KEY, Engine
from tests.helpers import eventually

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path


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


def test_a_new_shops_lists_fill_once_its_first_events_are_stored(engine: Engine) -> None:
    """The worker's first refresh finds no events (they are still on their way to ClickHouse):
    while the lists are empty it looks for stored events every ``empty_seconds`` and refreshes
    once they are there, without being asked and without waiting ``refresh_minutes`` (10)."""
    r = redis_client(engine.settings.redis_url)
    put_items(r, [Item(id=p.id, name=p.name, url=f"https://shop.example/{p.id}",
                       category=p.category, price=p.price) for p in CATALOG])  # fmt: skip
    ensure_group(r, "recs")
    worker = Recommender(SpoolReader(r, "recs", "t"), r, open_store(engine.settings.store_url),
                         interval=0.05, empty_seconds=0.2)  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        eventually(lambda: worker._next_look > 0)  # the refresh at start ran, and found nothing
        assert not r.exists(RECS)
        start = datetime.now(UTC) - timedelta(days=10)
        messages = list(ShopperStream(shoppers=150, days=10, seed=5, start=start).messages())
        send(messages, engine.url, WRITE_KEY)
        eventually(lambda: r.hexists(RECS, "popular"), timeout=30)
        assert not r.exists(WANTED)  # nobody asked
        assert engine.sql("SELECT count() FROM events")[0][0] > 0
    finally:
        stop.set()
        thread.join(timeout=30)
