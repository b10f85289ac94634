"""The base of every worker that consumes the spool: one loop, one way to recover.

A worker reads batches of spool entries with its own consumer group, one partition per batch
from the partitions its leases hold, applies each batch (``process``, which returns the
counters to bump) and only then acknowledges it, in one script with those counters and the
lease check. At start, after Redis failed and whenever its partitions change, it makes sure of
its group, runs ``recover`` (state for the partitions it now holds) and first replays the
pending batch of each partition that came to it, so a crash anywhere replays exactly the batch
in flight; every worker's ``process`` is idempotent for such a replay. While Redis is
unreachable it retries with backoff, up to 10 s apart, and a set ``stop`` ends the loop at
once, whatever state the stores are in; a clean stop lets go of its leases, so that the others
take over at once.

Subclasses set ``name`` (their log lines) and override ``process`` and, where they need them,
``recover`` (``self.reader.held``: the partitions now held), ``idle`` (a poll found nothing),
``between`` (after every poll), ``read`` (how a batch is collected) and ``stopped`` (after
the loop).
"""

from __future__ import annotations

import logging
import threading
from typing import ClassVar

import redis

from collector.reader import Entry, LeaseLost, SpoolReader

__all__ = ["SpoolWorker", "Stopped"]

log = logging.getLogger("kairos.worker")


class Stopped(Exception):
    """Raised by ``process`` when ``stop`` was set before the batch was applied: the loop
    ends without acknowledging it (the next start replays it)."""


class SpoolWorker:
    name: ClassVar[str] = "worker"

    def __init__(self, reader: SpoolReader, *, max_entries: int = 500, interval: float = 0.2):
        """``max_entries``: spool entries per batch at most; ``interval``: seconds a poll waits
        for new entries."""
        self.reader = reader
        self.max_entries = max_entries
        self.interval = interval
        self.stopping = threading.Event()  # ``run``'s stop, for long work inside a batch

    def run(self, stop: threading.Event) -> None:
        """Consume the spool until ``stop`` is set."""
        self.stopping = stop
        log.info(f"{self.name} started", extra={"consumer": self.reader.consumer})
        recovering, delay = True, 0.5
        while not stop.is_set():
            try:
                if recovering:
                    self.reader.ensure_group()
                    self.reader.balance(force=True)
                    self.reader.replay_all()
                    self.recover()
                    recovering = False
                elif self.reader.balance():
                    self.recover()
                entries = self.read(stop)
                if entries:
                    self.reader.ack(entries, self.process(entries))
                else:
                    self.idle()
                self.between()
                delay = 0.5
            except Stopped:
                break
            except LeaseLost as exc:  # its new holder replays the batch
                log.warning("partition lost mid-batch; left to its new holder",
                            extra={"worker": self.name, "partition": str(exc)})  # fmt: skip
                recovering = True
            except redis.exceptions.CrossSlotTransactionError:
                raise  # a bug, not an outage
            except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                # (a cluster client that reaches no node, mid-failover, raises the latter)
                extra = {"worker": self.name, "error": str(exc), "in": delay}
                log.warning("redis unreachable; retrying", extra=extra)
                recovering = True
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self._leave()
        self.stopped()
        log.info(f"{self.name} stopped")

    def _leave(self) -> None:
        try:
            self.reader.release()
        except (redis.RedisError, redis.exceptions.RedisClusterException):
            pass  # the leases lapse by themselves

    def read(self, stop: threading.Event) -> list[Entry]:
        """The next batch: new entries, waiting up to ``interval`` for the first."""
        return self.reader.read(self.max_entries, int(self.interval * 1000))

    def process(self, entries: list[Entry]) -> dict[str, float]:
        """Apply ``entries`` durably; the counters to bump with their acknowledgement."""
        raise NotImplementedError

    def recover(self) -> None:
        """At start and after Redis failed, before the pending batch is replayed."""

    def idle(self) -> None:
        """A poll found no new entry."""

    def between(self) -> None:
        """After every poll (periodic work: refreshes, checkpoints, timers)."""

    def stopped(self) -> None:
        """After the loop ends (a last checkpoint, closing clients)."""
