"""``kairos up --demo``: the shop, its placements and its simulated history, as a new user gets
them from the first README command."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from decisions.identity import user_hash
from edge.pages.demo import PLACEMENTS, SHOPPER
from profiles.shoppers import ShopperStream
from tests.conftest import IDENTITY_SECRET, SECRET_KEY, WRITE_KEY, Process, basic
from tests.helpers import bearer, eventually


@pytest.mark.slow  # a whole `kairos up --demo`
def test_up_with_the_demo(kairos_process: Callable[..., Process]) -> None:
    started = time.monotonic()
    engine = kairos_process("--demo").start()
    with httpx.Client(base_url=engine.url, timeout=30) as client:
        _decided(engine, client, started)
        _stamped(client)
        _check(engine, client)


def _decided(engine: Process, client: httpx.Client, started: float) -> None:
    """Within a minute of the start, the simulated shoppers' live sessions have been decided,
    and clicked and bought by what they were shown: every placement has results in more than
    one variant, the dashboard draws them, off-policy evaluation has decisions to replay."""

    def results(key: str, least: int = 1) -> dict[str, int]:
        found = client.get(f"/v1/placements/{key}/results", headers=bearer()).json()
        units = {v["variant"]: v["units"] for v in found["variants"] if v["units"]}
        return units if len(units) > 1 and sum(units.values()) >= least else {}

    def left() -> float:  # of the minute since `kairos up --demo` was run
        return max(1.0, started + 60 - time.monotonic())

    eventually(lambda: results("home_hero", least=50), timeout=left())
    log = engine.data_dir / "engine.log"
    eventually(lambda: '"demo history sent"' in log.read_text(), timeout=left())  # and live
    for key in PLACEMENTS:
        assert len(results(key)) > 1, key
    rewards = eventually(lambda: client.post("/v1/sql", headers=bearer(), json={"query": (
        "SELECT JSONExtractString(properties, 'placement') AS p, count() FROM events "
        "WHERE event = 'Decision Rewarded' GROUP BY p ORDER BY p")}).json()["rows"], timeout=20)  # fmt: skip
    assert {p for p, _ in rewards} >= {"home_hero", "pdp_recs"}, rewards
    # Off-policy evaluation waits out a reward window by default (a day for home_hero, so that
    # every decision evaluated had its chance to earn); over the live run it replays them now.
    ((first, last),) = client.post("/v1/sql", headers=bearer(), json={"query": (
        "SELECT toString(min(timestamp)), toString(max(timestamp) + toIntervalMillisecond(1)) "
        "FROM decisions WHERE placement = 'home_hero'")}).json()["rows"]  # fmt: skip
    window = {"kind": "epsilon_greedy", "since": first + "Z", "until": last + "Z"}
    evaluated = client.get("/v1/placements/home_hero/evaluate", params=window, headers=bearer())
    assert evaluated.status_code == 200, evaluated.text
    replayed = evaluated.json()["decisions"]
    assert replayed["train"] > 0 and replayed["evaluate"] > 0, replayed
    with httpx.Client(base_url=client.base_url, timeout=30) as browser:
        form = browser.get("/dashboard/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        browser.post("/dashboard/login", data={"key": SECRET_KEY, "csrf": csrf.group(1)})
        page = browser.get("/dashboard/placements/home_hero")
    assert page.status_code == 200 and page.text.count("<polyline") >= 2  # a line per variant


def _stamped(client: httpx.Client) -> None:
    """Every demo event is stored with its profile id (the history is sent once the profile
    updater reads the spool, and the sink waits for the ids of an updater about to read)."""
    history = sum(1 for _ in ShopperStream(shoppers=600, days=13.9, seed=2026).messages())

    def sql(query: str) -> int:
        return int(
            client.post("/v1/sql", headers=bearer(), json={"query": query}).json()["rows"][0][0]
        )

    eventually(lambda: sql("SELECT count() FROM events WHERE startsWith(message_id, 'sim-2026-')")
               == history, timeout=60)  # fmt: skip
    assert sql("SELECT count() FROM events WHERE profile_id = ''") == 0
    assert sql("SELECT count() FROM events") > history  # the live sessions' events too


def _check(engine: Process, client: httpx.Client) -> None:
    home = client.get("/demo")
    assert home.status_code == 200 and 'data-kairos-slot="home_hero"' in home.text
    assert "/sdk/v1/kairos.js" in home.text and '"wk_test"' in home.text  # the public key
    listed = client.get("/v1/placements", headers=bearer()).json()["placements"]
    assert set(PLACEMENTS) <= {p["key"] for p in listed}
    page = client.get("/demo/products/sku-hat-1")
    assert page.status_code == 200 and 'data-kairos-product="sku-hat-1"' in page.text
    assert client.get("/demo/products/nope").status_code == 404
    assert client.get("/demo/c/nope").status_code == 404
    svg = client.get("/demo/img/sku-hat-1.svg")
    assert svg.headers["content-type"] == "image/svg+xml" and "Hats 1" in svg.text
    # The simulated history arrives in the background, then the lists are recomputed.
    store = redis.Redis(unix_socket_path=str(engine.data_dir / "redis" / "redis.sock"))
    eventually(lambda: store.hexists("{rec}:lists", "popular"), timeout=120)
    store.close()
    found = client.get("/v1/recommendations/anonymous_id:sim-1?placement=pdp_recs",
                       headers=bearer()).json()  # fmt: skip
    assert len(found["items"]) == 4
    _sign_in(client)
    # A second start keeps what the growth team changed.
    client.put("/v1/placements/cart_offer", headers=bearer(),
               json={"variants": [{"key": "none"}]})  # fmt: skip
    assert engine.stop() == 0
    engine.start()
    offer = client.get("/v1/placements/cart_offer", headers=bearer()).json()
    assert [v["key"] for v in offer["variants"]] == ["none"]
    engine.stop()


def _options(page: str) -> dict[str, Any]:
    """The options the page's snippet passes to the SDK (its last argument)."""
    found = re.search(r',(\{"slotTimeout"[^}]*\})\);', page)
    assert found, page[:2000]
    return dict(json.loads(found.group(1)))


def _sign_in(client: httpx.Client) -> None:
    """The demo signs its shopper in server-side: the hero greets her by name, and only her."""
    assert "userHash" not in _options(client.get("/demo").text)
    refused = client.post("/demo/login", data={"first_name": "", "email": "x"})
    assert refused.status_code == 400 and "first_name" in refused.text
    client.cookies.set("kairos_aid", "ada-device", path="/")  # what the SDK keeps
    signed = client.post("/demo/login", data={"first_name": "Ada", "email": "ada@example.com"})
    assert signed.status_code == 303 and signed.headers["location"] == "/demo"
    options = _options(client.get("/demo").text)
    uid = options["userId"]
    assert uid.startswith("demo-") and options["userHash"] == user_hash(IDENTITY_SECRET, uid)

    def hero(**who: Any) -> str:
        answer = client.post("/v1/decide", json={"placements": ["home_hero"], **who},
                             headers=basic(WRITE_KEY))  # fmt: skip
        assert answer.status_code == 200, answer.text
        return str(answer.json()["decisions"]["home_hero"]["content"])

    verified = {"anonymousId": "ada-device", **options}
    del verified["slotTimeout"]
    greeted = eventually(lambda: "Hi Ada" in (shown := hero(**verified)) and shown)
    assert "<p>Hi Ada: " in greeted
    assert "Hi Ada" not in hero(anonymousId="ada-device", userId=uid)  # unsigned: the device only
    assert "Hi Ada" not in hero(anonymousId="ada-device")  # her profile now: needs her hash
    # A cookie the demo did not make gets no signature (the demo signs only its own ids).
    other_id = uid[:-1] + ("1" if uid.endswith("0") else "0")  # another id, her hash
    forged = httpx.Cookies({SHOPPER: f"{other_id}.{options['userHash']}"})
    with httpx.Client(base_url=str(client.base_url), cookies=forged) as other:
        assert "userHash" not in _options(other.get("/demo").text)
    out = client.post("/demo/logout")
    assert out.status_code == 303 and out.headers["location"] == "/demo?signed_out=1"
    page = client.get(out.headers["location"]).text
    assert "kairos.reset()" in page and "userHash" not in _options(page)
