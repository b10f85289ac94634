"""How a profile looks from outside: to segment rules (``view_of``) and to the API
(``describe``)."""

from __future__ import annotations

from typing import Any

from profiles.scoring import decayed
from profiles.segments import View
from profiles.store import Snapshot

__all__ = ["describe", "view_of"]

_DAY_MS = 86_400_000


def view_of(snapshot: Snapshot, now_ms: int, half_life_days: float = 30.0) -> View:
    """What segment rules see of a profile at ``now_ms``."""
    fields = snapshot.fields
    number = snapshot.number
    orders, revenue = number("orders"), number("revenue")
    computed: dict[str, Any] = {
        "page_views": int(number("page_views")),
        "sessions": int(number("sessions")),
        "orders": int(orders),
        "revenue": revenue,
        "average_order_value": round(revenue / orders, 2) if orders else 0.0,
        # Two decimals: a score earned a moment ago reads as earned, not as 9.99999.
        "lead_score": round(
            decayed(number("lead_score"), int(number("lead_score_at")), now_ms, half_life_days), 2
        ),
        "cart_items": sum(float(item.get("quantity", 0)) for item in snapshot.cart.values()),
        "cart_value": sum(
            float(item.get("price", 0) or 0) * float(item.get("quantity", 0))
            for item in snapshot.cart.values()
        ),
        "viewed_products": snapshot.viewed,
        "holdings": {k[2:]: int(v) for k, v in fields.items() if k.startswith("h:") and int(v)},
        "segments": snapshot.segments,
    }
    if "first_seen" in fields:
        computed["first_seen"] = int(fields["first_seen"])
        computed["last_seen"] = int(fields["last_seen"])
        computed["days_since_last_seen"] = (now_ms - int(fields["last_seen"])) / _DAY_MS
    scores = {k[2:]: float(v) for k, v in fields.items() if k.startswith("s:")}
    today = now_ms // _DAY_MS
    return View(
        traits=snapshot.traits(),
        computed=computed,
        scores=scores,
        first_touch=snapshot.first_touch(),
        events=lambda name, days: snapshot.count_since(name, today - days + 1),
    )


def describe(snapshot: Snapshot, now_ms: int, half_life_days: float = 30.0) -> dict[str, Any]:
    """The profile as the API returns it."""
    view = view_of(snapshot, now_ms, half_life_days)
    identities: dict[str, list[str]] = {}
    for identity in snapshot.identities:
        kind, _, value = identity.partition(":")
        identities.setdefault(kind, []).append(value)
    computed = dict(view.computed)
    computed["event_counts"] = snapshot.counts()
    computed["cart"] = [{"product_id": pid, **item} for pid, item in snapshot.cart.items()]
    return {
        "id": snapshot.id,
        "identities": identities,
        "traits": view.traits,
        "first_touch": view.first_touch,
        "computed": computed,
        "scores": view.scores,
        "segments": snapshot.segments,
        "merged_from": snapshot.merged_from,
    }
