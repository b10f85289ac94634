"""The audit log's storage: entries appended to one Redis stream, drained into ClickHouse.

Whoever changes something (the API, the dashboard, a worker installing the config file) appends
an ``Entry`` to ``STREAM`` (one hash slot: ``{audit}``) before it answers, so an entry is as
durable as the change. The sink drains the stream into the ``audit`` table (``AuditDrain``):
it reads a batch with its consumer group, inserts it, and only then acknowledges and deletes
it. A batch that failed to insert stays pending and is retried; one a dead sink held is
claimed by another after ``CLAIM_IDLE_MS``. The table is a ReplacingMergeTree keyed by the
entry id, read with ``FINAL``: an entry inserted twice (stored, then the sink died before the
acknowledgement) is one row.

An entry holds no request path and no body, only what the caller of ``entry`` gives it: the
resource and its key, and the definition before and after (with ``changes``, the paths that
differ). An erasure's entry names the erasure request, never the person.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis

from collector.schema import Shape

__all__ = [
    "CLAIM_IDLE_MS",
    "GROUP",
    "RESOURCES",
    "STREAM",
    "VIAS",
    "AuditDrain",
    "Change",
    "Entry",
    "append",
    "append_async",
    "changes",
    "entry",
]

log = logging.getLogger("kairos.audit")

STREAM = "{audit}:entries"
GROUP = "sink"
CLAIM_IDLE_MS = 60_000  # an entry pending this long with another sink: that sink is gone
_FIELD = b"e"  # the stream field holding the entry (one JSON line: a row of ``audit``)

# What an entry may be about (``GET /v1/audit?resource=`` takes these).
RESOURCES = (
    "placement",
    "segment",
    "journey",
    "template",
    "broadcast",
    "subscription_group",
    "subscriptions",  # a person's states (key: their profile id)
    "suppression",  # key: the address's hash, as the suppression list keeps it
    "catalog_item",
    "catalog",  # a bulk upsert (key: "items")
    "recommendations",  # a refresh of the candidate lists (key: "lists")
    "key",
    "user",
    "session",
    "erasure",  # key: the erasure request's id, never the person's
)
VIAS = ("api", "dashboard", "cli", "config")


class Change(msgspec.Struct, frozen=True):
    """One path whose value differs: ``variants[1].weight``, 1 -> 3 (absent: None)."""

    path: str
    before: Any = None
    after: Any = None


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the ``audit`` table, as it travels in the stream. ``before`` and ``after``
    are the definition's JSON ('' where there is none: a creation, a deletion), ``changes``
    the JSON list of ``Change``."""

    id: str
    timestamp: str  # ISO 8601, UTC, milliseconds
    actor: str  # key:<name>, user:<email>, config:file, webhook:feedback
    via: str  # one of VIAS
    address: str  # the client's IP ('' for the config file)
    action: str  # create, update, delete, start, pause, resume, cancel, erase, …
    resource: str  # one of RESOURCES
    resource_key: str
    before: str = ""
    after: str = ""
    changes: str = "[]"


_ENCODER = msgspec.json.Encoder()


def _path(parent: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{parent}[{name}]"
    return f"{parent}.{name}" if parent else name


def changes(before: Any, after: Any, at: str = "") -> list[Change]:
    """The paths where ``after`` differs from ``before`` (JSON values), in the order of their
    keys; lists compared item by item; a value absent on one side is None there.

    Examples:
        >>> changes({"a": 1, "v": [{"k": "x"}, {"k": "y"}]}, {"a": 2, "v": [{"k": "x"}]})
        [Change(path='a', before=1, after=2), Change(path='v[1]', before={'k': 'y'}, after=None)]
        >>> changes(None, {"a": 1})
        [Change(path='', before=None, after={'a': 1})]
        >>> changes({"a": 1}, {"a": 1})
        []
    """
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for name in [*before, *(k for k in after if k not in before)]:
            found += changes(before.get(name), after.get(name), _path(at, name))
        return found
    if isinstance(before, list) and isinstance(after, list):
        found = []
        for index in range(max(len(before), len(after))):
            old = before[index] if index < len(before) else None
            new = after[index] if index < len(after) else None
            found += changes(old, new, _path(at, index))
        return found
    return [] if before == after else [Change(at, before, after)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry(actor: str, via: str, address: str, action: str, resource: str, key: str,
          before: Any = None, after: Any = None) -> Entry:  # fmt: skip
    """An entry made now, with a new id (time-ordered: ``au_`` + ms in hex + random)."""
    if resource not in RESOURCES:
        raise ValueError(f"no audited resource {resource!r} (resources: {', '.join(RESOURCES)})")
    made = f"au_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"
    return Entry(
        id=made, timestamp=_now(), actor=actor, via=via, address=address, action=action,
        resource=resource, resource_key=key,
        before="" if before is None else _ENCODER.encode(before).decode(),
        after="" if after is None else _ENCODER.encode(after).decode(),
        changes=_ENCODER.encode(changes(_or_empty(before, after), _or_empty(after, before)))
        .decode(),
    )  # fmt: skip


def _or_empty(value: Any, other: Any) -> Any:
    """A creation's or a deletion's missing side as an empty object, so that its changes name
    each field rather than the whole definition at once."""
    return {} if value is None and isinstance(other, dict) else value


def append(client: redis.Redis, found: Entry) -> str:
    """Append ``found`` to the stream (blocking: a worker, a thread); its stream id."""
    return _text(client.xadd(STREAM, {_FIELD: _ENCODER.encode(found)}))


async def append_async(client: Any, found: Entry) -> str:
    """``append`` from asyncio (``redis.asyncio``)."""
    return _text(await client.xadd(STREAM, {_FIELD: _ENCODER.encode(found)}))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_INSERT_SETTINGS = {"date_time_input_format": "best_effort"}


class AuditDrain:
    """Moves entries from ``STREAM`` into the ``audit`` table; ``once`` per call, from the
    sink's loop. Redis errors propagate (the worker's loop retries); a failed insert is logged
    and its batch retried at the next call."""

    def __init__(self, client: redis.Redis, store: Any, shape: Shape | None, consumer: str,
                 batch: int = 500, claim_idle_ms: int = CLAIM_IDLE_MS):  # fmt: skip
        self.client = client
        self.store = store
        self.shape = shape or Shape()
        self.consumer = consumer
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self._grouped = False
        self._failing = False

    def once(self) -> int:
        """Drain one batch: the entries stored (0: none waiting, or the insert failed)."""
        taken = self.take()
        if not taken:
            return 0
        rows = [payload for _, payload in taken if payload is not None]
        if rows and not self.store_rows(taken[0][0], taken[-1][0], rows):
            return 0
        self.settle([stream_id for stream_id, _ in taken])
        return len(rows)

    def take(self) -> list[tuple[str, bytes | None]]:
        """This consumer's pending batch (an insert that failed), else one a gone sink left
        (pending longer than ``claim_idle_ms``), else new entries. A pending entry deleted
        meanwhile comes with no payload."""
        self._ensure_group()
        try:
            mine = self.client.xreadgroup(GROUP, self.consumer, {STREAM: "0"}, count=self.batch)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._grouped = False  # the stream went (a flushed Redis): made again next time
            return []
        found = _pairs(mine[0][1] if mine else [])
        if found:
            return found
        claimed = self.client.xautoclaim(STREAM, GROUP, self.consumer, self.claim_idle_ms,
                                         "0-0", count=self.batch)  # fmt: skip
        found = _pairs(claimed[1])
        if found:
            return found
        fresh = self.client.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=self.batch)
        return _pairs(fresh[0][1] if fresh else [])

    def store_rows(self, first: str, last: str, rows: list[bytes]) -> bool:
        """Insert ``rows`` (one dedup token per batch); whether ClickHouse took them."""
        token = f"audit:{first}:{last}:{len(rows)}"
        try:
            self.store.raw_insert(
                "audit", None, b"\n".join(rows) + b"\n",
                settings={**_INSERT_SETTINGS, **self.shape.insert_settings,
                          "insert_deduplication_token": token},
                fmt="JSONEachRow",
            )  # fmt: skip
        except Exception as exc:  # any ClickHouse failure: the stream keeps the batch
            if not self._failing:
                log.warning(
                    "audit entries not stored in ClickHouse; retrying",
                    extra={"error": str(exc).strip()[:300], "entries": len(rows)},
                )
            self._failing = True
            return False
        if self._failing:
            log.info("audit entries stored again", extra={"entries": len(rows)})
        self._failing = False
        return True

    def settle(self, ids: list[str]) -> None:
        """Acknowledge and delete stored entries (the stream keeps only what is not stored)."""
        self.client.xack(STREAM, GROUP, *ids)
        self.client.xdel(STREAM, *ids)

    def _ensure_group(self) -> None:
        if self._grouped:
            return
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped = True


def _pairs(reply: Any) -> list[tuple[str, bytes | None]]:
    return [(_text(stream_id), (fields or {}).get(_FIELD)) for stream_id, fields in reply]
