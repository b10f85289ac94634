"""Simulated shoppers on a live shop: sessions whose pages ask ``/v1/decide`` for their slots,
and who view, click and order according to what they were shown, through the engine's API.

``ShopperStream`` makes history: events in the past, sent in bulk. Decisions cannot be made in
the past (the engine logs them when it makes them), so this is the short live part that follows
a history: ``LiveShop(stream.shoppers, slots, seed).run(url, write_key, sessions)`` runs
``sessions`` sessions of those same shoppers now, one after another.

A placement is shown on the page its key names (``pdp_…``/``product_…``: product pages,
``cart_…``/``checkout_…``: the cart) or, a recommendation placement, on product pages, or else
on the home page. Each variant has a seeded ``appeal`` (evenly spread from 0.5 to 2, in a
seeded order per placement), and what a shopper does with a decision follows its reward kind:

- ``click``: "Decision Clicked" (with the ``decisionId``) with a chance of 8 % × appeal, more
  for keen shoppers; a click makes the rest of the session keener;
- ``items`` (recommendations): a click on one of the items (with its ``itemId``), 10 % ×
  appeal; the item clicked is viewed and, more often than others, put in the cart (an order
  holding it rewards the decision too);
- ``conversion`` and ``revenue``: their event ("Order Completed": the cart's order) is that
  much more, or less, likely after the variant.

So the engine's results differ by variant, and the best variant of each placement is known
(``LiveShop.appeal``). Every decision shown sends "Decision Viewed", as the browser SDK does.
A session's events go in one ``POST /v1/batch`` at its end, after its decisions.

Examples:
    >>> shop = LiveShop([], [Slot("home_hero", "home", "click", ("a", "b", "c"))], seed=1)
    >>> sorted(shop.appeal["home_hero"].values())
    [0.5, 1.25, 2.0]
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from collector.identifiers import user_hash
from profiles.shoppers import CATALOG, DEVICES, SHOP, Product, Shopper, call, post_batch

__all__ = ["LiveShop", "Slot", "Summary", "slot_of", "slots_from_api"]

_PAGES = {"pdp": "product", "product": "product", "cart": "cart", "checkout": "cart"}
_ORDER = "Order Completed"
_PRODUCT_PAGES_DECIDED = 2  # product pages per session that ask for their slots (bounded)


@dataclass(frozen=True)
class Slot:
    """A placement as the simulated pages show it."""

    key: str
    page: str  # home, product or cart
    reward: str  # click, conversion, revenue or items
    variants: tuple[str, ...]
    event: str = _ORDER  # a conversion's event


def slot_of(key: str, definition: dict[str, Any]) -> Slot:
    """The slot of placement ``key``, from its definition (``GET /v1/placements/{key}``)."""
    reward = definition.get("reward") or {}
    kind = reward.get("kind", "click")
    recommends = definition.get("recommend") is not None
    page = _PAGES.get(key.split("_", 1)[0], "product" if recommends else "home")
    return Slot(key, page, kind, tuple(v["key"] for v in definition["variants"]),
                reward.get("event") or _ORDER)  # fmt: skip


def slots_from_api(url: str, secret_key: str) -> list[Slot]:
    """The slots of every placement of the engine at ``url`` (the secret key lists them)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret_key}"},
                      timeout=30) as client:  # fmt: skip
        listed = call(client, "GET", "/v1/placements").json()["placements"]
        return [slot_of(p["key"], call(client, "GET", f"/v1/placements/{p['key']}").json())
                for p in listed]  # fmt: skip


@dataclass
class Summary:
    sessions: int = 0
    decisions: int = 0
    clicks: int = 0
    orders: int = 0
    events: int = 0
    shown: dict[str, dict[str, int]] = field(default_factory=dict)  # placement -> variant -> n


@dataclass
class _Visit:
    """One live session in progress: what it sends, what is in the cart."""

    shopper: Shopper
    keen: float
    cart: dict[str, Product]
    events: list[dict[str, Any]] = field(default_factory=list)

    def ids(self) -> dict[str, str]:
        found = {"anonymousId": self.shopper.anonymous_id}
        if self.shopper.user_id:
            found["userId"] = self.shopper.user_id
        return found

    def add(self, kind: str, **fields: Any) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.events.append({"type": kind, **self.ids(), "timestamp": now,
                            "context": {"userAgent": DEVICES[self.shopper.device]},
                            **fields})  # fmt: skip


class LiveShop:
    """``run`` drives a running engine with live sessions of ``shoppers`` on pages that show
    ``slots``; seeded: the same shoppers, slots and seed make the same choices of shopper,
    product and chance (the engine's own choices of variant are its own)."""

    def __init__(self, shoppers: list[Shopper], slots: Iterable[Slot], seed: int = 7):
        self.shoppers = shoppers
        self.slots = list(slots)
        self.seed = seed
        self.identity_secret = ""
        self.appeal: dict[str, dict[str, float]] = {s.key: self._appeal(s) for s in self.slots}

    def _appeal(self, slot: Slot) -> dict[str, float]:
        rng = np.random.default_rng([self.seed, zlib.crc32(slot.key.encode())])
        n = len(slot.variants)
        spread = np.linspace(0.5, 2.0, n) if n > 1 else np.ones(1)
        return {v: round(float(a), 4) for v, a in zip(slot.variants, rng.permutation(spread))}

    def run(
        self, url: str, write_key: str, sessions: int = 200, identity_secret: str = ""
    ) -> Summary:
        """``sessions`` sessions, now; what was decided and done. ``identity_secret``: the shop's
        server signs its signed-in shoppers' ids (``userHash``) as a real shop would, so they
        are decided as themselves (without it, as their device)."""
        self.identity_secret = identity_secret
        summary = Summary()
        if not self.shoppers:
            return summary
        rng = np.random.default_rng([self.seed, 1])
        weights = np.array([s.visits_per_day for s in self.shoppers])
        picks = rng.choice(len(self.shoppers), size=sessions, p=weights / weights.sum())
        with httpx.Client(base_url=url, auth=(write_key, ""), timeout=30) as client:
            for n, index in enumerate(picks):
                shopper = self.shoppers[int(index)]
                visit = _Visit(shopper, shopper.intent, dict(shopper.cart))
                self._session(client, visit, np.random.default_rng([self.seed, 2, n]), summary)
                now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                post_batch(client, visit.events, sent_at=now)
                summary.sessions += 1
                summary.events += len(visit.events)
        return summary

    def _session(
        self, client: httpx.Client, visit: _Visit, rng: np.random.Generator, summary: Summary
    ) -> None:
        shopper = visit.shopper
        visit.add("page", name="Home", properties={"path": "/", "url": SHOP + "/"})
        for slot, decision in self._decide(client, visit, "home", None, summary):
            self._react(visit, slot, decision, rng, summary)
        liked = [p for p in CATALOG if p.category == shopper.favourite]
        for n in range(min(int(rng.poisson(1 + 8 * visit.keen)), 8)):
            product = liked[rng.integers(len(liked))] if rng.random() < 0.7 else CATALOG[
                rng.integers(len(CATALOG))]  # fmt: skip
            self._view(visit, product, rng, 1.0)
            if n < _PRODUCT_PAGES_DECIDED:
                for slot, decision in self._decide(client, visit, "product", product.id, summary):
                    self._react(visit, slot, decision, rng, summary)
        if not visit.cart:
            return
        visit.add("page", name="Cart", properties={"path": "/cart", "url": SHOP + "/cart"})
        chance = 0.05 + 0.85 * visit.keen
        first = next(iter(visit.cart))
        for slot, decision in self._decide(client, visit, "cart", first, summary):
            self._react(visit, slot, decision, rng, summary)
            if slot.reward in ("conversion", "revenue") and slot.event == _ORDER:
                chance *= self.appeal[slot.key].get(decision["variant"], 1.0)
        if rng.random() < min(chance, 0.95):
            self._order(visit)
            summary.orders += 1

    def _signed(self, ids: dict[str, str]) -> dict[str, str]:
        if "userId" in ids and self.identity_secret:
            return {**ids, "userHash": user_hash(self.identity_secret, ids["userId"])}
        return ids

    def _decide(
        self,
        client: httpx.Client,
        visit: _Visit,
        page: str,
        item: str | None,
        summary: Summary,
    ) -> list[tuple[Slot, dict[str, Any]]]:
        """The page's slots as ``/v1/decide`` chose them (defaults and fallbacks left out)."""
        slots = {s.key: s for s in self.slots if s.page == page}
        if not slots:
            return []
        context: dict[str, Any] = {"userAgent": DEVICES[visit.shopper.device]}
        if item is not None:
            context["item"] = item
        answer = call(client, "POST", "/v1/decide",
                      {"placements": list(slots), **self._signed(visit.ids()), "context": context},
                      missing_ok=True)  # fmt: skip
        if answer.status_code == 404:  # none of them exists any more
            return []
        found = []
        for key, decision in answer.json()["decisions"].items():
            summary.decisions += 1
            if decision.get("fallback") or decision.get("variant") is None:
                continue  # a default: nothing was chosen, nothing to learn
            shown = summary.shown.setdefault(key, {})
            shown[decision["variant"]] = shown.get(decision["variant"], 0) + 1
            if decision.get("content") is not None or decision.get("items"):
                visit.add("track", event="Decision Viewed", properties=_about(key, decision))
            found.append((slots[key], decision))
        return found

    def _react(
        self,
        visit: _Visit,
        slot: Slot,
        decision: dict[str, Any],
        rng: np.random.Generator,
        summary: Summary,
    ) -> None:
        """What the shopper does with one decision they were shown."""
        appeal = self.appeal[slot.key].get(decision["variant"], 1.0)
        keen = 0.5 + visit.keen
        if slot.reward == "items":
            items = decision.get("items") or []
            if items and rng.random() < min(0.1 * appeal * keen, 0.9):
                chosen = items[int(rng.integers(len(items)))]
                clicked = {**_about(slot.key, decision), "itemId": chosen["id"]}
                visit.add("track", event="Decision Clicked", properties=clicked)
                summary.clicks += 1
                product = next((p for p in CATALOG if p.id == chosen["id"]), None)
                if product is not None:
                    self._view(visit, product, rng, 3.0)  # came for it: likelier to add it
        elif slot.reward == "click":
            if decision.get("content") is not None and rng.random() < min(
                0.08 * appeal * keen, 0.9
            ):
                visit.add("track", event="Decision Clicked", properties=_about(slot.key, decision))
                summary.clicks += 1
                visit.keen = min(1.0, visit.keen * 1.5 + 0.05)
        elif slot.event != _ORDER and rng.random() < min(0.1 * appeal * keen, 0.9):
            visit.add("track", event=slot.event, properties={"placement": slot.key})

    def _view(self, visit: _Visit, product: Product, rng: np.random.Generator, lean: float) -> None:
        props = {"product_id": product.id, "name": product.name, "category": product.category,
                 "price": product.price, "url": f"{SHOP}/products/{product.id}",
                 "image_url": f"{SHOP}/img/{product.id}.jpg"}  # fmt: skip
        path = f"/products/{product.id}"
        visit.add("page", name="Product", properties={"path": path, "url": SHOP + path})
        visit.add("track", event="Product Viewed", properties=props)
        affordable = min(1.0, visit.shopper.spend / product.price)
        if rng.random() < min((0.02 + 0.4 * visit.keen) * affordable * lean, 0.95):
            visit.cart[product.id] = product
            visit.add("track", event="Product Added", properties={**props, "quantity": 1})

    def _order(self, visit: _Visit) -> None:
        shopper = visit.shopper
        if shopper.signs_up and shopper.user_id is None:
            shopper.user_id = f"user-{self.seed}-live-{shopper.number}"
            visit.add("identify", traits={"email": f"shopper{shopper.number}@example.com",
                                          "signed_up": True})  # fmt: skip
        items = list(visit.cart.values())
        shopper.orders += 1
        visit.cart.clear()
        shopper.cart.clear()
        visit.add("track", event=_ORDER, properties={
            "order_id": f"o-live-{shopper.number}-{shopper.orders}",
            "revenue": round(sum(p.price for p in items), 2), "currency": "USD",
            "products": [{"product_id": p.id, "name": p.name, "category": p.category,
                          "price": p.price, "quantity": 1,
                          "url": f"{SHOP}/products/{p.id}"} for p in items],
        })  # fmt: skip


def _about(key: str, decision: dict[str, Any]) -> dict[str, Any]:
    """The properties the browser SDK gives a decision's events."""
    return {"decisionId": decision["decisionId"], "placement": key, "variant": decision["variant"]}
