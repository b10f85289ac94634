"""Recommendation candidate lists from simulated shoppers' history in ClickHouse."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from collector.store import open_store
from edge.runtime.stores import redis_client
from profiles.shoppers import CATALOG, ShopperStream, send
from profiles.strategies import RECS, Settings, candidates, refresh
from tests.conftest import WRITE_KEY, Engine
from tests.helpers import eventually

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path


def test_lists_from_history(engine: Engine) -> None:
    now = datetime(2026, 9, 1, tzinfo=UTC)  # fixed: same-day co-views follow the calendar
    stream = ShopperStream(shoppers=600, days=20, seed=8, start=now - timedelta(days=20))
    messages = list(stream.messages())
    send(messages, engine.url, WRITE_KEY)
    eventually(lambda: engine.sql("SELECT count() FROM events")[0][0] >= len(messages), timeout=60)
    r = redis_client(engine.settings.redis_url)
    kinds = refresh(open_store(engine.settings.store_url), r, Settings(min_support=2), now)
    category = {p.id: p.category for p in CATALOG}
    assert kinds["popular"] == 1 and kinds["popular_by_category"] == len(set(category.values()))
    assert kinds["viewed"] > 30 and kinds["bought"] > 5

    popular = candidates(r, ["popular"])["popular"]
    scores = [score for _, score in popular]
    assert scores == sorted(scores, reverse=True) and {i for i, _ in popular} <= set(category)
    for name, found in candidates(r, [f"popular:{c}" for c in set(category.values())]).items():
        assert found and all(category[item] == name.split(":", 1)[1] for item, _ in found)
    # Shoppers browse their favourite category: items viewed together mostly share one.
    viewed = candidates(r, [f"viewed:{p.id}" for p in CATALOG])
    same = Counter(category[i] == category[name.split(":", 1)[1]]
                   for name, found in viewed.items() for i, _ in found[:5])  # fmt: skip
    assert same[True] > 2 * same[False]
    assert all(item != name.split(":", 1)[1] for name, found in viewed.items() for item, _ in found)
    # A refresh replaces the whole set at once.
    r.hset(RECS, "viewed:gone", "[]")
    refresh(open_store(engine.settings.store_url), r, Settings(min_support=2), now)
    assert not r.hexists(RECS, "viewed:gone")
