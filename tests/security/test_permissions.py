"""The permission matrix: every operation of ``/openapi.json`` that names a scope
(``x-kairos-scope``) is called with a named key holding exactly that scope (allowed), a key
holding every other scope but ``admin`` (403), an admin key (allowed), no key and a wrong key
(401), and the bootstrap keys (the write key holds track and decide, the secret key admin).

Then what named keys promise beyond scopes: shown once and stored as a digest, revoked at once
here and within the revocation delay on another instance, expired and revoked keys answered
like wrong ones, origins and networks enforced.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import redis

from edge.access.keys import REFRESH_SECONDS
from edge.access.scopes import SCOPES
from edge.runtime.settings import Settings
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, basic
from tests.security.test_route_access import ACCESS, SAMPLES

ADMIN = {"Authorization": f"Bearer {SECRET_KEY}"}


def _make(engine: Engine, name: str, scopes: list[str], **more: Any) -> str:
    answer = engine.client.post(engine.url + "/v1/keys", headers=ADMIN,
                                json={"name": name, "scopes": scopes, **more})  # fmt: skip
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


def _operations(engine: Engine) -> list[tuple[str, str, str]]:
    """(method, path, scope) of every API operation that names a scope (the dashboard's are
    signed in with a session, not a key: tests/security/test_roles)."""
    document = engine.client.get(engine.url + "/openapi.json").json()
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            security = [name for entry in operation["security"] for name in entry]
            if "x-kairos-scope" in operation and "dashboardSession" not in security:
                found.append((method.upper(), path, operation["x-kairos-scope"]))
    return found


def _body(method: str, path: str) -> Any:
    """The body ``ACCESS`` gives the route (its path may say ``{id:path}`` where the document
    says ``{id}``)."""
    for (m, route), (_, body) in ACCESS.items():
        if m == method and re.sub(r"\{(\w+):path\}", r"{\1}", route) == path:
            return body
    raise AssertionError(f"no entry in ACCESS for {method} {path}")


def _call(engine: Engine, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    url = engine.url + re.sub(r"\{([^}]+)\}", lambda m: SAMPLES[m.group(1)], path)
    body = _body(method, path)
    if path == "/v1/keys" and method == "POST":  # a fresh name each time: no 409 on a repeat
        body = {**body, "name": f"probe-{time.monotonic_ns()}"}
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    return engine.client.request(method, url, headers=headers, follow_redirects=False, **kwargs)


def test_every_api_operation_is_allowed_exactly_to_its_scope(engine: Engine) -> None:
    operations = _operations(engine)
    assert len(operations) > 60  # the document was read (every admin route names its scope)
    assert {scope for _, _, scope in operations} <= set(SCOPES)
    holding = {scope: _make(engine, f"only-{scope.replace(':', '-')}", [scope]) for scope in SCOPES}
    others = {scope: _make(engine, f"all-but-{scope.replace(':', '-')}",
                           [s for s in SCOPES if s not in (scope, "admin")])
              for scope in SCOPES if scope != "admin"}  # fmt: skip
    for method, path, scope in operations:
        where = (method, path, scope)
        for headers in ({}, basic("kk_wrong"), {"Authorization": "Bearer kk_wrong"}):
            answer = _call(engine, method, path, headers)
            assert answer.status_code == 401, (*where, answer.text)
        allowed = [holding[scope], holding["admin"], SECRET_KEY]
        if scope in ("track", "decide"):
            allowed.append(WRITE_KEY)
        for key in allowed:
            answer = _call(engine, method, path, basic(key))
            assert answer.status_code not in (401, 403), (*where, answer.text)
            assert answer.status_code < 500, (*where, answer.text)
        refused = [others[scope]] if scope != "admin" else [holding["read"]]
        if scope not in ("track", "decide"):
            refused.append(WRITE_KEY)
        for key in refused:
            answer = _call(engine, method, path, basic(key))
            assert answer.status_code == 403, (*where, answer.text)
            assert f"needs the {scope!r} scope" in answer.json()["message"], answer.text


def test_a_key_is_shown_once_and_kept_as_a_digest(engine: Engine, r: redis.Redis) -> None:
    key = _make(engine, "email-system", ["recommendations"], networks=["127.0.0.0/8"])
    listed = engine.client.get(engine.url + "/v1/keys", headers=ADMIN).json()
    assert key not in str(listed)
    (shown,) = [k for k in listed["keys"] if k["name"] == "email-system"]
    assert shown["scopes"] == ["recommendations"] and key.startswith(shown["prefix"])
    assert shown["last_used"] is None
    stored = [r.hgetall(name) for name in ("{access}:keys", "{access}:key_names")]
    assert stored[0] and key not in str(stored)
    answer = engine.client.get(engine.url + "/v1/recommendations/user_id:u1?placement=x_probe",
                               headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert answer.status_code not in (401, 403), answer.text
    deadline = time.monotonic() + 4 * REFRESH_SECONDS  # the last use is written at a reload
    while time.monotonic() < deadline:
        listed = engine.client.get(engine.url + "/v1/keys", headers=ADMIN).json()
        used = [k["last_used"] for k in listed["keys"] if k["name"] == "email-system"]
        if used[0] is not None:
            break
        time.sleep(0.2)
    assert used[0] is not None and abs(used[0] - time.time()) < 60


def test_bad_key_asks_are_refused_with_the_field(engine: Engine) -> None:
    def ask(body: dict[str, Any]) -> httpx.Response:
        return engine.client.post(engine.url + "/v1/keys", headers=ADMIN, json=body)

    answer = ask({"name": "x", "scopes": ["root"]})
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("$.scopes[0]: unknown scope 'root'; one of: track")
    assert ask({"name": "Not A Name", "scopes": ["read"]}).json()["message"].startswith("$.name")
    assert ask({"name": "x", "scopes": []}).json()["message"].startswith("$.scopes")
    answer = ask({"name": "x", "scopes": ["read"], "networks": ["10.0.0.0/33"]})
    assert answer.json()["message"] == "$.networks[0]: not an IP network: '10.0.0.0/33'"
    answer = ask({"name": "x", "scopes": ["read"], "origins": ["shop.example"]})
    assert answer.json()["message"].startswith("$.origins[0]: an origin is scheme://host")
    assert ask({"name": "x", "scopes": ["read"], "expires": 1000}).status_code == 400
    assert ask({"name": "x", "scopes": ["read"]}).status_code == 201
    again = ask({"name": "x", "scopes": ["sql"]})
    assert again.status_code == 409 and again.json()["message"].startswith("$.name: a key named")


def _status(engine: Engine, key: str, **headers: str) -> httpx.Response:
    return engine.client.get(engine.url + "/v1/placements",
                             headers={"Authorization": f"Bearer {key}", **headers})  # fmt: skip


def test_revoked_expired_and_made_up_keys_get_the_same_answer(engine: Engine) -> None:
    revoked = _make(engine, "old-integration", ["read"])
    soon = _make(engine, "contractor", ["read"], expires=int(time.time()) + 2)
    assert _status(engine, revoked).status_code == 200
    assert _status(engine, soon).status_code == 200
    gone = engine.client.delete(engine.url + "/v1/keys/old-integration", headers=ADMIN)
    assert gone.status_code == 200 and gone.json()["revoked"] is True
    time.sleep(2.1)
    answers = [_status(engine, key) for key in (revoked, soon, "kk_" + "x" * 43)]
    assert {a.status_code for a in answers} == {401}
    assert len({a.text for a in answers}) == 1  # nothing tells a revoked key from a made-up one
    missing = engine.client.delete(engine.url + "/v1/keys/old-integration", headers=ADMIN)
    assert missing.status_code == 404


def test_a_key_revoked_on_one_instance_stops_on_another_within_the_delay(
    engine_factory: Callable[..., Engine], settings: Settings
) -> None:
    first = engine_factory(settings)
    second = engine_factory(settings, sink=False, profiles=False, rewards=False)
    key = _make(first, "rotated", ["read"])
    deadline = time.monotonic() + 3 * REFRESH_SECONDS
    while _status(second, key).status_code != 200:  # made on the first: known at a reload
        assert time.monotonic() < deadline, "the second instance never learned the key"
        time.sleep(0.1)
    revoked_at = time.monotonic()
    assert first.client.delete(first.url + "/v1/keys/rotated", headers=ADMIN).status_code == 200
    assert _status(first, key).status_code == 401  # at once where it was revoked
    while _status(second, key).status_code != 401:
        assert time.monotonic() - revoked_at < 3 * REFRESH_SECONDS, "still works elsewhere"
        time.sleep(0.1)


def test_origins_and_networks_limit_where_a_key_works(engine: Engine) -> None:
    browser = _make(engine, "shop-browser", ["track", "decide"], origins=["https://shop.example"])
    track = {"userId": "u1", "event": "Viewed"}
    allowed = engine.post(
        "/v1/track", track, key=browser, headers={"Origin": "https://shop.example"}
    )
    assert allowed.status_code == 200, allowed.text
    for origin in ({"Origin": "https://evil.example"}, {}):
        refused = engine.post("/v1/track", track, key=browser, headers=origin)
        assert refused.status_code == 403, refused.text
        assert "not allowed from origin" in refused.json()["message"]
    decide = {"anonymousId": "a1", "placements": ["x_probe"], "writeKey": browser}
    answer = engine.client.post(engine.url + "/v1/decide", json=decide,
                                headers={"Origin": "https://evil.example"})  # fmt: skip
    assert answer.status_code == 403, answer.text
    far = _make(engine, "warehouse", ["read"], networks=["10.0.0.0/8"])
    near = _make(engine, "reporting", ["read"], networks=["127.0.0.0/8", "::1/128"])
    refused = _status(engine, far)
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        "the key 'warehouse' is not allowed from address '127.0.0.1': allowed are 10.0.0.0/8"
    )
    assert _status(engine, near).status_code == 200


def test_a_named_decide_key_trusts_a_userid_only_with_decide_trusted(engine: Engine) -> None:
    browser = _make(engine, "site", ["decide"])
    server = _make(engine, "site-server", ["decide", "decide:trusted"])
    made = engine.client.put(engine.url + "/v1/placements/hero", headers=ADMIN,
                             json={"variants": [{"key": "a"}]})  # fmt: skip
    assert made.status_code == 201, made.text
    ask = {"userId": "u-named", "placements": ["hero"]}
    for key, trusted in ((browser, False), (server, True)):
        answer = engine.client.post(engine.url + "/v1/decide", json=ask,
                                    headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["identity"] == ("verified" if trusted else "unverified"), answer.text
