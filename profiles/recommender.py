"""The recommendations worker: a consumer group on the spool that keeps the product catalog and
the candidate lists current.

- Every e-commerce event that describes a product (Product Viewed/Added/Removed with its
  properties, Order Completed with ``products[]``) adds it to the catalog, or fills fields the
  catalog lacks (``profiles.products.absorb``: the catalog API's values win).
- Every ``refresh_minutes`` (and at start) the candidate lists are recomputed from ClickHouse
  (``profiles.strategies.refresh``), and at once when the catalog has grown by a tenth since,
  or when asked (``profiles.strategies.request_refresh``: the demo's history, an operator).

Absorbing is idempotent (a replayed batch writes the same fields), so no position is kept.
"""

from __future__ import annotations

import logging
import time

import redis

from collector import wire
from collector.spool import Entry, SpoolReader
from collector.store import EventStore, QueryFailed, StoreUnavailable
from collector.worker import SpoolWorker
from profiles.computed import event_name
from profiles.products import ITEMS, Item, absorb, item_from_event
from profiles.strategies import WANTED, Settings, refresh

__all__ = ["Recommender"]

log = logging.getLogger("kairos.recs")

_PRODUCT_EVENTS = ("Product Viewed", "Product Added", "Product Removed", "Product Clicked")


def products_of(msg: wire.Message) -> list[Item]:
    """The products an event describes."""
    if type(msg) is not wire.Track:
        return []
    name = event_name(msg)
    properties = wire.as_dict(msg.properties)
    if name in _PRODUCT_EVENTS:
        found = [item_from_event(properties)]
    elif name == "Order Completed" and isinstance(properties.get("products"), list):
        found = [item_from_event(p) for p in properties["products"] if isinstance(p, dict)]
    else:
        return []
    return [item for item in found if item is not None]


class Recommender(SpoolWorker):
    name = "recommendations worker"

    def __init__(
        self,
        reader: SpoolReader,
        client: redis.Redis,
        store: EventStore | None,
        settings: Settings | None = None,
        max_entries: int = 500,
        interval: float = 0.2,
    ):
        """``store``: where the lists are computed from (None: the catalog only)."""
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.client = client
        self.store = store
        self.settings = settings or Settings()
        self._next_refresh = 0.0
        self._catalog_size = 0

    def process(self, entries: list[Entry]) -> dict[str, float]:
        seen = [item for entry in entries for msg in entry.messages() for item in products_of(msg)]
        changed = absorb(self.client, seen)
        return {"catalog_items_changed": changed}

    def between(self) -> None:
        """Recompute the lists when due, or when the catalog has grown by a tenth."""
        if self.store is None:
            return
        size = int(self.client.hlen(ITEMS))
        grown = size > self._catalog_size * 1.1
        asked = bool(self.client.delete(WANTED))
        if time.monotonic() < self._next_refresh and not grown and not asked:
            return
        self._next_refresh = time.monotonic() + self.settings.refresh_minutes * 60
        self._catalog_size = size
        try:
            refresh(self.store, self.client, self.settings)
        except (StoreUnavailable, QueryFailed) as exc:
            self._next_refresh = time.monotonic() + 30  # soon again
            log.warning("recommendation lists not refreshed", extra={"error": str(exc)})
