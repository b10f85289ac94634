"""Broadcasts: one message to a segment, sent once per person, at a pace, with a holdout.

A broadcast (``PUT /v1/broadcasts/{key}``)::

    {"name": "Spring sale", "segment": "newsletter_readers",
     "template": "spring_sale",                       # or variants chosen per recipient:
     "variants": {"placement": "spring_subject",      #   an A/B or bandit placement whose
                  "templates": {"a": "spring_a", "b": "spring_b"}},  # variants name templates
     "group": "newsletter",                           # the subscription group it is sent under
     "send_at": "2026-04-02T08:00:00Z",               # or none: when started
     "local_time": "10:00",                           # or at this hour in each person's zone
     "throttle": 20, "holdout": 0.1,
     "goal": "Order Completed", "goal_window": "3d"}

Its life: ``draft`` → ``start`` → ``scanning`` (the segment's members are read in pages, each
queued for their send time) → ``sending`` once every member is queued → ``completed`` when the
queue is empty; ``pause`` / ``resume`` stop and restart the
feed wherever it is, ``cancel`` drops what has not been fed. The journeys worker runs it
(``Broadcaster.tick``, between batches; one instance at a time, by a lease per broadcast): it
feeds at most ``throttle`` people a second, each when due: a held-out one (sticky per person)
is only said to be exposed, the others' messages go into their partitions' outboxes, and
the partition's holder sends them like journey actions (``journeys.delivery``), with the same
claims and the same record of what was sent — so each person gets it once, and only a crash
between the SMTP server's accept and that record sends a second copy, with the same Message-ID.

Every member is an exposure: "Broadcast Targeted" (``group``: the variant, ``treated`` with
one template, or ``holdout``), whatever becomes of the message then (skipped for consent, say):
results compare like with like (intention to treat).

Examples:
    >>> BROADCAST.decode(b'{"segment": "all", "template": "t", "holdout": 0.7}')
    Traceback (most recent call last):
    ...
    msgspec.ValidationError: Expected `float` <= 0.5 - at `$.holdout`
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import redis

from bandits.hashing import bucket
from collector.partitions import Layout
from journeys import queues
from journeys.spec import Duration, parse_duration
from journeys.store import Outgoing, actions_key
from profiles.membership import member_key
from profiles.store import ProfileStore

__all__ = ["ACTIONS", "BROADCAST", "Broadcast", "Broadcaster", "Variants", "control", "state_of",
           "PREFIX", "action_key", "broadcast_of"]  # fmt: skip

DEFS = "{bc}:defs"
VERSION = "{bc}:version"
PREFIX = "broadcast:"  # an outbox action's ``journey`` field for a broadcast's message
TemplateKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_][a-z0-9_-]{0,63}$")]
Status = Literal["draft", "scanning", "sending", "paused", "completed", "cancelled"]


class Variants(msgspec.Struct, forbid_unknown_fields=True):
    """Templates chosen per recipient by a placement (an A/B test or a bandit): its decided
    variant's key names the template."""

    placement: TemplateKey
    templates: Annotated[dict[str, TemplateKey], msgspec.Meta(min_length=2)]


class Broadcast(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    segment: Annotated[str, msgspec.Meta(min_length=1)]
    template: TemplateKey | None = None
    variants: Variants | None = None
    group: str | None = None
    name: str = ""
    send_at: datetime | None = None
    local_time: Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None
    throttle: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 20.0  # messages per second
    holdout: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.0
    goal: str | None = None
    goal_window: Duration = "3d"

    def __post_init__(self) -> None:
        if (self.template is None) == (self.variants is None):
            raise ValueError("a broadcast has either `template` or `variants`")
        if self.send_at is not None and self.send_at.tzinfo is None:
            raise ValueError("`send_at` must have a time zone, e.g. 2026-04-02T08:00:00Z")
        if self.holdout > 0 and not self.goal:
            raise ValueError("`goal` must be set with a holdout: it is what the holdout measures")
        parse_duration(self.goal_window)


BROADCAST = msgspec.json.Decoder(Broadcast)


def state_key(key: str) -> str:
    return f"{{bc:{key}}}:state"  # hash: status, cursor, scanned, held_out, fed, at … (one slot)


def pending_key(key: str) -> str:
    return f"{{bc:{key}}}:pending"  # zset pid -> when to send (ms)


def lease_key(key: str) -> str:
    return f"{{bc:{key}}}:runner"


def action_key(key: str, pid: str) -> str:
    """The outbox key of the broadcast's message to ``pid`` (``journeys.store.pid_of`` reads
    the person from it; the Message-ID is made of it)."""
    return f"{PREFIX}{key}|{pid}|1|send"


def broadcast_of(journey_field: str) -> str | None:
    return journey_field[len(PREFIX) :] if journey_field.startswith(PREFIX) else None


def state_of(client: redis.Redis, key: str) -> dict[str, str]:
    found = {k.decode(): v.decode() for k, v in client.hgetall(state_key(key)).items()}
    found.setdefault("status", "draft")
    found["pending"] = str(client.zcard(pending_key(key)))
    return found


_MOVES: dict[str, tuple[tuple[str, ...], str]] = {
    "start": (("draft",), "scanning"),
    "pause": (("scanning", "sending"), "paused"),
    "resume": (("paused",), ""),  # back to what it was
    "cancel": (("draft", "scanning", "sending", "paused"), "cancelled"),
}


ACTIONS = ("start", "pause", "resume", "cancel")
_STAMP = {"start": "started_at", "pause": "paused_at", "resume": "resumed_at",
          "cancel": "cancelled_at"}  # fmt: skip


def control(client: redis.Redis, key: str, action: str, now: int) -> str:
    """Apply ``action`` (start, pause, resume, cancel); the new status, or ValueError naming
    the statuses it is allowed from."""
    allowed, target = _MOVES[action]
    state = state_of(client, key)
    if state["status"] not in allowed:
        raise ValueError(f"{action}: the broadcast is {state['status']}; {action} is for a "
                         f"broadcast that is {' or '.join(allowed)}")  # fmt: skip
    target = target or state.get("paused_from", "scanning")
    changes: dict[str, str | int] = {"status": target, _STAMP[action]: now}
    if action == "pause":
        changes["paused_from"] = state["status"]
    pipe = client.pipeline(transaction=True)  # one slot: {bc:<key>}
    pipe.hset(state_key(key), mapping=changes)
    if action == "start":
        pipe.hset(state_key(key), mapping={"cursor": 0, "scanned": 0, "held_out": 0, "fed": 0,
                                           "fed_at": now})  # fmt: skip
    if action == "cancel":
        pipe.delete(pending_key(key))
    pipe.execute()
    return target


def held_out(key: str, pid: str, share: float) -> bool:
    """Whether ``pid`` is in the broadcast's holdout: sticky, and independent of any other
    broadcast's (the key salts the hash)."""
    return share > 0 and bucket(pid, f"broadcast:{key}") < share


def send_time(broadcast: Broadcast, started: int, timezone: str | None) -> int:
    """When the person's message is due (ms): ``send_at`` (else the start), or with
    ``local_time`` that hour on their clock, on the day it would otherwise go (or the next)."""
    at = int(broadcast.send_at.timestamp() * 1000) if broadcast.send_at else started
    if broadcast.local_time is None:
        return at
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    local = datetime.fromtimestamp(at / 1000, zone)
    hour, minute = map(int, broadcast.local_time.split(":"))
    due = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due < local:
        due += timedelta(days=1)
    return int(due.timestamp() * 1000)


class Broadcaster:
    """Runs the broadcasts: reads audiences, feeds the outbox at each one's pace."""

    def __init__(self, client: redis.Redis, layout: Layout, holder: str, page: int = 1000):
        self.client = client
        self.layout = layout
        self.holder = holder
        self.page = page
        self.profiles = ProfileStore(client)

    def tick(self, now: int) -> list[tuple[str, str, str]]:
        """One round over the running broadcasts; the (broadcast, pid, group) exposures of the
        people it held out (their "Broadcast Targeted" events, for the caller to append)."""
        exposures: list[tuple[str, str, str]] = []
        for raw_key, raw in self.client.hgetall(DEFS).items():
            key = raw_key.decode()
            status = (self.client.hget(state_key(key), "status") or b"draft").decode()
            if status not in ("scanning", "sending") or not self._lease(key, now):
                continue
            broadcast = BROADCAST.decode(raw)
            if status == "scanning":
                self._scan(key, broadcast, now)
            exposures += self._feed(key, broadcast, now)
        return exposures

    def _lease(self, key: str, now: int) -> bool:
        """Whether this instance runs broadcast ``key`` now (a lease renewed every tick)."""
        lease = lease_key(key)
        if self.client.set(lease, self.holder, nx=True, px=10_000):
            return True
        if (self.client.get(lease) or b"").decode() == self.holder:
            self.client.pexpire(lease, 10_000)
            return True
        return False

    def _scan(self, key: str, broadcast: Broadcast, now: int) -> None:
        """Queue one page of the segment's members for their send time (the held-out ones
        too: they are exposed when they would have been sent, so that both groups' goal
        windows start alike); ``sending`` after the last page."""
        state = state_of(self.client, key)
        started = int(state.get("started_at", now))
        at = int(state.get("cursor", 0))
        cursor, members = self.client.sscan(member_key(broadcast.segment), at, count=self.page)
        pids = sorted(m.decode() for m in members)
        zones: dict[str, str | None] = {}
        if broadcast.local_time is not None and pids:
            for snapshot in self.profiles.read_many(pids):
                zone = snapshot.traits().get("timezone")
                zones[snapshot.id] = zone if isinstance(zone, str) else None
        pipe = self.client.pipeline(transaction=True)  # one slot: {bc:<key>}
        if pids:
            pipe.zadd(pending_key(key), {p: send_time(broadcast, started, zones.get(p))
                                         for p in pids}, nx=True)  # fmt: skip
        pipe.hincrby(state_key(key), "scanned", len(pids))
        pipe.hset(state_key(key), mapping={"cursor": int(cursor)} | (
            {"status": "sending", "scanned_at": now} if int(cursor) == 0 else {}))  # fmt: skip
        pipe.execute()
        # (a page read again after a crash queues nobody twice: ZADD NX, and the outbox and
        # its record of what was sent are keyed by person; the counts may then run over)

    def _feed(self, key: str, broadcast: Broadcast, now: int) -> list[tuple[str, str, str]]:
        """Move what is due into the recipients' partitions' outboxes, at most ``throttle`` a
        second (what the last feed left unspent carries over, up to a second's worth); the
        held-out people due are returned as exposures instead."""
        state = state_of(self.client, key)
        last = int(state.get("fed_at", now))
        budget = int(min(broadcast.throttle, broadcast.throttle * (now - last) / 1000))
        if budget < 1:
            return []
        found = [m.decode() for m in self.client.zrangebyscore(pending_key(key), "-inf", now,
                                                                start=0, num=budget)]  # fmt: skip
        kept = [p for p in found if not held_out(key, p, broadcast.holdout)]
        exposures = [(key, p, "holdout") for p in found if p not in set(kept)]
        due = kept
        if due:
            actions = [(action_key(key, pid), Outgoing(
                journey=f"{PREFIX}{key}", pid=pid, entry=1, step="send", created=now,
                home=zlib.crc32(pid.encode()) % self.layout.count)) for pid in due]  # fmt: skip
            pipe = self.client.pipeline(transaction=False)
            for action, item in actions:
                pipe.hsetnx(actions_key(item.pid), action, msgspec.json.encode(item))
            pipe.execute()
            queues.index_actions(self.client, self.layout, actions)
        # Only now off the queue: a crash before this feeds them again, to the same outbox
        # entries (HSETNX, ZADD NX), which are sent once, and says the same exposures again
        # (their events' messageIds are the same: the spool keeps one of each).
        if found:
            self.client.zrem(pending_key(key), *found)
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(state_key(key), "fed", len(due))
        pipe.hincrby(state_key(key), "held_out", len(exposures))
        pipe.hset(state_key(key), "fed_at", now)
        if state["status"] == "sending" and len(found) < budget and not self.client.zcount(
                pending_key(key), "-inf", "+inf"):  # fmt: skip
            pipe.hset(state_key(key), mapping={"status": "completed", "completed_at": now})
        pipe.execute()
        return exposures


# -- storage --


def broadcasts(client: redis.Redis) -> dict[str, Broadcast]:
    return {k.decode(): BROADCAST.decode(v) for k, v in client.hgetall(DEFS).items()}


def put_broadcast(client: redis.Redis, key: str, broadcast: Broadcast) -> bool:
    """Create or replace a broadcast; True if it changed. Only a draft may change (what is
    being sent stays what it was)."""
    status = (client.hget(state_key(key), "status") or b"draft").decode()
    if status != "draft":
        raise ValueError(f"the broadcast is {status}: only a draft may be changed")
    current = client.hget(DEFS, key)
    if current is not None and BROADCAST.decode(current) == broadcast:
        return False
    pipe = client.pipeline(transaction=True)
    pipe.hset(DEFS, key, msgspec.json.encode(broadcast))
    pipe.incr(VERSION)
    pipe.execute()
    return True


def delete_broadcast(client: redis.Redis, key: str) -> bool:
    status = (client.hget(state_key(key), "status") or b"draft").decode()
    if status in ("scanning", "sending", "paused"):
        raise ValueError(f"the broadcast is {status}: cancel it first")
    pipe = client.pipeline(transaction=True)
    pipe.hdel(DEFS, key)
    pipe.incr(VERSION)
    deleted, _ = pipe.execute()
    client.delete(state_key(key), pending_key(key), lease_key(key))
    return bool(deleted)
