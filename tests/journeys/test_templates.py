"""Each journey template, walked through with the pure run functions on a fixed timeline; and the
abandoned-cart template end to end: the reminder email carries the cart and rendered
recommendations, the offer a bandit's choice, and an order stops it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from edge.pages import demo
from edge.runtime.stores import redis_client
from journeys.runs import Person, Run, advance, enter, may_enter, on_event, triggers
from journeys.spec import JOURNEY, Journey
from journeys.templates import (
    abandoned_cart,
    churn_winback,
    examples,
    lead_routing,
    post_purchase,
    welcome_series,
)
from profiles.segments import View
from profiles.strategies import RECS
from tests.conftest import Engine
from tests.helpers import bearer, eventually, wait_catalog
from tests.journeys.conftest import Clock, Receiver, put_journey, run_of, track

H = 3_600_000
URL = "https://mail.example/send"


def journey(definition: dict[str, Any]) -> Journey:
    return JOURNEY.decode(msgspec.json.encode(definition))


def person(
    lead_score: float = 0, churn: float | None = None, timezone: str | None = None
) -> Person:
    view = View(traits={}, computed={"lead_score": lead_score},
                scores={} if churn is None else {"churn": churn}, first_touch={},
                events=lambda name, days: 0)  # fmt: skip
    return Person("p1", view, [], timezone)


def go(j: Journey, run: Run, who: Person, now: int) -> tuple[Run, list[str]]:
    run, actions = advance(j, run, who, now)
    return run, [a.step for a in actions]


def test_every_template_is_valid(engine: Engine) -> None:
    assert sorted(examples()) == ["abandoned_cart", "churn_winback", "lead_routing",
                                  "nft_onboarding", "post_purchase", "welcome_series"]  # fmt: skip
    listed = engine.client.get(f"{engine.url}/v1/journeys/templates", headers=bearer()).json()
    for name, definition in listed["templates"].items():
        put_journey(engine, name, definition)  # each goes in as it is


def test_abandoned_cart_template() -> None:
    j, who = journey(abandoned_cart(URL)), person()
    assert triggers(j, "Product Added", {}, who)
    run, sent = go(j, enter("cart", "p1", 1, 0, j.start), who, 0)
    assert (run.step, run.due, sent) == ("wait", H, [])
    run, sent = go(j, run, who, H)
    assert sent == ["reminder"] and run.due == 25 * H
    bought, _ = on_event(j, run, "Order Completed", {}, 2 * H)
    assert bought.ended == "exited: Order Completed" and go(j, bought, who, 25 * H)[1] == []
    run, sent = go(j, run, who, 25 * H)
    assert sent == ["offer"] and run.ended == "completed"


def test_welcome_series_template_waits_for_the_morning_in_their_timezone() -> None:
    j, who = journey(welcome_series(URL)), person(timezone="America/New_York")
    entered = int(datetime(2026, 10, 1, 20, tzinfo=UTC).timestamp() * 1000)  # 16:00 in New York
    run, sent = go(j, enter("welcome", "p1", 1, entered, j.start), who, entered)
    assert sent == ["welcome"]
    assert run.due == int(datetime(2026, 10, 2, 14, tzinfo=UTC).timestamp() * 1000)  # 10:00 EDT
    assert go(j, run, who, run.due)[1] == ["tips"]
    ordered, _ = on_event(j, run, "Order Completed", {}, entered + H)
    assert go(j, ordered, who, run.due)[1] == []  # they ordered: no tips


def test_churn_winback_template() -> None:
    j = journey(churn_winback(URL, threshold=0.7))
    assert triggers(j, "Page Viewed", {}, person(churn=0.8))
    assert not triggers(j, "Page Viewed", {}, person(churn=0.5))
    who = person(churn=0.8)
    run, sent = go(j, enter("winback", "p1", 1, 0, j.start), who, 0)
    assert sent == ["winback"] and run.waiting_for == "Order Completed"
    back, moved = on_event(j, run, "Order Completed", {}, 24 * H)
    done, sent = go(j, back, who, 24 * H)
    assert moved and sent == [] and done.ended == "completed"  # came back: no last chance
    assert go(j, run, who, 7 * 24 * H)[1] == ["last_chance"]


def test_lead_routing_template() -> None:
    j = journey(lead_routing("https://crm.example/leads", URL, threshold=50))
    assert go(j, enter("leads", "p1", 1, 0, j.start), person(lead_score=60), 0)[1] == ["crm"]
    run, sent = go(j, enter("leads", "p1", 1, 0, j.start), person(lead_score=10), 0)
    assert sent == ["nurture"] and run.due == 7 * 24 * H
    assert go(j, run, person(lead_score=70), run.due)[1] == ["crm"]  # warmed up meanwhile
    assert go(j, run, person(lead_score=10), run.due)[1] == []


def test_post_purchase_template_enters_on_every_order() -> None:
    j, who = journey(post_purchase(URL)), person()
    run, sent = go(j, enter("post", "p1", 1, 0, j.start), who, 0)
    run, sent = go(j, run, who, 3 * 24 * H)
    assert sent == ["cross_sell"] and run.ended == "completed"
    assert j.entry.reentry == "always"


def test_abandoned_cart_end_to_end(engine: Engine, clock: Clock, receiver: Receiver) -> None:
    r = redis_client(engine.settings.redis_url)
    demo.install(r, engine.url)  # a catalog, and the cart_recs and cart_offer placements
    wait_catalog(engine, "cart_recs")
    r.hset(RECS, "popular", msgspec.json.encode([["sku-hat-1", 3], ["sku-bag-2", 2],
                                                 ["sku-sho-3", 1]]))  # fmt: skip
    put_journey(engine, "abandoned_cart", abandoned_cart(f"{receiver.url}/email"))
    assert engine.post("/v1/identify", {"anonymousId": "ada", "traits": {"email": "ada@example.com"}}
                       ).status_code == 200  # fmt: skip
    track(engine, "ada", "Product Added", product_id="sku-jac-4", name="Jackets 4", price=61.49)
    track(engine, "bob", "Product Added", product_id="sku-jac-4", name="Jackets 4", price=61.49)
    eventually(
        lambda: run_of(engine, "ada", "abandoned_cart") and run_of(engine, "bob", "abandoned_cart")
    )
    clock.forward(61)
    eventually(lambda: len(receiver.received) == 2)
    reminder = next(m["json"] for m in receiver.received
                    if m["json"]["person"]["identities"]["anonymous_id"] == ["ada"])  # fmt: skip
    assert reminder["kind"] == "cart_reminder" and reminder["to"] == "ada@example.com"
    assert reminder["subject"] == "Still thinking it over?"
    assert [i["product_id"] for i in reminder["person"]["computed"]["cart"]] == ["sku-jac-4"]
    shown = [i["id"] for i in reminder["recommendations"]["items"]]
    assert shown == ["sku-hat-1", "sku-bag-2", "sku-sho-3"] and "/v1/r/" in reminder["html"]
    assert reminder["recommendations"]["decisionId"] in reminder["html"]  # the open pixel
    track(engine, "bob", "Order Completed", revenue=61.49)
    eventually(lambda: run_of(engine, "bob", "abandoned_cart").get("ended"))
    clock.forward(24 * 60)
    eventually(lambda: len(receiver.received) == 3)
    offer = receiver.received[2]["json"]
    assert offer["kind"] == "cart_offer" and offer["person"]["identities"]["anonymous_id"] == [
        "ada"
    ]
    assert offer["decision"]["variant"] in ("none", "free_shipping", "ten_off")
    assert offer["decision"]["decisionId"].startswith("d_")
    logged = eventually(
        lambda: engine.sql(
            f"SELECT placement FROM decisions WHERE decisionId = '{offer['decision']['decisionId']}'"
        )
    )
    assert logged == [["cart_offer"]]  # the bandit's decision, logged to learn from

    def actions() -> dict[str, int]:
        url = f"{engine.url}/v1/journeys/abandoned_cart/stats"
        found = engine.client.get(url, headers=bearer()).json()["actions"]
        return found if sum(found.values()) == 3 else {}

    assert eventually(actions) == {"reminder": 2, "offer": 1}


def test_a_frequency_cap_counts_every_journey_entered() -> None:
    capped = {
        **post_purchase(URL),
        "entry": {"reentry": "always", "cap": {"journeys": 2, "days": 7}},
    }
    j, who = journey(capped), person()
    day = 24 * H
    assert may_enter(j, None, who, 10 * day, entered=[9 * day])  # one journey this week
    assert not may_enter(j, None, who, 10 * day, entered=[9 * day, 8 * day])  # two: capped
    assert may_enter(j, None, who, 10 * day, entered=[9 * day, 2 * day])  # one is too old
    assert may_enter(journey(post_purchase(URL)), None, who, 10 * day, entered=[1, 2, 3])
