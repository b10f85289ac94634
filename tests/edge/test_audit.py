"""The audit log against a real engine (Redis single and cluster, ClickHouse embedded and over
HTTP): a change through the API, the dashboard or the CLI, or installed from the config file,
appears in ``GET /v1/audit`` with who, how, from where and what; an erasure's entry names the
request and nothing of the person; filters work, and a bad one is a 400 naming it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from collector.audit import STREAM
from edge.access.keys import KeyAsk, create
from edge.pages import demo
from edge.runtime.config import Config
from edge.runtime.settings import Settings
from edge.runtime.stores import redis_client
from journeys.actions import sign
from journeys.suppression import address_hash
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import bearer, eventually, signed_in

pytestmark = pytest.mark.clickhouse_http  # GET /v1/audit reads ClickHouse

HERO = {"variants": [{"key": "a", "content": {"n": 1}}, {"key": "b", "content": {"n": 1}}]}


def call(engine: Engine, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    return engine.client.request(method, f"{engine.url}{path}", json=body,
                                 headers=headers or bearer())  # fmt: skip


def audit(engine: Engine, **query: Any) -> httpx.Response:
    return engine.client.get(f"{engine.url}/v1/audit", params=query, headers=bearer())


def logged(engine: Engine, count: int, **query: Any) -> list[dict[str, Any]]:
    """The entries matching ``query`` once there are ``count`` (the sink drains them)."""

    def found() -> list[dict[str, Any]] | None:
        answer = audit(engine, **query)
        assert answer.status_code == 200, answer.text
        entries: list[dict[str, Any]] = answer.json()["entries"]
        return entries if len(entries) >= count else None

    entries: list[dict[str, Any]] = eventually(found)
    assert len(entries) == count, entries
    return entries


def test_a_change_through_the_api_is_logged_with_who_how_where_and_what(engine: Engine) -> None:
    assert call(engine, "PUT", "/v1/placements/hero", HERO).status_code == 201
    changed = {"variants": [HERO["variants"][0], {"key": "b", "content": {"n": 2}}]}
    proxied = {**bearer(), "X-Forwarded-For": "203.0.113.9"}  # from 127.0.0.1: a trusted proxy
    assert call(engine, "PUT", "/v1/placements/hero", changed, proxied).status_code == 200
    assert call(engine, "PUT", "/v1/placements/hero", changed).json()["changed"] is False
    assert call(engine, "DELETE", "/v1/placements/hero").status_code == 200
    deleted, updated, created = logged(engine, 3, resource="placement", key="hero")
    assert [e["action"] for e in (deleted, updated, created)] == ["delete", "update", "create"]
    for entry in (deleted, updated, created):
        assert (entry["actor"], entry["via"]) == ("key:secret key", "api")
        assert entry["id"].startswith("au_") and entry["time"].endswith("Z")
    assert (created["address"], updated["address"]) == ("127.0.0.1", "203.0.113.9")
    assert created["before"] is None and created["after"]["variants"] == HERO["variants"]
    assert {"path": "variants[1].content.n", "before": 1, "after": 2} in updated["changes"]
    assert updated["before"]["variants"][1]["content"] == {"n": 1}
    assert updated["after"]["variants"][1]["content"] == {"n": 2}
    assert deleted["after"] is None and deleted["before"] == updated["after"]


def _seed_messaging(engine: Engine) -> None:
    for path, body in (
        ("/v1/segments/pros", {"rule": {"field": "traits.plan", "op": "eq", "value": "pro"}}),
        ("/v1/templates/news", {"subject": "News", "html": "<p>Hi</p>"}),
        ("/v1/broadcasts/spring", {"segment": "pros", "template": "news"}),
    ):
        assert call(engine, "PUT", path, body).status_code == 201, path


def _complain(engine: Engine, address: str) -> None:
    secret = call(engine, "GET", "/v1/subscriptions").json()["feedback_secret"].encode()
    body = msgspec.json.encode({"type": "complaint", "email": address})
    signature = {"X-Kairos-Signature": sign(secret, body, int(time.time())),
                 "Content-Type": "application/json"}  # fmt: skip
    answer = engine.client.post(f"{engine.url}/v1/messaging/feedback", content=body,
                                headers=signature)  # fmt: skip
    assert answer.status_code == 200, answer.text


def test_every_kind_of_change_is_logged(engine: Engine) -> None:
    _seed_messaging(engine)
    for action in ("start", "pause", "resume", "cancel"):
        assert call(engine, "POST", f"/v1/broadcasts/spring/{action}").status_code == 200
    journey = {"trigger": {"kind": "event", "event": "Product Added"}, "start": "end",
               "steps": {"end": {"type": "end"}}}  # fmt: skip
    item = {"name": "Hat", "url": "https://shop.example/hat", "price": 10}
    for method, path, body in (
        ("PUT", "/v1/journeys/cart", journey),
        ("DELETE", "/v1/journeys/cart", None),
        ("PUT", "/v1/subscriptions/news", {"name": "News", "channel": "email"}),
        ("PUT", "/v1/catalog/items/hat", item),
        (
            "POST",
            "/v1/catalog/items",
            {"items": [{**item, "id": "hat", "price": 12}, {**item, "id": "cap"}]},
        ),
        ("DELETE", "/v1/catalog/items/cap", None),
        ("POST", "/v1/recommendations/refresh", None),
        ("FEEDBACK", "", None),  # the provider's complaint, signed (no key)
        ("DELETE", "/v1/suppressions/bo@shop.example", None),
        ("DELETE", "/v1/segments/pros", None),
    ):
        if method == "FEEDBACK":
            _complain(engine, "Bo@Shop.example")
            continue
        assert call(engine, method, path, body).status_code in (200, 201, 202), (path, body)
    assert engine.post("/v1/identify", {"userId": "ana"}).status_code == 200
    eventually(lambda: call(engine, "GET", "/v1/profiles/user_id:ana").status_code == 200)
    asked = call(engine, "PUT", "/v1/profiles/user_id:ana/subscriptions", {"news": "subscribed"})
    assert asked.status_code == 200 and asked.json()["changed"] == ["news"]
    entries = logged(engine, 18, limit=100)
    done = [(e["resource"], e["key"], e["action"]) for e in reversed(entries)]
    suppressed = address_hash("email", "bo@shop.example")
    assert done == [
        ("segment", "pros", "create"), ("template", "news", "create"),
        ("broadcast", "spring", "create"), ("broadcast", "spring", "start"),
        ("broadcast", "spring", "pause"), ("broadcast", "spring", "resume"),
        ("broadcast", "spring", "cancel"), ("journey", "cart", "create"),
        ("journey", "cart", "delete"), ("subscription_group", "news", "create"),
        ("catalog_item", "hat", "create"), ("catalog", "items", "upsert"),
        ("catalog_item", "cap", "delete"), ("recommendations", "lists", "refresh"),
        ("suppression", suppressed, "suppress"), ("suppression", suppressed, "delete"),
        ("segment", "pros", "delete"),
        ("subscriptions", asked.json()["profile"], "update"),
    ]  # fmt: skip
    by = {(e["resource"], e["action"]): e for e in entries}
    assert by[("broadcast", "pause")]["changes"] == [
        {"path": "status", "before": "scanning", "after": "paused"}]  # fmt: skip
    bulk = by[("catalog", "upsert")]
    assert sorted(bulk["after"]) == ["cap", "hat"] and bulk["before"]["cap"] is None
    assert {"path": "hat.price", "before": 10, "after": 12} in bulk["changes"]
    assert by[("suppression", "suppress")]["actor"] == "webhook:feedback"
    assert by[("subscriptions", "update")]["changes"] == [
        {"path": "news", "before": None, "after": "subscribed"}]  # fmt: skip
    # The suppression list keeps no address, nor does the log: it is asked for by address.
    assert "bo@shop.example" not in str(entries).lower()
    assert len(logged(engine, 2, resource="suppression", key="Bo@Shop.example")) == 2


def test_an_erasure_names_the_request_and_nothing_of_the_person(engine: Engine) -> None:
    person = {"userId": "ana-4711", "anonymousId": "anon-4711",
              "traits": {"email": "ana@shop.example"}}  # fmt: skip
    assert engine.post("/v1/identify", person).status_code == 200
    found = eventually(lambda: (a := call(engine, "GET", "/v1/profiles/user_id:ana-4711"))
                       .status_code == 200 and a.json())  # fmt: skip
    erased = call(engine, "DELETE", "/v1/profiles/user_id:ana-4711")
    assert erased.status_code == 202, erased.text
    request = erased.json()["request"]
    assert re.fullmatch(r"er_[0-9a-f]{16}", request)
    (entry,) = logged(engine, 1, resource="erasure")
    assert (entry["key"], entry["action"], entry["before"]) == (request, "erase", None)
    assert entry["after"] == {"profiles": 1, "identities": 3}  # user id, anonymous id, email
    stored = engine.sql("SELECT * FROM audit")  # every column of every row
    for secret in ("ana-4711", "anon-4711", "ana@shop.example", found["id"]):
        assert secret not in str(stored) and secret not in str(entry)


def test_the_cli_s_changes_are_logged_as_cli(engine: Engine, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS_")}
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "recs", "refresh", "--url", engine.url,
         "--secret-key", SECRET_KEY, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (entry,) = logged(engine, 1, via="cli")
    assert (entry["resource"], entry["action"], entry["actor"]) == (
        "recommendations", "refresh", "key:secret key")  # fmt: skip


def test_a_dashboard_broadcast_action_is_logged_as_dashboard(engine: Engine) -> None:
    _seed_messaging(engine)
    with signed_in(engine) as client:
        shown = client.get("/dashboard/broadcasts?key=spring").text
        token = re.search(r'/spring/start">\s*<input type="hidden" name="csrf" value="([^"]+)"',
                          shown)  # fmt: skip
        assert token is not None, shown
        assert client.post("/dashboard/broadcasts/spring/start",
                           data={"csrf": token.group(1)}).status_code == 303  # fmt: skip
        (entry,) = logged(engine, 1, via="dashboard")
        assert (entry["resource"], entry["key"], entry["action"], entry["actor"]) == (
            "broadcast", "spring", "start", "key:secret key")  # fmt: skip
        assert entry["changes"] == [{"path": "status", "before": "draft", "after": "scanning"}]
        page = client.get("/dashboard/audit?via=dashboard")
        assert page.status_code == 200 and 'href="/dashboard/audit" class="on"' in page.text
        assert "<code>status</code>: draft → scanning" in page.text
        assert client.get("/dashboard/audit?since=soon").status_code == 400
    away = engine.client.get(engine.url + "/dashboard/audit", follow_redirects=False)
    assert away.status_code == 303 and away.headers["location"] == "/dashboard/login"


def test_a_definition_from_the_config_file_is_logged_as_config(
    engine_factory: Callable[..., Engine], settings: Settings
) -> None:
    config = msgspec.convert({"placements": {"hero": HERO}}, Config)
    engine = engine_factory(settings, config=config)
    (entry,) = logged(engine, 1, via="config")
    assert (entry["resource"], entry["key"], entry["action"], entry["actor"]) == (
        "placement", "hero", "create", "config:file")  # fmt: skip


def test_the_demo_installer_s_catalog_and_placements_are_logged_once(
    engine: Engine, r: redis.Redis
) -> None:
    created = demo.install(r, engine.url)
    assert created
    entries = logged(engine, 1 + len(created), via="cli")
    assert {(e["resource"], e["key"], e["action"]) for e in entries} == {
        ("catalog", "items", "upsert"), *(("placement", key, "create") for key in created)}  # fmt: skip
    assert all(e["actor"].startswith("cli:") for e in entries)
    catalog = next(e for e in entries if e["resource"] == "catalog")
    assert len(catalog["after"]) == len(demo.CATALOG) and catalog["before"] == {
        item.id: None for item in demo.CATALOG}  # fmt: skip
    assert demo.install(r, engine.url) == []  # installed already: nothing changes
    time.sleep(1.5)  # the sink drains every 0.5 s: nothing more comes
    assert len(audit(engine, via="cli").json()["entries"]) == len(entries)


def test_filters_and_pages(engine_factory: Callable[..., Engine], settings: Settings) -> None:
    with redis_client(settings.redis_url) as client:  # a named key, loaded as the engine starts
        named, _ = create(client, KeyAsk("email-system", ["segments:write"]))
    engine = engine_factory(settings)
    rule = {"rule": {"field": "traits.plan", "op": "eq", "value": "pro"}}
    for n in range(5):
        assert call(engine, "PUT", f"/v1/segments/s{n}", rule).status_code == 201
    assert call(engine, "PUT", "/v1/segments/mine", rule, bearer(named)).status_code == 201
    everything = logged(engine, 6)
    assert [e["key"] for e in everything] == ["mine", "s4", "s3", "s2", "s1", "s0"]
    (mine,) = logged(engine, 1, actor="key:email-system")
    assert mine["key"] == "mine"
    assert logged(engine, 1, key="s2")[0]["key"] == "s2"
    assert logged(engine, 6, resource="segment", action="create", via="api")
    first = audit(engine, limit=4).json()
    assert len(first["entries"]) == 4 and first["next_cursor"]
    second = audit(engine, limit=4, cursor=first["next_cursor"]).json()
    assert [e["key"] for e in first["entries"] + second["entries"]] == [
        e["key"] for e in everything]  # fmt: skip
    assert second["next_cursor"] is None
    middle = datetime.fromisoformat(everything[2]["time"])
    later = audit(engine, since=middle.isoformat()).json()["entries"]
    assert [e["key"] for e in later] == [e["key"] for e in everything[:3]]
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert audit(engine, since=soon).json()["entries"] == []
    earlier = audit(engine, until=middle.isoformat()).json()["entries"]
    assert [e["key"] for e in earlier] == [e["key"] for e in everything[3:]]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param({"resource": "planets"}, "$.resource: no resource 'planets' (one of ",
                     id="resource"),
        pytest.param({"via": "fax"}, "$.via: 'fax' is not one of api, dashboard, cli, config",
                     id="via"),
        pytest.param({"since": "yesterday"}, "$.since", id="since"),
        pytest.param({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
                     "$.since: must be before `until`", id="window"),
        pytest.param({"until": "1900-01-01T00:00:00Z"}, "$.until: must lie between 1970",
                     id="until"),
        pytest.param({"limit": "0"}, "$.limit", id="limit"),
        pytest.param({"limit": "lots"}, "$.limit", id="limit-text"),
        pytest.param({"cursor": "nope"}, "$.cursor: not a cursor this API returned",
                     id="cursor"),
        pytest.param({"action": "DROP TABLE"}, "$.action", id="action"),
        pytest.param({"key": "k" * 400}, "$.key", id="key"),
        pytest.param({"who": "me"}, "who", id="unknown"),
    ],
)  # fmt: skip
def test_a_bad_filter_is_a_400_naming_it(engine: Engine, query: dict[str, str],
                                         message: str) -> None:  # fmt: skip
    answer = audit(engine, **query)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_request"
    assert message in answer.json()["message"]


def test_a_change_the_log_cannot_take_answers_503(engine: Engine, r: redis.Redis) -> None:
    r.set(STREAM, "not a stream")  # every append now fails (WRONGTYPE), as a refusing Redis
    answer = call(engine, "PUT", "/v1/placements/hero", HERO)
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "audit_unavailable"
    assert answer.json()["message"].startswith("the placement create was made, but its audit "
                                               "log entry could not be written")  # fmt: skip
    assert answer.headers["retry-after"] == "5"
    assert call(engine, "GET", "/v1/placements/hero").status_code == 200  # the change stands
