"""The learner's feature side: one spool partition's events made into people's records,
examples, labels and scores, in that partition's order.

For a batch of its partition (``Run``) it reads each person's record (``{p:<id>}:learn``, a
``History`` with a version), applies their events — the labels each settles first, then the
event, then new examples holding the prediction of the current models —, settles the churn
examples whose deadline has passed (``{learn}:due[:<p>]``: person -> deadline of the churn
example this partition last wrote; the bound is the lowest watermark of all partitions, less
five minutes, so that a person's return seen through a partition that is behind still counts),
and forgets erased people. Then it commits in three steps:

1. **stage** (``stage.lua``): the whole batch — each person's new record, scores, examples and
   labels, the deadlines, the partition's new position, serial (its count of batches),
   watermark and scaler — goes into the partition's outbox, ``{learn}:outbox[:<p>]``;
2. **records** (``record.lua``, with the person's scores in the same script: one slot): each
   record is written by compare-and-set on its version, because another partition's feature
   side may have written the same person since it was read (their other device, server-side
   events by userId, both at once). A record that moved on is read again, the person's events
   of the batch are applied again to it as it is now (the scaler does not learn them twice),
   and that part of the outbox is staged again and written again;
3. **apply** (``applied.lua``): the examples, labels and deadlines go into the ``{learn}``
   slot with the position, serial, watermark and scaler, and the outbox goes — only if the
   batch is still the partition's next (its serial) and the outbox still the caller's.

Exactly once: a record carries the serial of the last batch of each partition that wrote it
(``by``). After a crash between 2 and 3, whoever takes the outbox over (``take.lua``: at the
next start, ``Learner.restore``, or when the batch is replayed) writes the records it holds
again — those already written are recognised by their ``by`` and kept as staged — and applies
it; a batch at or below the position applied is skipped. The outbox has one owner at a time: an
instance that lost the partition mid-batch can neither stage nor apply any more, and what it
may still write of the records is what its outbox, now its successor's, already holds.

Erasure commands come once per partition: each removes the person's record, this partition's
deadline and the examples still waiting (none is left by the second), so they are idempotent.
(A deleted record's version starts again from 0, so a write read before the deletion may land
on a record made after it; only an erased person's can be, and their erasure in that writer's
partition, behind that write, deletes it again.)
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from collector.pipeline import Pipeline
from collector.scripts import lua
from profiles.history import HISTORY, NUMERIC, SESSION_MS, Example, History, Open, Seen
from profiles.membership import RESCORED
from profiles.models import ModelSettings, Scaler, Stats
from profiles.scoring import LeadScoring
from profiles.store import profile_keys
from profiles.trainer import EXAMPLE, LABELS, LATENESS_MS, QUEUE, STATE, SWEEP_MAX, scaler_key
from profiles.trainer import field as state_field

__all__ = [
    "ENGINE_EVENTS",
    "Outbox",
    "RecordsMoved",
    "Run",
    "Side",
    "Staged",
    "applied_args",
    "decode_outbox",
    "deliver",
    "due_key",
    "encode_outbox",
    "learner_key",
    "outbox_key",
]

ENGINE_EVENTS = ("Segment Entered", "Segment Exited", "Decision Rewarded")
DAY_MS = 86_400_000
_SESSION_EXAMPLES_AT = (1, 3, 8)  # the session's events that make a conversion_session example
_MAX_OPEN = 40  # conversion examples per person waiting for a label (more are not made)
_SCORE_STEP = 0.005

STAGE = lua(__file__, "stage.lua")
TAKE = lua(__file__, "take.lua")
APPLIED = lua(__file__, "applied.lua")
RECORD = lua(__file__, "record.lua")

# Scaled features -> per target (calibrated score, raw score).
Predict = Callable[[dict[str, float]], dict[str, tuple[float, float]]]


def learner_key(pid: str) -> str:
    return profile_keys(pid)[7]


def due_key(partition: int) -> str:
    return f"{{learn}}:due:{partition}" if partition else "{learn}:due"


def outbox_key(partition: int) -> str:
    return f"{{learn}}:outbox:{partition}" if partition else "{learn}:outbox"


class Staged(msgspec.Struct, array_like=True):
    """One person's part of a staged batch."""

    version: int  # of the record as read: the new one is written only over that one
    record: bytes  # the new record (JSON ``History``)
    scores: list[str | float]  # ``s:<target>``, value pairs for the profile
    queued: list[tuple[int, bytes]]  # (deadline, example) into the queue
    labels: dict[str, int]  # example id -> label settled


class Outbox(msgspec.Struct, kw_only=True):
    """A partition's batch, staged (see the module's docstring)."""

    partition: int
    serial: int
    start: str  # the position applied before it ("": none)
    end: str  # and after it (a sweep without entries: the same)
    watermark: int
    swept: int  # churn deadlines up to here were settled
    scaler: bytes  # the partition's scaler after it (pickled)
    people: dict[str, Staged] = {}
    due: dict[str, int] = {}  # profile -> churn deadline in this partition's set (0: out)
    sweeping: list[str] = []  # profiles whose deadline came due in this batch
    erased: list[str] = []
    forgotten: list[bytes] = []  # queue members of erased people


decode_outbox = msgspec.msgpack.Decoder(Outbox).decode
encode_outbox = msgspec.msgpack.Encoder().encode


class RecordsMoved(Exception):
    """Records another partition's feature side wrote since they were read (profile id -> the
    record now, or None: erased)."""

    def __init__(self, records: dict[str, bytes | None]):
        super().__init__(f"{len(records)} learner record(s) moved on")
        self.records = records


class Side:
    """What a partition's last batch left: its position, serial, watermark and scaler."""

    def __init__(self, index: int):
        self.index = index
        self.applied = ""  # the last entry applied
        self.serial = 0  # batches applied
        self.watermark = 0
        self.swept = 0  # the bound of its last sweep of churn deadlines
        self.scaler = Scaler(NUMERIC)

    def field(self, name: str) -> str:
        return state_field(name, self.index)

    def load(self, state: dict[str, str], scaler: bytes | None) -> None:
        self.applied = state.get(self.field("applied"), "")
        self.serial = int(state.get(self.field("serial"), 0))
        self.watermark = int(state.get(self.field("watermark"), 0))
        self.scaler = pickle.loads(scaler) if scaler is not None else Scaler(NUMERIC)  # noqa: S301

    def adopt(self, outbox: Outbox, scaler: Scaler) -> None:
        self.applied, self.serial, self.watermark = outbox.end, outbox.serial, outbox.watermark
        self.swept, self.scaler = outbox.swept, scaler


@dataclass
class Person:
    """One person's part of a batch."""

    record: History
    version: int
    changed: bool = False
    queued: list[Example] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def _person(raw: bytes | None) -> Person:
    record = HISTORY.decode(raw) if raw is not None else History()
    return Person(record, record.version)


class Run:
    """One batch of one partition's feature side: its events (none: a sweep) applied to the
    records of their people; ``outbox`` stages it."""

    def __init__(
        self,
        side: Side,
        client: redis.Redis,
        settings: ModelSettings,
        scoring: LeadScoring,
        predict: Predict,
        others: Stats | None = None,
        floor: int = 2**62,
    ):
        """``others``: the other partitions' scaler statistics, pooled; ``floor``: their
        lowest watermark."""
        self.side = side
        self.client = client
        self.settings = settings
        self.scoring = scoring
        self.predict = predict
        self.others = others or None
        self.floor = floor
        self.scaler = copy.deepcopy(side.scaler)  # the side's own once the batch is applied
        self.watermark = side.watermark
        self.serial = side.serial + 1
        self.swept = 0
        self.people: dict[str, Person] = {}
        self.events_of: dict[str, list[Seen]] = {}  # for applying a person's events again
        self.sweeping: set[str] = set()
        self.erased: set[str] = set()
        self.forgotten: list[bytes] = []

    @classmethod
    def resumed(
        cls, outbox: Outbox, side: Side, events: list[tuple[str, Seen]], **context: Any
    ) -> Run:
        """The run that staged ``outbox`` (``events``: its batch's), able to apply a person's
        events again should their record have moved on."""
        run = cls(side, **context)
        run.scaler = pickle.loads(outbox.scaler)  # noqa: S301 - ours
        run.watermark, run.serial, run.swept = outbox.watermark, outbox.serial, outbox.swept
        run.sweeping, run.erased = set(outbox.sweeping), set(outbox.erased)
        for pid, event in events:
            run.events_of.setdefault(pid, []).append(event)
        return run

    @property
    def index(self) -> int:
        return self.side.index

    def apply(self, events: list[tuple[str, Seen]], erasures: list[set[str]]) -> None:
        """``events`` (profile id, event) in spool order, then the sweep, then ``erasures``."""
        self._load({pid for pid, _ in events})
        for pid, event in events:
            self.events_of.setdefault(pid, []).append(event)
            self._step(pid, self.people[pid], event, learn=True)
        self._sweep()
        for profiles in erasures:
            self._erase(profiles)

    def outbox(self, start: str, end: str) -> Outbox:
        people = {pid: self._staged(pid, p) for pid, p in self.people.items() if p.changed}
        due = {pid: self._deadline(pid) for pid in people}
        due |= {pid: 0 for pid in (self.sweeping | self.erased) - people.keys()}
        return Outbox(
            partition=self.index,
            serial=self.serial,
            start=start,
            end=end,
            watermark=self.watermark,
            swept=self.swept,
            scaler=pickle.dumps(self.scaler),
            people=people,
            due=due,
            sweeping=sorted(self.sweeping),
            erased=sorted(self.erased),
            forgotten=self.forgotten,
        )

    def redo(self, outbox: Outbox, pid: str, raw: bytes | None) -> None:
        """``pid``'s record moved on since it was read (``raw``: as it is now): apply their
        events of the batch again to it, and stage the result in ``outbox``."""
        person = self.people[pid] = _person(raw)
        for event in self.events_of.get(pid, ()):
            self._step(pid, person, event, learn=False)  # the scaler has them already
        self._churned(person, self.swept)
        outbox.people.pop(pid, None)
        if person.changed:
            outbox.people[pid] = self._staged(pid, person)
        outbox.due[pid] = self._deadline(pid) if person.changed else 0

    # -- one person -------------------------------------------------------------------------

    def _load(self, pids: set[str]) -> None:
        """Read the records of ``pids`` not read yet."""
        wanted = sorted(pids - self.people.keys())
        if not wanted:
            return
        pipe = self.client.pipeline(transaction=False)  # one GET each: they span slots
        for pid in wanted:
            pipe.get(learner_key(pid))
        for pid, raw in zip(wanted, pipe.execute()):
            self.people[pid] = _person(raw)

    def _step(self, pid: str, person: Person, event: Seen, learn: bool) -> None:
        """Apply one event: the labels it settles first, then the event, then new examples."""
        h = person.record
        person.changed = True
        if event.name in ENGINE_EVENTS:  # not the person's activity: segments only
            if event.segment is not None:
                h.observe(event)
            return
        self.watermark = max(self.watermark, event.at)
        self._churned(person, event.at)
        if h.churn is not None and event.at - h.last_seen >= SESSION_MS:  # they came back
            self._queue(person, h.churn, label=0)
            h.churn = None
        h.open = [o for o in h.open if o.deadline > event.at]
        if event.name == "Order Completed":
            for o in h.open:
                if o.at < event.at and (o.target == "conversion" or o.session == h.session_start):
                    person.labels[f"{pid}:{o.target}:{o.at}"] = 1
            h.open = []
        new_session = h.observe(event, self.scoring.half_life_days)
        x = h.features(event.at, self.scoring.half_life_days)
        p = self.predict(self.scaler(x, learn=learn, others=self.others))
        if event.name != "Order Completed":
            if new_session:
                self._open(pid, person, "conversion", event.at, self.settings.conversion_days,
                           p, x)  # fmt: skip
            if h.session_events in _SESSION_EXAMPLES_AT:
                self._open(pid, person, "conversion_session", event.at, 1.0, p, x)
        # The churn example follows the person to the last event of their session.
        h.churn = Example(
            profile=pid,
            target="churn",
            at=event.at,
            deadline=event.at + int(self.settings.churn_days * DAY_MS),
            session=h.session_start,
            p=p["churn"][0],
            x=x,
            raw=p["churn"][1],
        )
        for target, (value, _) in p.items():
            if abs(h.scores.get(target, -1.0) - value) > _SCORE_STEP:
                h.scores[target] = person.scores[target] = round(value, 4)

    def _open(
        self,
        pid: str,
        person: Person,
        target: str,
        at: int,
        days: float,
        p: dict[str, tuple[float, float]],
        x: dict[str, float],
    ) -> None:
        h = person.record
        if len(h.open) >= _MAX_OPEN:
            return
        example = Example(
            profile=pid,
            target=target,
            at=at,
            deadline=at + int(days * DAY_MS),
            session=h.session_start,
            p=p[target][0],
            x=x,
            raw=p[target][1],
        )
        person.queued.append(example)
        h.open.append(Open(target, at, example.deadline, h.session_start))

    def _churned(self, person: Person, now: int) -> None:
        """The churn example's deadline has passed by ``now``: no activity in time."""
        h = person.record
        if h.churn is not None and h.churn.deadline <= now:
            self._queue(person, h.churn, label=1)
            h.churn = None
            person.changed = True

    def _queue(self, person: Person, example: Example, label: int) -> None:
        person.queued.append(example)
        person.labels[example.id] = label

    def _deadline(self, pid: str) -> int:
        churn = self.people[pid].record.churn
        return churn.deadline if churn is not None else 0

    # -- the batch --------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Settle the churn examples the watermark has passed: the lowest of all partitions'
        (a person's return may still come through one that is behind), less a few minutes
        (one person's clock may trail another's)."""
        self.swept = min(self.watermark, self.floor) - LATENESS_MS
        due = self.client.zrangebyscore(due_key(self.index), "-inf", self.swept, start=0,
                                        num=SWEEP_MAX)  # fmt: skip
        self.sweeping = {m.decode() for m in due}
        self._load(self.sweeping)
        for person in self.people.values():
            self._churned(person, self.swept)

    def _erase(self, profiles: set[str]) -> None:
        """An erased person leaves nothing here: record, deadline, waiting examples."""
        for pid in profiles:
            self.people.pop(pid, None)
            # Queue members are JSON arrays that start with the profile id.
            found = self.client.zscan_iter(QUEUE, match=f'\\["{pid}",*', count=1_000)
            self.forgotten += [member for member, _ in found]
        self.erased |= profiles

    def _staged(self, pid: str, person: Person) -> Staged:
        h = person.record
        h.version = person.version + 1
        h.by = {**h.by, str(self.index): self.serial}
        return Staged(
            version=person.version,
            record=msgspec.json.encode(h),
            scores=[x for target, value in person.scores.items() for x in (f"s:{target}", value)],
            queued=[(e.deadline, msgspec.json.encode(e)) for e in person.queued],
            labels=person.labels,
        )


def deliver(client: redis.Redis, outbox: Outbox) -> dict[str, bytes | None]:
    """Write the people's part of ``outbox`` (records by compare-and-set, scores, erasures);
    the records that moved on since they were read, and that this very batch did not write
    before (a crash, a take-over), as they are now."""
    pipe = Pipeline(client)
    order = list(outbox.people)
    for pid in order:
        staged = outbox.people[pid]
        pipe.script(RECORD, [learner_key(pid), profile_keys(pid)[0]],
                    [staged.version, staged.record, *staged.scores])  # fmt: skip
    for pid in outbox.erased:
        pipe.command("DEL", learner_key(pid))
    rescored = [pid for pid in order if outbox.people[pid].scores]
    if rescored:  # segments on scores are re-checked by the profile worker
        pipe.command("SADD", RESCORED, *rescored)
    replies = pipe.execute()
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    missed = [pid for pid, reply in zip(order, replies) if reply == 0]
    if not missed:
        return {}
    read = Pipeline(client)
    for pid in missed:
        read.command("GET", learner_key(pid))
    moved = {}
    for pid, raw in zip(missed, read.execute()):
        by = HISTORY.decode(raw).by if raw is not None else {}
        if by.get(str(outbox.partition), 0) >= outbox.serial:
            continue  # written by this batch already, as staged
        moved[pid] = raw
    return moved


def applied_args(outbox: Outbox, owner: str) -> tuple[list[str], list[Any]]:
    """The keys and arguments of ``applied.lua`` for ``outbox``."""
    p = outbox.partition
    queued = [x for s in outbox.people.values() for item in s.queued for x in item]
    labels = [x for s in outbox.people.values() for item in s.labels.items() for x in item]
    due = [x for pid, deadline in outbox.due.items() if deadline for x in (deadline, pid)]
    undue = [pid for pid, deadline in outbox.due.items() if not deadline]
    unlabelled = [EXAMPLE.decode(m).id for m in outbox.forgotten]
    keys = [STATE, QUEUE, LABELS, due_key(p), scaler_key(p), outbox_key(p)]
    args: list[Any] = [owner, state_field("serial", p), outbox.serial]
    args += [state_field("applied", p), outbox.end, state_field("watermark", p), outbox.watermark]
    args.append(outbox.scaler)
    lists = ((queued, 2), (labels, 2), (due, 2), (undue, 1), (outbox.forgotten, 1), (unlabelled, 1))
    for items, width in lists:
        args += [len(items) // width, *items]
    return keys, args
