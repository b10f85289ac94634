"""Who may call what: every route of the composed app has an entry in ``ACCESS``, and each entry
is checked with no key, a wrong key, the write key and the secret key.

A route added without an entry fails ``test_every_route_has_an_access_entry``: decide who may
call it, then add it here.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from edge.api.app import create_app
from edge.runtime.settings import Settings
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, basic

SIG = "0x" + "ab" * 65
TRACK = {"userId": "u1", "event": "Signed Up"}
USER = {"email": "probe@example.com", "role": "viewer", "password": "a long enough password"}
# (method, path) -> (who may call it, a body that passes validation where the key is checked
# after the body is read). write: the public write key; secret: only the secret key (the
# write key gets a 403 that says so); session: the dashboard's sign-in cookie; public: anyone.
ACCESS: dict[tuple[str, str], tuple[str, Any]] = {
    # The secret key too (a server: its userId is trusted; tests/decisions/test_identity_…).
    ("POST", "/v1/decide"): ("write", {"anonymousId": "a1", "placements": ["x_probe"]}),
    ("POST", "/v1/batch"): ("write", {"batch": [{"type": "track", **TRACK}]}),
    ("POST", "/v1/track"): ("write", TRACK),
    ("POST", "/v1/page"): ("write", {"userId": "u1", "name": "Home"}),
    ("POST", "/v1/screen"): ("write", {"userId": "u1", "name": "Home"}),
    ("POST", "/v1/identify"): ("write", {"userId": "u1", "traits": {"plan": "pro"}}),
    ("POST", "/v1/alias"): ("write", {"userId": "u1", "previousId": "a1"}),
    ("POST", "/v1/group"): ("write", {"userId": "u1", "groupId": "g1"}),
    ("POST", "/v1/wallets/nonce"): ("write", {}),
    ("POST", "/v1/wallets/link"): ("write", {"userId": "u1", "message": "hi", "signature": SIG}),
    ("GET", "/v1/placements"): ("secret", None),
    ("PUT", "/v1/placements/{key}"): ("secret", {"variants": [{"key": "a"}]}),
    ("GET", "/v1/placements/{key}"): ("secret", None),
    ("DELETE", "/v1/placements/{key}"): ("secret", None),
    ("GET", "/v1/placements/{key}/evaluate"): ("secret", None),
    ("POST", "/v1/placements/{key}/evaluate"): ("secret", {}),
    ("GET", "/v1/placements/{key}/results"): ("secret", None),
    ("POST", "/v1/sql"): ("secret", {"query": "SELECT 1"}),
    ("POST", "/v1/evaluate"): ("secret", {"log": "action,reward,propensity\n0,1,0.5\n"}),
    ("GET", "/v1/profiles/{id}"): ("secret", None),
    ("DELETE", "/v1/profiles/{id}"): ("secret", None),
    ("GET", "/v1/profiles/{id}/events"): ("secret", None),
    ("GET", "/v1/profiles/{id}/export"): ("secret", None),
    ("GET", "/v1/segments"): ("secret", None),
    ("PUT", "/v1/segments/{key}"): ("secret", {}),
    ("GET", "/v1/segments/{key}"): ("secret", None),
    ("DELETE", "/v1/segments/{key}"): ("secret", None),
    ("GET", "/v1/segments/{key}/members"): ("secret", None),
    ("GET", "/v1/models"): ("secret", None),
    ("GET", "/v1/catalog/items"): ("secret", None),
    ("POST", "/v1/catalog/items"): ("secret", {}),
    ("PUT", "/v1/catalog/items/{id:path}"): ("secret", {}),
    ("GET", "/v1/catalog/items/{id:path}"): ("secret", None),
    ("DELETE", "/v1/catalog/items/{id:path}"): ("secret", None),
    ("GET", "/v1/journeys"): ("secret", None),
    ("GET", "/v1/journeys/templates"): ("secret", None),
    ("GET", "/v1/journeys/{key}/stats"): ("secret", None),
    ("GET", "/v1/journeys/{key}/results"): ("secret", None),
    ("POST", "/v1/journeys/{key}/simulate"): ("secret", {}),
    ("PUT", "/v1/journeys/{key}"): ("secret", {}),
    ("GET", "/v1/journeys/{key}"): ("secret", None),
    ("DELETE", "/v1/journeys/{key}"): ("secret", None),
    ("GET", "/v1/templates"): ("secret", None),
    ("PUT", "/v1/templates/{key}"): ("secret", {"subject": "Hi", "html": "<p>Hi</p>"}),
    ("GET", "/v1/templates/{key}"): ("secret", None),
    ("DELETE", "/v1/templates/{key}"): ("secret", None),
    ("POST", "/v1/templates/{key}/preview"): ("secret", {"person": "p_probe"}),
    ("GET", "/v1/broadcasts"): ("secret", None),
    ("PUT", "/v1/broadcasts/{key}"): ("secret", {"segment": "s", "template": "t"}),
    ("GET", "/v1/broadcasts/{key}"): ("secret", None),
    ("DELETE", "/v1/broadcasts/{key}"): ("secret", None),
    ("POST", "/v1/broadcasts/{key}/start"): ("secret", None),
    ("POST", "/v1/broadcasts/{key}/pause"): ("secret", None),
    ("POST", "/v1/broadcasts/{key}/resume"): ("secret", None),
    ("POST", "/v1/broadcasts/{key}/cancel"): ("secret", None),
    ("POST", "/v1/broadcasts/{key}/dry-run"): ("secret", None),
    ("GET", "/v1/broadcasts/{key}/results"): ("secret", None),
    # The links in the emails Kairos sends: the signed token is all they carry.
    ("GET", "/v1/m/c/{token}"): ("public", None),
    ("GET", "/v1/m/o/{token}.gif"): ("public", None),
    ("GET", "/v1/subscriptions"): ("secret", None),
    ("PUT", "/v1/subscriptions/{key}"): ("secret", {}),
    ("GET", "/v1/subscriptions/{key}"): ("secret", None),
    ("DELETE", "/v1/subscriptions/{key}"): ("secret", None),
    ("GET", "/v1/profiles/{id}/subscriptions"): ("secret", None),
    ("PUT", "/v1/profiles/{id}/subscriptions"): ("secret", {}),
    ("GET", "/v1/suppressions/{email}"): ("secret", None),
    ("DELETE", "/v1/suppressions/{email}"): ("secret", None),
    # Or the provider's signature under the feedback secret.
    ("POST", "/v1/messaging/feedback"): ("secret", {"type": "bounce", "email": "a@b.c"}),
    # The links in emails: the signed token is all the authority (a wrong one is a 404).
    ("GET", "/v1/preferences/{token}"): ("public", None),
    ("POST", "/v1/preferences/{token}"): ("public", None),
    ("GET", "/v1/unsubscribe/{token}"): ("public", None),
    ("POST", "/v1/unsubscribe/{token}"): ("public", None),
    ("GET", "/v1/subscriptions/confirm/{token}"): ("public", None),
    ("POST", "/v1/subscriptions/confirm/{token}"): ("public", None),
    ("POST", "/v1/onchain"): ("secret", {"events": []}),  # or an indexer's signature
    ("GET", "/v1/onchain"): ("secret", None),
    ("POST", "/v1/keys"): ("secret", {"name": "probe", "scopes": ["read"]}),
    ("GET", "/v1/keys"): ("secret", None),
    ("DELETE", "/v1/keys/{name}"): ("secret", None),
    ("POST", "/v1/recommendations/batch"): ("secret", {}),
    ("POST", "/v1/recommendations/refresh"): ("secret", None),
    ("GET", "/v1/recommendations/{id:path}/render"): ("secret", None),
    ("GET", "/v1/recommendations/{id:path}"): ("secret", None),
    ("GET", "/v1/audit"): ("secret", None),  # admin
    ("GET", "/v1/users"): ("secret", None),  # admin
    ("POST", "/v1/users"): ("secret", USER),
    ("PUT", "/v1/users/{email}"): ("secret", {"role": "editor"}),
    ("DELETE", "/v1/users/{email}"): ("secret", None),
    ("GET", "/v1/sessions"): ("secret", None),
    ("DELETE", "/v1/sessions/{id}"): ("secret", None),
    ("GET", "/"): ("public", None),  # a redirect to /dashboard
    ("GET", "/dashboard/login"): ("public", None),
    ("POST", "/dashboard/login"): ("public", None),
    ("POST", "/dashboard/logout"): ("session", None),
    ("GET", "/dashboard"): ("session", None),
    ("GET", "/dashboard/placements/{key}"): ("session", None),
    ("GET", "/dashboard/profiles"): ("session", None),
    ("GET", "/dashboard/live"): ("session", None),
    ("GET", "/dashboard/models"): ("session", None),
    ("GET", "/dashboard/policies"): ("session", None),
    ("GET", "/dashboard/journeys"): ("session", None),
    ("GET", "/dashboard/subscriptions"): ("session", None),
    ("GET", "/dashboard/templates"): ("session", None),
    ("GET", "/dashboard/broadcasts"): ("session", None),
    ("GET", "/dashboard/audit"): ("session", None),  # admins only, once the dashboard has roles
    ("POST", "/dashboard/broadcasts/{key}/start"): ("session", None),
    ("POST", "/dashboard/broadcasts/{key}/pause"): ("session", None),
    ("POST", "/dashboard/broadcasts/{key}/resume"): ("session", None),
    ("POST", "/dashboard/broadcasts/{key}/cancel"): ("session", None),
    ("GET", "/dashboard/users"): ("session", None),  # admins only
    ("POST", "/dashboard/users"): ("session", None),
    ("POST", "/dashboard/users/{email}"): ("session", None),
    ("POST", "/dashboard/users/{email}/remove"): ("session", None),
    ("GET", "/dashboard/sessions"): ("session", None),
    ("POST", "/dashboard/sessions/{id}/revoke"): ("session", None),
    # The links in emails people click or load: a decision id is all they carry.
    ("GET", "/v1/r/{decision}/{item:path}"): ("public", None),
    ("GET", "/v1/o/{decision}.gif"): ("public", None),
    ("GET", "/healthz"): ("public", None),
    ("GET", "/metrics"): ("public", None),  # counters only: no person, key or definition
    ("GET", "/openapi.json"): ("public", None),
    ("GET", "/sdk/kairos.js"): ("public", None),
    ("GET", "/sdk/{version}/kairos.js"): ("public", None),
    ("GET", "/demo"): ("public", None),
    ("GET", "/demo/login"): ("public", None),
    ("POST", "/demo/login"): ("public", None),  # names a new shopper; it signs no other id
    ("POST", "/demo/logout"): ("public", None),
    ("GET", "/demo/c/{name}"): ("public", None),
    ("GET", "/demo/products/{id}"): ("public", None),
    ("GET", "/demo/cart"): ("public", None),
    ("GET", "/demo/checkout"): ("public", None),
    ("GET", "/demo/img/{id}.svg"): ("public", None),
}
SAMPLES = {"key": "x_probe", "id": "user_id:nobody", "id:path": "user_id:nobody",
           "decision": "d_0000", "item:path": "sku-1", "version": "v1", "name": "shoes",
           "email": "nobody@example.com", "token": "x.y"}  # fmt: skip


def _routes(settings: Settings) -> set[tuple[str, str]]:
    app: Any = create_app(settings)
    while not isinstance(app, Starlette):  # the middleware in front: CORS, limits, decide
        app = app.app
    found = set()
    for route in app.routes:
        assert isinstance(route, Route), f"{route!r}: only plain routes are audited"
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def _url(engine: Engine, path: str) -> str:
    return engine.url + re.sub(r"\{([^}]+)\}", lambda m: SAMPLES[m.group(1)], path)


def _call(engine: Engine, method: str, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    if body is not None:
        kwargs["json"] = body
    return engine.client.request(method, _url(engine, path), follow_redirects=False, **kwargs)


def test_every_route_has_an_access_entry(settings: Settings) -> None:
    routes = _routes(settings)
    assert sorted(routes - set(ACCESS)) == [], "routes with no entry in ACCESS: decide who may call"
    assert sorted(set(ACCESS) - routes) == [], "entries in ACCESS for routes that no longer exist"


def _routes_of(who: str) -> list[tuple[str, str, Any]]:
    return [(method, path, body) for (method, path), (w, body) in ACCESS.items() if w == who]


def test_secret_routes_refuse_everything_but_the_secret_key(engine: Engine) -> None:
    """The bootstrap keys only (named keys and their scopes: tests/security/test_permissions)."""
    for method, path, body in _routes_of("secret"):
        for headers in ({}, basic("sk_wrong"), {"Authorization": "Bearer sk_wrong"}):
            answer = _call(engine, method, path, body, headers=headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.json()["code"] == "unauthorized"
        for headers in (basic(WRITE_KEY), {"Authorization": f"Bearer {WRITE_KEY}"}):
            answer = _call(engine, method, path, body, headers=headers)
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["code"] == "forbidden"
            message = answer.json()["message"]
            assert message.startswith("this endpoint needs the '"), message
            assert message.endswith("scope: the write key (it is public: browsers, SDKs) has "
                                    "decide, track"), message  # fmt: skip
        secret = {"Authorization": f"Bearer {SECRET_KEY}"}
        answer = _call(engine, method, path, body, headers=secret)
        assert answer.status_code not in (401, 403), (method, path, answer.text)
        assert answer.status_code < 500, (method, path, answer.text)


def test_write_routes_need_the_write_key(engine: Engine) -> None:
    for method, path, body in _routes_of("write"):
        for headers in ({}, basic("wk_wrong"), {"Authorization": "Bearer wk_wrong"}):
            answer = _call(engine, method, path, body, headers=headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
        answer = _call(engine, method, path, body, headers=basic(WRITE_KEY))
        assert answer.status_code not in (401, 403), (method, path, answer.text)
        assert answer.status_code < 500, (method, path, answer.text)


def test_public_routes_answer_without_a_key(engine: Engine) -> None:
    for method, path, body in _routes_of("public"):
        answer = _call(engine, method, path, body)
        assert answer.status_code not in (401, 403), (method, path, answer.text)
        assert answer.status_code < 500, (method, path, answer.text)


def _sign_in(engine: Engine, key: str) -> httpx.Cookies:
    """The dashboard's sign-in form, as a browser fills it: its cookies afterwards."""
    with httpx.Client(base_url=engine.url, follow_redirects=False) as browser:
        form = browser.get("/dashboard/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        browser.post("/dashboard/login", data={"csrf": csrf.group(1), "key": key})
        return httpx.Cookies(browser.cookies)


def test_the_dashboard_needs_a_sign_in_with_the_secret_key(engine: Engine) -> None:
    assert "kairos_session" not in _sign_in(engine, WRITE_KEY)  # the write key signs no one in
    cookies = _sign_in(engine, SECRET_KEY)
    assert "kairos_session" in cookies
    forged = {"Cookie": "kairos_session=9999999999.00"}
    for method, path, body in _routes_of("session"):
        for headers in ({}, {"Authorization": f"Bearer {SECRET_KEY}"}, basic(SECRET_KEY), forged):
            answer = _call(engine, method, path, body, headers=headers)  # a header: no sign-in
            assert answer.status_code == 303, (method, path, headers, answer.text)
            assert answer.headers["location"] == "/dashboard/login"
        with httpx.Client(base_url=engine.url, cookies=cookies, follow_redirects=False) as browser:
            answer = browser.request(method, _url(engine, path).removeprefix(engine.url))
        if method == "GET":
            assert answer.status_code in (200, 404), (path, answer.text)
        else:  # sign-out without its form's CSRF token
            assert answer.status_code == 400, (path, answer.text)
