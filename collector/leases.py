"""Leases: which instance of a worker kind serves which partitions of the spool.

Every instance of a worker kind is a member of its kind (``{spool}:members:<group>``, a sorted
set of names scored by when each membership lapses) and aims at its share of the partitions,
``ceil(P / members)``: it takes free leases (``SET NX PX``) up to its share and lets go of any
beyond it, between batches. So a joining instance gets its share within a balance or two, and
a dead one's partitions are free once its leases lapse (``lease_ms``), for the others to take.

A thread renews the held leases (and the membership) every third of the lease time, so a
long batch keeps them. A lease found taken by another (Redis was out of reach for longer than
the lease) is dropped and reported by the next ``balance``. An instance that lost a partition
may still be applying a batch of it: the batch's acknowledgement checks the lease in the same
script (``ack.lua``, a fencing check), so the batch is never acknowledged by it and the new
holder replays it; every worker's ``process`` is idempotent for such a replay.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib

import redis

from collector.partitions import Layout
from collector.scripts import lua

__all__ = ["LEASE_MS", "Leases", "members_key"]

log = logging.getLogger("kairos.leases")

LEASE_MS = 10_000  # a dead instance's partitions move after at most this long
BALANCE_SECONDS = 1.0  # how often an instance looks at its share
RENEW = lua(__file__, "renew.lua")
RELEASE = lua(__file__, "release.lua")


def members_key(group: str) -> str:
    """The live members of a worker kind (a sorted set: name -> when the membership lapses)."""
    return f"{{spool}}:members:{group}"


class Leases:
    """The partitions one member (``holder``) of ``group`` holds."""

    def __init__(self, client: redis.Redis, layout: Layout, group: str, holder: str,
                 lease_ms: int = LEASE_MS, exclusive: bool = False):  # fmt: skip
        """``exclusive``: one member holds every partition (a worker whose state is one, the
        learner's models); the others stand by. It is whoever holds partition 0."""
        self.client = client
        self.layout = layout
        self.group = group
        self.holder = holder
        self.lease_ms = lease_ms
        self.exclusive = exclusive
        self.members = members_key(group)
        self._held: set[int] = set()
        self._lost = False
        self._lock = threading.Lock()
        self._next_balance = 0.0
        self._renewing: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def balance(self, force: bool = False) -> bool:
        """Take or let go of partitions toward this member's share (at most once a second
        unless ``force``); True when the held set changed since the last balance."""
        now = time.monotonic()
        with self._lock:
            lost, self._lost = self._lost, False
        if not force and now < self._next_balance:
            return lost
        self._next_balance = now + BALANCE_SECONDS
        self._start_renewing()
        live = self._heartbeat()
        share = -(-self.layout.count // max(1, live))
        before = self.held
        if self.exclusive:
            share = self.layout.count if self._take(0) else 0
        if len(before) > share:
            for index in before[share:]:
                RELEASE(self.client, [self._key(index)], [self.holder])
                with self._lock:
                    self._held.discard(index)
        elif len(before) < share:
            taken = set(before)
            for index in self._order():
                if len(taken) >= share:
                    break
                if index in taken:
                    continue
                if self._take(index):
                    taken.add(index)
            with self._lock:
                self._held |= taken
        after = self.held
        if after != before:
            extra = {"group": self.group, "holder": self.holder, "partitions": after}
            log.info("partitions now held", extra={**extra, "members": live})
        return lost or after != before

    def _take(self, index: int) -> bool:
        if index in self._held:
            return True
        if self.client.set(self._key(index), self.holder, nx=True, px=self.lease_ms):
            return True
        if _text(self.client.get(self._key(index))) == self.holder:
            self.client.pexpire(self._key(index), self.lease_ms)  # ours from before a restart
            return True
        return False

    def release_all(self) -> None:
        """Let go of every lease and leave the group (a clean stop: others take over now)."""
        self._closed.set()
        for index in self.held:
            RELEASE(self.client, [self._key(index)], [self.holder])
        with self._lock:
            self._held.clear()
        self.client.zrem(self.members, self.holder)

    def stop_renewing(self) -> None:
        """Stop the renewals, keeping the leases until they lapse (what a frozen or dead
        process leaves behind; drills use it)."""
        self._closed.set()

    def renew(self) -> None:
        """Extend every held lease; one that is no longer ours is dropped."""
        for index in self.held:
            if not RENEW(self.client, [self._key(index)], [self.holder, self.lease_ms]):
                log.warning("lease lost", extra={"group": self.group, "partition": index})
                with self._lock:
                    self._held.discard(index)
                    self._lost = True

    def _heartbeat(self) -> int:
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)  # one slot ({spool}): one round trip
        pipe.zadd(self.members, {self.holder: now_ms + self.lease_ms})
        pipe.zremrangebyscore(self.members, "-inf", now_ms)
        pipe.zcard(self.members)
        return int(pipe.execute()[-1])

    def _order(self) -> list[int]:
        # Members start looking at different partitions: fewer collisions on SET NX.
        count = self.layout.count
        start = 0 if self.exclusive else zlib.crc32(self.holder.encode()) % count
        return [(start + i) % count for i in range(count)]

    def _key(self, index: int) -> str:
        return self.layout.partition(index).lease(self.group)

    def _start_renewing(self) -> None:
        if self._renewing is None or not self._renewing.is_alive():
            self._closed.clear()
            self._renewing = threading.Thread(
                target=self._renew_loop, name=f"leases-{self.group}", daemon=True
            )
            self._renewing.start()

    def _renew_loop(self) -> None:
        while not self._closed.wait(self.lease_ms / 3000):
            try:
                self.renew()
                if self.held:  # (one standing by is a member through its balances)
                    self._heartbeat()
            except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                log.debug("lease renewal failed", extra={"group": self.group, "error": str(exc)})
            except Exception as exc:  # a closed client: the next balance starts a new thread
                log.debug("lease renewal ended", extra={"group": self.group, "error": repr(exc)})
                return


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
