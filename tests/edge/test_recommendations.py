"""Recommendation placements end to end on real Redis and embedded ClickHouse: the email API,
its tracked links and rendered blocks, the batch form, and the same placement on /v1/decide."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
import redis

from edge.runtime.stores import redis_client
from edge.runtime.workers import start
from profiles.strategies import RECS
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, worker_needs
from tests.helpers import (
    bearer,
    decide,
    eventually,
    placement,
    put_placement,
    signed,
    wait_catalog,
)

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

SHOP = "https://shop.example/p/"
ITEMS = [
    {"id": "hat1", "name": "Wool hat", "category": "hats", "price": 20},
    {"id": "hat2", "name": "<script>alert(1)</script>", "category": "hats", "price": 35},
    {"id": "hat3", "name": 'Sun hat & "visor"', "category": "hats", "price": 50},
    {"id": "shoe1", "name": "Runner", "category": "shoes", "price": 80, "stock": 0},
    {"id": "shoe2", "name": "Boot", "category": "shoes", "price": 120, "currency": "EUR"},
    {"id": "shoe3", "name": "Sandal", "category": "shoes", "price": 40},
    {"id": "bag1", "name": "Tote", "category": "bags", "price": 60, "available": False},
    {"id": "bag2", "name": "Backpack", "category": "bags", "price": 90},
]
LISTS = {
    "popular": [["shoe1", 9], ["hat2", 8], ["bag1", 7], ["hat1", 6], ["shoe2", 5], ["hat3", 4],
                ["shoe3", 3], ["bag2", 2]],
    "viewed:hat1": [["shoe1", 0.9], ["hat3", 0.8], ["bag2", 0.4]],
    "bought:shoe3": [["bag1", 0.9], ["shoe2", 0.5]],
}  # fmt: skip
EMAIL = {
    "name": "Picked for you",
    "recommend": {"n": 3},
    "reward": {"kind": "items", "window_hours": 168},
    "variants": [{"key": "popular"}, {"key": "viewed_together"},
                 {"key": "also_bought", "strategy": "bought_together"}],
}  # fmt: skip


@pytest.fixture
def shop(engine: Engine) -> Engine:
    """A catalog, cached lists, and Ada: viewed hat1, has shoe3 in her cart, just bought hat3."""
    answer = engine.post("/v1/catalog/items", {"items": [{**i, "url": SHOP + i["id"]} for i in ITEMS]},
                         key=None, headers=bearer())  # fmt: skip
    assert answer.status_code == 200, answer.text
    r = redis_client(engine.settings.redis_url)
    r.hset(RECS, mapping={k: msgspec.json.encode(v) for k, v in LISTS.items()})
    ada = {"userId": "ada", "anonymousId": "ada-browser"}
    batch = [
        {"type": "identify", **ada, "traits": {"email": "Ada@Example.com"}},
        {"type": "track", "event": "Order Completed", **ada,
         "properties": {"products": [{"product_id": "hat3"}]}},
        {"type": "track", "event": "Product Viewed", **ada, "properties": {"product_id": "hat1"}},
        {"type": "track", "event": "Product Added", **ada, "properties": {"product_id": "shoe3"}},
    ]  # fmt: skip
    assert engine.post("/v1/batch", {"batch": batch}).status_code == 200
    eventually(lambda: engine.client.get(f"{engine.url}/v1/profiles/user_id:ada",
                                         headers=bearer()).json().get("computed", {}).get("cart"))  # fmt: skip
    put_placement(engine, "email_weekly", EMAIL)
    wait_catalog(engine, "email_weekly")
    return engine


def get(engine: Engine, path: str, **params: Any) -> Any:
    answer = engine.client.get(engine.url + path, params=params, headers=bearer())
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_never_out_of_stock_nor_just_bought(shop: Engine) -> None:
    seen: dict[str, set[str]] = {}
    for _ in range(40):
        found = get(shop, "/v1/recommendations/user_id:ada", placement="email_weekly")
        assert found["decisionId"].startswith("d_") and found["placement"] == "email_weekly"
        assert found["strategy"] in ("popular", "viewed_together", "bought_together")
        assert len(found["items"]) == 3
        seen.setdefault(found["strategy"], set()).update(i["id"] for i in found["items"])
    every = set().union(*seen.values())
    assert not every & {"shoe1", "bag1"}  # out of stock, unavailable
    assert "hat3" not in every  # just bought
    assert "shoe3" not in every and "hat1" not in every  # in the cart; the item in view
    assert seen["viewed_together"] >= {"bag2"}  # hat1's neighbours, then popular's
    # The same person by email (normalised), and someone unknown: the shop-wide choice.
    by_email = get(shop, "/v1/recommendations/email:ada@example.com", placement="email_weekly", n=2)
    assert len(by_email["items"]) == 2 and not {i["id"] for i in by_email["items"]} & {"hat3"}
    stranger = get(shop, "/v1/recommendations/user_id:nobody", placement="email_weekly")
    assert [i["id"] for i in stranger["items"]] == ["hat2", "hat1", "shoe2"]  # popular, in stock
    # Decisions are logged with their items.
    logged = eventually(lambda: shop.sql(
        f"SELECT items, userId FROM decisions WHERE decisionId = '{found['decisionId']}'"))  # fmt: skip
    assert logged == [[[i["id"] for i in found["items"]], "ada"]]


def test_bad_requests_name_the_field(shop: Engine) -> None:
    put_placement(shop, "hero", {"variants": [{"key": "a"}]})
    wait_catalog(shop, "hero")
    cases = {
        "/v1/recommendations/user_id:ada": (400, "$.placement"),
        "/v1/recommendations/user_id:ada?placement=nope": (404, "$.placement"),
        "/v1/recommendations/user_id:ada?placement=hero": (400, "not a recommendation placement"),
        "/v1/recommendations/user_id:ada?placement=email_weekly&n=0": (400, "$.n"),
        "/v1/recommendations/phone:1?placement=email_weekly": (400, "$.id"),
        "/v1/recommendations/user_id:ada/render?placement=email_weekly&template=x": (400, "$.template"),
    }  # fmt: skip
    for path, (status, message) in cases.items():
        answer = shop.client.get(shop.url + path, headers=bearer())
        assert answer.status_code == status and message in answer.json()["message"], (
            path,
            answer.text,
        )
    assert shop.client.get(shop.url + "/v1/recommendations/user_id:ada?placement=email_weekly"
                           ).status_code == 401  # fmt: skip
    definitions = {
        "`strategy` must be one of": {"recommend": {}, "variants": [{"key": "random"}]},
        "needs a recommendation placement": {"variants": [{"key": "a", "strategy": "popular"}]},
        "`reward.kind` items": {"reward": {"kind": "items"}, "variants": [{"key": "a"}]},
        "$.recommend.n": {"recommend": {"n": 0}, "variants": [{"key": "popular"}]},
    }
    for message, body in definitions.items():
        answer = shop.client.put(f"{shop.url}/v1/placements/bad", json=body, headers=bearer())
        assert answer.status_code == 400, answer.text
        assert message in answer.json()["message"], answer.text


def test_click_redirects_only_to_the_item_and_rewards_the_strategy(shop: Engine) -> None:
    found = get(shop, "/v1/recommendations/user_id:ada", placement="email_weekly")
    item = found["items"][0]
    link = urlsplit(item["url"])
    assert link.path == f"/v1/r/{found['decisionId']}/{item['id']}"
    assert parse_qs(link.query)["to"] == [SHOP + item["id"]]
    eventually(lambda: shop.sql(
        f"SELECT 1 FROM decisions WHERE decisionId = '{found['decisionId']}'"))  # fmt: skip
    # Elsewhere is refused, whatever the decision: no open redirect.
    evil = shop.client.get(f"{shop.url}{link.path}", params={"to": "https://evil.example/"})
    assert evil.status_code == 400 and "$.to" in evil.json()["message"]
    other = shop.client.get(f"{shop.url}{link.path}", params={"to": SHOP + "bag2x"})
    assert other.status_code == 400
    clicked = shop.client.get(item["url"])  # no key: it is a link in an email
    assert clicked.status_code == 302 and clicked.headers["location"] == SHOP + item["id"]
    pixel = shop.client.get(f"{shop.url}/v1/o/{found['decisionId']}.gif")
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert pixel.content.startswith(b"GIF89a")
    query = (
        "SELECT event, JSONExtractString(properties, 'itemId'), user_id FROM events "
        f"WHERE JSONExtractString(properties, 'decisionId') = '{found['decisionId']}' "
        "AND event IN ('Decision Clicked', 'Email Opened', 'Decision Rewarded') ORDER BY event"
    )
    rows = eventually(lambda: rows if len(rows := shop.sql(query)) == 3 else None)
    assert rows == [["Decision Clicked", item["id"], "ada"], ["Decision Rewarded", "", "ada"],
                    ["Email Opened", "", "ada"]]  # fmt: skip
    learned = placement(shop, "email_weekly")["learned"]
    rewards = {v["variant"]: v["reward"] for v in learned["variants"]}
    variant = {"bought_together": "also_bought"}.get(found["strategy"], found["strategy"])
    assert rewards[variant] == 1 and sum(rewards.values()) == 1


def test_a_forged_link_still_redirects_but_records_nothing(shop: Engine) -> None:
    found = get(shop, "/v1/recommendations/user_id:ada", placement="email_weekly")
    item = found["items"][0]
    body = found["decisionId"][2:]
    forged = "d_" + body[:13] + ("A" if body[13] != "A" else "B") + body[14:]  # another arm
    eventually(lambda: shop.sql(
        f"SELECT 1 FROM decisions WHERE decisionId = '{found['decisionId']}'"))  # fmt: skip
    to = {"to": SHOP + item["id"]}
    answer = shop.client.get(f"{shop.url}/v1/r/{forged}/{item['id']}", params=to)
    assert answer.status_code == 302 and answer.headers["location"] == SHOP + item["id"]
    assert shop.client.get(f"{shop.url}/v1/o/{forged}.gif").status_code == 200
    made_up = shop.client.get(f"{shop.url}/v1/r/d_nope/{item['id']}", params=to)
    assert made_up.status_code == 400
    assert made_up.json()["message"] == "$.decisionId: not a decision id"
    assert shop.client.get(item["url"]).status_code == 302  # the real link, after the forged one
    query = (
        "SELECT JSONExtractString(properties, 'decisionId'), event FROM events "
        "WHERE event IN ('Decision Clicked', 'Email Opened', 'Decision Rewarded') ORDER BY event"
    )
    rows = eventually(lambda: rows if len(rows := shop.sql(query)) == 2 else None)
    assert rows == [[found["decisionId"], "Decision Clicked"],
                    [found["decisionId"], "Decision Rewarded"]]  # fmt: skip


def test_an_order_containing_a_recommended_item_rewards_it(shop: Engine) -> None:
    """On site: /v1/decide serves the placement (items, the variant's template), and an order
    holding one of the items rewards that decision."""
    put_placement(shop, "pdp_recs", {
        "recommend": {"n": 2, "max_price": 100}, "reward": {"kind": "items"},
        "policy": {"kind": "epsilon_greedy", "epsilon": 1.0},
        "variants": [{"key": "viewed_together",
                      "template": "<ul>{% for i in items %}<li>{{ i.name }}</li>{% endfor %}</ul>"}],
    })  # fmt: skip
    wait_catalog(shop, "pdp_recs")
    ada = {"anonymousId": "ada-browser", **signed(shop, "ada")}  # the shop signs her in
    first = decide(shop, "pdp_recs", **ada)["pdp_recs"]
    assert first["strategy"] == "viewed_together"
    assert [i["id"] for i in first["items"]] == ["bag2", "hat2"]  # hat3 bought; shoe2 too dear
    assert first["items"][1]["url"] == SHOP + "hat2"  # on site, the item's own URL
    assert (
        first["content"]
        == "<ul><li>Backpack</li><li>&lt;script&gt;alert(1)&lt;/script&gt;</li></ul>"
    )
    second = decide(shop, "pdp_recs", **ada)["pdp_recs"]
    eventually(lambda: shop.sql(
        f"SELECT 1 FROM decisions WHERE decisionId = '{second['decisionId']}'"))  # fmt: skip
    order = {"type": "track", "event": "Order Completed", "anonymousId": "ada-browser",
             "properties": {"products": [{"product_id": "bag2"}, {"product_id": "zzz"}]}}  # fmt: skip
    assert shop.post("/v1/batch", {"batch": [order]}).status_code == 200
    rewarded = eventually(lambda: shop.sql(
        "SELECT JSONExtractString(properties, 'decisionId') FROM events "
        "WHERE event = 'Decision Rewarded' AND JSONExtractString(properties, 'placement') = 'pdp_recs'"))  # fmt: skip
    assert rewarded == [[second["decisionId"]]]  # the newest decision that showed bag2, once


class _Checker(HTMLParser):
    """Fails on tags that do not nest (what an email client would mangle)."""

    VOID = {"img", "br", "hr", "meta", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"


def test_render_is_valid_escaped_html_with_a_pixel(shop: Engine) -> None:
    for template in ("grid", "list"):
        block = get(shop, "/v1/recommendations/user_id:nobody/render", placement="email_weekly",
                    template=template, n=4)  # fmt: skip
        names = [i["name"] for i in block["items"]]
        assert "<script>alert(1)</script>" in names  # popular's second: a stranger gets it
        checker = _Checker()
        checker.feed(block["html"])
        checker.close()
        assert checker.open == [] and "script" not in checker.tags
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in block["html"]
        assert f"/v1/o/{block['decisionId']}.gif" in block["html"]
        assert "Picked for you" in block["html"] and "style=" in block["html"]
        assert "class=" not in block["html"]  # inline styles only
        for item in block["items"]:
            assert item["url"].replace("&", "&amp;") in block["html"]
            assert item["url"] in block["text"]
        assert "<script>alert(1)</script>" in block["text"]  # plain text: shown as it is


def test_plain_text_keeps_each_item_on_lines_of_its_own(shop: Engine) -> None:
    """What a text-only mail client shows: the title, then per item its name and price, its link
    below, a blank line between items (they once ran together on one line)."""
    for template in ("grid", "list"):
        block = get(shop, "/v1/recommendations/user_id:nobody/render", placement="email_weekly",
                    template=template, n=2)  # fmt: skip
        first, second = block["items"]
        assert (first["id"], second["id"]) == ("hat2", "hat1")  # popular, in stock
        assert block["text"] == (
            "Picked for you\n"
            "\n"
            f"- <script>alert(1)</script> ($35.00)\n  {first['url']}\n"
            "\n"
            f"- Wool hat ($20.00)\n  {second['url']}\n"
        )


def test_batch(shop: Engine) -> None:
    recipients = ["user_id:ada", "email:ada@example.com", "user_id:nobody", "phone:5"]
    answer = shop.post("/v1/recommendations/batch", {"placement": "email_weekly", "n": 2,
                                                     "template": "list", "recipients": recipients},
                       key=None, headers=bearer())  # fmt: skip
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["recipient"] for r in results] == recipients
    assert all(len(r["items"]) == 2 and r["html"] and r["text"] for r in results[:3])
    assert len({r["decisionId"] for r in results[:3]}) == 3
    assert results[3]["error"]["code"] == "invalid_profile_id"
    too_many = shop.post("/v1/recommendations/batch", {"placement": "email_weekly",
                                                       "recipients": ["user_id:x"] * 1001},
                         key=None, headers=bearer())  # fmt: skip
    assert too_many.status_code == 400 and "$.recipients" in too_many.json()["message"]


def test_a_refresh_is_asked_through_the_api_and_the_cli(engine: Engine, r: redis.Redis) -> None:
    """``POST /v1/recommendations/refresh`` (secret key) answers 202 and the running worker
    recomputes the lists at its next pass, not ten minutes later; ``kairos recs refresh`` is
    that call."""
    r.hset(RECS, "stale", b"[]")  # what a refresh replaces
    stop = threading.Event()
    needs = worker_needs(
        engine.settings.redis_url, "test-recs", clickhouse_url=engine.settings.store_url
    )
    thread = start("recs", needs, stop, interval=0.05)
    try:
        eventually(lambda: not r.hexists(RECS, "stale"), timeout=10)  # its refresh at start
        for ask in ("api", "cli"):
            r.hset(RECS, "stale", b"[]")
            time.sleep(0.5)
            assert r.hexists(RECS, "stale")  # unasked, the next refresh is 10 minutes away
            if ask == "api":
                answer = engine.client.post(f"{engine.url}/v1/recommendations/refresh",
                                            headers=bearer())  # fmt: skip
                assert answer.status_code == 202, answer.text
                assert answer.json()["requested"] is True and answer.json()["lists"] == 1
            else:
                done = subprocess.run(
                    [sys.executable, "-m", "edge.cli", "recs", "refresh", "--url", engine.url,
                     "--secret-key", SECRET_KEY],
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                assert done.stdout == ("asked: the recommendations worker recomputes the "
                                       "candidate lists at its next pass (1 cached now)\n")  # fmt: skip
            eventually(lambda: not r.hexists(RECS, "stale"), timeout=10)
    finally:
        stop.set()
        thread.join(timeout=30)
    wrong = subprocess.run([sys.executable, "-m", "edge.cli", "recs", "refresh", "--url",
                            engine.url, "--secret-key", WRITE_KEY],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (
        wrong.returncode == 1
        and "forbidden: this endpoint needs the 'catalog:write' scope" in wrong.stderr
    )
