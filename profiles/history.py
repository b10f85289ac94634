"""What the learner knows of a person at a moment, built only from their events up to it.

The learner keeps this record per profile (``{p:<id>}:learn``) from the events it reads, in
each spool partition's order (a person on two devices may be in two; the record's ``version``
lets those writes meet by compare-and-set: ``profiles.feature_side``), rather than reading the
live profile: the live profile may already hold events from after the moment being predicted
(the profile worker runs ahead), and a model trained on those would learn from the future.
Segment flags come from the "Segment Entered"/"Segment Exited" events in the same stream, so
they too are as they were.

``features(at)`` is the model's input: recency, frequency, browsing, cart, orders, lead score,
hour of day (UTC) and categories viewed as numbers; device, traffic source and segments as
one-hot flags.

Examples:
    >>> h = History()
    >>> h.observe(Seen(at=0, name="Page Viewed", device="mobile", source="email"))
    True
    >>> h.observe(Seen(at=60_000, name="Product Added", price=30.0, product="p1"))
    False
    >>> x = h.features(60_000)
    >>> x["cart_items"], x["device=mobile"], x["source=email"], x["sessions"]
    (1.0, 1.0, 1.0, 0.6931471805599453)
"""

from __future__ import annotations

import math

import msgspec

from profiles.scoring import decayed
from profiles.store import SESSION_GAP_MS

__all__ = ["HISTORY", "NUMERIC", "SESSION_MS", "Example", "History", "Open", "Seen"]

SESSION_MS = SESSION_GAP_MS  # 30 minutes of silence ends a session, as for the profile
DAY_MS = 86_400_000
_TOP_CATEGORIES = 20


class Seen(msgspec.Struct, frozen=True):
    """The parts of one event the learner uses."""

    at: int  # ms since the epoch
    name: str  # event name ("Page Viewed" for page calls)
    device: str | None = None
    source: str | None = None
    product: str | None = None
    category: str | None = None
    price: float = 0.0
    revenue: float = 0.0
    points: float = 0.0  # lead-score points this event earns
    segment: str | None = None  # for Segment Entered / Exited


class Example(msgspec.Struct, array_like=True, kw_only=True):
    """A prediction waiting for its label: the features as they were, and when it resolves."""

    profile: str
    target: str  # "conversion", "conversion_session" or "churn"
    at: int
    deadline: int
    session: int  # the session it was made in (its start, ms)
    p: float  # what the model predicted then (prequential: tested before it is learned)
    x: dict[str, float]
    raw: float | None = None  # the uncalibrated score then (None: made before calibration)

    @property
    def id(self) -> str:
        return f"{self.profile}:{self.target}:{self.at}"


class Open(msgspec.Struct, array_like=True):
    """An example in the queue whose label an event may still settle early."""

    target: str
    at: int
    deadline: int
    session: int


class History(msgspec.Struct, omit_defaults=True):
    # First, so that its JSON starts with it: the compare-and-set script reads it from there
    # (``profiles.feature_side``). How many times the record was written.
    version: int = 0
    first_seen: int = 0
    last_seen: int = 0
    session_start: int = 0
    previous_seen: int = 0  # the last event of the previous session
    sessions: int = 0
    session_events: int = 0
    events: int = 0
    page_views: int = 0
    product_views: int = 0
    cart: dict[str, float] = {}  # product -> price
    orders: int = 0
    revenue: float = 0.0
    last_order: int = 0
    lead: float = 0.0
    lead_at: int = 0
    device: str = "unknown"
    source: str = "direct"
    categories: dict[str, int] = {}
    segments: list[str] = []
    open: list[Open] = []  # conversion examples an order may still settle
    churn: Example | None = None  # made at the person's latest event, until they come back
    scores: dict[str, float] = {}  # what was last written to the profile
    by: dict[str, int] = {}  # spool partition -> the serial of its last batch that wrote this

    def observe(self, event: Seen, half_life_days: float = 30.0) -> bool:
        """Add ``event``; True when it starts a new session. A segment announcement changes
        the segment flags only (the engine sent it, not the person)."""
        if event.segment is not None:
            self._apply(event)
            return False
        new_session = self.events == 0 or event.at - self.last_seen >= SESSION_MS
        if new_session:
            self.previous_seen = self.last_seen
            self.sessions += 1
            self.session_start = event.at
            self.session_events = 0
            self.source = event.source or "direct"
        if self.first_seen == 0:
            self.first_seen = event.at
        self.last_seen = max(self.last_seen, event.at)
        self.events += 1
        self.session_events += 1
        if event.device:
            self.device = event.device
        if event.points:
            self.lead = decayed(self.lead, self.lead_at, event.at, half_life_days) + event.points
            self.lead_at = event.at
        self._apply(event)
        return new_session

    def _apply(self, event: Seen) -> None:
        name = event.name
        if name == "Page Viewed":
            self.page_views += 1
        elif name == "Product Viewed":
            self.product_views += 1
            if event.category:
                self.categories[event.category] = self.categories.get(event.category, 0) + 1
                if len(self.categories) > _TOP_CATEGORIES:  # keep the most viewed
                    del self.categories[min(self.categories, key=self.categories.__getitem__)]
        elif name == "Product Added" and event.product:
            self.cart[event.product] = event.price
        elif name == "Product Removed" and event.product:
            self.cart.pop(event.product, None)
        elif name == "Order Completed":
            self.orders += 1
            self.revenue += event.revenue
            self.last_order = event.at
            self.cart = {}
        elif name == "Segment Entered" and event.segment and event.segment not in self.segments:
            self.segments = sorted([*self.segments, event.segment])
        elif name == "Segment Exited" and event.segment in self.segments:
            self.segments = [s for s in self.segments if s != event.segment]

    def features(self, at: int, half_life_days: float = 30.0) -> dict[str, float]:
        """The numeric features (``NUMERIC``), then flags set to 1: ``device=…``,
        ``source=…`` (this session's) and ``segment=…`` (one per segment)."""
        hour = (at // 3_600_000) % 24
        viewed = sum(self.categories.values())
        x = {
            "tenure_days": (at - self.first_seen) / DAY_MS,
            "days_since_last_visit": (at - self.previous_seen) / DAY_MS if self.previous_seen
            else 0.0,
            "new_visitor": float(self.sessions <= 1),
            "sessions": math.log1p(self.sessions),
            "session_events": math.log1p(self.session_events),
            "events": math.log1p(self.events),
            "page_views": math.log1p(self.page_views),
            "product_views": math.log1p(self.product_views),
            "cart_items": float(len(self.cart)),
            "cart_value": math.log1p(sum(self.cart.values())),
            "orders": math.log1p(self.orders),
            "revenue": math.log1p(self.revenue),
            "days_since_order": (at - self.last_order) / DAY_MS if self.orders else 0.0,
            "has_ordered": float(self.orders > 0),
            "lead_score": decayed(self.lead, self.lead_at, at, half_life_days),
            "categories_viewed": float(len(self.categories)),
            "top_category_share": max(self.categories.values()) / viewed if viewed else 0.0,
            "hour_sin": math.sin(2 * math.pi * hour / 24),
            "hour_cos": math.cos(2 * math.pi * hour / 24),
            f"device={self.device}": 1.0,
            f"source={self.source}": 1.0,
        }  # fmt: skip
        for segment in self.segments:
            x[f"segment={segment}"] = 1.0
        return x


NUMERIC = (
    "tenure_days", "days_since_last_visit", "new_visitor", "sessions", "session_events", "events",
    "page_views", "product_views", "cart_items", "cart_value", "orders", "revenue",
    "days_since_order", "has_ordered", "lead_score", "categories_viewed", "top_category_share",
    "hour_sin", "hour_cos",
)  # fmt: skip
HISTORY = msgspec.json.Decoder(History)
