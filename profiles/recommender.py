"""The recommendations worker: a consumer group on the spool that keeps the product catalog and
the candidate lists current.

- Every e-commerce event that describes a product (Product Viewed/Added/Removed with its
  properties, Order Completed with ``products[]``) adds it to the catalog, or fills fields the
  catalog lacks (``profiles.products.absorb``: the catalog API's values win).
- Every ``refresh_minutes`` (and at start) the candidate lists are recomputed from ClickHouse
  (``profiles.strategies.refresh``), and at once when the catalog has grown by a tenth since,
  or when asked (``profiles.strategies.request_refresh``: the demo's history, an operator
  through ``POST /v1/recommendations/refresh`` or ``kairos recs refresh``).
- While the lists are empty (a new shop: the refresh at start, or on the catalog's growth, ran
  before its first events were in ClickHouse), the worker looks every ``empty_seconds`` whether
  the events table has grown since, and refreshes when it has; each refresh that still leaves
  the lists empty doubles that wait, up to ``refresh_minutes``, so a store whose events hold no
  products costs one count query now and then, not a refresh every few seconds.

Absorbing is idempotent (a replayed batch writes the same fields), so no position is kept.
Several instances share the spool's partitions; only the one holding partition 0 refreshes the
lists (one refresh, not one per instance).
"""

from __future__ import annotations

import logging
import time

import redis

from collector import wire
from collector.reader import Entry, SpoolReader
from collector.store import EventStore, QueryFailed, StoreUnavailable
from collector.worker import SpoolWorker
from profiles.computed import event_name
from profiles.products import ITEMS, Item, absorb, item_from_event
from profiles.strategies import RECS, WANTED, Settings, refresh

__all__ = ["Recommender"]

log = logging.getLogger("kairos.recs")

_PRODUCT_EVENTS = ("Product Viewed", "Product Added", "Product Removed", "Product Clicked")
_STORED = "SELECT count() FROM events"  # ClickHouse answers it from the parts' row counts


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
        empty_seconds: float = 5.0,
    ):
        """``store``: where the lists are computed from (None: the catalog only);
        ``empty_seconds``: how often to look for new events while the lists are empty."""
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.client = client
        self.store = store
        self.settings = settings or Settings()
        self.empty_seconds = empty_seconds
        self._next_refresh = 0.0
        self._catalog_size = 0
        self._empty_wait = empty_seconds
        self._next_look = 0.0
        self._stored = 0  # rows in the events table at the last refresh

    def process(self, entries: list[Entry]) -> dict[str, float]:
        seen = [item for entry in entries for msg in entry.messages() for item in products_of(msg)]
        changed = absorb(self.client, seen)
        return {"catalog_items_changed": changed}

    def between(self) -> None:
        """Recompute the lists when due, or when the catalog has grown by a tenth."""
        if self.store is None or all(p.index for p in self.reader.held):
            return
        size = int(self.client.hlen(ITEMS))
        grown = size > self._catalog_size * 1.1
        asked = bool(self.client.delete(WANTED))
        if time.monotonic() < self._next_refresh and not grown and not asked:
            if not self._new_events_while_empty():
                return
        self._next_refresh = time.monotonic() + self.settings.refresh_minutes * 60
        self._catalog_size = size
        try:
            stored = self._stored_rows()
            refresh(self.store, self.client, self.settings)
        except (StoreUnavailable, QueryFailed) as exc:
            self._next_refresh = time.monotonic() + 30  # soon again
            log.warning("recommendation lists not refreshed", extra={"error": str(exc)})
            return
        self._stored = stored
        if self.client.exists(RECS):
            self._empty_wait = self.empty_seconds
        else:  # nothing to recommend from yet: look again, less often each time
            self._next_look = time.monotonic() + self._empty_wait
            self._empty_wait = min(self._empty_wait * 2, self.settings.refresh_minutes * 60)

    def _new_events_while_empty(self) -> bool:
        """True when the lists are empty, it is time to look, and events landed since the last
        refresh (the history a new shop sends is stored after that refresh ran)."""
        if time.monotonic() < self._next_look or self.client.exists(RECS):
            return False
        self._next_look = time.monotonic() + self.empty_seconds
        try:
            return self._stored_rows() > self._stored
        except (StoreUnavailable, QueryFailed):
            return False

    def _stored_rows(self) -> int:
        assert self.store is not None
        return int(self.store.query_sync(_STORED, limited=False).rows[0][0])
