"""Rate and size limits (edge.api.limits): per client IP, per key, and the cap on request bodies.

Rates are set low (one token every two seconds) so a slow machine cannot refill a bucket between
two requests of a test; the engine's own uvicorn takes ``X-Forwarded-For`` from 127.0.0.1, as
``kairos up`` does, which is how one test client stands for several addresses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.api.limits import Buckets, Limits, RequestLimits
from edge.runtime.config import ConfigError, load_config
from tests.conftest import SECRET_KEY, WRITE_KEY, basic

SLOW = {"burst": 4.0}  # with a rate of 0.5/s: two requests at once, then one every 2 s
TRACK = {"userId": "u1", "event": "Signed Up"}


def first_refusal(send: Any, tries: int = 10) -> tuple[int, httpx.Response]:
    """How many calls of ``send`` passed before the first 429, and that 429."""
    for passed in range(tries):
        answer = send()
        if answer.status_code == 429:
            return passed, answer
        assert answer.status_code < 400, answer.text
    raise AssertionError(f"no 429 in {tries} requests")


def from_ip(ip: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip, **headers}


def test_each_client_ip_has_its_own_limit(engine_factory: Any, settings: Any) -> None:
    limits = Limits(per_ip=0.5, per_key=0, **SLOW)
    engine = engine_factory(
        settings, limits=limits, sink=False, cors_origins=("https://shop.example",)
    )

    def track(ip: str, **headers: str) -> httpx.Response:
        return engine.post("/v1/track", TRACK, headers=from_ip(ip, **headers))

    passed, refused = first_refusal(lambda: track("203.0.113.7"))
    assert passed == 2
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["message"].startswith(
        "over the per-IP limit of 0.5 requests/s for 203.0.113.7 (limits.burst 4 s); retry after"
    )
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    # The raw decide path is limited as well; a browser can read the 429 (CORS is outside).
    decide = engine.client.post(
        engine.url + "/v1/decide", json={"anonymousId": "a", "placements": ["x"]},
        headers={**basic(WRITE_KEY), **from_ip("203.0.113.7"), "Origin": "https://shop.example"},
    )  # fmt: skip
    assert decide.status_code == 429
    assert decide.headers["access-control-allow-origin"] == "https://shop.example"
    assert track("203.0.113.8").status_code == 200  # another address: its own bucket
    # The secret key counts against its own bucket, not the address's: servers share addresses.
    profile = engine.client.get(engine.url + "/v1/profiles/user_id:u1",
                                headers=from_ip("203.0.113.7", Authorization=f"Bearer {SECRET_KEY}"))  # fmt: skip
    assert profile.status_code != 429
    # A trusted proxy's (or this machine's) own requests have no per-IP limit.
    assert all(engine.post("/v1/track", TRACK).status_code == 200 for _ in range(6))
    deadline = time.monotonic() + 30
    while track("203.0.113.7").status_code == 429:  # the bucket refills
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_each_key_has_its_own_limit(engine_factory: Any, settings: Any) -> None:
    engine = engine_factory(settings, limits=Limits(per_ip=0, per_key=0.5, **SLOW), sink=False)
    passed, refused = first_refusal(lambda: engine.post("/v1/track", TRACK))
    assert passed == 2 and refused.headers["retry-after"] in ("1", "2")
    assert refused.json()["message"].startswith(
        "over the write key's limit of 0.5 requests/s (limits.burst 4 s)"
    )
    assert WRITE_KEY not in refused.text

    def models() -> httpx.Response:
        return engine.client.get(engine.url + "/v1/models", headers={"Authorization": f"Bearer {SECRET_KEY}"})  # fmt: skip

    passed, refused = first_refusal(models)
    assert passed == 2 and refused.json()["message"].startswith("over the secret key's limit")
    # A made-up key has no bucket of its own (it gets a 401 and the per-IP limit).
    wrong = [engine.post("/v1/track", TRACK, key="wk_wrong").status_code for _ in range(6)]
    assert wrong == [401] * 6


def test_a_named_key_has_its_own_bucket_at_its_own_rate_or_the_default(
    engine_factory: Any, settings: Any
) -> None:
    engine = engine_factory(settings, limits=Limits(per_ip=0, per_key=0.5, **SLOW), sink=False)
    secret = {"Authorization": f"Bearer {SECRET_KEY}"}
    made: dict[str, str] = {}
    for name, rate in (("plain", None), ("fast", 100.0), ("slow", 0.25)):
        ask = {"name": name, "scopes": ["read"], **({"rate": rate} if rate else {})}
        answer = engine.client.post(engine.url + "/v1/keys", json=ask, headers=secret)
        if answer.status_code == 429:  # the secret key's own bucket (two at once)
            time.sleep(float(answer.headers["retry-after"]))
            answer = engine.client.post(engine.url + "/v1/keys", json=ask, headers=secret)
        assert answer.status_code == 201, answer.text
        assert answer.json().get("rate", 0) == (rate or 0)
        made[name] = answer.json()["key"]

    def models(name: str) -> httpx.Response:
        return engine.client.get(engine.url + "/v1/models",
                                 headers={"Authorization": f"Bearer {made[name]}"})  # fmt: skip

    passed, refused = first_refusal(lambda: models("plain"))
    assert passed == 2 and refused.json()["message"].startswith(
        "over the 'plain' key's limit of 0.5 requests/s (limits.burst 4 s)"
    )
    assert made["plain"] not in refused.text
    passed, refused = first_refusal(lambda: models("slow"))  # 0.25/s × 4 s: one at once
    assert passed == 1 and "the 'slow' key's limit of 0.25 requests/s" in refused.json()["message"]
    assert [models("fast").status_code for _ in range(12)] == [200] * 12  # 100/s: its own
    time.sleep(2.1)
    wrong = engine.client.post(engine.url + "/v1/keys", headers=secret,
                               json={"name": "bad", "scopes": ["read"], "rate": -1})  # fmt: skip
    assert wrong.status_code == 400 and wrong.json()["message"].startswith("$.rate:"), wrong.text


def test_bodies_over_the_cap_get_a_413(engine_factory: Any, settings: Any) -> None:
    engine = engine_factory(settings, limits=Limits(per_ip=0, per_key=0, max_body_kb=4), sink=False)
    big = {**TRACK, "properties": {"note": "x" * 5000}}
    answer = engine.post("/v1/track", big)
    assert answer.status_code == 413
    assert answer.json() == {
        "code": "request_too_large",
        "message": "the request body is over 4 KB (limits.max_body_kb)",
    }

    def chunks(size: int) -> Iterator[bytes]:  # no Content-Length: sent chunked
        body = httpx.Request("POST", "/", json={**TRACK, "properties": {"n": "x" * size}}).content
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    headers = {**basic(WRITE_KEY), "Content-Type": "application/json"}
    secret = {**headers, "Authorization": f"Bearer {SECRET_KEY}"}
    for method, path, sent in (("POST", "/v1/track", headers), ("POST", "/v1/decide", headers),
                               ("PUT", "/v1/placements/x_probe", secret)):  # fmt: skip
        streamed = engine.client.request(
            method, engine.url + path, content=chunks(20_000), headers=sent
        )
        assert streamed.status_code == 413, (path, streamed.text)
        assert streamed.json()["code"] == "request_too_large"
    small = engine.client.post(engine.url + "/v1/track", content=chunks(100), headers=headers)
    assert small.status_code == 200, small.text
    # Endpoints keep their own, lower limits: decide's 64 KB under the default 2 MB cap.
    engine = engine_factory(settings, sink=False)
    huge = {"anonymousId": "a", "placements": ["x"], "context": {"x": "y" * 70_000}}
    assert engine.post("/v1/decide", huge).status_code == 400
    assert engine.post("/v1/track", {**TRACK, "x": "y" * 2_200_000}).status_code == 413


def asgi_call(limits: Limits, peer: str, forwarded: str | None = None, n: int = 1) -> list[int]:
    """``n`` requests through the middleware alone (in front of an app that answers 204) from
    ``peer``, as the server reported it."""

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = RequestLimits(ok, limits, WRITE_KEY, SECRET_KEY)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app, client=(peer, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://kairos") as client:
            headers = {"X-Forwarded-For": forwarded} if forwarded else {}
            return [(await client.get("/healthz", headers=headers)).status_code for _ in range(n)]

    return asyncio.run(run())


def test_x_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    limits = Limits(per_ip=0.5, burst=2.0, trusted_proxies=("10.0.0.0/8",))
    # Not a trusted proxy: what it says about the client is ignored; its own address counts.
    spoofed = asgi_call(limits, "192.0.2.1", forwarded="198.51.100.1", n=3)
    assert spoofed == [204, 429, 429]
    # Behind the proxy: the last address it did not add itself; a client's own X-Forwarded-For
    # (the left part) cannot pick another bucket.
    assert asgi_call(limits, "10.0.0.5", "1.1.1.1, 198.51.100.2, 10.0.0.7", n=2) == [204, 429]
    # The proxy's own requests: no per-IP limit.
    assert asgi_call(limits, "10.0.0.5", n=4) == [204] * 4
    assert asgi_call(Limits(per_ip=0.5, burst=2.0), "127.0.0.1", n=4) == [204] * 4  # default


def test_buckets_stay_bounded_and_forget_only_idle_clients() -> None:
    buckets = Buckets(rate=1.0, burst=1.0, max_size=100)
    for i in range(1000):  # a flood from many addresses at once
        buckets.take(f"198.51.{i // 256}.{i % 256}", now=i / 1000)
        assert len(buckets.buckets) <= 100
    assert buckets.take("198.51.3.231", now=1.0) > 0  # recent: still limited after evictions
    buckets.take("192.0.2.1", now=50.0)  # long after: the others are full again, hence dropped
    assert len(buckets.buckets) <= 51
    assert Buckets(rate=1.0, burst=1.0).take("x", now=0.0) == 0.0


def test_the_limits_table_of_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "kairos.toml"
    path.write_text('[limits]\nper_ip = 0\nper_key = 50.5\ntrusted_proxies = ["10.0.0.0/8"]\n')
    limits = load_config(path).limits
    assert (limits.per_ip, limits.per_key, limits.burst, limits.max_body_kb) == (0, 50.5, 2.0, 2048)
    assert limits.trusted_proxies == ("10.0.0.0/8",)
    path.write_text('[limits]\ntrusted_proxies = ["proxy.internal"]\n')
    with pytest.raises(ConfigError, match="`trusted_proxies` must list IP addresses or networks"):
        load_config(path)
    path.write_text("[limits]\nper_ip = -1\n")
    with pytest.raises(ConfigError, match=r"Expected `float` >= 0.0 - at `\$.limits.per_ip`"):
        load_config(path)
