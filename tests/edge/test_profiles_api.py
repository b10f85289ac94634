"""The profiles acceptance tests, through the HTTP API, on real Redis and embedded ClickHouse."""

from __future__ import annotations

import time
from typing import Any

import pytest

from edge.runtime.config import Config
from profiles.scoring import LeadScoring, ScoreRule
from tests.conftest import WRITE_KEY, Engine
from tests.helpers import bearer, eventually

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path


def get(engine: Engine, path: str, **params: Any) -> Any:
    answer = engine.client.get(engine.url + path, headers=bearer(), params=params)
    return answer


def settled(engine: Engine, count: int) -> None:
    """Wait until ``count`` events are stored and in the history table.

    The updater ran first (the sink waits for it); ``events_by_person`` is filled by a view in
    the same insert, but its part lands a moment after the ``events`` part.
    """
    query = "SELECT least((SELECT count() FROM events), (SELECT count() FROM events_by_person))"
    eventually(lambda: engine.sql(query)[0][0] >= count)


def profile(engine: Engine, ident: str) -> dict[str, Any]:
    answer = get(engine, f"/v1/profiles/{ident}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_two_devices_and_a_login_on_both(engine: Engine) -> None:
    earlier = "2026-11-20T10:00:00Z"
    phone = [
        {
            "type": "page",
            "anonymousId": "phone",
            "properties": {"path": f"/p/{i}"},
            "timestamp": earlier,
        }
        for i in range(3)
    ]
    laptop = [{"type": "track", "anonymousId": "laptop", "event": "Product Viewed", "timestamp": earlier,
               "properties": {"product_id": f"sku-{i}"}} for i in range(2)]  # fmt: skip
    assert engine.post("/v1/batch", {"batch": phone + laptop}).status_code == 200
    logins = [
        {
            "type": "identify",
            "anonymousId": "phone",
            "userId": "ada",
            "traits": {"email": "Ada@Example.com"},
            "timestamp": "2026-11-21T10:00:00Z",
        },
        {
            "type": "identify",
            "anonymousId": "laptop",
            "userId": "ada",
            "timestamp": "2026-11-21T10:00:01Z",
        },
        {
            "type": "track",
            "anonymousId": "laptop",
            "userId": "ada",
            "event": "Order Completed",
            "properties": {"revenue": 30},
            "timestamp": "2026-11-21T10:00:02Z",
        },
    ]
    assert engine.post("/v1/batch", {"batch": logins}).status_code == 200
    settled(engine, 8)
    ada = profile(engine, "user_id:ada")
    assert sorted(ada["identities"]["anonymous_id"]) == ["laptop", "phone"]
    assert ada["identities"]["email"] == ["ada@example.com"]
    assert ada["computed"]["page_views"] == 3
    assert ada["computed"]["event_counts"] == {
        "Page Viewed": 3,
        "Product Viewed": 2,
        "Order Completed": 1,
    }
    assert (ada["computed"]["orders"], ada["computed"]["revenue"]) == (1, 30)
    assert (
        profile(engine, "anonymous_id:laptop")["id"]
        == profile(engine, "email:ADA@example.com")["id"]
        == ada["id"]
    )
    history = get(engine, "/v1/profiles/user_id:ada/events", limit=100).json()
    assert len(history["events"]) == 8  # both devices, before and after the login
    assert [e["event"] for e in history["events"]][0] == "Order Completed"  # newest first
    assert history["next_cursor"] is None


def test_history_pages_with_a_cursor(engine: Engine) -> None:
    batch = [
        {
            "type": "track",
            "userId": "u",
            "event": f"E{i}",
            "timestamp": f"2026-11-20T10:00:{i:02d}Z",
        }
        for i in range(7)
    ]
    engine.post("/v1/batch", {"batch": batch})
    settled(engine, 7)
    seen, cursor = [], None
    while True:
        page = get(
            engine,
            "/v1/profiles/user_id:u/events",
            limit=3,
            **({"cursor": cursor} if cursor else {}),
        ).json()
        seen += [e["event"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"E{i}" for i in reversed(range(7))]
    assert get(engine, "/v1/profiles/user_id:u/events", cursor="nonsense").status_code == 400


def test_the_profile_api_wants_the_secret_key(engine: Engine) -> None:
    answer = engine.client.get(engine.url + "/v1/profiles/user_id:x", headers=bearer(WRITE_KEY))
    assert (
        answer.status_code == 403 and "needs the 'profiles:read' scope" in answer.json()["message"]
    )
    assert get(engine, "/v1/profiles/user_id:nobody").status_code == 404
    bad = get(engine, "/v1/profiles/phone:123")
    assert bad.status_code == 400 and bad.json()["message"].startswith(
        "$.id: 'phone:123' is not a profile id nor an identity: give a profile id (p_"
    )
    assert get(engine, "/v1/profiles/wallet:0x123").status_code == 400


@pytest.mark.parametrize(
    ("message", "path"),
    [
        pytest.param(
            {"type": "identify", "userId": "undefined"}, "$.batch[0].userId", id="undefined-user"
        ),
        pytest.param(
            {"type": "page", "anonymousId": "[object Object]"},
            "$.batch[0].anonymousId",
            id="object-anon",
        ),
        pytest.param(
            {
                "type": "identify",
                "userId": "u",
                "traits": {"wallet": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"},
            },
            "$.batch[0].traits.wallet",
            id="bad-wallet-checksum",
        ),
    ],
)
def test_blocked_ids_and_bad_wallets_are_400(
    engine: Engine, message: dict[str, Any], path: str
) -> None:
    answer = engine.post("/v1/batch", {"batch": [message]})
    assert answer.status_code == 400
    assert answer.json()["message"].startswith(path + ": must be")


def test_two_user_ids_on_one_device_stay_apart(engine: Engine) -> None:
    engine.post("/v1/batch", {"batch": [
        {"type": "identify", "anonymousId": "kiosk", "userId": "ada"},
        {"type": "identify", "anonymousId": "kiosk", "userId": "bob"},
    ]})  # fmt: skip
    settled(engine, 2)
    assert profile(engine, "user_id:ada")["id"] != profile(engine, "user_id:bob")["id"]


def test_segments_enter_exit_and_announce(engine: Engine) -> None:
    rule = {"name": "Big spenders", "rule": {"all": [
        {"field": "computed.revenue", "op": "gte", "value": 100},
        {"not": {"field": "traits.plan", "op": "eq", "value": "churned"}},
    ]}}  # fmt: skip
    put = engine.client.put(engine.url + "/v1/segments/big_spenders", json=rule, headers=bearer())
    assert put.status_code == 201, put.text
    order = {
        "type": "track",
        "userId": "carol",
        "event": "Order Completed",
        "properties": {"revenue": 60},
    }
    engine.post("/v1/track", order)
    settled(engine, 1)
    assert profile(engine, "user_id:carol")["segments"] == []
    engine.post("/v1/track", order)
    eventually(lambda: profile(engine, "user_id:carol")["segments"] == ["big_spenders"])
    engine.post("/v1/identify", {"userId": "carol", "traits": {"plan": "churned"}})
    eventually(lambda: profile(engine, "user_id:carol")["segments"] == [])
    query = ("SELECT event, JSONExtractString(properties, 'segment') FROM events "
             "WHERE event LIKE 'Segment %' ORDER BY timestamp, event")  # fmt: skip
    announced = eventually(lambda: [rows for rows in [engine.sql(query)] if len(rows) >= 2])[0]
    assert announced == [["Segment Entered", "big_spenders"], ["Segment Exited", "big_spenders"]]
    listed = get(engine, "/v1/segments").json()["segments"]
    assert [(s["key"], s["name"], s["members"]) for s in listed] == [
        ("big_spenders", "Big spenders", 0)
    ]
    bad = engine.client.put(
        engine.url + "/v1/segments/x",
        json={"rule": {"field": "plan", "op": "eq"}},
        headers=bearer(),
    )
    assert bad.status_code == 400 and bad.json()["message"].startswith(
        "$.rule.field: must be traits.<name>"
    )


def test_a_new_segment_is_backfilled_from_history(engine: Engine) -> None:
    batch = [{"type": "track", "userId": "dave", "event": "Webinar Joined"} for _ in range(3)]
    batch += [{"type": "track", "userId": "erin", "event": "Webinar Joined"}]
    engine.post("/v1/batch", {"batch": batch})
    settled(engine, 4)
    rule = {"rule": {"event": "Webinar Joined", "min": 2, "days": 7}}
    assert (
        engine.client.put(engine.url + "/v1/segments/fans", json=rule, headers=bearer()).status_code
        == 201
    )
    eventually(lambda: get(engine, "/v1/segments/fans").json()["members"] == 1)
    assert profile(engine, "user_id:dave")["segments"] == ["fans"]
    assert profile(engine, "user_id:erin")["segments"] == []
    members = get(engine, "/v1/segments/fans/members").json()
    assert members["profiles"] == [profile(engine, "user_id:dave")["id"]]


def test_erasure_forgets_a_person_everywhere(engine: Engine) -> None:
    engine.post("/v1/batch", {"batch": [
        {"type": "page", "anonymousId": "fay-phone"},
        {"type": "identify", "anonymousId": "fay-phone", "userId": "fay", "traits": {"email": "fay@example.com"}},
        {"type": "track", "userId": "fay", "event": "Signed Up"},
        {"type": "track", "userId": "gus", "event": "Signed Up"},
    ]})  # fmt: skip
    settled(engine, 4)
    exported = get(engine, "/v1/profiles/user_id:fay/export").json()
    assert exported["profile"]["identities"]["email"] == ["fay@example.com"]
    assert len(exported["events"]) == 3
    answer = engine.client.delete(
        engine.url + "/v1/profiles/email:fay@example.com", headers=bearer()
    )
    assert answer.status_code == 202 and answer.json()["events"] == "deleting"
    assert get(engine, "/v1/profiles/user_id:fay").status_code == 404
    eventually(
        lambda: (
            engine.sql(
                "SELECT count() FROM events WHERE user_id = 'fay' OR anonymous_id = 'fay-phone'"
            )
            == [[0]]
        )
    )
    # Later traffic from the old device is not stored and does not bring the profile back.
    assert engine.post("/v1/page", {"anonymousId": "fay-phone"}).status_code == 200
    engine.post("/v1/track", {"userId": "gus", "event": "Marker"})
    settled(engine, 2)  # gus's two events
    eventually(lambda: engine.sql("SELECT count() FROM events WHERE event = 'Marker'") == [[1]])
    assert engine.sql("SELECT count() FROM events WHERE anonymous_id = 'fay-phone'") == [[0]]
    assert get(engine, "/v1/profiles/anonymous_id:fay-phone").status_code == 404
    assert "kairos_events_rejected_total" in engine.client.get(engine.url + "/metrics").text


@pytest.mark.parametrize("mode", ["anonymize", "drop"])
def test_consent_denied_events(engine_factory: Any, settings: Any, mode: str) -> None:
    from collector.consent import ConsentPolicy

    engine = engine_factory(settings, consent=ConsentPolicy(mode=mode))
    denied = {
        "consent": {"categoryPreferences": {"Analytics": False, "Advertising": True}},
        "ip": "203.0.113.5",
    }
    engine.post("/v1/batch", {"batch": [
        {"type": "page", "userId": "hal", "context": denied, "properties": {"path": "/private"}},
        {"type": "identify", "userId": "hal", "context": denied, "traits": {"email": "hal@example.com"}},
        {"type": "track", "userId": "hal", "event": "Allowed", "context": {"consent": {"categoryPreferences": {"Analytics": True}}}},
    ]})  # fmt: skip
    eventually(lambda: engine.sql("SELECT count() FROM events WHERE event = 'Allowed'") == [[1]])
    time.sleep(0.5)
    stored = engine.sql(
        "SELECT type, user_id, ip, profile_id, page_path FROM events WHERE type = 'page'"
    )
    if mode == "drop":
        assert stored == []
    else:
        assert len(stored) == 1
        kind, user, ip, pid, path = stored[0]
        assert (kind, user, ip, pid, path) == ("page", "", "", "", "/private")
    assert engine.sql("SELECT count() FROM events WHERE type = 'identify'") == [[0]]
    assert profile(engine, "user_id:hal")["computed"]["page_views"] == 0


def test_lead_score_rules_from_the_config(engine_factory: Any, settings: Any) -> None:
    config = Config(
        lead_score=LeadScoring(rules=[ScoreRule("Page Viewed", 10, {"path": "/pricing"})])
    )
    engine = engine_factory(settings, config=config)
    engine.post("/v1/page", {"userId": "ivy", "properties": {"path": "/pricing"}})
    engine.post("/v1/page", {"userId": "ivy", "properties": {"path": "/about"}})
    settled(engine, 2)
    assert profile(engine, "user_id:ivy")["computed"]["lead_score"] == pytest.approx(10, rel=1e-3)
