"""The offline recommendation evaluation: its hold-out split, its metrics, and the finding that
learned co-occurrence beats popularity on simulated shoppers."""

from __future__ import annotations

from datetime import datetime, timedelta

import redis

from bench.recs_quality import END, Scores, evaluate, score, split
from profiles.shoppers import ShopperStream
from profiles.strategies import RECS


def test_the_last_order_and_its_session_are_held_out() -> None:
    messages = list(ShopperStream(300, 20, seed=4, start=END - timedelta(days=20)).messages())
    training, cases = split(messages)
    assert cases and len(training) < len(messages)
    kept = {id(m) for m in training}
    for case in cases:
        mine = [m for m in messages if m["anonymousId"] == case.user]
        held = [m for m in mine if id(m) not in kept]
        orders = [m for m in mine if m.get("event") == "Order Completed"]
        assert held[0]["type"] == "page" and orders[-1] in held  # from the session's start
        assert {p["product_id"] for p in orders[-1]["properties"]["products"]} == case.bought
        before = [m for m in mine if id(m) in kept]
        assert mine == before + held  # nothing of theirs after the cut is kept
        if before:
            gap = datetime.fromisoformat(held[0]["timestamp"]) - datetime.fromisoformat(
                before[-1]["timestamp"]
            )
            assert gap >= timedelta(minutes=30)
        assert set(case.who.viewed) <= {
            m["properties"]["product_id"] for m in before if m.get("event") == "Product Viewed"
        }


def test_co_occurrence_beats_popularity(
    r: redis.Redis, redis_url: str, clickhouse_url: str
) -> None:
    result = evaluate(redis_url, clickhouse_url, shoppers=2_000, days=30, seed=3, ks=(4,))
    scores = result.scores[4]
    for s in scores.values():
        assert s.users == len(result.cases) > 100
        assert 0 <= s.ndcg <= s.hit_rate <= s.coverage <= 1  # no items, no hit
    assert scores["viewed_together"].hit_rate > scores["popular"].hit_rate
    assert scores["bought_together"].hit_rate > scores["popular"].hit_rate
    # Every simulated product is in the catalog: the own strategies show exactly what is known.
    carts = sum(bool(c.who.cart) for c in result.cases)
    views = sum(bool(set(c.who.viewed) - set(c.who.cart)) for c in result.cases)
    assert scores["abandoned_cart"].covered == carts
    assert scores["recently_viewed"].covered == views

    r.delete(RECS)  # no candidate lists: the list strategies have nothing to show
    bare = score(r, result.cases, 4)
    for name in ("popular", "trending", "viewed_together", "bought_together", "favourite_category"):
        assert bare[name] == Scores(len(result.cases))
    assert bare["abandoned_cart"] == scores["abandoned_cart"]
