"""/v1/decide and learning from rewards, end to end on real Redis and embedded ClickHouse."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from decisions.placements import DEFS
from decisions.records import SIGNING_KEY, DecisionIds
from edge.runtime.embedded_redis import EmbeddedRedis
from edge.runtime.stores import redis_client
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import (
    bearer,
    decide,
    eventually,
    placement,
    put_placement,
    signed,
    wait_catalog,
)

HERO = {
    "name": "Home hero",
    "default": "classic",
    "policy": {"kind": "thompson"},
    "variants": [
        {"key": "classic", "content": {"image": "/img/classic.jpg"}},
        {"key": "sale", "content": {"image": "/img/sale.jpg"}},
    ],
}


def test_decide_then_click_teaches_the_policy(engine: Engine) -> None:
    put_placement(engine, "home_hero", HERO)
    wait_catalog(engine, "home_hero")
    shown = {"classic": 0, "sale": 0}
    for visitor in range(300):
        decision = decide(engine, "home_hero", anonymousId=f"v{visitor}")["home_hero"]
        assert decision["decisionId"].startswith("d_")
        assert 0 < decision["propensity"] <= 1
        assert decision["content"] == {"image": f"/img/{decision['variant']}.jpg"}
        shown[decision["variant"]] += 1
        if decision["variant"] == "sale":  # visitors click the sale banner, never the classic
            answer = engine.post("/v1/track", {"anonymousId": f"v{visitor}", "event": "Decision Clicked",
                                               "properties": {"decisionId": decision["decisionId"]}})  # fmt: skip
            assert answer.status_code == 200
        time.sleep(0.003)  # let the worker and the catalog refresh keep up, as real traffic would

    def learned() -> dict[str, Any]:  # every decision and every click (they lag under load)
        state = placement(engine, "home_hero")["learned"]
        rewards = sum(v["reward"] for v in state["variants"])
        return state if state["decisions"] >= 300 and rewards >= shown["sale"] else {}

    state = eventually(learned)
    by_variant = {v["variant"]: v for v in state["variants"]}
    assert by_variant["sale"]["reward"] == shown["sale"]
    assert by_variant["classic"]["reward"] == 0
    assert by_variant["sale"]["probability"] > 0.95
    # The API processes learned it too: nearly every decision now shows the sale banner.
    time.sleep(1.0)
    later = [
        decide(engine, "home_hero", anonymousId=f"w{i}")["home_hero"]["variant"] for i in range(50)
    ]
    assert later.count("sale") >= 45
    assert shown["sale"] > 150  # it shifted during the run, not just after


def test_decisions_and_rewards_reach_clickhouse(engine: Engine) -> None:
    put_placement(
        engine, "home_hero", {**HERO, "policy": {"kind": "epsilon_greedy", "epsilon": 1.0}}
    )
    wait_catalog(engine, "home_hero")
    decision = decide(engine, "home_hero", **signed(engine, "u7"), anonymousId="a7",
                      context={"page": {"url": "https://shop.example/"}})["home_hero"]  # fmt: skip
    engine.post("/v1/track", {"userId": "u7", "event": "Decision Clicked",
                              "properties": {"decisionId": decision["decisionId"]}})  # fmt: skip
    rows = eventually(lambda: engine.sql(
        "SELECT decisionId, placement, variant, propensity, policy, userId, anonymousId, "
        "JSONExtractString(context, 'page', 'url') FROM decisions WHERE placement = 'home_hero' "
        "AND anonymousId = 'a7'"))  # fmt: skip
    assert rows == [[decision["decisionId"], "home_hero", decision["variant"], 0.5,
                     "epsilon_greedy", "u7", "a7", "https://shop.example/"]]  # fmt: skip
    rewarded = eventually(lambda: engine.sql(
        "SELECT JSONExtractString(properties, 'decisionId'), JSONExtractFloat(properties, 'reward'),"
        " user_id FROM events WHERE event = 'Decision Rewarded'"))  # fmt: skip
    assert rewarded == [[decision["decisionId"], 1.0, "u7"]]


def test_a_decision_id_carries_its_reward_and_nothing_is_kept_per_decision(
    engine: Engine,
) -> None:
    put_placement(engine, "home_hero", HERO)
    wait_catalog(engine, "home_hero")
    decision = decide(engine, "home_hero", anonymousId="v1")["home_hero"]
    with redis_client(engine.settings.redis_url) as client:
        published = client.get(SIGNING_KEY)  # for the reward worker, which has no secret key
        assert published == DecisionIds.of_secret(SECRET_KEY).key
        claim = DecisionIds(published).verify(decision["decisionId"])
        assert claim is not None and abs(claim.at - time.time() * 1000) < 60_000
        assert claim.arm == ["classic", "sale"].index(decision["variant"])
        assert claim.propensity == pytest.approx(decision["propensity"], rel=5e-4)
        engine.post("/v1/track", {"anonymousId": "v1", "event": "Decision Clicked",
                                  "properties": {"decisionId": decision["decisionId"]}})  # fmt: skip
        eventually(lambda: sum(v["reward"] for v in placement(engine, "home_hero")["learned"]
                               ["variants"]) == 1)  # fmt: skip
        stored = sorted(k.decode() for k in client.scan_iter(count=1000))
        assert not [k for k in stored if k.startswith("{d:")]  # no record per decision
        latest = client.hget("{dv:anonymous_id:v1}", "dl:home_hero")
        assert latest is not None and json.loads(latest) == [decision["decisionId"], []]


def test_a_conversion_rewards_the_latest_decision_with_its_revenue(engine: Engine) -> None:
    put_placement(engine, "cart_offer", {
        "default": "none",
        "policy": {"kind": "gaussian_thompson"},
        "reward": {"kind": "revenue", "event": "Order Completed", "window_hours": 24},
        "variants": [{"key": "none"}, {"key": "free_shipping"}, {"key": "ten_off"}],
    })  # fmt: skip
    wait_catalog(engine, "cart_offer")
    first = decide(engine, "cart_offer", anonymousId="shopper")["cart_offer"]
    latest = decide(engine, "cart_offer", anonymousId="shopper")["cart_offer"]
    # The shopper logs in and orders: the event carries both ids; the latest decision earns it.
    engine.post("/v1/track", {"anonymousId": "shopper", "userId": "u1", "event": "Order Completed",
                              "properties": {"revenue": 42.5}})  # fmt: skip
    engine.post(
        "/v1/track",
        {"anonymousId": "shopper", "event": "Order Completed", "properties": {"revenue": 10}},
    )  # once per decision: this one earns nothing

    def rewarded() -> list[Any]:
        return engine.sql("SELECT JSONExtractString(properties, 'decisionId'), "
                          "JSONExtractFloat(properties, 'reward') FROM events "
                          "WHERE event = 'Decision Rewarded'")  # fmt: skip

    assert eventually(rewarded) == [[latest["decisionId"], 42.5]]
    state = placement(engine, "cart_offer")["learned"]
    by_variant = {v["variant"]: v for v in state["variants"]}
    assert by_variant[latest["variant"]]["reward"] == 42.5
    assert state["decisions"] == 3  # the shopper's two, and wait_catalog's probe
    assert first["decisionId"] != latest["decisionId"]


def test_ab_assignment_is_sticky_across_processes_and_edits(
    engine_factory: Any, settings: Any
) -> None:
    one = engine_factory(settings)
    two = engine_factory(settings, sink=False, profiles=False, rewards=False)
    put_placement(one, "pdp_layout", {"policy": {"kind": "ab"}, "default": "control",
                                      "variants": [{"key": "control"}, {"key": "gallery"}]})  # fmt: skip
    wait_catalog(one, "pdp_layout")
    wait_catalog(two, "pdp_layout")
    units = [f"unit{i}" for i in range(200)]
    first = {u: decide(one, "pdp_layout", anonymousId=u)["pdp_layout"] for u in units}
    assert all(decide(two, "pdp_layout", anonymousId=u)["pdp_layout"]["variant"] == first[u]["variant"]
               for u in units)  # fmt: skip
    split = sum(first[u]["variant"] == "gallery" for u in units) / len(units)
    assert 0.35 < split < 0.65
    assert {d["propensity"] for d in first.values()} == {0.5}
    eventually(lambda: placement(one, "pdp_layout")["learned"]["decisions"] >= 400)
    # Reweight heavily toward a new variant: everyone assigned before keeps their variant.
    put_placement(one, "pdp_layout", {"policy": {"kind": "ab"}, "default": "control",
                                      "variants": [{"key": "control", "weight": 1},
                                                   {"key": "gallery", "weight": 1},
                                                   {"key": "video", "weight": 8}]})  # fmt: skip
    time.sleep(1.2)  # both processes' catalogs refresh
    for engine in (one, two):
        again = {
            u: decide(engine, "pdp_layout", anonymousId=u)["pdp_layout"]["variant"] for u in units
        }
        assert again == {u: first[u]["variant"] for u in units}
    newcomers = [
        decide(one, "pdp_layout", anonymousId=f"new{i}")["pdp_layout"]["variant"]
        for i in range(100)
    ]
    assert newcomers.count("video") > 60


def test_eligibility_and_templates_use_the_profile(engine: Engine) -> None:
    put_placement(engine, "welcome", {
        "default": "generic",
        "eligibility": {"field": "traits.plan", "op": "eq", "value": "pro"},
        "variants": [
            {"key": "generic", "content": {"text": "Welcome"}},
            {"key": "named", "template": "<p>Hi {{ first_name }}</p>", "content": {"cta": "/pro"}},
        ],
        "policy": {"kind": "epsilon_greedy", "epsilon": 1.0},
    })  # fmt: skip
    wait_catalog(engine, "welcome")
    shown = decide(engine, "welcome", **signed(engine, "ada"))["welcome"]
    assert {k: v for k, v in shown.items() if k != "decisionId"} == {
        "variant": "generic", "fallback": "ineligible", "propensity": 1.0,
        "content": {"text": "Welcome"}}  # fmt: skip
    engine.post("/v1/identify", {"userId": "ada", "traits": {"plan": "pro", "first_name": "<Ada>"}})
    ada = signed(engine, "ada")
    eventually(lambda: "fallback" not in decide(engine, "welcome", **ada)["welcome"])
    named = [decide(engine, "welcome", **ada, anonymousId=f"dev{i}")["welcome"] for i in range(40)]
    rendered = [d["content"] for d in named if d["variant"] == "named"]
    assert rendered and rendered[0] == {"html": "<p>Hi &lt;Ada&gt;</p>", "cta": "/pro"}


def test_contextual_policies_log_their_features(engine: Engine) -> None:
    put_placement(engine, "pdp_recs", {
        "policy": {"kind": "linucb", "features": ["bias", "device:mobile", "source:search"]},
        "variants": [{"key": "similar"}, {"key": "bestsellers"}],
    })  # fmt: skip
    wait_catalog(engine, "pdp_recs")
    decide(engine, "pdp_recs", anonymousId="m1",
           context={"userAgent": "Mozilla/5.0 (iPhone; Mobile)",
                    "page": {"referrer": "https://www.google.com/"}})  # fmt: skip
    answer = engine.client.post(engine.url + "/v1/decide",
                                json={"anonymousId": "d1", "placements": ["pdp_recs"],
                                      "writeKey": engine.settings.write_key},
                                headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    rows = eventually(lambda: len(found := engine.sql(
        "SELECT anonymousId, features FROM decisions WHERE anonymousId != 'probe' "
        "ORDER BY anonymousId")) == 2 and found)  # fmt: skip
    assert rows == [["d1", [1.0, 0.0, 0.0]], ["m1", [1.0, 1.0, 1.0]]]


def test_an_edit_reaches_the_decide_path_within_a_second(engine: Engine) -> None:
    put_placement(engine, "banner", {"variants": [{"key": "old"}]})
    wait_catalog(engine, "banner")
    assert decide(engine, "banner")["banner"]["variant"] == "old"
    put_placement(engine, "banner", {"variants": [{"key": "new"}]})
    started = time.monotonic()
    eventually(lambda: decide(engine, "banner")["banner"]["variant"] == "new", timeout=5)
    assert time.monotonic() - started < 1.5


def test_the_process_that_took_a_change_serves_it_at_once(engine: Engine) -> None:
    """PUT then decide, DELETE then decide, with no wait between: the API process refreshes its
    catalog before it answers a change (the background refresh is 0.5 s apart, so without that
    nearly every round here would see the old catalog)."""
    recs = {"recommend": {"n": 2}, "reward": {"kind": "items"}, "variants": [{"key": "popular"}]}
    for n in range(8):
        put_placement(engine, "banner", {"variants": [{"key": f"v{n}"}]})
        assert decide(engine, "banner", anonymousId=f"a{n}")["banner"]["variant"] == f"v{n}"
        put_placement(engine, "email_recs", recs)
        found = engine.client.get(f"{engine.url}/v1/recommendations/user_id:u{n}",
                                  params={"placement": "email_recs"}, headers=bearer())  # fmt: skip
        assert found.status_code == 200, found.text
        for key in ("banner", "email_recs"):
            gone = engine.client.delete(f"{engine.url}/v1/placements/{key}", headers=bearer())
            assert gone.status_code == 200, gone.text
        answer = engine.post("/v1/decide", {"anonymousId": f"a{n}", "placements": ["banner"]})
        assert answer.status_code == 404, answer.text
        found = engine.client.get(f"{engine.url}/v1/recommendations/user_id:u{n}",
                                  params={"placement": "email_recs"}, headers=bearer())  # fmt: skip
        assert found.status_code == 404, found.text


def test_a_stored_placement_that_no_longer_loads_does_not_stop_the_others(
    engine: Engine, r: Any
) -> None:
    """A definition saved before a check refused it (here: a policy no longer known) is
    skipped; the other placements keep refreshing."""
    put_placement(engine, "banner", {"variants": [{"key": "old"}]})
    wait_catalog(engine, "banner")
    raw = json.loads(r.hget(DEFS, "banner"))
    raw["policy"] = {"kind": "retired"}
    r.hset(DEFS, "legacy", json.dumps(raw))
    put_placement(engine, "banner", {"variants": [{"key": "new"}]})
    eventually(lambda: decide(engine, "banner")["banner"]["variant"] == "new", timeout=5)
    answer = engine.post("/v1/decide", {"anonymousId": "a1", "placements": ["legacy"]})
    assert answer.status_code == 404, answer.text


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"anonymousId": "a1"}, 400, "$.placements: required field is missing"),
        ({"anonymousId": "a1", "placements": []}, 400, "$.placements"),
        ({"anonymousId": "a1", "placements": ["Home Hero"]}, 400, "$.placements[0]"),
        ({"placements": ["home_hero"]}, 400, "`userId` or `anonymousId`"),
        ({"anonymousId": "undefined", "placements": ["home_hero"]}, 400, "$.anonymousId"),
        ({"anonymousId": "a1", "placements": ["home_hero"], "context": []}, 400, "$.context"),
        ({"anonymousId": "a1", "placements": ["home_hero"], "contxt": {}}, 400, "contxt"),
        ({"anonymousId": "a1", "placements": ["nope"]}, 404, "no placement 'nope'"),
    ],
)
def test_bad_decide_requests_are_named(
    engine: Engine, body: Any, status: int, fragment: str
) -> None:
    put_placement(engine, "home_hero", HERO)
    wait_catalog(engine, "home_hero")
    answer = engine.post("/v1/decide", body)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["message"]


def test_decide_wants_the_write_key_and_names_unknown_placements(engine: Engine) -> None:
    put_placement(engine, "home_hero", HERO)
    wait_catalog(engine, "home_hero")
    assert engine.post("/v1/decide", {"anonymousId": "a", "placements": ["home_hero"]},
                       key="wk_wrong").status_code == 401  # fmt: skip
    answer = engine.post("/v1/decide", {"anonymousId": "a", "placements": ["home_hero", "gone"]})
    assert answer.status_code == 200
    assert answer.json()["errors"] == {"gone": "no placement 'gone'"}
    assert set(answer.json()["decisions"]) == {"home_hero"}


def test_decide_answers_the_shops_origin_only(engine_factory: Any, settings: Any) -> None:
    engine = engine_factory(settings, cors_origins=("https://shop.example",), sink=False)
    put_placement(engine, "home_hero", HERO)
    wait_catalog(engine, "home_hero")
    ask = {"anonymousId": "a", "placements": ["home_hero"]}
    for origin, allowed in (("https://shop.example", True), ("https://evil.example", False)):
        preflight = engine.client.options(
            engine.url + "/v1/decide",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"},
        )  # fmt: skip
        assert preflight.status_code == (200 if allowed else 400)
        answer = engine.post("/v1/decide", ask, headers={"Origin": origin})
        assert answer.status_code == 200, answer.text
        assert answer.headers.get("access-control-allow-origin") == (origin if allowed else None)
        assert answer.headers["vary"] == "Origin"
    assert "access-control-allow-headers" not in preflight.headers  # the refused one
    assert engine.client.get(engine.url + "/v1/decide").status_code == 405


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"variants": []}, "$.variants"),
        ({"variants": [{"key": "a"}, {"key": "a"}]}, "distinct"),
        ({"variants": [{"key": "a"}], "default": "b"}, "default"),
        ({"variants": [{"key": "a"}], "policy": {"kind": "linucb"}}, "features"),
        ({"variants": [{"key": "a"}], "policy": {"kind": "bandit"}}, "$.policy.kind"),
        ({"variants": [{"key": "a"}], "reward": {"kind": "conversion"}}, "reward.event"),
        ({"variants": [{"key": "a", "template": "{{ oops"}]}, "template"),
        ({"variants": [{"key": "a", "weight": -1}]}, "$.variants[0].weight"),
    ],
)
def test_bad_placements_are_refused_with_the_field(
    engine: Engine, body: Any, fragment: str
) -> None:
    answer = engine.client.put(f"{engine.url}/v1/placements/p1", json=body, headers=bearer())
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["message"]


def test_placement_admin_api(engine: Engine) -> None:
    assert (
        engine.client.get(f"{engine.url}/v1/placements", headers=bearer("wk_test")).status_code
        == 403
    )
    created = put_placement(engine, "home_hero", HERO)
    assert created["created"] is True and created["revision"] > 0
    same = put_placement(engine, "home_hero", HERO)
    assert same == {**created, "created": False, "changed": False}
    listed = engine.client.get(f"{engine.url}/v1/placements", headers=bearer()).json()
    assert listed["placements"][0]["variants"] == ["classic", "sale"]
    shown = placement(engine, "home_hero")
    assert shown["learned"]["variants"][0] == {"variant": "classic", "decisions": 0.0, "reward": 0.0,
                                               "mean": None, "probability": 0.5,
                                               "posterior": [0.025, 0.975]}  # Beta(1, 1)  # fmt: skip
    deleted = engine.client.delete(f"{engine.url}/v1/placements/home_hero", headers=bearer())
    assert deleted.status_code == 200
    assert (
        engine.client.get(f"{engine.url}/v1/placements/home_hero", headers=bearer()).status_code
        == 404
    )


def test_off_policy_evaluation_over_the_decision_log(engine: Engine) -> None:
    """A uniformly random log; the candidate "always show sale" is evaluated before launch."""
    put_placement(
        engine, "home_hero", {**HERO, "policy": {"kind": "epsilon_greedy", "epsilon": 1.0}}
    )
    wait_catalog(engine, "home_hero")
    rates = {"classic": 0.1, "sale": 0.4}
    rng = np.random.default_rng(11)
    started = time.time()
    for visitor in range(1200):
        decision = decide(engine, "home_hero", anonymousId=f"v{visitor}")["home_hero"]
        if rng.random() < rates[decision["variant"]]:
            engine.post("/v1/track", {"anonymousId": f"v{visitor}", "event": "Decision Clicked",
                                      "properties": {"decisionId": decision["decisionId"]}})  # fmt: skip
    finished = time.time()
    eventually(lambda: engine.sql("SELECT count() FROM decisions")[0][0] == 1201)
    eventually(lambda: placement(engine, "home_hero")["learned"]["decisions"] >= 1200)
    time.sleep(1.0)  # the last rewards reach ClickHouse
    window = {"since": _iso(started - 60), "until": _iso(time.time() + 60), "train_share": 0.01}
    answer = engine.client.post(f"{engine.url}/v1/placements/home_hero/evaluate", headers=bearer(),
                                json={"policy": {"kind": "ab"}, **window})  # fmt: skip
    assert answer.status_code == 200, answer.text
    # "ab" with the placement's equal weights is the logging policy itself: its value is the
    # logged click rate, about (0.1 + 0.4) / 2.
    result = answer.json()
    assert result["decisions"]["train"] + result["decisions"]["evaluate"] == 1201
    logged = result["estimates"]["logged"]
    assert logged["low"] < 0.25 < logged["high"]
    for method in ("ips", "snips"):  # weights are all 1: exactly the logged mean
        assert abs(result["estimates"][method]["value"] - logged["value"]) < 1e-9
    assert abs(result["estimates"]["dr"]["value"] - logged["value"]) < 0.01
    # Greedy learns from the first half of the traffic, and is judged on the second.
    halves = {"since": _iso(started - 1), "until": _iso(finished + 1), "train_share": 0.5}
    greedy = engine.client.get(f"{engine.url}/v1/placements/home_hero/evaluate", headers=bearer(),
                               params={"kind": "epsilon_greedy", "epsilon": "0", **halves})  # fmt: skip
    assert greedy.status_code == 200, greedy.text
    estimate = greedy.json()["estimates"]["snips"]
    assert estimate["low"] < 0.4 < estimate["high"]  # it learns "sale" and earns its rate
    assert estimate["low"] > logged["high"] - 0.05
    bad = engine.client.get(f"{engine.url}/v1/placements/home_hero/evaluate", headers=bearer(),
                            params={"kind": "linucb"})  # fmt: skip
    assert bad.status_code == 400 and "features" in bad.json()["message"]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def test_with_redis_down_or_stuck_decide_still_answers_defaults(
    engine_factory: Any, settings: Any, tmp_path: Any
) -> None:
    own = EmbeddedRedis(tmp_path)
    engine = engine_factory(
        replace(settings, redis_url=own.start()), sink=False, profiles=False, rewards=False
    )
    put_placement(engine, "home_hero", {**HERO, "default": "sale"})
    wait_catalog(engine, "home_hero")
    assert "fallback" not in decide(engine, "home_hero")["home_hero"]
    assert own.process is not None
    try:
        own.process.send_signal(signal.SIGSTOP)  # stuck: Redis takes the request, never answers
        started = time.monotonic()
        stuck = decide(engine, "home_hero")["home_hero"]
        assert time.monotonic() - started < 2.0  # the 50 ms budget, not a hang
        assert {k: stuck[k] for k in ("variant", "fallback", "content")} == {
            "variant": "sale",
            "fallback": "timeout",
            "content": {"image": "/img/sale.jpg"},
        }
        own.process.send_signal(signal.SIGCONT)
        time.sleep(1.2)  # after a failure, decide leaves Redis alone for a second
        assert "fallback" not in decide(engine, "home_hero")["home_hero"]
    finally:
        own.process.send_signal(signal.SIGCONT)
    own.stop()  # down: connections refused
    for _ in range(3):
        down = decide(engine, "home_hero", userId="u1")["home_hero"]
        assert down["variant"] == "sale" and down["fallback"] == "redis_unavailable"
        assert down["propensity"] == 1.0
    time.sleep(1.2)
    assert decide(engine, "home_hero")["home_hero"]["fallback"] == "redis_unavailable"
    own.start()  # back: decisions come from the policy again
    try:
        eventually(lambda: "fallback" not in decide(engine, "home_hero")["home_hero"], timeout=10)
    finally:
        own.stop()


def test_erasure_deletes_the_persons_decisions_too(engine: Engine) -> None:
    put_placement(engine, "home_hero", HERO)
    wait_catalog(engine, "home_hero")
    engine.post("/v1/identify", {"userId": "fay", "anonymousId": "fay-phone"})
    eventually(lambda: engine.client.get(f"{engine.url}/v1/profiles/user_id:fay",
                                         headers=bearer()).status_code == 200)  # fmt: skip
    decide(engine, "home_hero", **signed(engine, "fay"), anonymousId="fay-phone")
    decide(engine, "home_hero", **signed(engine, "gus"))
    count = "SELECT count() FROM decisions WHERE userId = 'fay' OR anonymousId = 'fay-phone'"
    eventually(lambda: engine.sql(count) == [[1]])
    answer = engine.client.delete(f"{engine.url}/v1/profiles/user_id:fay", headers=bearer())
    assert answer.status_code == 202
    eventually(lambda: engine.sql(count) == [[0]])
    assert engine.sql("SELECT count() FROM decisions WHERE userId = 'gus'") == [[1]]
    # Erased people keep getting pages, from defaults, and leave no decisions behind.
    time.sleep(1.1)  # this process's suppression list refreshes each second
    again = decide(engine, "home_hero", anonymousId="fay-phone")["home_hero"]
    assert again["fallback"] == "suppressed" and again["variant"] == "classic"
    decide(engine, "home_hero", **signed(engine, "gus"))
    eventually(lambda: engine.sql("SELECT count() FROM decisions WHERE userId = 'gus'") == [[2]])
    assert engine.sql(count) == [[0]]
