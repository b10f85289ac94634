"""What the fuzzer found, pinned: each case answered a 5xx (or off the contract) before its fix."""

from __future__ import annotations

from tests.conftest import SECRET_KEY, Engine

SECRET = {"Authorization": f"Bearer {SECRET_KEY}"}
PLACEMENT = {"variants": [{"key": "a"}, {"key": "b"}], "policy": {"kind": "ab"}}
JOURNEY = {
    "trigger": {"kind": "event", "event": "Product Added"},
    "start": "end",
    "steps": {"end": {"type": "end"}},
}


def test_a_window_outside_what_the_store_holds_is_a_400_naming_the_field(engine: Engine) -> None:
    """Year 168 reached ClickHouse as a query parameter it cannot parse: a 503 'store
    unavailable' for a mistake of the caller's."""
    base = engine.url + "/v1/placements/home"
    assert engine.client.put(base, json=PLACEMENT, headers=SECRET).status_code == 201
    journey = engine.url + "/v1/journeys/welcome"
    assert engine.client.put(journey, json=JOURNEY, headers=SECRET).status_code == 201
    answers = {
        "$.until": engine.client.post(
            base + "/evaluate",
            json={"policy": {"kind": "ucb1"}, "until": "0168-10-29T11:30:19Z"},
            headers=SECRET,
        ),
        "$.since": engine.client.get(
            base + "/results", params={"since": "0143-08-26T22:40:36+09:30"}, headers=SECRET
        ),
        "$.since ": engine.client.post(
            journey + "/simulate", json={"since": "0163-08-09T13:06:47Z"}, headers=SECRET
        ),
    }
    for field, answer in answers.items():
        assert answer.status_code == 400, answer.text
        assert answer.json()["message"].startswith(f"{field.strip()}: must lie between 1970")


def test_a_window_without_a_zone_is_utc(engine: Engine) -> None:
    """A naive time beside one with a zone could not be compared (a 500)."""
    base = engine.url + "/v1/placements/home"
    assert engine.client.put(base, json=PLACEMENT, headers=SECRET).status_code == 201
    window = {"since": "2026-01-01T00:00:00", "until": "2026-02-01T00:00:00Z"}
    assert engine.client.get(base + "/results", params=window, headers=SECRET).status_code == 200
    backwards = {"since": "2026-03-01T00:00:00", "until": "2026-02-01T00:00:00Z"}
    answer = engine.client.get(base + "/results", params=backwards, headers=SECRET)
    assert answer.status_code == 400 and answer.json()["message"].startswith("$.since: must be")


def test_the_dashboard_takes_any_text_in_its_forms_and_cookies(engine: Engine) -> None:
    """hmac.compare_digest refuses non-ASCII str: a 500 for a form or cookie with an 'ó'."""
    form = {"content-type": "application/x-www-form-urlencoded", "cookie": "kairos_csrf=abc"}
    login = engine.client.post(
        engine.url + "/dashboard/login", content="csrf=%C3%B3Y&key=%06", headers=form
    )
    assert login.status_code == 400 and "expired" in login.text
    wrong = engine.client.post(
        engine.url + "/dashboard/login", content="csrf=abc&key=cl%C3%A9", headers=form
    )
    assert wrong.status_code == 200 and "not the secret key" in wrong.text
    page = engine.client.get(
        engine.url + "/dashboard",
        headers={"cookie": "kairos_session=9999999999.sign\u00e9".encode()},
    )
    assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"


def test_the_demo_shows_an_item_without_a_price(engine: Engine) -> None:
    """An item the catalog API made without a price broke the demo's product page."""
    item = {"name": "Gift card", "url": "https://shop.example/gift"}
    put = engine.client.put(engine.url + "/v1/catalog/items/gift", json=item, headers=SECRET)
    assert put.status_code == 201
    page = engine.client.get(engine.url + "/demo/products/gift")
    assert page.status_code == 200 and "Gift card" in page.text


def test_a_placement_whose_policy_cannot_be_built_is_refused(engine: Engine) -> None:
    """min_share × variants over 1 (or no weight above 0) was saved, then every reader of the
    placement built its policy and failed: a 500 from GET and /evaluate, and the decide path's
    catalog refresh stopped for good."""
    base = engine.url + "/v1/placements/"
    greedy = {**PLACEMENT, "policy": {"kind": "epsilon_greedy", "min_share": 0.9}}
    answer = engine.client.put(base + "greedy", json=greedy, headers=SECRET)
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith("$.policy: min_share × arms must lie in [0, 1]")
    weightless = {"variants": [{"key": "a", "weight": 0}], "policy": {"kind": "ab"}}
    answer = engine.client.put(base + "weightless", json=weightless, headers=SECRET)
    assert answer.status_code == 400 and answer.json()["message"].startswith("$.variants: ")
    assert engine.client.put(base + "home", json=PLACEMENT, headers=SECRET).status_code == 201
    candidate = {"policy": {"kind": "gaussian_thompson", "min_share": 0.95}}
    answer = engine.client.post(base + "home/evaluate", json=candidate, headers=SECRET)
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_request"
    assert engine.client.get(base + "home", headers=SECRET).status_code == 200


def test_digits_are_ascii_digits(engine: Engine) -> None:
    """str.isdigit() takes '²', which int() refuses: a 500 where a 400 (or 401, 303) was due."""
    assert engine.client.put(engine.url + "/v1/segments/pro", headers=SECRET,
                             json={"rule": {"field": "traits.plan", "op": "eq", "value": "pro"}}
                             ).status_code == 201  # fmt: skip
    for path in ("/v1/catalog/items", "/v1/segments/pro/members"):
        answer = engine.client.get(engine.url + path, params={"cursor": "²"}, headers=SECRET)
        assert answer.status_code == 400 and answer.json()["message"].startswith("$.cursor:")
    asked = {"placement": "recs", "n": "²"}
    answer = engine.client.get(engine.url + "/v1/recommendations/user_id:u", params=asked,
                               headers=SECRET)  # fmt: skip
    assert answer.status_code == 400 and answer.json()["message"].startswith("$.n:")
    signed = {"x-kairos-signature": "t=²,v1=00".encode("latin-1")}
    assert engine.client.post(engine.url + "/v1/onchain", content=b"{}",
                              headers=signed).status_code == 401  # fmt: skip
    page = engine.client.get(
        engine.url + "/dashboard", headers={"cookie": "kairos_session=².x".encode("latin-1")}
    )
    assert page.status_code == 303
