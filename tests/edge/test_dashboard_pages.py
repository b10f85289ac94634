"""The dashboard as a new user meets it, against a real engine: ``/`` leads to it, the overview
and a placement's page agree on a bandit, a variant keeps its colour across charts, times read
as times, and the results table fits a laptop window and a phone (real Chromium)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from edge.pages import demo
from tests.browser import shot as browser_shot
from tests.browser import watched
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import LAYOUT, eventually, page_text, placement, run_experiment, signed_in

BANDIT = "hero_bandit"
VISITORS = 80


@pytest.fixture
def bandit(engine: Engine) -> Engine:
    """An engine whose Thompson bandit has learned from every visitor's reward."""
    run_experiment(engine, BANDIT, {"kind": "thompson"}, visitors=VISITORS)
    eventually(lambda: placement(engine, BANDIT)["learned"]["revision"] > 0)
    return engine


def _overview_verdict(page: str, key: str) -> str:
    row = re.search(rf'href="/dashboard/placements/{key}">.*?data-label="verdict">(.*?)</td>',
                    page, re.S)  # fmt: skip
    assert row is not None, page
    return page_text(row.group(1))


def _placement_verdict(page: str) -> str:
    found = re.search(r'<p class="verdict">(.*?)</p>', page, re.S)
    assert found is not None, page
    return page_text(found.group(1))


def test_the_overview_and_the_placement_page_state_the_same_share(bandit: Engine) -> None:
    learned = placement(bandit, BANDIT)["learned"]["variants"]
    leader = max(learned, key=lambda v: v["probability"])
    with signed_in(bandit) as client:
        overview = client.get("/dashboard").text
        page = client.get(f"/dashboard/placements/{BANDIT}").text
    said = _overview_verdict(overview, BANDIT)
    assert said == _placement_verdict(page)
    # The share is the policy's own (GET /v1/placements/{key}: what it learned), not 0%.
    assert said == (f"The bandit shows {leader['variant']} {leader['probability']:.0%} of the "
                    f"time ({VISITORS + 1} visitors).")  # fmt: skip
    assert leader["probability"] >= 0.5


def _colours(page: str, name: str) -> set[str]:
    """Every colour ``name`` is drawn in on the page: lines, points, legend keys, lift rows."""
    return (set(re.findall(r'stroke="(#\w+)"[^>]*><title>' + name + "</title>", page))
            | set(re.findall(r'fill="(#\w+)"><title>' + name + ":", page))
            | set(re.findall(r'background:(#\w+)"></i>' + name + "</span>", page)))  # fmt: skip


def test_a_variant_has_one_colour_in_every_chart_and_times_are_readable(bandit: Engine) -> None:
    with signed_in(bandit) as client:
        page = client.get(f"/dashboard/placements/{BANDIT}").text
        live = client.get("/dashboard/live").text
        profile = client.get("/dashboard/profiles", params={"id": f"anonymous_id:{BANDIT}-v3"})
    assert page.count("<svg") == 3  # rates, allocation, lift
    plain, bold = _colours(page, "plain"), _colours(page, "bold")
    assert len(plain) == 1 and len(bold) == 1 and plain != bold, (plain, bold)
    assert re.search(r'fill="(#\w+)"><title>bold: [+-]', page)  # the lift chart drew bold too
    # Times: in UTC to the second (the exact time on hover where it says "… ago").
    cells = re.findall(r"<tr><td>(.*?)</td>", live.split("<tbody>")[1])
    assert len(cells) > 10
    assert all(re.fullmatch(r'<time datetime="[\dT:-]+Z" title="[^"]+">'
                            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", c) for c in cells)  # fmt: skip
    assert profile.status_code == 200
    shown = page_text(profile.text)
    assert re.search(r"first seen (just now|\d+ (s|min) ago) last seen", shown), shown
    assert re.search(r'"first_seen": "\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"', shown), shown
    assert not re.search(r"\b1\d{12}\b", shown), shown  # no epoch milliseconds anywhere


def test_root_leads_to_the_dashboard_and_the_sign_in_mentions_the_demo(
    browser: Browser, engine: Engine, r: Any
) -> None:
    root = engine.client.get(f"{engine.url}/", follow_redirects=False)
    assert root.status_code == 303 and root.headers["location"] == "/dashboard"
    followed = engine.client.get(f"{engine.url}/", follow_redirects=True)
    assert followed.url.path == "/dashboard/login" and "Sign in" in followed.text
    assert "demo shop" not in engine.client.get(f"{engine.url}/dashboard/login").text
    demo.install(r, engine.url)
    sign_in = engine.client.get(f"{engine.url}/dashboard/login").text
    assert 'The <a href="/demo">demo shop</a> is installed' in sign_in
    # The demo's checkout counts its items in words too.
    page = browser.new_page()
    errors = watched(page)
    for items, said in ((0, "0 items, $0.00"), (1, "1 item, $25.00"), (2, "2 items, $50.00")):
        cart = [{"id": f"sku-{i}", "name": "Hat", "price": 25} for i in range(items)]
        page.goto(f"{engine.url}/demo/checkout")
        page.evaluate("cart => localStorage.setItem('demo.cart', JSON.stringify(cart))", cart)
        page.reload()
        assert page.inner_text("#total") == said
    page.close()
    assert errors == []


def _fits(page: Page) -> dict[str, Any]:
    return dict(page.evaluate(LAYOUT))


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["laptop", "phone"])
def test_the_results_table_fits_a_laptop_and_a_phone(
    browser: Browser, bandit: Engine, width: int, height: int
) -> None:
    page = browser.new_page(viewport={"width": width, "height": height},
                            is_mobile=width < 600)  # fmt: skip
    errors = watched(page)
    page.goto(f"{bandit.url}/dashboard/login")
    page.fill("input[name=key]", SECRET_KEY)
    page.click("button[type=submit]")
    page.goto(f"{bandit.url}/dashboard/placements/{BANDIT}")
    layout = _fits(page)
    browser_shot(page, "dashboard", f"results-{width}")
    assert layout == {"page": 0, "table": 0, "cut": []}, layout
    cells = page.locator("table.results tbody td:visible")
    assert cells.count() >= 15  # every figure is on the screen, not scrolled away
    for path in ("/dashboard", "/dashboard/live", "/dashboard/profiles"):
        page.goto(bandit.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
    page.close()
    assert errors == []
