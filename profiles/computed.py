"""What one message changes on a profile: a pure function from message to ``Update``.

Computed traits follow Segment's e-commerce spec names: "Product Viewed" (recently viewed),
"Product Added" / "Product Removed" (cart), "Order Completed" (orders, revenue from
``properties.revenue`` else ``properties.total``, and an emptied cart). Page calls count as
"Page Viewed" and screen calls as "Screen Viewed". First-touch traits (initial referrer, landing
page, UTM parameters) come from the person's first page view (or campaign-tagged call) and are
never overwritten.

Examples:
    >>> from collector.wire import MESSAGE
    >>> msg = MESSAGE.decode(b'{"type": "track", "event": "Order Completed", "userId": "u",'
    ...     b' "timestamp": "2026-11-26T10:00:00Z", "properties": {"total": 42.5}}')
    >>> update = compute(msg, LeadScoring())
    >>> update.event, update.revenue, update.cart
    ('Order Completed', 42.5, ['clear'])
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from collector import wire
from collector.identifiers import identify_traits
from profiles.scoring import LeadScoring

__all__ = ["LEAD_SCORE_ADJUSTED", "Update", "compute", "event_name"]

_UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_CAMPAIGN = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}
_DAY_MS = 86_400_000
LEAD_SCORE_ADJUSTED = "Lead Score Adjusted"  # properties.points adds to the lead score
# On-chain events (collector.onchain) that change what a wallet holds: tokens counted per
# contract (a transfer by its direction for the wallet).
_HOLDINGS: dict[str, dict[Any, int]] = {
    "Onchain Mint": {None: 1, "in": 1, "out": 1},
    "Onchain Burn": {None: -1, "in": -1, "out": -1},
    "Onchain Transfer": {None: 0, "in": 1, "out": -1},
}


class Update(msgspec.Struct, omit_defaults=True, gc=False):
    """The changes of one message, as the apply script reads them (JSON)."""

    ts: int  # event time, ms since the epoch
    day: int  # ts // one day, for the per-day event counts
    event: str | None = None  # counted per name (track, page, screen)
    page_view: bool = False
    traits: dict[str, msgspec.Raw] | None = None  # identify traits: the newest value wins
    first: dict[str, str] | None = None  # first-touch traits: set once
    revenue: float | None = None  # an order
    cart: list[Any] | None = None  # ["add", id, item], ["remove", id, quantity], ["clear"]
    viewed: str | None = None  # a product id
    bought: list[str] | None = None  # the product ids of an order
    holding: list[Any] | None = None  # [contract, change]: tokens in (+) or out (-) on-chain
    points: float = 0.0  # lead score
    uid: str | None = None  # the user id, kept if the profile has none yet


def event_name(msg: wire.Message) -> str | None:
    kind = type(msg)
    if kind is wire.Track:
        return msg.event
    if kind is wire.Page:
        return "Page Viewed"
    if kind is wire.Screen:
        return "Screen Viewed"
    return None


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _first_touch(msg: wire.Message, properties: dict[str, Any]) -> dict[str, str]:
    context = wire.as_dict(msg.context)
    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    url = properties.get("url") if type(msg) is wire.Page else None
    url = url if isinstance(url, str) else page.get("url")
    referrer = properties.get("referrer") if type(msg) is wire.Page else None
    referrer = referrer if isinstance(referrer, str) else page.get("referrer")
    first: dict[str, str] = {}
    if isinstance(url, str) and url:
        first["landing_page"] = url
        query = parse_qs(urlsplit(url).query)
        for name in _UTM:
            if query.get(name):
                first[name] = query[name][0]
    if isinstance(referrer, str) and referrer:
        first["initial_referrer"] = referrer
    campaign = context.get("campaign")
    if isinstance(campaign, dict):
        for key, name in _CAMPAIGN.items():
            if isinstance(campaign.get(key), str):
                first[name] = campaign[key]
    return first


def compute(msg: wire.Message, scoring: LeadScoring) -> Update:
    """The ``Update`` of ``msg`` (which passed intake, so it has ``receivedAt``)."""
    when = msg.timestamp or msg.original_timestamp or msg.received_at or datetime.now(UTC)
    ts = _ms(when)
    name = event_name(msg)
    kind = type(msg)
    properties = (
        wire.as_dict(msg.properties) if kind in (wire.Track, wire.Page, wire.Screen) else {}
    )
    update = Update(ts=ts, day=ts // _DAY_MS, event=name, page_view=kind is wire.Page)
    if msg.user_id is not None:
        update.uid = str(msg.user_id)
    if kind is wire.Identify:
        traits = identify_traits(msg)
        if traits:
            update.traits = {k: msgspec.Raw(msgspec.json.encode(v)) for k, v in traits.items()}
    if name is not None:
        # Where a person came from: their first page view, or any call that names a campaign.
        if kind is wire.Page or b'"campaign"' in bytes(msg.context):
            update.first = _first_touch(msg, properties) or None
        if scoring.rules:
            update.points = scoring.points(name, properties)
        if name == LEAD_SCORE_ADJUSTED:  # sent by journeys (and anyone): points as they say
            update.points += _number(properties.get("points")) or 0.0
    if kind is wire.Track:
        product = properties.get("product_id") or properties.get("sku")
        product = str(product) if isinstance(product, str | int) and product != "" else None
        if name == "Order Completed":
            revenue = _number(properties.get("revenue"))
            update.revenue = (
                revenue if revenue is not None else _number(properties.get("total")) or 0.0
            )
            update.cart = ["clear"]
            products = properties.get("products")
            if isinstance(products, list):
                ids = [p.get("product_id") or p.get("sku") for p in products if isinstance(p, dict)]
                update.bought = [
                    str(i) for i in ids if isinstance(i, str | int) and i != ""
                ] or None
        elif name == "Product Added" and product:
            quantity = _number(properties.get("quantity")) or 1.0
            item = {
                k: properties[k]
                for k in ("name", "price", "category", "url", "image_url")
                if k in properties
            }
            update.cart = ["add", product, quantity, item]
        elif name == "Product Removed" and product:
            update.cart = ["remove", product, _number(properties.get("quantity")) or 0.0]
        elif name == "Product Viewed" and product:
            update.viewed = product
        elif name in _HOLDINGS and isinstance(properties.get("contract"), str):
            update.holding = [properties["contract"], _HOLDINGS[name][properties.get("direction")]]
    return update
