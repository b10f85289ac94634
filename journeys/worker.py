"""The journeys worker: a consumer group on the spool, the timers, and the outbox.

For each batch of events, in spool order and per person (the profile ids the profile updater
resolved): every running journey of theirs sees the event (exit rules end it, the event a wait is
for moves it on), then journeys the event triggers are entered (entry rules, re-entry policy).
Runs advance until a wait or an end; the actions they pass go to the outbox under their
idempotency keys, before the runs are saved (``journeys.store``). Each run keeps the spool
position of the last event it applied, per partition, so a replayed batch changes nothing. One
worker holds the whole spool (its reader is exclusive: the timers and the outbox are one, and a
person's events can come through several partitions); other instances stand by and take over
when it stops.

Between batches, once it has caught up with the spool (so an exit event already sent is seen
first), the worker wakes the runs whose waits are due, and sends what the outbox holds: a run
that has exited since its action was queued gets nothing (the exit rules are checked again right
before each action). Each delivered action is recorded as sent and never sent again; only a
delivery in flight when the worker dies (the receiver got it, the worker never saw the answer)
goes out a second time after the restart, under the same Idempotency-Key: webhooks are at least
once (tests/drills).

Journey events go to the spool (and so to ClickHouse): "Journey Entered", "Journey Step
Completed" (with the step), "Journey Action Sent" (with the step and the action), "Journey
Exited" (with the reason) and "Journey Completed", each with ``journey`` and ``entry``. Those an
event caused (entering, the steps passed at once, an exit) carry that event's time
(``wire.event_time``), not the time the worker got to it: a person who ordered a minute after
entering converted, however far behind the worker was (``journeys.stats`` compares event times).
Those the clock caused (a wait that came due, an action delivered) carry the clock's time.
``clock`` (ms) is injectable: tests move days.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import redis

from collector import wire
from collector.reader import Entry, SpoolReader, profile_ids
from collector.spool import append_now
from collector.versioned import Versioned
from collector.worker import SpoolWorker
from journeys import store
from journeys.actions import (
    GIVE_UP_MS,
    Api,
    ApiError,
    Delivery,
    backoff,
    message_for,
    post,
    webhook_secret,
)
from journeys.runs import (
    Person,
    Run,
    advance,
    enter,
    may_enter,
    on_event,
    reads_profile,
    trigger_event,
    triggers,
)
from journeys.spec import Email, Journey, Webhook
from profiles.computed import event_name
from profiles.store import ProfileStore, Snapshot, position
from profiles.views import view_of

__all__ = ["JourneyWorker"]

log = logging.getLogger("kairos.journeys")

_OWN = ("Journey Entered", "Journey Step Completed", "Journey Action Sent", "Journey Exited",
        "Journey Completed")  # fmt: skip


def _wall_ms() -> int:
    return int(time.time() * 1000)


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
    ):
        """``api``: the engine's HTTP API, for decisions and rendered recommendations."""
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.api = api
        self.client = client
        self.profiles = ProfileStore(client)
        self.clock = clock
        self.http = http or httpx.Client()
        self.profile_wait = profile_wait
        self.journeys: dict[str, Journey] = {}
        self._defs: Versioned[dict[str, Journey]] = Versioned(store.VERSION, {})
        self._by_event: dict[str, list[str]] = {}  # event name -> journeys it may trigger
        self._on_any: list[str] = []  # journeys any event may trigger (score triggers)
        self._reads: set[str] = set()  # journeys whose entry, trigger or branches read profiles
        self._caught_up = False
        self._partition = 0  # of the batch in hand
        self.lateness: deque[int] = deque(maxlen=10_000)  # ms between due and woken, recent

    def stopped(self) -> None:
        self.http.close()

    def between(self) -> None:
        self.tick()

    def idle(self) -> None:
        self._caught_up = True

    # -- events --

    def process(self, entries: list[Entry]) -> dict[str, float]:
        self._refresh()
        self._caught_up = len(entries) < self.max_entries
        if not self.journeys:
            return {}
        pids = profile_ids(self.client, entries, self.profile_wait)
        mine: dict[str, list[tuple[str, wire.Message]]] = {}
        self._partition = entries[0].partition.index
        for entry in entries:
            if entry.kind != "events":
                continue
            for i, (msg, pid) in enumerate(zip(entry.messages(), pids.get(entry.ref, []))):
                if pid and event_name(msg) is not None:
                    mine.setdefault(pid, []).append((position(entry.id, i), msg))
        counters: dict[str, float] = {}
        if mine:
            self._apply(mine, counters)
        return counters

    def _apply(
        self, mine: dict[str, list[tuple[str, wire.Message]]], counters: dict[str, float]
    ) -> None:
        runs = store.read_runs(self.client, list(mine))
        # Profiles are read only for people a journey that reads them may enter or move.
        wanted = [pid for pid, events in mine.items()
                  if any(not r.ended and r.journey in self._reads for r in runs[pid].values())
                  or any(set(self._candidates(event_name(m) or "")) & self._reads
                         for _, m in events)]  # fmt: skip
        people = {s.id: _person(s, self.clock()) for s in self.profiles.read_many(wanted)}
        now = self.clock()
        changed: list[Run] = []
        outgoing: dict[str, store.Outgoing] = {}
        said: list[wire.Message] = []
        for pid, events in mine.items():
            person = people.get(pid) or Person(pid)
            theirs = runs[pid]
            for at, msg in events:
                name = event_name(msg) or ""
                ids = _message_ids(msg)
                when = _ms(wire.event_time(msg))  # what this event causes happened then
                properties = wire.as_dict(msg.properties) if hasattr(msg, "properties") else {}
                for key, run in list(theirs.items()):
                    journey = self.journeys.get(key)
                    if journey is None or run.ended or at <= run.applied_at(self._partition):
                        continue
                    run, moved = on_event(journey, run, name, properties, now)
                    run = run.applying(self._partition, at)
                    if moved:
                        run = _advanced(journey, run, person, now, ids, outgoing, said, when)
                    theirs[key] = run
                    changed.append(run)
                    said += _said(run, ids, now, when)
                if name in _OWN:
                    continue
                for key in self._candidates(name):
                    journey = self.journeys[key]
                    if not journey.active or not triggers(journey, name, properties, person):
                        continue
                    last = theirs.get(key)
                    if last is not None and at <= last.applied_at(self._partition):
                        continue  # this very event entered it already (a replay)
                    entered = [r.entered for r in theirs.values()]
                    if not may_enter(journey, last, person, now, entered):
                        continue
                    run = enter(key, pid, (last.entry if last else 0) + 1, now, journey.start)
                    said.append(_event("Journey Entered", run, ids, now, when))
                    run = _advanced(journey, run.applying(self._partition, at), person,
                                    now, ids, outgoing, said, when)  # fmt: skip
                    theirs[key] = run
                    changed.append(run)
                    counters["journeys_entered"] = counters.get("journeys_entered", 0) + 1
                    said += _said(run, ids, now, when)
        if changed or outgoing:
            store.save(self.client, _latest(changed), outgoing, now)
        if said:
            append_now(self.client, said)

    def _candidates(self, name: str) -> list[str]:
        """The journeys an event of this name may trigger (score triggers: any event)."""
        return self._by_event.get(name, []) + self._on_any

    # -- timers and the outbox --

    def tick(self) -> None:
        if not self._caught_up:
            return
        self._refresh()
        now = self.clock()
        due = store.due_timers(self.client, now)
        if due:
            self._wake(due, now)
        self.send(now)

    def _wake(self, due: list[tuple[str, str, int]], now: int) -> None:
        self.lateness.extend(now - at for *_, at in due)
        pids = sorted({pid for pid, *_ in due})
        runs = store.read_runs(self.client, pids)
        snapshots = dict(zip(pids, self.profiles.read_many(pids)))
        changed: list[Run] = []
        outgoing: dict[str, store.Outgoing] = {}
        said: list[wire.Message] = []
        for pid, key, _ in due:
            run, journey = runs[pid].get(key), self.journeys.get(key)
            if run is None or journey is None or run.ended:
                self.client.zrem(store.TIMERS, f"{pid} {key}")  # deleted, or done meanwhile
                continue
            if run.step not in journey.steps:  # the definition changed under it
                run = msgspec.structs.replace(run, ended="exited: step removed", ended_at=now)
            else:
                person = _person(snapshots[pid], now)
                run = _advanced(journey, run, person, now, _ids(snapshots[pid]), outgoing, said)
            changed.append(run)
            said += _said(run, _ids(snapshots[pid]), now)
        store.save(self.client, changed, outgoing, now)
        if said:
            append_now(self.client, said)

    def send(self, now: int) -> int:
        """Deliver what the outbox holds that is due; returns how many were delivered."""
        delivered = 0
        for key, item in store.due_actions(self.client, now):
            journey = self.journeys.get(item.journey)
            run = store.read_runs(self.client, [item.pid])[item.pid].get(item.journey)
            if journey is None or run is None or run.entry != item.entry or (
                    run.ended.startswith("exited")) or item.step not in journey.steps:  # fmt: skip
                store.settle(self.client, key, now, "cancelled")
                continue
            if store.was_sent(self.client, key):
                store.settle(self.client, key, now, "sent")
                continue
            step = journey.steps[item.step]
            snapshot = self.profiles.read(item.pid)
            if isinstance(step, Webhook | Email):
                payload = {
                    "journey": item.journey, "step": item.step, "idempotencyKey": key,
                    "person": _document(snapshot, now), "run": msgspec.to_builtins(run),
                }  # fmt: skip
                try:
                    payload |= self._gathered(step, snapshot)
                except ApiError as exc:
                    result = Delivery(False, exc.retry, str(exc))
                else:
                    result = post(self.http, step, key, payload, webhook_secret(self.client))
                if not result.ok:
                    if result.retry and now - item.created < GIVE_UP_MS:
                        store.retry(self.client, key, item, now + backoff(item.attempts),
                                    result.detail)  # fmt: skip
                    else:
                        log.warning("journey action dropped: %s", result.detail,
                                    extra={"action": key})  # fmt: skip
                        store.settle(self.client, key, now, "dropped")
                    continue
            else:
                ids = _ids(snapshot)
                if not ids:
                    store.settle(self.client, key, now, "dropped")
                    continue
                append_now(self.client, [message_for(step, key, ids,  # type: ignore[arg-type]
                                                     {"journey": item.journey})])  # fmt: skip
            store.settle(self.client, key, now, "sent")
            kind = step.__struct_config__.tag
            sent = _event("Journey Action Sent", run, _ids(snapshot), now, step=item.step,
                          action=kind)  # fmt: skip
            append_now(self.client, [sent])
            delivered += 1
        return delivered

    def _gathered(self, step: Webhook | Email, snapshot: Snapshot) -> dict[str, Any]:
        """What the step takes from the engine's API: a decision, rendered recommendations."""
        if self.api is None and (step.decide or isinstance(step, Email)):
            raise ApiError("this worker has no API to ask (--api-url)", retry=False)
        found: dict[str, Any] = {}
        if step.decide and self.api is not None:
            found["decision"] = self.api.decide(step.decide, _ids(snapshot))
        if isinstance(step, Email) and self.api is not None:
            traits = view_of(snapshot, self.clock()).traits if snapshot.exists else {}
            found |= {"to": traits.get("email"), "subject": step.subject}
            if step.placement:
                block = self.api.rendered(snapshot.id, step.placement, step.n, step.template)
                found |= {
                    "html": block["html"],
                    "text": block["text"],
                    "recommendations": {
                        k: block[k] for k in ("decisionId", "placement", "strategy", "items")
                    },
                }
        return found

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
    said += [_event("Journey Step Completed", run, ids, now, when, step=step, at=now)
             for step in passed]  # fmt: skip
    return run


def _latest(runs: list[Run]) -> list[Run]:
    """The last state of each run (a person's events may change one run several times)."""
    return list({(r.pid, r.journey): r for r in runs}.values())


def _outgoing(run: Run, step: str, now: int) -> store.Outgoing:
    return store.Outgoing(run.journey, run.pid, run.entry, step, now)


def _person(snapshot: Snapshot, now: int) -> Person:
    if not snapshot.exists:
        return Person(snapshot.id)
    view = view_of(snapshot, now)
    zone = view.traits.get("timezone")
    return Person(
        snapshot.id, view, list(snapshot.segments), zone if isinstance(zone, str) else None
    )


def _ids(snapshot: Snapshot) -> dict[str, str]:
    found = {}
    if snapshot.fields.get("user_id"):
        found["user_id"] = snapshot.fields["user_id"]
    anonymous = [i.partition(":")[2] for i in snapshot.identities if i.startswith("anonymous_id:")]
    if anonymous:
        found["anonymous_id"] = sorted(anonymous)[0]
    return found


def _document(snapshot: Snapshot, now: int) -> dict[str, Any]:
    from profiles.views import describe

    return describe(snapshot, now) if snapshot.exists else {"id": snapshot.id}


def _message_ids(msg: wire.Message) -> dict[str, str]:
    ids = {"user_id": msg.user_id, "anonymous_id": msg.anonymous_id}
    return {k: str(v) for k, v in ids.items() if v is not None}


def _said(run: Run, ids: dict[str, str], now: int, when: int | None = None) -> list[wire.Message]:
    """The journey event of a run that just ended (at ``now``), if it did."""
    if not run.ended or run.ended_at != now:
        return []
    if run.ended == "completed":
        return [_event("Journey Completed", run, ids, now, when)]
    return [_event("Journey Exited", run, ids, now, when, reason=run.ended)]


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _event(
    name: str, run: Run, ids: dict[str, str], now: int, when: int | None = None, **more: Any
) -> wire.Message:
    """A journey event, stamped ``when`` (the causing event's time) if given, else ``now``."""
    ids = ids or {"anonymous_id": f"profile-{run.pid}"}
    stamp = datetime.fromtimestamp((now if when is None else when) / 1000, UTC)
    properties = {"journey": run.journey, "entry": run.entry, "profile_id": run.pid, **more}
    suffix = "".join(f"|{more[k]}" for k in ("step", "at") if k in more)
    return wire.Track(
        event=name, user_id=ids.get("user_id"), anonymous_id=ids.get("anonymous_id"),
        message_id=f"{name.lower().replace(' ', '-')}-{run.key}{suffix}",
        timestamp=stamp, received_at=datetime.now(UTC),
        properties=msgspec.Raw(msgspec.json.encode(properties)),
        context=msgspec.Raw(b'{"library":{"name":"kairos-journeys"}}'),
    )  # fmt: skip
