"""The dashboard in real headless Chromium (Debian's package, driven by Playwright): every page
renders with data, without console errors, behind sign-in, at desktop and phone widths.
Screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from edge.runtime.config import Config
from profiles.learner import ModelSettings
from profiles.shoppers import ShopperStream, send
from tests.browser import shot as browser_shot
from tests.browser import watched
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine
from tests.helpers import bearer, eventually, run_experiment


@pytest.fixture
def shop(engine_factory: Any, settings: Any) -> Engine:
    """An engine with an A/B test, a bandit, simulated shoppers and a learner that has learned."""
    config = Config(models=ModelSettings(churn_days=3, conversion_days=3))
    engine = engine_factory(settings, learner=True, config=config)
    run_experiment(engine, "cta_test", {"kind": "ab"}, visitors=160)
    run_experiment(engine, "hero_bandit", {"kind": "thompson"}, visitors=80)
    start = datetime.now(UTC) - timedelta(days=20)
    send(ShopperStream(shoppers=250, days=20, seed=2, start=start).messages(), engine.url,
         WRITE_KEY)  # fmt: skip

    def learned() -> bool:
        models = engine.client.get(f"{engine.url}/v1/models", headers=bearer()).json()["models"]
        return len(models) == 3 and all(m["examples"] > 0 for m in models)

    eventually(learned, timeout=90)
    return engine


def sign_in(page: Page, engine: Engine, key: str) -> None:
    page.goto(f"{engine.url}/dashboard")
    assert page.url.endswith("/dashboard/login")  # signed out: sent to sign in
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")


def shot(page: Page, name: str) -> None:
    browser_shot(page, "dashboard", name)


def test_every_page_renders_with_data(browser: Browser, shop: Engine) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = watched(page)
    sign_in(page, shop, "sk_wrong")
    assert "That is not the secret key." in page.inner_text("[role=alert]")
    sign_in(page, shop, SECRET_KEY)
    assert page.url.endswith("/dashboard")
    rows = page.locator("table >> nth=0 >> tbody tr")
    assert rows.count() == 2
    overview = page.inner_text("main")
    assert "cta_test" in overview and "hero_bandit" in overview
    assert "beats plain" in overview or "No clear difference" in overview
    assert "The bandit shows" in overview
    assert overview.count("live") >= 2  # both placements decided within the hour
    shot(page, "overview")

    page.click("text=cta_test")
    assert page.url.endswith("/dashboard/placements/cta_test")
    assert page.locator("section table tbody tr").count() == 2
    assert page.locator("svg.chart polyline").count() >= 4  # rates and allocation, 2 variants
    assert page.locator("section:has(h2:text-is('Lift')) circle").count() == 1  # one treatment
    assert "two-proportion z-test" in page.inner_text("main")
    shot(page, "placement-ab")
    page.goto(f"{shop.url}/dashboard/placements/hero_bandit")
    assert "IPW value" in page.inner_text("main") and "inverse-propensity" in page.inner_text(
        "main"
    )
    shot(page, "placement-bandit")

    page.goto(f"{shop.url}/dashboard/profiles")
    page.fill("input[name=id]", "anonymous_id:sim-3")
    page.click("button:has-text('Look up')")
    text = page.inner_text("main")
    assert "anonymous_id\tsim-3" in text and "conversion" in text
    shot(page, "profile")
    page.fill("input[name=id]", "email:nobody@example.com")
    page.click("button:has-text('Look up')")
    assert "no profile" in page.inner_text("[role=alert]")

    page.goto(f"{shop.url}/dashboard/live")
    assert page.locator("tbody tr").count() > 10
    shot(page, "live")
    page.goto(f"{shop.url}/dashboard/models")
    assert page.locator("section h2").count() >= 3
    assert page.locator("svg.chart polyline").count() >= 3  # a calibration chart per model
    shot(page, "models")

    page.click("text=Sign out")
    assert page.url.endswith("/dashboard/login")
    page.goto(f"{shop.url}/dashboard/models")
    assert page.url.endswith("/dashboard/login")
    assert errors == []


def test_pages_fit_a_phone(browser: Browser, shop: Engine) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    errors = watched(page)
    sign_in(page, shop, SECRET_KEY)
    for path, name in (("/dashboard", "phone-overview"),
                       ("/dashboard/placements/cta_test", "phone-placement"),
                       ("/dashboard/models", "phone-models")):  # fmt: skip
        page.goto(shop.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)  # wide tables scroll inside their section
        shot(page, name)
    assert errors == []


def test_forms_want_their_csrf_token(shop: Engine) -> None:
    forged = httpx.post(f"{shop.url}/dashboard/login", data={"key": SECRET_KEY},
                        follow_redirects=False)  # fmt: skip
    assert forged.status_code == 400 and "kairos_session" not in forged.cookies
    with httpx.Client(base_url=shop.url) as client:
        form = client.get("/dashboard/login").text
        token = form.split('name="csrf" value="')[1].split('"')[0]
        signed = client.post("/dashboard/login", data={"key": SECRET_KEY, "csrf": token})
        assert signed.status_code == 303 and "kairos_session" in client.cookies
        assert client.post("/dashboard/logout", data={"csrf": "forged"}).status_code == 400
        assert client.get("/dashboard", follow_redirects=False).status_code == 200
