"""The dashboard's "Choosing a policy" page in real Chromium: behind sign-in, the guide and a
regret chart for each of the bench's four scenarios (the curves ``bench/bandits.py`` measured),
no console errors, and nothing to scroll sideways on a phone."""

from __future__ import annotations

from playwright.sync_api import Browser

from edge.pages.policies import GUIDE, measured
from tests.browser import shot, watched
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import page_text, signed_in


def test_the_measurements_cover_every_scenario() -> None:
    data = measured()
    assert set(data["scenarios"]) == {"stationary", "contextual", "drifting", "revenue"}
    drifting = data["scenarios"]["drifting"]
    assert "Thompson, change detection" in drifting["curves"]
    assert (
        drifting["ratios"]["Thompson, change detection"] > drifting["ratios"]["Thompson sampling"]
    )


def test_the_page_shows_the_guide_and_the_charts(engine: Engine) -> None:
    with signed_in(engine) as client:
        answer = client.get("/dashboard/policies")
    assert answer.status_code == 200
    text = page_text(answer.text)
    for situation, policy, _ in GUIDE:
        assert situation in text and policy in text
    assert answer.text.count('class="chart"') == 4
    signed_out = engine.client.get(f"{engine.url}/dashboard/policies", follow_redirects=False)
    assert signed_out.status_code == 303


def test_the_page_renders_in_a_browser_and_fits_a_phone(browser: Browser, engine: Engine) -> None:
    for width, name in ((1280, "policies"), (390, "phone-policies")):
        page = browser.new_page(viewport={"width": width, "height": 900})
        errors = watched(page)
        page.goto(f"{engine.url}/dashboard/login")
        page.fill("input[name=key]", SECRET_KEY)
        page.click("button[type=submit]")
        page.goto(f"{engine.url}/dashboard/policies")
        assert page.locator("svg.chart polyline").count() >= 4 * 3
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, overflow
        shot(page, "dashboard", name)
        assert errors == []
        page.close()
