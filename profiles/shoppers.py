"""A shopper simulator: realistic, seeded event streams for tests, benchmarks and the demo.

Each shopper has hidden traits the engine never sees — ``intent`` (how likely they are to buy),
``spend`` (their typical item price), ``lifetime_days`` (when they stop coming back) — and
visible habits that follow from them: device, traffic source, how often they visit, how much
they browse, what they put in the cart and whether they check out. So what the engine learns can
be checked against the truth.

A session is a page view of the landing page, then browsing (``Product Viewed`` with page
views), ``Product Added`` now and then, and at the end, if the cart holds something, maybe an
``Order Completed`` (revenue = the cart). Some shoppers log in (``identify`` with a user id and
email) when they first order. Messages are Segment-spec dicts, in time order across shoppers.

``send`` drives a running engine with them, through ``POST /v1/batch`` (``kairos simulate``);
``profiles.live`` then runs the same shoppers' live sessions, which ask ``/v1/decide``.

Examples:
    >>> stream = ShopperStream(shoppers=20, days=7, seed=1)
    >>> messages = list(stream.messages())
    >>> messages == list(ShopperStream(shoppers=20, days=7, seed=1).messages())  # seeded
    True
    >>> all(a["timestamp"] <= b["timestamp"] for a, b in zip(messages, messages[1:]))
    True
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np

__all__ = ["CATALOG", "Product", "Shopper", "ShopperStream", "call", "post_batch", "send"]

DEVICES = {
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
    "desktop": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",
    "tablet": "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) Mobile/15E148",
}
# Where visits come from, and how that leans with intent (keen shoppers come back by email,
# search or straight to the shop; casual ones arrive from social and paid ads).
SOURCES = {
    "direct": ({}, 1.0),
    "search": ({"source": "google", "medium": "organic"}, 1.0),
    "email": ({"source": "newsletter", "medium": "email"}, 1.5),
    "social": ({"source": "instagram", "medium": "social"}, -1.0),
    "paid": ({"source": "google", "medium": "cpc", "name": "brand"}, -0.5),
}
SHOP = "https://shop.example"


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    category: str
    price: float


def _catalog() -> list[Product]:
    rng = np.random.default_rng(2024)
    categories = ["shoes", "jackets", "bags", "hats", "shirts", "watches"]
    return [
        Product(f"sku-{c[:3]}-{i}", f"{c.title()} {i}", c,
                round(float(rng.lognormal(math.log(40 + 20 * k), 0.5)), 2))
        for k, c in enumerate(categories) for i in range(10)
    ]  # fmt: skip


CATALOG = _catalog()


@dataclass
class Shopper:
    """One simulated person: hidden traits, and what they have done so far."""

    number: int
    intent: float  # 0..1: how keen to buy (hidden)
    spend: float  # typical price they pay (hidden)
    lifetime_days: float  # after this they never come back (hidden)
    device: str
    favourite: str  # a category
    visits_per_day: float
    signs_up: bool  # logs in at the first order
    cart: dict[str, Product] = field(default_factory=dict)
    orders: int = 0
    user_id: str | None = None

    @property
    def anonymous_id(self) -> str:
        return f"sim-{self.number}"


class ShopperStream:
    """``messages()`` yields every shopper's messages in time order (one shopper's sessions are
    generated as the stream reaches them, so memory stays small)."""

    def __init__(
        self,
        shoppers: int = 1_000,
        days: float = 30.0,
        seed: int = 7,
        start: datetime | None = None,
    ):
        self.days = days
        self.seed = seed
        self.start = start or datetime(2026, 1, 1, tzinfo=UTC)
        rng = np.random.default_rng(seed)
        self.shoppers = [self._shopper(i, rng) for i in range(shoppers)]

    def _shopper(self, number: int, rng: np.random.Generator) -> Shopper:
        intent = float(rng.beta(1.2, 5.0))
        return Shopper(
            number=number,
            intent=intent,
            spend=float(rng.lognormal(math.log(50), 0.6)),
            lifetime_days=float(rng.exponential(4 + 40 * intent)),
            device=str(rng.choice(list(DEVICES), p=[0.55, 0.35, 0.10])),
            favourite=str(rng.choice(sorted({p.category for p in CATALOG}))),
            visits_per_day=0.1 + 0.8 * intent,
            signs_up=bool(rng.random() < 0.7),
        )

    def messages(self) -> Iterator[dict[str, Any]]:
        streams = [self._sessions(s) for s in self.shoppers]
        merged = heapq.merge(*streams, key=lambda m: m["timestamp"])
        for n, message in enumerate(merged):
            message["messageId"] = f"sim-{self.seed}-{n}"
            yield message

    def _sessions(self, shopper: Shopper) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, shopper.number])
        now = float(rng.uniform(0, self.days))  # first visit: shoppers arrive all along
        horizon = min(self.days, now + shopper.lifetime_days)
        while now < horizon:
            yield from self._session(shopper, rng, self.start + timedelta(days=now))
            now += float(rng.exponential(1 / shopper.visits_per_day)) + 1 / 48  # ≥ 30 min apart

    def _session(
        self, shopper: Shopper, rng: np.random.Generator, at: datetime
    ) -> Iterator[dict[str, Any]]:
        keen = shopper.intent
        lean = np.array([math.exp(weight * (keen - 0.2) * 4) for _, weight in SOURCES.values()])
        source = str(rng.choice(list(SOURCES), p=lean / lean.sum()))
        context: dict[str, Any] = {"userAgent": DEVICES[shopper.device]}
        if SOURCES[source][0]:
            context["campaign"] = dict(SOURCES[source][0])
        elif source == "search":
            context["page"] = {"referrer": "https://www.google.com/"}

        def message(kind: str, **fields: Any) -> dict[str, Any]:
            nonlocal at
            body = {"type": kind, "anonymousId": shopper.anonymous_id,
                    "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "context": context, **fields}  # fmt: skip
            if shopper.user_id:
                body["userId"] = shopper.user_id
            at += timedelta(seconds=float(rng.exponential(40)) + 3)
            return body

        yield message("page", name="Home", properties={"path": "/", "url": SHOP + "/"})
        for _ in range(int(rng.poisson(0.5 + 12 * keen))):
            liked = [p for p in CATALOG if p.category == shopper.favourite]
            product = liked[rng.integers(len(liked))] if rng.random() < 0.7 else CATALOG[
                rng.integers(len(CATALOG))]  # fmt: skip
            props = {"product_id": product.id, "name": product.name,
                     "category": product.category, "price": product.price,
                     "url": f"{SHOP}/products/{product.id}",
                     "image_url": f"{SHOP}/img/{product.id}.jpg"}  # fmt: skip
            path = f"/products/{product.id}"
            yield message("page", name="Product", properties={"path": path, "url": SHOP + path})
            yield message("track", event="Product Viewed", properties=props)
            affordable = min(1.0, shopper.spend / product.price)
            if rng.random() < (0.02 + 0.4 * keen) * affordable:
                shopper.cart[product.id] = product
                yield message("track", event="Product Added", properties={**props, "quantity": 1})
        if shopper.cart and rng.random() < 0.05 + 0.85 * keen:
            if shopper.signs_up and shopper.user_id is None:
                shopper.user_id = f"user-{self.seed}-{shopper.number}"
                email = f"shopper{shopper.number}@example.com"
                yield message("identify", traits={"email": email, "signed_up": True})
            items = list(shopper.cart.values())
            shopper.orders += 1
            shopper.cart.clear()
            yield message("track", event="Order Completed", properties={
                "order_id": f"o-{self.seed}-{shopper.number}-{shopper.orders}",
                "revenue": round(sum(p.price for p in items), 2), "currency": "USD",
                "products": [{"product_id": p.id, "name": p.name, "category": p.category,
                              "price": p.price, "quantity": 1,
                              "url": f"{SHOP}/products/{p.id}"} for p in items],
            })  # fmt: skip


def send(
    messages: Iterable[dict[str, Any]],
    url: str,
    write_key: str,
    batch: int = 100,
    progress: Callable[[int], object] | None = None,
) -> int:
    """POST ``messages`` to ``url``/v1/batch, ``batch`` at a time; retries what the engine asks
    to be retried (429 or 503 + Retry-After, connection errors). Returns how many were accepted."""
    sent, chunk = 0, []
    with httpx.Client(base_url=url, auth=(write_key, ""), timeout=30) as client:

        def post() -> None:
            nonlocal sent
            post_batch(client, chunk)
            sent += len(chunk)
            if progress is not None:
                progress(len(chunk))

        for message in messages:
            chunk.append(message)
            if len(chunk) == batch:
                post()
                chunk = []
        if chunk:
            post()
    return sent


def post_batch(
    client: httpx.Client, messages: list[dict[str, Any]], sent_at: str | None = None
) -> None:
    """One ``POST /v1/batch`` of ``messages`` (``sentAt``: when, by the sender's clock)."""
    if messages:
        body: dict[str, Any] = {"batch": messages, **({"sentAt": sent_at} if sent_at else {})}
        call(client, "POST", "/v1/batch", body)


def call(
    client: httpx.Client, method: str, path: str, body: Any = None, missing_ok: bool = False
) -> httpx.Response:
    """One API call, retried while the engine asks for it (429 or 503 + Retry-After, connection
    errors), up to 10 times; raises on any other answer but a 2xx (or a 404 if ``missing_ok``)."""
    for attempt in range(10):
        try:
            answer = client.request(method, path, json=body)
        except httpx.TransportError:
            time.sleep(min(2**attempt * 0.1, 5))
            continue
        if answer.status_code in (429, 503):  # over a rate limit, or back-pressure
            time.sleep(float(answer.headers.get("retry-after", 1)))
            continue
        if not (missing_ok and answer.status_code == 404):
            answer.raise_for_status()
        return answer
    raise RuntimeError(f"{client.base_url}{path} refused a request 10 times")
