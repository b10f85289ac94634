"""``kairos up --demo``: the shop, its placements and its simulated history, as a new user gets
them from the first README command."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import redis

from edge.pages.demo import PLACEMENTS
from tests.conftest import Process
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
    # A second start keeps what the growth team changed.
    client.put("/v1/placements/cart_offer", headers=bearer(),
               json={"variants": [{"key": "none"}]})  # fmt: skip
    assert engine.stop() == 0
    engine.start()
    offer = client.get("/v1/placements/cart_offer", headers=bearer()).json()
    assert [v["key"] for v in offer["variants"]] == ["none"]
    engine.stop()
