"""Live simulated sessions through the real API: what shoppers do depends on the variant shown,
so the engine's results tell the variants apart, the one the simulator favours first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from profiles.live import LiveShop, slot_of, slots_from_api
from profiles.shoppers import ShopperStream, send
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine
from tests.helpers import bearer, eventually, put_placement


def test_slots_follow_the_placements_pages_and_rewards() -> None:
    assert slot_of("pdp_recs", {"recommend": {}, "reward": {"kind": "items"},
                                "variants": [{"key": "popular"}]}).page == "product"  # fmt: skip
    assert slot_of("email_weekly", {"recommend": {}, "variants": [{"key": "popular"}]}).page == (
        "product"
    )
    offer = slot_of("cart_offer", {"reward": {"kind": "conversion", "event": "Order Completed"},
                                   "variants": [{"key": "none"}, {"key": "ten"}]})  # fmt: skip
    assert (offer.page, offer.reward, offer.variants) == ("cart", "conversion", ("none", "ten"))
    hero = slot_of("home_hero", {"variants": [{"key": "a"}]})
    assert (hero.page, hero.reward) == ("home", "click")


def test_results_tell_the_variants_apart(engine: Engine) -> None:
    put_placement(engine, "home_hero", {"policy": {"kind": "ab"}, "variants": [
        {"key": "plain", "content": {"cta": "Shop"}}, {"key": "bold", "content": {"cta": "Now!"}}]})  # fmt: skip
    stream = ShopperStream(
        shoppers=300, days=5, seed=3, start=datetime.now(UTC) - timedelta(days=5)
    )
    send(stream.messages(), engine.url, WRITE_KEY)
    slots = slots_from_api(engine.url, SECRET_KEY)
    assert [s.key for s in slots] == ["home_hero"]
    shop = LiveShop(stream.shoppers, slots, seed=3)
    appeal = shop.appeal["home_hero"]
    assert sorted(appeal.values()) == [0.5, 2.0]
    summary = shop.run(engine.url, WRITE_KEY, sessions=400)
    assert summary.sessions == 400 and summary.decisions == 400
    assert set(summary.shown["home_hero"]) == {"plain", "bold"}  # an even A/B split

    # Every click rewards its decision once; then the results are complete.
    eventually(lambda: engine.sql("SELECT count() FROM events WHERE event = 'Decision Rewarded'")
               == [[summary.clicks]], timeout=60)  # fmt: skip
    found = engine.client.get(f"{engine.url}/v1/placements/home_hero/results", headers=bearer())
    rows = {v["variant"]: v for v in found.json()["variants"]}
    favoured = max(appeal, key=appeal.__getitem__)
    other = min(appeal, key=appeal.__getitem__)
    assert rows[favoured]["rate"] > 1.5 * rows[other]["rate"], rows  # 4× per session
