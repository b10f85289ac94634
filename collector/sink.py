"""The sink: drains the spool into ClickHouse's ``events`` table, exactly once.

Batches (of one partition) close on size (messages or entries) or on time. A batch is
acknowledged in the spool only after ClickHouse took it. Each insert carries a dedup token made
of its partition and its first and last entry ids (two partitions can make the same ids), and a
consumer keeps one batch in flight per partition, so a batch replayed after a crash (by the
partition's next holder claiming it) is the same batch with the same token and ClickHouse
stores it once. While ClickHouse is down the sink backs off and retries; the spool
holds the data meanwhile.

Payloads go to ClickHouse as they are (JSON lines); the schema's materialized view maps them to
rows, so the sink does no per-message work in Python.

Between batches the sink also drains the audit log's stream into the ``audit`` table
(``collector.audit.AuditDrain``), every ``_AUDIT_SECONDS`` at most.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import msgspec
import redis

from collector.audit import AuditDrain
from collector.partitions import Partition
from collector.reader import SUPPRESSED, Entry, SpoolReader, oldest_unapplied, trim
from collector.schema import INTAKE_SETTINGS, Shape, erasure
from collector.spool import STATS
from collector.worker import SpoolWorker, Stopped

__all__ = ["INSERT_BUCKETS", "Sink"]

log = logging.getLogger("kairos.sink")

INSERT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HOUSEKEEPING_SECONDS = 5.0
_AUDIT_SECONDS = 0.5
# ClickHouse error codes that mean "this data cannot be stored" rather than "not now": parse and
# conversion failures (CANNOT_PARSE_*, TYPE_MISMATCH, INCORRECT_DATA, out-of-range values).
_DATA_ERRORS = re.compile(r"Code: (6|26|27|38|41|53|69|70|72|117|131|321|407)\.")


def _is_data_error(error: str) -> bool:
    return bool(_DATA_ERRORS.search(error))


def _name(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Sink(SpoolWorker):
    """One sink consumer; ``run`` loops until ``stop`` is set (a thread or a process of its own).

    Its batches close on size or time (``read``), and every few seconds it trims what every
    group has acknowledged in the partitions it holds (``between``).
    """

    name = "sink"

    def __init__(
        self,
        reader: SpoolReader,
        store: Any,
        max_messages: int = 20_000,
        max_entries: int = 2_000,
        interval: float = 1.0,
        profiles_group: str | None = "profiles",
        profile_wait: float = 300.0,
        shape: Shape | None = None,
    ):
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.store = store
        self.shape = shape or Shape()
        self.max_messages = max_messages
        self.profiles_group = profiles_group
        self.profile_wait = profile_wait
        self._per_entry = 100  # messages per spool entry, as last seen
        self._next_housekeeping = 0.0
        self.audit = AuditDrain(reader.client, store, self.shape, reader.consumer)
        self._next_audit = 0.0

    def between(self) -> None:
        if time.monotonic() >= self._next_housekeeping:
            self._housekeeping(self.stopping)
            self._next_housekeeping = time.monotonic() + _HOUSEKEEPING_SECONDS
        if time.monotonic() >= self._next_audit:
            stored = self.audit.once()
            if stored:
                self._count({"sink_audit_entries": stored})
            self._next_audit = time.monotonic() + _AUDIT_SECONDS

    def process(self, entries: list[Entry]) -> dict[str, float]:
        counters = self._store(entries, self.stopping)
        if counters is None:
            raise Stopped
        return counters

    def read(self, stop: threading.Event) -> list[Entry]:
        entries: list[Entry] = []
        messages = 0
        deadline = time.monotonic() + self.interval
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Entries hold 1..thousands of messages: ask for as many as should fill the batch.
            want = -(-(self.max_messages - messages) // self._per_entry)
            want = max(1, min(want, self.max_entries - len(entries)))
            more = entries[0].partition if entries else None  # a batch keeps to one partition
            got = self.reader.read(want, max(1, int(remaining * 1000)), more)
            if not got:
                if more is not None:
                    break
                continue
            entries.extend(got)
            if self.reader.replayed:  # the batch in flight before: replayed as it was
                break
            read = sum(entry.count for entry in got)
            messages += read
            self._per_entry = max(1, read // len(got))
            if messages >= self.max_messages or len(entries) >= self.max_entries:
                break
        return entries

    def _store(self, entries: list[Entry], stop: threading.Event) -> dict[str, float] | None:
        """Store ``entries`` (commands among them run in their place); the counters of the
        batch, or None if stopped before ClickHouse took them."""
        elapsed, dead, run = 0.0, set[str](), list[Entry]()
        for entry in [*entries, None]:
            if entry is not None and entry.kind != "command":
                run.append(entry)
                continue
            for kind in ("events", "decisions"):  # each to its table; a command waits for both
                part = [e for e in run if e.kind == kind]
                if part:
                    stored = self.store_batch(part, stop)
                    if stored is None:
                        return None
                    elapsed, dead = elapsed + stored[0], dead | stored[1]
            run = []
            if entry is not None and not self._command(entry, stop):
                return None
        counters: dict[str, float] = {
            "sink_inserted": sum(e.count for e in entries if e.ref not in dead),
            "sink_batches": 1,
            "sink_insert_seconds_sum": elapsed,
        }
        if dead:
            counters["sink_dead_letters"] = len(dead)
        for bound in INSERT_BUCKETS:
            if elapsed <= bound:
                counters[f"sink_insert_seconds_le_{bound}"] = 1
        log.debug("batch stored", extra={"rows": counters["sink_inserted"], "seconds": elapsed})
        return counters

    def store_batch(
        self, entries: list[Entry], stop: threading.Event
    ) -> tuple[float, set[str]] | None:
        """Insert ``entries`` under their dedup token, retrying until it works or ``stop``.

        An entry ClickHouse refuses as data (a parse error: it passed validation, so a bug or a
        payload from elsewhere) is found by halving the batch and set aside in the dead-letter
        stream, so one bad entry cannot stop the pipeline. Returns (seconds the inserts took,
        ids of dead-lettered entries), or None when stopped first.
        """
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                self._insert(entries)
                return time.monotonic() - started, set()
            except Exception as exc:  # any ClickHouse failure: the spool keeps the batch
                error = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
                if _is_data_error(error):
                    return self._isolate(entries, error, stop)
                log.warning(
                    "insert into ClickHouse failed; retrying",
                    extra={"error": error, "entries": len(entries), "in": delay},
                )
                self._count({"sink_insert_errors": 1})
                if stop.wait(delay):
                    return None
                delay = min(delay * 2, 30.0)

    def _insert(self, entries: list[Entry]) -> None:
        """One insert of ``entries``, all of one kind: events through the intake view (stamped
        with profile ids), decisions straight into their table."""
        if entries[0].kind == "decisions":
            table, body = "decisions", b"".join(entry.payload for entry in entries)
        else:
            table, body = "events_intake", b"".join(self._stamped(entries))
        if not body:
            return
        first, last = entries[0], entries[-1]
        token = f"{table}:{first.partition.index}:{first.id}:{last.id}:{len(entries)}"
        self.store.raw_insert(
            table,
            None,
            body,
            settings={
                **INTAKE_SETTINGS,
                **self.shape.insert_settings,
                "insert_deduplication_token": token,
            },  # fmt: skip
            fmt="JSONEachRow",
        )

    def _command(self, entry: Entry, stop: threading.Event) -> bool:
        """Run a spool command (an erasure: delete a person's events). Idempotent."""
        command = entry.command or {}
        if command.get("kind") != "erase":
            log.error("unknown spool command; skipped", extra={"entry": entry.ref})
            return True
        delay = 0.5
        while True:
            try:
                people = [[str(v) for v in command.get(field) or []]
                          for field in ("profiles", "anonymous_ids", "user_ids")]  # fmt: skip
                for statement in erasure(self.shape, *people):
                    self.store.command(statement)
                log.info(
                    "erased a person's events",
                    extra={"entry": entry.ref, "request": command.get("request", "")},
                )
                self._count({"sink_erasures": 1})
                return True
            except Exception as exc:
                log.warning(
                    "erasure failed; retrying", extra={"error": str(exc)[:300], "in": delay}
                )
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, 30.0)

    def _stamped(self, entries: list[Entry]) -> list[bytes]:  # noqa: C901 - one careful pass
        """Payloads with each message's profile id, as the profile updater resolved it.

        The sink trails the updater, and waits for it: as long as the updater is at most
        ``profile_wait`` seconds behind (its oldest entry not yet applied is that old), the
        batch waits for its ids, and the spool holds what arrives meanwhile (backpressure: a
        full spool answers 503 with Retry-After). An updater further behind, stopped or dead
        would hold ClickHouse back without bound: past ``profile_wait`` the batch is stored
        without profile ids, counted as ``sink_unresolved``, logged as an error, and
        ``/healthz`` says the engine is degraded (``sink_unresolved_at``). Without a profile
        updater on the spool (no such group), nothing waits.
        """
        keys = [entry.partition.pids + entry.id for entry in entries if entry.count]
        partition = entries[0].partition
        behind = self._updater_behind(partition) if self.profiles_group and keys else None
        found: dict[str, bytes | None] = {}
        if behind is not None:
            measured = time.monotonic()
            while True:
                found = dict(zip(keys, self.reader.client.mget(keys)))
                if all(found.values()) or behind > self.profile_wait:
                    break
                if self.stopping.is_set():
                    raise Stopped  # the batch is replayed at the next start
                time.sleep(0.02)
                if time.monotonic() - measured >= 1.0:
                    behind = self._updater_behind(partition) or 0.0
                    measured = time.monotonic()
        stamped, unresolved, withheld = [], 0, 0
        for entry in entries:
            pids = found.get(entry.partition.pids + entry.id)
            if pids is None:
                unresolved += entry.count if behind is not None else 0
                stamped.append(entry.payload)
                continue
            for line, pid in zip(entry.payload.split(b"\n"), msgspec.json.decode(pids)):
                if pid == SUPPRESSED:  # an erased person's event that got past intake
                    withheld += 1
                    continue
                stamped.append(b'{"profileId":"' + pid.encode() + b'",' + line[1:] + b"\n")
        if unresolved:
            log.error("the profile updater is too far behind; storing events without profile ids",
                      extra={"messages": unresolved, "behind_seconds": round(behind or 0, 1),
                             "bound_seconds": self.profile_wait})  # fmt: skip
            self.reader.client.hset(STATS, "sink_unresolved_at", int(time.time()))
        if unresolved or withheld:
            self._count({"sink_unresolved": unresolved, "sink_suppressed": withheld})
        return stamped

    def _updater_behind(self, partition: Partition) -> float | None:
        """Seconds since the oldest entry of ``partition`` the profile updater has not applied
        yet was appended (0: it has applied everything; None: no profile updater on this
        spool). One that stopped, fell behind, or died holding a batch leaves an old entry
        unapplied, so this grows with the time since."""
        client = self.reader.client
        try:
            groups = client.xinfo_groups(partition.log)
        except redis.ResponseError:
            return None
        for group in groups:
            if _name(group["name"]) == self.profiles_group:
                oldest = oldest_unapplied(client, partition, group)
                return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)
        return None

    def _isolate(
        self, entries: list[Entry], error: str, stop: threading.Event
    ) -> tuple[float, set[str]] | None:
        if len(entries) == 1:
            self.reader.dead_letter(entries[0], error)
            log.error(
                "ClickHouse refused a spool entry; kept in the dead-letter stream",
                extra={"entry": entries[0].ref, "error": error},
            )
            return 0.0, {entries[0].ref}
        half = len(entries) // 2
        elapsed, dead = 0.0, set[str]()
        for part in (entries[:half], entries[half:]):
            stored = self.store_batch(part, stop)
            if stored is None:
                return None
            elapsed, dead = elapsed + stored[0], dead | stored[1]
        return elapsed, dead

    def _housekeeping(self, stop: threading.Event) -> None:
        for partition in self.reader.held:
            trimmed = trim(self.reader.client, partition)
            if trimmed:
                log.debug("spool trimmed", extra={"partition": partition.index,
                                                  "entries": trimmed})  # fmt: skip

    def _count(self, counters: dict[str, float]) -> None:
        try:
            self.reader.ack([], counters)
        except redis.RedisError:
            pass
