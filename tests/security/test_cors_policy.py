"""CORS: only the browser API (decide, tracking, wallets) answers other origins, and only the
configured ones; the admin API and the dashboard never do, whatever the configuration."""

from __future__ import annotations

from typing import Any

import httpx

from edge.api.app import BROWSER_PATHS
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, basic

SHOP, EVIL = "https://shop.example", "https://evil.example"
ADMIN = [
    ("GET", "/v1/placements"),
    ("POST", "/v1/sql"),
    ("GET", "/v1/profiles/user_id:ada"),
    ("GET", "/v1/journeys"),
    ("GET", "/v1/onchain"),
    ("GET", "/v1/recommendations/user_id:ada?placement=x"),
    ("GET", "/metrics"),
    ("GET", "/dashboard"),
    ("POST", "/dashboard/login"),
]


def preflight(engine: Engine, path: str, origin: str, method: str = "POST") -> httpx.Response:
    return engine.client.options(
        engine.url + path,
        headers={"Origin": origin, "Access-Control-Request-Method": method,
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip


def no_cors(answer: httpx.Response) -> bool:
    return not any(name.startswith("access-control-") for name in answer.headers)


def test_the_browser_api_answers_configured_origins_only(
    engine_factory: Any, settings: Any
) -> None:
    engine = engine_factory(settings, cors_origins=(SHOP,), sink=False)
    for path in BROWSER_PATHS:
        allowed = preflight(engine, path, SHOP)
        assert allowed.status_code == 200, path
        assert allowed.headers["access-control-allow-origin"] == SHOP
        assert allowed.headers["access-control-allow-headers"] == "authorization, content-type"
        assert "access-control-allow-credentials" not in allowed.headers
        refused = preflight(engine, path, EVIL)
        assert refused.status_code == 400 and no_cors(refused), path
    body = {"userId": "u1", "event": "Signed Up"}
    ours = engine.post("/v1/track", body, headers={"Origin": SHOP})
    assert ours.status_code == 200
    assert ours.headers["access-control-allow-origin"] == SHOP and ours.headers["vary"] == "Origin"
    theirs = engine.post("/v1/track", body, headers={"Origin": EVIL})
    assert theirs.status_code == 200 and no_cors(theirs)  # a browser keeps the answer from them
    # The decide path, served ahead of the middleware, answers the same way, errors included.
    ask = {"anonymousId": "a1", "placements": ["no_such_slot"]}
    for key, status in ((WRITE_KEY, 404), (None, 401)):
        ours = engine.post("/v1/decide", ask, key=key, headers={"Origin": SHOP})
        assert ours.status_code == status, ours.text
        assert ours.headers["access-control-allow-origin"] == SHOP, status
        assert ours.headers["vary"] == "Origin", status
        theirs = engine.post("/v1/decide", ask, key=key, headers={"Origin": EVIL})
        assert theirs.status_code == status and no_cors(theirs), status


def test_the_admin_api_answers_no_other_origin(engine_factory: Any, settings: Any) -> None:
    """Not even a configured one, nor with ``*``: the secret key never belongs in a web page."""
    for origins in ((SHOP,), ("*",)):
        engine = engine_factory(settings, cors_origins=origins, sink=False)
        for method, path in ADMIN:
            for origin in (SHOP, EVIL):
                refused = preflight(engine, path, origin, method)
                assert refused.status_code == 403, (origins, path, refused.text)
                assert no_cors(refused) and "not allowed" in refused.text
                answer = engine.client.request(
                    method, engine.url + path, follow_redirects=False,
                    headers={"Origin": origin, "Authorization": f"Bearer {SECRET_KEY}"},
                )  # fmt: skip
                assert no_cors(answer), (origins, path, answer.headers)


def test_any_origin_is_the_default_for_the_browser_api(engine: Engine) -> None:
    assert preflight(engine, "/v1/decide", EVIL).headers["access-control-allow-origin"] == "*"
    answer = engine.client.post(engine.url + "/v1/batch", json={"batch": []},
                                headers={**basic("wk_wrong"), "Origin": EVIL})  # fmt: skip
    assert answer.status_code == 401  # errors carry it too: the page can read why
    assert answer.headers["access-control-allow-origin"] == "*"
