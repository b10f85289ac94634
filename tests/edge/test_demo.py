"""``kairos up --demo``: the shop, its placements and its simulated history, as a new user gets
them from the first README command."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from decisions.identity import user_hash
from edge.pages.demo import PLACEMENTS, SHOPPER
from tests.conftest import IDENTITY_SECRET, WRITE_KEY, Process, basic
from tests.helpers import bearer, eventually


@pytest.mark.slow  # a whole `kairos up --demo`
def test_up_with_the_demo(kairos_process: Callable[..., Process]) -> None:
    engine = kairos_process("--demo").start()
    with httpx.Client(base_url=engine.url, timeout=30) as client:
        _check(engine, client)


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
    forged = httpx.Cookies({SHOPPER: f"{uid[:-1]}0.{options['userHash']}"})
    with httpx.Client(base_url=str(client.base_url), cookies=forged) as other:
        assert "userHash" not in _options(other.get("/demo").text)
    out = client.post("/demo/logout")
    assert out.status_code == 303 and out.headers["location"] == "/demo?signed_out=1"
    page = client.get(out.headers["location"]).text
    assert "kairos.reset()" in page and "userHash" not in _options(page)
