"""The journeys worker: a consumer group on the spool, the timers, and the outbox.

For each batch of events (of one partition), in spool order and per person (the profile ids
the profile updater resolved): every running journey of theirs sees the event (exit rules end
it, the event a wait is for moves it on), then journeys the event triggers are entered (entry
rules, re-entry policy). Runs advance until a wait or an end; the actions they pass are saved
with the runs, in one script per person (``journeys.store``). Each run keeps the spool position
of the last event it applied, per partition, so a replayed batch changes nothing.

Any number of instances share the partitions (``collector.leases``), and one person's events can
come through several partitions (two devices, a server's events by ``userId``), so two instances
may change one person's runs at once: the save is a compare-and-set on the person's version,
and the instance that loses it reads that person's runs again and plans their part of the batch
again (or of the timer round). So no step is applied twice or lost, and an action exists only
if the run that reached it was saved.

A run lives in the partition of the event that entered it (``Run.home``): its timer and its
actions are in that partition's keys (``journeys.shards``), and the instance holding the
partition wakes and sends them between batches, once every partition has caught up to their
time (so an exit event already sent is seen first, whichever partition it came through). A run
that has exited since its action was queued gets nothing (the exit rules are checked again
right before each action). Each delivery is claimed first, so two instances never send one
action at once (a partition's lease can move while its former holder is still at work); each
delivered action is recorded as sent and never sent again; only a delivery in flight when the
worker dies (the receiver got it, the worker never saw the answer) goes out a second time
after the restart, under the same Idempotency-Key: webhooks are at least once (tests/drills).

Journey events go to the spool (and so to ClickHouse): "Journey Entered", "Journey Step
Completed" (with the step), "Journey Action Sent" (with the step and the action), "Journey
Exited" (with the reason) and "Journey Completed", each with ``journey`` and ``entry``
("Journey Entered" also with the person's ``group``: treated, or holdout). Those an
event caused (entering, the steps passed at once, an exit) carry that event's time
(``wire.event_time``), not the time the worker got to it: a person who ordered a minute after
entering converted, however far behind the worker was (``journeys.stats`` compares event times).
Those the clock caused (a wait that came due, an action delivered) carry the clock's time.
``clock`` (ms) is injectable: tests move days; instances sharing a spool need clocks that agree.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import msgspec
import redis

from collector import wire
from collector.partitions import Layout
from collector.reader import Entry, SpoolReader, profile_ids
from collector.spool import append_now
from collector.versioned import Versioned
from collector.worker import SpoolWorker
from journeys import queues, store, subscriptions
from journeys.actions import Api
from journeys.broadcasts import Broadcaster, action_key
from journeys.community import ChannelSettings
from journeys.delivery import Courier
from journeys.events import ended, event, ids_of, message_ids
from journeys.mailer import Mailer, message_event
from journeys.runs import (
    Person,
    Run,
    advance,
    enter,
    group_of,
    may_enter,
    on_event,
    reads_profile,
    trigger_event,
    triggers,
)
from journeys.shards import Shard, caught_up, shard_of
from journeys.spec import Journey
from profiles.computed import event_name
from profiles.store import ProfileStore, Snapshot, position
from profiles.views import view_of

__all__ = ["JourneyWorker"]

log = logging.getLogger("kairos.journeys")

_OWN = ("Journey Entered", "Journey Step Completed", "Journey Action Sent", "Journey Exited",
        "Journey Completed")  # fmt: skip


_ROUNDS = 32  # saves of one person lost to another instance's in a row: a few at most


def _wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Plan:
    """What one person's part of a batch (or of a timer round) does, before it is saved."""

    runs: list[Run] = field(default_factory=list)  # the last state of each run changed
    outgoing: dict[str, store.Outgoing] = field(default_factory=dict)  # actions reached
    said: list[wire.Message] = field(default_factory=list)  # journey events, once saved
    entered: int = 0
    late: list[int] = field(default_factory=list)  # ms each woken run was late by


class JourneyWorker(SpoolWorker):
    name = "journeys worker"

    def __init__(
        self,
        reader: SpoolReader,
        client: redis.Redis,
        clock: Callable[[], int] = _wall_ms,
        http: httpx.Client | None = None,
        max_entries: int = 500,
        interval: float = 0.2,
        profile_wait: float = 10.0,
        api: Api | None = None,
        mailer: Mailer | None = None,
        channels: ChannelSettings | None = None,
    ):
        """``api``: the engine's HTTP API, for decisions and rendered recommendations;
        ``mailer``: what sends email steps with a template (``journeys.mailer``); ``channels``:
        where Discord and Telegram are, and the bot's token."""
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.api = api
        self.client = client
        self.profiles = ProfileStore(client)
        self.clock = clock
        self.http = http or httpx.Client()
        self.broadcaster = Broadcaster(client, reader.layout, reader.consumer)
        self.courier = Courier(client, reader.layout, reader.consumer, self.http, api, clock,
                               mailer, channels)  # fmt: skip
        self.profile_wait = profile_wait
        self.journeys: dict[str, Journey] = {}
        self._defs: Versioned[dict[str, Journey]] = Versioned(store.VERSION, {})
        self._by_event: dict[str, list[str]] = {}  # event name -> journeys it may trigger
        self._on_any: list[str] = []  # journeys any event may trigger (score triggers)
        self._reads: set[str] = set()  # journeys whose entry, trigger or branches read profiles
        self._caught: set[int] = set()  # held partitions a poll found caught up since the tick
        self._partition = 0  # of the batch in hand
        self.lateness: deque[int] = deque(maxlen=10_000)  # ms between due and woken, recent

    @property
    def layout(self) -> Layout:
        return self.reader.layout

    def stopped(self) -> None:
        self.http.close()
        if self.courier.mailer is not None:
            self.courier.mailer.close()

    def between(self) -> None:
        self.tick()

    def idle(self) -> None:
        self._caught |= {p.index for p in self.reader.held}

    # -- events --

    def process(self, entries: list[Entry]) -> dict[str, float]:
        self._refresh()
        self._partition = entries[0].partition.index
        if len(entries) < self.max_entries and not self.reader.replayed:
            self._caught.add(self._partition)
        else:  # more to read (a replay: then what came after it)
            self._caught.discard(self._partition)
        # Subscribed / Unsubscribed events change subscription states, journeys or not.
        pending: list[tuple[str, str]] = []
        applied = subscriptions.apply_events(self.client, entries, self.profile_wait, pending)
        if pending and self.courier.mailer is not None:
            self.courier.mailer.confirm(pending)
        counters: dict[str, float] = {"subscription_events": applied} if applied else {}
        if not self.journeys:
            return counters
        pids = profile_ids(self.client, entries, self.profile_wait)
        mine: dict[str, list[tuple[str, wire.Message]]] = {}
        for entry in entries:
            if entry.kind != "events":
                continue
            for i, (msg, pid) in enumerate(zip(entry.messages(), pids.get(entry.ref, []))):
                if pid and event_name(msg) is not None:
                    mine.setdefault(pid, []).append((position(entry.id, i), msg))
        if mine:
            self._apply(mine, counters)
        return counters

    def _apply(
        self, mine: dict[str, list[tuple[str, wire.Message]]], counters: dict[str, float]
    ) -> None:
        """Apply each person's events to their runs, and save them: a person whose runs
        another instance saved meanwhile is read and planned again (their part only)."""
        read = store.read_people(self.client, list(mine))
        people: dict[str, Person] = {}
        saved: dict[str, store.People] = {}
        wanted: queues.Wanted = {}
        actions: list[tuple[str, store.Outgoing]] = []
        said: list[wire.Message] = []
        todo = list(mine)
        for _ in range(_ROUNDS):
            self._read_profiles(mine, read, todo, people)
            now = self.clock()
            plans = {pid: self._plan(pid, mine[pid], read[pid].runs,
                                     people.get(pid) or Person(pid), now)
                     for pid in todo}  # fmt: skip
            versions = store.save_people(self.client, {
                pid: (read[pid], plan.runs, plan.outgoing)
                for pid, plan in plans.items() if plan.runs or plan.outgoing})  # fmt: skip
            for pid, plan in plans.items():
                if versions.get(pid) == 0:
                    continue  # saved by another meanwhile: planned again below
                said += plan.said
                if plan.entered:
                    counters["journeys_entered"] = (
                        counters.get("journeys_entered", 0) + plan.entered
                    )
                if pid in versions:
                    saved[pid] = _after(read[pid], versions[pid], plan.runs)
                    wanted[pid] = _homes(read[pid], plan.runs)
                    actions += plan.outgoing.items()
            todo = [pid for pid, version in versions.items() if version == 0]
            if not todo:
                break
            read |= store.read_people(self.client, todo)
        else:
            raise RuntimeError(f"journeys: the runs of {sorted(todo)} kept changing")
        queues.place_timers(self.client, self.layout, wanted, saved)
        queues.index_actions(self.client, self.layout, actions)
        if self.reader.replayed:  # its first run may have died before writing the indexes
            queues.reindex(self.client, self.layout, {pid: saved.get(pid) or read[pid]
                                                      for pid in mine}, self.journeys)  # fmt: skip
        if said:
            append_now(self.client, said, self.layout)

    def _read_profiles(self, mine: dict[str, list[tuple[str, wire.Message]]],
                       read: dict[str, store.People], todo: list[str],
                       people: dict[str, Person]) -> None:  # fmt: skip
        """Profiles are read only for people a journey that reads them may enter or move."""
        wanted = [pid for pid in todo if pid not in people and (
                  any(not r.ended and r.journey in self._reads for r in read[pid].runs.values())
                  or any(set(self._candidates(event_name(m) or "")) & self._reads
                         for _, m in mine[pid]))]  # fmt: skip
        now = self.clock()
        people |= {s.id: _person(s, now) for s in self.profiles.read_many(wanted)}

    def _plan(self, pid: str, events: list[tuple[str, wire.Message]], runs: dict[str, Run],
              person: Person, now: int) -> _Plan:  # fmt: skip
        """What one person's events of the batch do to their runs (as read: ``runs``)."""
        plan, theirs, changed = _Plan(), dict(runs), []
        partition = self._partition
        for at, msg in events:
            name = event_name(msg) or ""
            ids = message_ids(msg)
            when = _ms(wire.event_time(msg))  # what this event causes happened then
            properties = wire.as_dict(msg.properties) if hasattr(msg, "properties") else {}
            for key, run in list(theirs.items()):
                journey = self.journeys.get(key)
                if journey is None or run.ended or at <= run.applied_at(partition):
                    continue
                run, moved = on_event(journey, run, name, properties, now)
                run = run.applying(partition, at)
                if moved:
                    run = _advanced(journey, run, person, now, ids, plan.outgoing, plan.said,
                                    when)  # fmt: skip
                theirs[key] = run
                changed.append(run)
                plan.said += ended(run, ids, now, when)
            if name in _OWN:
                continue
            for key in self._candidates(name):
                journey = self.journeys[key]
                if not journey.active or not triggers(journey, name, properties, person):
                    continue
                last = theirs.get(key)
                if last is not None and at <= last.applied_at(partition):
                    continue  # this very event entered it already (a replay)
                entered = [r.entered for r in theirs.values()]
                if not may_enter(journey, last, person, now, entered):
                    continue
                run = enter(key, pid, (last.entry if last else 0) + 1, now, journey.start,
                            home=partition, group=group_of(journey, key, pid))  # fmt: skip
                plan.said.append(event("Journey Entered", run, ids, now, when, group=run.group))
                run = _advanced(journey, run.applying(partition, at), person, now, ids,
                                plan.outgoing, plan.said, when)  # fmt: skip
                theirs[key] = run
                changed.append(run)
                plan.entered += 1
                plan.said += ended(run, ids, now, when)
        plan.runs = _latest(changed)
        return plan

    def _candidates(self, name: str) -> list[str]:
        """The journeys an event of this name may trigger (score triggers: any event)."""
        return self._by_event.get(name, []) + self._on_any

    # -- timers and the outbox --

    def tick(self) -> None:
        """Wake the due runs and send the due actions of the partitions held, up to the time
        every partition has caught up to (``journeys.shards``)."""
        self._refresh()
        now = self.clock()
        held = [p.index for p in self.reader.held]
        marks = {p: now for p in self._caught if p in held}
        self._caught.clear()
        upto = caught_up(self.client, self.layout, marks, now)
        if upto < 0:
            return
        for index in held:
            shard = shard_of(self.layout, index)
            due = queues.due_timers(self.client, shard, upto)
            if due:
                self._wake(shard, due, now, upto)
        self._broadcast(now)
        self.send(now, upto)

    def _broadcast(self, now: int) -> None:
        """Run the broadcasts a step (``journeys.broadcasts``); say who each held out."""
        exposures = self.broadcaster.tick(now)
        if not exposures:
            return
        snapshots = self.profiles.read_many([pid for _, pid, _ in exposures])
        append_now(self.client, [
            message_event("Broadcast Targeted", snapshot, action_key(key, pid), now,
                          broadcast=key, group=group)
            for (key, pid, group), snapshot in zip(exposures, snapshots)], self.layout)  # fmt: skip

    def _wake(self, shard: Shard, due: list[tuple[str, str, int]], now: int, upto: int) -> None:
        mine: dict[str, list[str]] = {}
        for pid, key, _ in due:
            if key in self.journeys:
                mine.setdefault(pid, []).append(key)
            else:  # deleted: its runs stay where they are, and wake no more
                self.client.zrem(shard.timers, queues.member(pid, key))
        pids = sorted(mine)
        if not pids:
            return
        read = store.read_people(self.client, pids)
        snapshots = dict(zip(pids, self.profiles.read_many(pids)))
        saved: dict[str, store.People] = {}
        said: list[wire.Message] = []
        todo = pids
        for _ in range(_ROUNDS):
            plans = {pid: self._woken(shard.index, mine[pid], read[pid].runs, snapshots[pid],
                                      now, upto) for pid in todo}  # fmt: skip
            versions = store.save_people(self.client, {
                pid: (read[pid], plan.runs, plan.outgoing)
                for pid, plan in plans.items() if plan.runs})  # fmt: skip
            for pid, plan in plans.items():
                if versions.get(pid) == 0:
                    continue
                said += plan.said
                self.lateness.extend(plan.late)
                if pid in versions:
                    saved[pid] = _after(read[pid], versions[pid], plan.runs)
            todo = [pid for pid, version in versions.items() if version == 0]
            if not todo:
                break
            read |= store.read_people(self.client, todo)
        else:
            raise RuntimeError(f"journeys: the runs of {sorted(todo)} kept changing")
        final = {pid: saved.get(pid) or read[pid] for pid in pids}
        # The members that fired, wherever their runs now wait; and every index of these
        # people (a save that died before writing them is why a member may fire early).
        fired = {pid: {key: {shard.index} for key in keys} for pid, keys in mine.items()}
        queues.place_timers(self.client, self.layout, fired, final)
        queues.reindex(self.client, self.layout, final, self.journeys)
        if said:
            append_now(self.client, said, self.layout)

    def _woken(self, partition: int, keys: list[str], runs: dict[str, Run], snapshot: Snapshot,
               now: int, upto: int) -> _Plan:  # fmt: skip
        """What the clock does to one person's runs whose timers fired (as read: ``runs``)."""
        plan = _Plan()
        for key in keys:
            run, journey = runs.get(key), self.journeys[key]
            if run is None or run.ended or run.home != partition or not 0 < run.due <= upto:
                continue  # (its timer is placed again from the run)
            plan.late.append(now - run.due)
            if run.step not in journey.steps:  # the definition changed under it
                run = msgspec.structs.replace(run, ended="exited: step removed", ended_at=now)
            else:
                person = _person(snapshot, now)
                run = _advanced(journey, run, person, now, ids_of(snapshot), plan.outgoing,
                                plan.said)  # fmt: skip
            plan.runs.append(run)
            plan.said += ended(run, ids_of(snapshot), now)
        return plan

    def send(self, now: int, upto: int | None = None) -> int:
        """Deliver the actions of the partitions held that are due by ``upto`` (default
        ``now``); returns how many were delivered."""
        held = [shard_of(self.layout, p.index) for p in self.reader.held]
        return self.courier.send(held, self.journeys, now, now if upto is None else upto)

    def _refresh(self) -> None:
        version = self.client.get(store.VERSION)
        if self._defs.stale(version):
            self.journeys = self._defs.update(version, store.journeys(self.client))
            self._by_event, self._on_any = {}, []
            self._reads = {k for k, j in self.journeys.items() if reads_profile(j)}
            for key, journey in sorted(self.journeys.items()):
                name = trigger_event(journey)
                if name is None:
                    self._on_any.append(key)
                else:
                    self._by_event.setdefault(name, []).append(key)


def _advanced(
    journey: Journey,
    run: Run,
    person: Person,
    now: int,
    ids: dict[str, str],
    outgoing: dict[str, store.Outgoing],
    said: list[wire.Message],
    when: int | None = None,
) -> Run:
    """``advance``, with its actions queued and a "Journey Step Completed" per step passed
    (stamped ``when``: the time of the event that moved the run, else ``now``)."""
    passed: list[str] = []
    run, actions = advance(journey, run, person, now, passed)
    outgoing |= {a.key: _outgoing(run, a.step, now) for a in actions}
    said += [event("Journey Step Completed", run, ids, now, when, step=step, at=now)
             for step in passed]  # fmt: skip
    return run


def _latest(runs: list[Run]) -> list[Run]:
    """The last state of each run (a person's events may change one run several times)."""
    return list({(r.pid, r.journey): r for r in runs}.values())


def _after(read: store.People, version: int, runs: list[Run]) -> store.People:
    """A person's runs as just saved (at ``version``: nothing came in between)."""
    return store.People(version, {**read.runs, **{r.journey: r for r in runs}})


def _homes(read: store.People, runs: list[Run]) -> dict[str, set[int]]:
    """Where the timers of the runs saved may be: their partition, and their previous run's."""
    found: dict[str, set[int]] = {}
    for run in runs:
        before = read.runs.get(run.journey)
        found[run.journey] = {run.home} | ({before.home} if before is not None else set())
    return found


def _outgoing(run: Run, step: str, now: int) -> store.Outgoing:
    return store.Outgoing(run.journey, run.pid, run.entry, step, now, home=run.home)


def _person(snapshot: Snapshot, now: int) -> Person:
    if not snapshot.exists:
        return Person(snapshot.id)
    view = view_of(snapshot, now)
    zone = view.traits.get("timezone")
    return Person(
        snapshot.id, view, list(snapshot.segments), zone if isinstance(zone, str) else None
    )


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)
