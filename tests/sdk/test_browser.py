"""The SDK in real headless Chromium: the demo shop end to end, offline delivery, and pages
whose engine is slow or unreachable. Screenshots go to test-artifacts/sdk/."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

from collector.store import open_store
from edge.pages import demo
from edge.routes.sdk import SDK_FILE, snippet
from edge.runtime.stores import redis_client
from profiles.shoppers import ShopperStream, send
from profiles.strategies import refresh
from tests.browser import shot, watched
from tests.conftest import WRITE_KEY, Engine, free_port
from tests.helpers import eventually, placement

HEADLINES = ("New season shoes", "20% off jackets", "Carry it all")


@pytest.fixture
def shop(engine: Engine) -> Engine:
    """The demo shop with a week of simulated shoppers behind its recommendation lists."""
    client = redis_client(engine.settings.redis_url)
    created = demo.install(client, engine.url)
    assert created == list(demo.PLACEMENTS)
    now = datetime.now(UTC)
    messages = list(ShopperStream(120, 7, seed=5, start=now - timedelta(days=7)).messages())
    send(messages, engine.url, WRITE_KEY)
    assert engine.wait_stored(len(messages), timeout=60) >= len(messages)
    assert refresh(open_store(engine.settings.store_url), client, now=now)["popular"] == 1
    return engine


def events(engine: Engine, anonymous_id: str) -> list[list[Any]]:
    return engine.sql(
        "SELECT type, event, count(), uniqExact(message_id) FROM events "
        f"WHERE anonymous_id = '{anonymous_id}' GROUP BY type, event ORDER BY type, event"
    )


def visitor(page: Page) -> str:
    page.wait_for_function("window.kairos && window.kairos.version")
    return str(page.evaluate("kairos.user().anonymousId"))


def test_a_shopper_sees_the_hero_clicks_it_and_orders(browser: Browser, shop: Engine) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors = watched(page)
    page.goto(f"{shop.url}/demo")
    hero = page.locator("[data-kairos-slot=home_hero]")
    page.wait_for_selector("[data-kairos-slot=home_hero][data-kairos-decision]")
    headline = hero.locator("h1").inner_text()
    assert headline in HEADLINES  # a variant, not the default
    shown = headline
    assert not hero.locator("p").inner_text().startswith("Hi")  # no first name known yet
    decision_id = hero.get_attribute("data-kairos-decision")
    anonymous_id = visitor(page)
    shot(page, "sdk", "home")
    hero.locator("a.hero").click()
    page.wait_for_url("**/demo/c/*")
    page.locator(".card").first.click()
    page.wait_for_url("**/demo/products/*")
    page.wait_for_selector("[data-kairos-slot=pdp_recs][data-kairos-decision] .card")
    assert page.locator("[data-kairos-slot=pdp_recs] .card").count() == 4
    shot(page, "sdk", "product")
    page.click("#add")
    page.wait_for_url("**/demo/cart")
    page.wait_for_selector("[data-kairos-slot=cart_recs][data-kairos-decision] .card")
    shot(page, "sdk", "cart")
    page.click("#checkout")
    page.wait_for_url("**/demo/checkout")
    page.fill("#email", "ada@example.com")
    page.click("#order")
    page.wait_for_selector("#thanks:visible")
    assert visitor(page) == anonymous_id  # one visitor throughout
    assert errors == []

    wanted = {("page", ""), ("track", "Product Viewed"), ("track", "Decision Viewed"),
              ("track", "Decision Clicked"), ("track", "Product Added"),
              ("track", "Order Completed"), ("identify", "")}  # fmt: skip

    def arrived() -> list[list[Any]]:
        rows = events(shop, anonymous_id)
        return rows if wanted <= {(r[0], r[1]) for r in rows} else []

    rows = {(r[0], r[1]): (r[2], r[3]) for r in eventually(arrived, timeout=30)}
    assert all(count == unique for count, unique in rows.values())  # each message once
    assert rows[("page", "")][0] == 5  # home, category, product, cart, checkout
    for once in ("Decision Clicked", "Product Added", "Order Completed", "Product Viewed"):
        assert rows[("track", once)][0] == 1, once
    clicked = shop.sql(
        "SELECT JSONExtractString(properties, 'decisionId') FROM events "
        f"WHERE anonymous_id = '{anonymous_id}' AND event = 'Decision Clicked'"
    )
    assert clicked == [[decision_id]]

    def rewarded() -> dict[str, float]:
        learned = placement(shop, "home_hero")["learned"]["variants"]
        return {v["variant"]: v["reward"] for v in learned if v["reward"]}

    variant = {h: k for h, k in zip(HEADLINES, ("classic", "sale", "bags"))}[shown]
    assert eventually(rewarded) == {variant: 1.0}


def test_a_signed_in_shopper_is_greeted_by_name_until_signing_out(
    browser: Browser, shop: Engine
) -> None:
    """The demo signs its shopper's id server-side (userHash): the hero greets her by name; the
    same browser after signing out is a new anonymous visitor."""
    page = browser.new_page()
    errors = watched(page)
    page.goto(f"{shop.url}/demo")
    before = visitor(page)
    page.click("#sign-in")
    page.fill("#first_name", "Ada")
    page.fill("#email", "ada@example.com")
    page.click("#login")
    page.wait_for_url(f"{shop.url}/demo")
    assert str(page.evaluate("kairos.user().userId")).startswith("demo-")
    assert visitor(page) == before  # the same device, now signed in

    def greeting() -> str:
        page.wait_for_selector("[data-kairos-slot=home_hero][data-kairos-decision]")
        return page.locator("[data-kairos-slot=home_hero] p").inner_text()

    def greeted() -> bool:
        page.reload()  # until the profile worker has applied the sign-in
        return greeting().startswith("Hi Ada: ")

    eventually(greeted, timeout=30)
    shot(page, "sdk", "signed-in")
    page.click("#sign-out")
    page.wait_for_url("**/demo?signed_out=1")
    assert not greeting().startswith("Hi")
    assert page.evaluate("kairos.user().userId") is None and visitor(page) != before
    assert errors == []


def test_events_made_offline_arrive_once_when_back(browser: Browser, shop: Engine) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors = watched(page)
    page.goto(f"{shop.url}/demo/c/hats")
    anonymous_id = visitor(page)
    eventually(lambda: events(shop, anonymous_id))  # the page view is in
    context.set_offline(True)
    for n in range(3):
        page.evaluate("n => kairos.track('Offline Event', {n})", n)
    page.wait_for_timeout(2500)  # sends fail and are retried with backoff meanwhile
    assert len(page.evaluate("JSON.parse(localStorage.getItem('kairos.q'))")) == 3
    context.set_offline(False)

    def arrived() -> list[Any]:
        rows = [r for r in events(shop, anonymous_id) if r[1] == "Offline Event"]
        return rows if rows and rows[0][2] >= 3 else []

    assert eventually(arrived, timeout=30) == [["track", "Offline Event", 3, 3]]
    page.wait_for_timeout(1500)  # nothing more comes
    assert [r for r in events(shop, anonymous_id) if r[1] == "Offline Event"][0][2] == 3
    assert page.evaluate("JSON.parse(localStorage.getItem('kairos.q'))") == []
    assert not [e for e in errors if "ERR_INTERNET_DISCONNECTED" not in e]
    context.close()


PAGE = """<!doctype html><html><head>__SNIPPET__
<script>kairos.track("Page Opened");</script></head><body>
<div data-kairos-slot="home_hero"><p id="default">Our default hero</p></div>
</body></html>"""


def page_for(host: str) -> str:
    """A shop page with the loader snippet for an engine at ``host``."""
    return PAGE.replace("__SNIPPET__", snippet(host, "wk_test"))


_FIRST_LOOK = """
new MutationObserver((_, observer) => {
  const shown = document.querySelector('#default');
  if (shown) { window.firstLook = getComputedStyle(shown).visibility; observer.disconnect(); }
}).observe(document, {childList: true, subtree: true});
"""


def _visible_default(page: Page) -> float:
    started = time.monotonic()
    page.wait_for_selector("#default", state="visible", timeout=5000)
    return time.monotonic() - started


def test_an_unreachable_engine_leaves_the_default_after_the_timeout(browser: Browser) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    page = browser.new_page()
    errors = watched(page)
    # How the default looked when the parser made it (a refused connection fails so fast that
    # a look after the page commits may already see it shown).
    page.add_init_script(_FIRST_LOOK)
    page.route("http://shop.test/", lambda route: route.fulfill(
        body=page_for(dead), content_type="text/html"))  # fmt: skip
    page.goto("http://shop.test/", wait_until="commit")
    hidden = page.wait_for_function("window.firstLook").json_value()
    waited = _visible_default(page)
    assert hidden == "hidden" and waited < 2.0
    page.wait_for_timeout(500)
    assert page.inner_text("[data-kairos-slot]") == "Our default hero"
    assert not [e for e in errors if "ERR_CONNECTION_REFUSED" not in e]  # nothing uncaught


def test_a_slow_engine_is_not_waited_for(browser: Browser) -> None:
    """The SDK loads, /v1/decide never answers: the default shows after 300 ms, stays, and
    nothing is thrown."""
    page = browser.new_page()
    errors = watched(page)
    host = "http://engine.test"
    page.route("http://shop.test/", lambda route: route.fulfill(
        body=page_for(host), content_type="text/html"))  # fmt: skip
    page.route(f"{host}/sdk/v1/kairos.js", lambda route: route.fulfill(
        body=SDK_FILE.read_text(), content_type="application/javascript"))  # fmt: skip
    stuck: list[Route] = []
    page.route(f"{host}/v1/**", lambda route: stuck.append(route))  # never answered
    page.goto("http://shop.test/", wait_until="commit")
    assert _visible_default(page) < 2.0
    page.wait_for_function("window.kairos && window.kairos.version")
    page.wait_for_timeout(700)
    assert page.inner_text("[data-kairos-slot]") == "Our default hero"
    assert page.get_attribute("html", "data-kairos-ready") == ""
    assert any(r.request.url.endswith("/v1/decide") for r in stuck)
    assert errors == []
