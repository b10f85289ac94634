"""The learner: a consumer group on the spool that keeps predictive scores current.

Three models (``profiles.models``), trained online, test-then-train:

- ``conversion``: P(an Order Completed within ``conversion_days``, default 7), one example at
  the start of each session;
- ``conversion_session``: P(an Order Completed later in the same session), examples at the
  session's 1st, 3rd and 8th event;
- ``churn``: P(no activity in the next ``churn_days``, default 30), one example per session,
  made from the person as they were at the session's last event.

An example holds the features as they were when it was made (``profiles.history``) and the
prediction made then. It waits in the delayed-label queue — a sorted set by deadline,
``{learn}:queue`` — until its deadline has passed, and is learned then, with its label: an order
in time settles a conversion example as 1 (``{learn}:labels``), a return settles the churn
example as 0; with no such event a conversion example is 0 and a churn example 1. Learning every
example at its deadline, whatever its label, keeps the model unbiased: learning positives as
soon as they happen would show it this week's buyers next to last week's non-buyers. Training
never sees an event from after the prediction.

Time is the event time: the newest event seen (engine-made events aside), or, with a
``clock``, the wall clock once the learner has caught up with the spool.

Every event also refreshes the person's scores on the profile (``scores.conversion``,
``scores.conversion_session``, ``scores.churn``) when they move by more than 0.005, and marks
the profile for the profile worker to re-check its segments on scores.

Exactly once: a batch's writes of the ``{learn}`` slot (queue, labels, redo log, scaler, the
spool position applied) go in one MULTI/EXEC, and with them, in ``{learn}:outbox``, the writes
to each person's own keys (record, scores), which a Redis Cluster keeps in other slots and
therefore outside any transaction. Those are final values, so writing them twice changes
nothing: they are written once the transaction is in, and the outbox then cleared; a crash in
between leaves the outbox, which the next start writes again (``restore``). A replayed batch at
or below the position applied is skipped. Models live in memory
and are checkpointed to Redis (``{learn}:checkpoint``, one atomic SET of the pickled models and
their metrics) every ``checkpoint_seconds``, at shutdown, and once 20,000 examples wait in the
redo log. The redo log (``{learn}:redo``) holds what the models learned since the checkpoint —
each example as it was learned: scaled features, label, prediction — and goes into each batch's
MULTI/EXEC with the feature scaler (``{learn}:scaler``); a checkpoint empties it in the
transaction that saves the models. A restart loads the checkpoint and re-learns the redo log, so
a crash loses no learning either: the models hold every learned example exactly once
(``learned:<target>`` in ``{learn}:state`` counts them). One learner holds the whole spool
(its models are one; its reader is exclusive: other instances stand by and take over when it
stops), applying each partition in order (``applied:<partition>`` in ``{learn}:state``). An
erasure (a command in the spool) removes the person's record, deadline and waiting examples.

Keys: ``{p:<id>}:learn`` (the record, JSON ``History``), ``{learn}:queue``, ``{learn}:labels``,
``{learn}:outbox`` (the last batch's writes to people's keys, until they are written),
``{learn}:due`` (person -> deadline of their churn example), ``{learn}:state`` (hash:
``applied``, ``watermark``, ``learned:<target>``), ``{learn}:checkpoint``, ``{learn}:redo``,
``{learn}:scaler``, ``{learn}:models`` (the summary the API shows at ``GET /v1/models``). A
waiting example takes about 1 KB, and so does an example in the redo log.
"""

from __future__ import annotations

import heapq
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from collector import wire
from collector.pipeline import Pipeline
from collector.reader import SUPPRESSED, Entry, SpoolReader, profile_ids
from collector.worker import SpoolWorker
from profiles.computed import event_name
from profiles.history import HISTORY, NUMERIC, SESSION_MS, Example, History, Open, Seen
from profiles.membership import RESCORED
from profiles.models import Model, Scaler
from profiles.scoring import LeadScoring
from profiles.store import SET_SCORES, profile_keys
from profiles.visits import device, source

__all__ = [
    "CHECKPOINT",
    "SUMMARY",
    "TARGETS",
    "Learner",
    "ModelSettings",
    "learner_key",
]

log = logging.getLogger("kairos.learner")

DUE = "{learn}:due"
QUEUE = "{learn}:queue"
LABELS = "{learn}:labels"
STATE = "{learn}:state"
CHECKPOINT = "{learn}:checkpoint"
REDO = "{learn}:redo"  # what the models learned since the checkpoint, in order
SCALER = "{learn}:scaler"  # the feature scaler as of the last batch (pickled)
SUMMARY = "{learn}:models"
OUTBOX = "{learn}:outbox"  # the last batch's writes to people's own keys, until written
TARGETS = ("conversion", "conversion_session", "churn")
DAY_MS = 86_400_000
_ENGINE_EVENTS = ("Segment Entered", "Segment Exited", "Decision Rewarded")
_SESSION_EXAMPLES_AT = (1, 3, 8)  # the session's events that make a conversion_session example
_MAX_OPEN = 40  # conversion examples per person waiting for a label (more are not made)
_SWEEP_MAX = 10_000  # examples learned per sweep at most (the rest in the next)
_SWEEP_EVERY_MS = 10 * 60_000  # of event time, within a batch
_SCORE_STEP = 0.005
_LATENESS_MS = 5 * 60_000
_REDO_MAX = 20_000  # examples in the redo log that bring the next checkpoint forward


class ModelSettings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The config file's ``[models]``."""

    estimator: str = "logistic"
    estimators: dict[str, str] = {}  # per target, overriding ``estimator``
    conversion_days: float = 7.0
    churn_days: float = 30.0
    checkpoint_seconds: float = 60.0
    window: int = 5_000  # labelled examples the rolling metrics cover
    ltv_horizon_days: float = 90.0
    ltv_refit_hours: float = 24.0

    def __post_init__(self) -> None:
        for target in self.estimators:
            if target not in TARGETS:
                raise ValueError(f"`models.estimators` has an unknown target {target!r}")
        for target in TARGETS:
            Model(target, self.estimators.get(target, self.estimator))  # raises on a bad name


def learner_key(pid: str) -> str:
    return profile_keys(pid)[7]


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Batch:
    """What one batch changes, written together."""

    histories: dict[str, History] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    queued: list[tuple[int, int, Example]] = field(default_factory=list)  # heap by deadline
    labels: dict[str, int] = field(default_factory=dict)  # example id -> label settled early
    learning: set[bytes] = field(default_factory=set)  # queue members learned: to remove
    settled: list[str] = field(default_factory=list)  # their ids (labels to remove)
    examples: int = 0
    redo: list[bytes] = field(default_factory=list)  # what the models learned, to re-learn
    learned: dict[str, int] = field(default_factory=dict)  # examples learned per target
    pushed: int = 0
    erased: set[str] = field(default_factory=set)  # profiles whose traces go
    forgotten: list[tuple[bytes, float]] = field(default_factory=list)  # their queued examples

    def queue(self, example: Example) -> None:
        self.pushed += 1  # ties on the deadline keep their order
        heapq.heappush(self.queued, (example.deadline, self.pushed, example))

    def ready(self, by: int) -> list[Example]:
        """The queued examples due by ``by``, taken out of the queue."""
        due = []
        while self.queued and self.queued[0][0] <= by:
            due.append(heapq.heappop(self.queued)[2])
        return due


_EXAMPLE = msgspec.json.Decoder(Example)
# MessagePack rather than JSON: a scaled feature may be inf or nan, and must come back as it was.
_REDO = msgspec.msgpack.Decoder(tuple[str, dict[str, float], bool, float])
_REDO_ENCODE = msgspec.msgpack.Encoder().encode


class Learner(SpoolWorker):
    name = "learner"

    def __init__(
        self,
        reader: SpoolReader,
        client: redis.Redis,
        settings: ModelSettings | None = None,
        scoring: LeadScoring | None = None,
        clock: Callable[[], float] | None = time.time,
        on_example: Callable[[Example, bool], object] | None = None,
        periodic: Callable[[], object] | None = None,
        max_entries: int = 500,
        interval: float = 0.2,
        profile_wait: float = 10.0,
    ):
        """``clock``: wall time in seconds, used to pass deadlines once the spool is drained
        (None: event time only, for replays of history); ``on_example``: called with each
        example as it is learned, and its label (for evaluation); ``periodic``:
        called between batches (the lifetime-value refit schedule)."""
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.client = client
        self.settings = settings or ModelSettings()
        self.scoring = scoring or LeadScoring()
        self.clock = clock
        self.on_example = on_example
        self.periodic = periodic
        self.profile_wait = profile_wait
        self.models = self._fresh_models()
        self.scaler = Scaler(NUMERIC)
        self.applied: dict[int, str] = {}  # spool partition -> the last entry applied
        self.watermark = 0
        self._swept = 0  # deadlines up to here are learned (or in the batch being written)
        self._saved_at = time.monotonic()
        self._redo = 0  # examples in the redo log
        self._published_at = 0.0

    def _fresh_models(self) -> dict[str, Model]:
        s = self.settings
        return {t: Model(t, s.estimators.get(t, s.estimator), s.window) for t in TARGETS}

    # -- the loop ---------------------------------------------------------------------------

    def recover(self) -> None:
        self.restore()

    def stopped(self) -> None:
        try:
            self.checkpoint()
        except redis.RedisError as exc:
            log.warning("last checkpoint not saved", extra={"error": str(exc)})

    def between(self) -> None:
        if (time.monotonic() - self._saved_at >= self.settings.checkpoint_seconds
                or self._redo >= _REDO_MAX):  # fmt: skip
            self.checkpoint()
        if self.periodic is not None:
            self.periodic()

    def restore(self) -> None:
        """Load the last checkpoint (models and metrics), re-learn the redo log, and load the
        scaler and the position applied: the models as the last saved batch left them."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(CHECKPOINT)
        pipe.lrange(REDO, 0, -1)
        pipe.get(SCALER)
        raw, redo, scaler = pipe.execute()
        self.models, self.scaler = self._fresh_models(), Scaler(NUMERIC)
        if raw is not None:
            saved = pickle.loads(raw)  # noqa: S301 - our own checkpoint, in our own Redis
            self.models, self.scaler = saved["models"], saved["scaler"]
        for line in redo:
            target, z, label, p = _REDO.decode(line)
            self.models[target].learn(z, label, p)
        if scaler is not None:
            self.scaler = pickle.loads(scaler)  # noqa: S301 - ours, as above
        outbox = self.client.get(OUTBOX)
        if outbox is not None:  # the last batch's transaction is in, its people's writes maybe not
            log.info("writing the last batch's profile updates again")
            self._deliver(_OUTBOX.decode(outbox))
        self._redo = len(redo)
        if raw is not None or redo:
            log.info("models restored", extra={"redo": len(redo), "examples": {
                t: m.quality.examples for t, m in self.models.items()}})  # fmt: skip
        state = self.client.hgetall(STATE)
        self.applied = {
            int(name[8:] or 0): value.decode()
            for name, value in ((k.decode(), v) for k, v in state.items())
            if name == "applied" or name.startswith("applied:")
        }
        self.watermark = int(state.get(b"watermark", 0))

    def checkpoint(self) -> None:
        """Save the models atomically (one SET: the old checkpoint or the new, never half)."""
        blob = pickle.dumps({"models": self.models, "scaler": self.scaler,
                             "applied": self.applied, "at": time.time()})  # fmt: skip
        pipe = self.client.pipeline(transaction=True)  # the redo log is in the models now
        pipe.set(CHECKPOINT, blob)
        pipe.delete(REDO)
        pipe.execute()
        self._saved_at = time.monotonic()
        self._redo = 0
        self.publish()
        log.info("models checkpointed", extra={"bytes": len(blob), "applied": self.applied})

    def publish(self) -> None:
        """The summary ``GET /v1/models`` and ``/metrics`` show."""
        summary = {
            "models": [m.summary() for m in self.models.values()],
            "watermark": self.watermark,
            "applied": {str(p): at for p, at in sorted(self.applied.items())},  # per partition
            "updated": time.time(),
        }
        self.client.set(SUMMARY, msgspec.json.encode(summary))
        self._published_at = time.monotonic()

    def idle(self) -> None:
        """Nothing new in the spool: pass the deadlines the wall clock has passed."""
        if self.clock is not None:
            now = int(self.clock() * 1000)
            if now > self.watermark:
                batch = Batch()
                self.watermark = now
                self._sweep(batch)
                if batch.changed or batch.learning or batch.settled:
                    self._save(batch)
        if time.monotonic() - self._published_at >= 2.0:
            self.publish()

    # -- one batch --------------------------------------------------------------------------

    def process(self, entries: list[Entry]) -> dict[str, float]:
        partition = entries[0].partition.index
        done = _entry_order(self.applied.get(partition, "0-0"))
        fresh = [e for e in entries if _entry_order(e.id) > done]
        if not fresh:
            return {}
        seen, unresolved = self._events(fresh)
        pids = {pid for pid, _ in seen}
        batch = Batch()
        self._load(batch, pids)
        for pid, event in seen:
            self._step(pid, batch.histories[pid], event, batch)
        self._sweep(batch)
        for entry in fresh:
            if entry.kind == "command" and (entry.command or {}).get("kind") == "erase":
                self._erase(batch, set(entry.command["profiles"]))  # type: ignore[index]
        self._save(batch, (partition, fresh[-1].id))
        if time.monotonic() - self._published_at >= 2.0:
            self.publish()
        return {"learner_messages": len(seen), "learner_examples": batch.examples,
                "learner_unresolved": unresolved}  # fmt: skip

    def _events(self, entries: list[Entry]) -> tuple[list[tuple[str, Seen]], int]:
        """(profile id, event) for every message of a known person, in spool order."""
        events = [e for e in entries if e.kind == "events" and e.count]
        pids = self.profile_ids(events)
        found, unresolved = [], 0
        for entry in events:
            owners = pids.get(entry.ref)
            messages = entry.messages()
            if owners is None:
                unresolved += len(messages)
                continue
            for msg, pid in zip(messages, owners):
                event = self._seen(msg)
                if event is None:
                    continue
                if event.segment is not None:
                    pid = _segment_owner(msg) or pid
                if pid and pid != SUPPRESSED:
                    found.append((pid, event))
        if unresolved:
            log.warning("profile ids missing; events not learned from",
                        extra={"messages": unresolved})  # fmt: skip
        return found, unresolved

    def profile_ids(self, entries: list[Entry]) -> dict[str, list[str]]:
        """Each entry's profile ids, as the profile updater resolved them (waits for it)."""
        return profile_ids(self.client, entries, self.profile_wait)

    def _seen(self, msg: wire.Message) -> Seen | None:
        name = event_name(msg)
        if name is None:
            return None
        at = msg.timestamp or msg.received_at
        if at is None:
            return None
        properties = wire.as_dict(msg.properties) if hasattr(msg, "properties") else {}
        context = wire.as_dict(msg.context)
        product = properties.get("product_id") or properties.get("sku")
        return Seen(
            at=int(at.timestamp() * 1000),
            name=name,
            device=device(context) if context.get("userAgent") or context.get("device") else None,
            source=source(context),
            product=str(product) if isinstance(product, str | int) else None,
            category=_text(properties.get("category")),
            price=_number(properties.get("price")),
            revenue=_number(properties.get("revenue", properties.get("total"))),
            points=self.scoring.points(name, properties) if self.scoring.rules else 0.0,
            segment=_text(properties.get("segment")) if name in _ENGINE_EVENTS[:2] else None,
        )

    def _load(self, batch: Batch, pids: set[str]) -> None:
        """Read the records of ``pids`` not read yet."""
        wanted = sorted(pids - batch.histories.keys())
        if not wanted:
            return
        pipe = self.client.pipeline(transaction=False)  # one GET each: they span slots
        for pid in wanted:
            pipe.get(learner_key(pid))
        for pid, raw in zip(wanted, pipe.execute()):
            batch.histories[pid] = HISTORY.decode(raw) if raw is not None else History()

    def _step(self, pid: str, h: History, event: Seen, batch: Batch) -> None:
        """Apply one event: the labels it settles first, then the event, then new examples."""
        batch.changed.add(pid)
        if event.name in _ENGINE_EVENTS:  # not the person's activity: segments only
            if event.segment is not None:
                h.observe(event)
            return
        if event.at > self.watermark:
            self.watermark = event.at
            if self.watermark - _LATENESS_MS - self._swept >= _SWEEP_EVERY_MS:
                self._sweep(batch)
        self._churned(h, event.at, batch)
        if h.churn is not None and event.at - h.last_seen >= SESSION_MS:  # they came back
            self._queue(h.churn, batch, label=0)
            h.churn = None
        h.open = [o for o in h.open if o.deadline > event.at]
        if event.name == "Order Completed":
            for o in h.open:
                if o.at < event.at and (o.target == "conversion" or o.session == h.session_start):
                    batch.labels[f"{pid}:{o.target}:{o.at}"] = 1
            h.open = []
        new_session = h.observe(event, self.scoring.half_life_days)
        x = h.features(event.at, self.scoring.half_life_days)
        z = self.scaler(x, learn=True)
        p = {target: model.predict(z) for target, model in self.models.items()}
        if event.name != "Order Completed":
            if new_session:
                self._open(pid, h, "conversion", event.at, self.settings.conversion_days, p, x,
                           batch)  # fmt: skip
            if h.session_events in _SESSION_EXAMPLES_AT:
                self._open(pid, h, "conversion_session", event.at, 1.0, p, x, batch)
        # The churn example follows the person to the last event of their session.
        deadline = event.at + int(self.settings.churn_days * DAY_MS)
        h.churn = Example(
            profile=pid,
            target="churn",
            at=event.at,
            deadline=deadline,
            session=h.session_start,
            p=p["churn"],
            x=x,
        )
        for target, value in p.items():
            if abs(h.scores.get(target, -1.0) - value) > _SCORE_STEP:
                h.scores[target] = round(value, 4)
                batch.scores.setdefault(pid, {})[target] = round(value, 4)

    def _open(
        self,
        pid: str,
        h: History,
        target: str,
        at: int,
        days: float,
        p: dict[str, float],
        x: dict[str, float],
        batch: Batch,
    ) -> None:
        if len(h.open) >= _MAX_OPEN:
            return
        example = Example(
            profile=pid,
            target=target,
            at=at,
            deadline=at + int(days * DAY_MS),
            session=h.session_start,
            p=p[target],
            x=x,
        )
        batch.queue(example)
        h.open.append(Open(target, at, example.deadline, h.session_start))

    def _churned(self, h: History, now: int, batch: Batch) -> None:
        """The churn example's deadline has passed by ``now``: no activity in time."""
        if h.churn is not None and h.churn.deadline <= now:
            self._queue(h.churn, batch, label=1)
            h.churn = None

    def _queue(self, example: Example, batch: Batch, label: int) -> None:
        batch.queue(example)
        batch.labels[example.id] = label

    def _sweep(self, batch: Batch) -> None:
        """Pass the deadlines the watermark has passed (allowing events a few minutes late: one
        person's clock may trail another's): settle the churn examples that are due, then learn
        the queued examples that are due, in deadline order. Examples of late events may be due
        at once: they never wait in Redis (the sweep at the end of each batch takes them)."""
        now = self.watermark - _LATENESS_MS
        swept, members = now, []
        if now > self._swept:  # Redis holds nothing due up to ``_swept``
            due = self.client.zrangebyscore(DUE, f"({self._swept}", now, start=0, num=_SWEEP_MAX)
            self._load(batch, {m.decode() for m in due})
            found = self.client.zrangebyscore(
                QUEUE, f"({self._swept}", now, start=0, num=_SWEEP_MAX, withscores=True
            )
            if len(found) == _SWEEP_MAX:  # the rest next time
                swept = int(found[-1][1]) - 1
            members = [m for m, _ in found if m not in batch.learning]
            batch.learning.update(members)
        for pid, h in batch.histories.items():
            if h.churn is not None and h.churn.deadline <= swept:
                self._churned(h, swept, batch)
                batch.changed.add(pid)
        ready = batch.ready(swept)
        examples = sorted([*map(_EXAMPLE.decode, members), *ready], key=lambda e: e.deadline)
        self._swept = max(self._swept, swept)
        if not examples:
            return
        ids = [e.id for e in examples]
        stored = dict(zip(ids, self.client.hmget(LABELS, ids)))
        for example in examples:
            label = batch.labels.pop(example.id, None)
            if label is None:
                raw = stored[example.id]
                label = int(raw) if raw is not None else int(example.target == "churn")
            self._learn(example, bool(label), batch)
        batch.settled.extend(ids)

    def _erase(self, batch: Batch, profiles: set[str]) -> None:
        """An erased person leaves nothing here: record, deadline, waiting examples."""
        for pid in profiles:
            batch.histories.pop(pid, None)
            batch.changed.discard(pid)
            batch.scores.pop(pid, None)
            # Queue members are JSON arrays that start with the profile id.
            batch.forgotten += self.client.zscan_iter(QUEUE, match=f'\\["{pid}",*', count=1_000)
        batch.queued = [q for q in batch.queued if q[2].profile not in profiles]
        heapq.heapify(batch.queued)
        batch.erased |= profiles

    def _learn(self, example: Example, label: bool, batch: Batch) -> None:
        z = self.scaler(example.x)
        self.models[example.target].learn(z, label, example.p)
        batch.redo.append(_REDO_ENCODE((example.target, z, label, example.p)))
        batch.learned[example.target] = batch.learned.get(example.target, 0) + 1
        batch.examples += 1
        if self.on_example is not None:
            self.on_example(example, label)

    def _save(self, batch: Batch, applied: tuple[int, str] | None = None) -> None:
        """The batch's writes: the ``{learn}`` slot's in one transaction with the outbox of the
        people's, then those (see the module's docstring: exactly once); ``applied``: the
        spool partition and its entry the batch ends with."""
        outbox = Outbox(
            records={pid: msgspec.json.encode(batch.histories[pid]) for pid in batch.changed},
            scores={
                pid: [x for target, value in scores.items() for x in (f"s:{target}", value)]
                for pid, scores in batch.scores.items()
            },  # fmt: skip
            erased=sorted(batch.erased),
        )
        pipe = self.client.pipeline(transaction=True)  # every key in the {learn} slot
        for pid in batch.changed:
            h = batch.histories[pid]
            if h.churn is not None:
                pipe.zadd(DUE, {pid: h.churn.deadline})
            else:
                pipe.zrem(DUE, pid)
        if batch.queued:
            pipe.zadd(QUEUE, {msgspec.json.encode(e): e.deadline for *_, e in batch.queued})
        if batch.labels:
            pipe.hset(LABELS, mapping=batch.labels)
        if batch.learning:
            pipe.zrem(QUEUE, *batch.learning)
        if batch.settled:
            pipe.hdel(LABELS, *batch.settled)
        if batch.erased:
            pipe.zrem(DUE, *batch.erased)
        if batch.forgotten:
            members = [m for m, _ in batch.forgotten]
            pipe.zrem(QUEUE, *members)
            pipe.hdel(LABELS, *(_EXAMPLE.decode(m).id for m in members))
        if batch.redo:
            pipe.rpush(REDO, *batch.redo)
            for target, count in batch.learned.items():
                pipe.hincrby(STATE, f"learned:{target}", count)
        pipe.set(SCALER, pickle.dumps(self.scaler))  # it learns from every event
        state: dict[str, Any] = {"watermark": self.watermark}
        if applied is not None:
            state[f"applied:{applied[0]}" if applied[0] else "applied"] = applied[1]
        pipe.hset(STATE, mapping=state)
        has_people = bool(outbox.records or outbox.scores or outbox.erased)
        if has_people:
            pipe.set(OUTBOX, _OUTBOX_ENCODE(outbox))
        pipe.execute()
        if applied is not None:
            self.applied[applied[0]] = applied[1]
        self._redo += len(batch.redo)
        if has_people:
            self._deliver(outbox)

    def _deliver(self, outbox: Outbox) -> None:
        """Write the people's part of a batch (final values: twice is once), then clear it."""
        pipe = Pipeline(self.client)
        for pid, record in outbox.records.items():
            pipe.command("SET", learner_key(pid), record)
        for pid, args in outbox.scores.items():
            pipe.script(SET_SCORES, [profile_keys(pid)[0]], args)
        for pid in outbox.erased:
            pipe.command("DEL", learner_key(pid))
        if outbox.scores:  # segments on scores are re-checked by the profile worker
            pipe.command("SADD", RESCORED, *outbox.scores)
        for reply in pipe.execute():
            if isinstance(reply, Exception):
                raise reply
        self.client.delete(OUTBOX)


class Outbox(msgspec.Struct, kw_only=True):
    """A batch's writes to people's own keys (see ``Learner._save``)."""

    records: dict[str, bytes]  # profile id -> the record (JSON ``History``)
    scores: dict[str, list[str | float]]  # profile id -> SET_SCORES arguments
    erased: list[str]  # profiles whose record goes


_OUTBOX = msgspec.msgpack.Decoder(Outbox)
_OUTBOX_ENCODE = msgspec.msgpack.Encoder().encode


def _segment_owner(msg: wire.Message) -> str | None:
    owner = wire.as_dict(msg.properties).get("profile_id") if hasattr(msg, "properties") else None
    return owner if isinstance(owner, str) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        number = float(value)
    except ValueError:
        return 0.0
    return number if number == number and abs(number) < 1e12 else 0.0
