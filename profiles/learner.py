"""The learner: a consumer group on the spool that keeps predictive scores current.

Three models (``profiles.models``), trained online, test-then-train:

- ``conversion``: P(an Order Completed within ``conversion_days``, default 7), one example at
  the start of each session;
- ``conversion_session``: P(an Order Completed later in the same session), examples at the
  session's 1st, 3rd and 8th event;
- ``churn``: P(no activity in the next ``churn_days``, default 30), one example per session,
  made from the person as they were at the session's last event.

Each model's raw score goes through its calibrator (``profiles.calibration``), learned on the
same delayed labels, so a score of 0.7 comes true seven times in ten. An example holds the
features as they were when it was made (``profiles.history``) and the prediction made then
(calibrated, and raw beside it). It waits in the delayed-label queue — a sorted set by deadline,
``{learn}:queue`` — until its deadline has passed, and is learned then, with its label: an order
in time settles a conversion example as 1 (``{learn}:labels``), a return settles the churn
example as 0; with no such event a conversion example is 0 and a churn example 1. Learning every
example at its deadline, whatever its label, keeps the model unbiased: learning positives as
soon as they happen would show it this week's buyers next to last week's non-buyers. Training
never sees an event from after the prediction.

The work is split in two (issue 17):

- **the feature side** (``profiles.feature_side``), per spool partition: any number of learner
  instances share the partitions (one holds a partition at a time). For each batch it updates
  each person's record, makes examples with the current models' predictions, queues them,
  settles labels, keeps churn deadlines, writes score updates to profiles (``scores.conversion``,
  ``scores.conversion_session``, ``scores.churn``, when they move by more than 0.005, marking the
  profile for the profile worker to re-check its segments on scores) and handles erasures. One
  person's events can come through several partitions at once (two devices, server-side
  events by userId): a record is written by compare-and-set on its version, and a person whose
  record moved on has their events of the batch applied again to it;
- **the trainer** (``profiles.trainer``): the instance holding partition 0 also holds the
  trainer's role, and learns the global models from the queue as deadlines pass by the lowest
  of the partitions' watermarks, keeps the redo log and the checkpoints, and publishes the
  models for the other instances' feature sides (whose scores so lag by up to
  ``publish_seconds``, 5, and less for models cheap to publish).

A replay of history (batches spanning more than ten minutes of event time) is read in short
batches, of the held partition furthest behind first: the models learn every few hours of
event time, as the one learner did within its batches, and the partitions go forward together,
so that the trainer, which waits for the one behind, stays with the others' predictions.

Time is the event time: the newest event seen in a partition (engine-made events aside), or,
with a ``clock``, the wall clock once the partition is drained; without one, a drained
partition is as far as the furthest. On a one-partition spool this is the learner as it always
was.

Exactly once, in brief: each partition's batch is staged whole in its outbox before any
record is written, and applied to the ``{learn}`` slot in one script that checks the
partition's serial (``profiles.feature_side``); the trainer records each round of learning
(queue out, redo log in) in one script that checks the round its models stand for
(``profiles.trainer``). A restart loads the checkpoint and re-learns the redo log: the models
hold every learned example exactly once (``learned:<target>`` in ``{learn}:state`` counts them).

Keys: ``{p:<id>}:learn`` (the record, JSON ``History``), ``{learn}:queue``, ``{learn}:labels``,
per partition ``{learn}:due[:<p>]`` (person -> deadline of their churn example),
``{learn}:outbox[:<p>]`` (a batch staged until applied) and ``{learn}:scaler[:<p>]``;
``{learn}:state`` (hash: per partition ``applied``, ``serial``, ``watermark`` — with a
``:<p>`` suffix but for partition 0 —, and ``round``, ``trained``, ``learned:<target>``),
``{learn}:checkpoint``, ``{learn}:redo``, ``{learn}:trainer`` (the role),
``{learn}:published`` and its ``:version``, ``{learn}:models`` (the summary the API shows at
``GET /v1/models``). A waiting example takes about 1 KB, and so does one in the redo log.
"""

from __future__ import annotations

import logging
import pickle
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from collector import wire
from collector.partitions import Partition
from collector.pipeline import Pipeline
from collector.reader import SUPPRESSED, Entry, LeaseLost, SpoolReader, profile_ids
from collector.versioned import Versioned
from collector.worker import SpoolWorker
from profiles.computed import event_name
from profiles.feature_side import (
    APPLIED,
    ENGINE_EVENTS,
    STAGE,
    TAKE,
    Outbox,
    RecordsMoved,
    Run,
    Side,
    applied_args,
    decode_outbox,
    deliver,
    due_key,
    encode_outbox,
    learner_key,
    outbox_key,
)
from profiles.history import NUMERIC, Example, Seen
from profiles.models import TARGETS, Model, ModelSettings, Scaler, Stats, pool
from profiles.scoring import LeadScoring
from profiles.store import SET_SCORES, profile_keys
from profiles.trainer import (
    CHECKPOINT,
    LABELS,
    LATENESS_MS,
    QUEUE,
    REDO,
    STATE,
    SUMMARY,
    VERSION,
    Trainer,
    field,
    load_published,
    scaler_key,
)
from profiles.visits import device, source

__all__ = [
    "CHECKPOINT",
    "DUE",
    "LABELS",
    "OUTBOX",
    "QUEUE",
    "REDO",
    "STATE",
    "SUMMARY",
    "TARGETS",
    "Learner",
    "ModelSettings",
    "learner_key",
]

log = logging.getLogger("kairos.learner")

DUE = due_key(0)  # a one-partition spool's (and partition 0's) churn deadlines
OUTBOX = outbox_key(0)  # and its outbox
_ROUNDS = 8  # records written again at most (each time, another partition wrote them meanwhile)
# A batch whose events span more than this (a replay of history, a long backlog) makes the next
# read a short one: the models then learn every few hours of event time, not every few days.
_SPAN_MS = 10 * 60_000
_REPLAY_ENTRIES = 20
_LOOK_SECONDS = 1.0  # how often held partitions are checked for being drained
_FAR = 2**62


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = (entry_id or "0-0").partition("-")
    return int(ms), int(seq or 0)


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
        trainer_lease_ms: int = 15_000,
        publish_seconds: float = 5.0,
    ):
        """``clock``: wall time in seconds, used to pass deadlines once the spool is drained
        (None: event time only, for replays of history); ``on_example``: called with each
        example once it is learned, and its label (for evaluation), by the instance that
        trains; ``periodic``: called between batches by that instance (the lifetime-value
        refit schedule); ``publish_seconds``: how often the trainer publishes its models for
        the other instances."""
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.client = client
        self.settings = settings or ModelSettings()
        self.scoring = scoring or LeadScoring()
        self.clock = clock
        self.periodic = periodic
        self.profile_wait = profile_wait
        count = reader.layout.count
        self.trainer = Trainer(client, self.settings, count, reader.consumer, trainer_lease_ms,
                               publish_seconds, on_example)  # fmt: skip
        self.sides = {p: Side(p) for p in range(count)}
        # Who owns an outbox: this very instance (a restarted one is another).
        self.owner = f"{reader.consumer}/{secrets.token_hex(6)}"
        self._published: Versioned[dict[str, Model] | None] = Versioned(VERSION, None)
        self._others: tuple[tuple[bytes | None, ...], Stats] = ((), {})
        self._restored = False
        self._look: set[int] = set()  # partitions whose outbox to look at before their next batch
        self._trained = False  # the trainer ran after this poll's batch
        self._count = min(max_entries, _REPLAY_ENTRIES)  # the next read's (up to max_entries)
        self._looked = 0.0

    @property
    def models(self) -> dict[str, Model]:
        """The models as this instance last trained or restored them."""
        return self.trainer.models

    @property
    def scaler(self) -> Scaler:
        """The partitions' scalers, pooled (as this instance last saw them)."""
        return Scaler.pooled(NUMERIC, [side.scaler for side in self.sides.values()])

    @property
    def applied(self) -> dict[int, str]:
        """Each partition's last entry applied."""
        return {p: side.applied for p, side in self.sides.items() if side.applied}

    @property
    def watermark(self) -> int:
        return self.trainer.watermark

    # -- the loop ---------------------------------------------------------------------------

    def recover(self) -> None:
        if not self._restored:
            self.restore()
            return
        self._load_sides()
        self._complete()

    def restore(self) -> None:
        """Load what every partition's last batch left (positions, scalers), the models as the
        last checkpoint and the redo log leave them, and finish any batch a crash left staged."""
        self._load_sides()
        self.trainer.restore()
        self._complete()
        self._restored = True

    def stopped(self) -> None:
        try:
            self.trainer.release()  # checkpoints first
        except redis.RedisError as exc:
            log.warning("last checkpoint not saved", extra={"error": str(exc)})

    def checkpoint(self) -> None:
        self.trainer.checkpoint()

    def publish(self) -> None:
        self.trainer.publish()

    def between(self) -> None:
        if time.monotonic() - self._looked >= _LOOK_SECONDS:
            self._catch_up([p for p in self.reader.held if self._drained(p)])
        if self._training():
            if not self._trained and (learned := self.trainer.step()):
                self.reader.ack([], {"learner_examples": learned})  # (a counter, no entry)
            self.trainer.due()
            if self.periodic is not None:
                self.periodic()
        self._trained = False

    def read(self, stop: threading.Event) -> list[Entry]:
        """The next batch: up to ``max_entries`` while batches span little event time (live
        traffic); while they span more (a replay), ``_REPLAY_ENTRIES`` of the held partition
        furthest behind first. So the models learn every few hours of event time, and the
        partitions go forward together: the trainer, waiting for the one behind, does not fall
        behind the others' predictions."""
        held = self.reader.held
        if self._count < self.max_entries and len(held) > 1:
            behind = min(held, key=lambda p: self.sides[p.index].watermark)
            if entries := self.reader.read(self._count, 1, partition=behind):
                return entries
        return self.reader.read(self._count, int(self.interval * 1000))

    def idle(self) -> None:
        """Nothing new in the spool: every held partition is drained."""
        self._catch_up(self.reader.held)

    def _training(self) -> bool:
        """Whether this instance trains: it holds partition 0, and the trainer's role."""
        if any(p.index == 0 for p in self.reader.held):
            return self.trainer.claim()
        if self.trainer.held:  # partition 0 went elsewhere: its new holder trains
            self.trainer.release()
        return False

    # -- one batch --------------------------------------------------------------------------

    def process(self, entries: list[Entry]) -> dict[str, float]:
        index = entries[0].partition.index
        side = self.sides[index]
        fresh = [e for e in entries if _entry_order(e.id) > _entry_order(side.applied)]
        if not fresh:
            return {}
        events, unresolved = self._events(fresh)
        times = [e.at for _, _, e in events if e.name not in ENGINE_EVENTS]
        long = bool(times) and max(times) - min(times) > _SPAN_MS
        self._count = min(self.max_entries, _REPLAY_ENTRIES) if long else self.max_entries
        erasures = [
            (entry.id, set(entry.command["profiles"]))  # type: ignore[index]
            for entry in fresh
            if entry.kind == "command" and (entry.command or {}).get("kind") == "erase"
        ]
        training = self._training()
        pending = self._take(index) if index in self._look else None
        self._look.discard(index)
        while True:
            context = self._context(index, training)
            if pending is not None:  # a batch a crash left staged, ours now: finish it first
                upto = _entry_order(pending.end)
                again = [(pid, e) for at, pid, e in events if _entry_order(at) <= upto]
                self._finish(side, pending, Run.resumed(pending, side, again, **context))
                pending = None
            after = _entry_order(side.applied)
            rest = [(pid, e) for at, pid, e in events if _entry_order(at) > after]
            if _entry_order(fresh[-1].id) <= after:
                break
            run = Run(side, **context)
            run.apply(rest, [profiles for at, profiles in erasures if _entry_order(at) > after])
            pending = self._finish(side, run.outbox(side.applied, fresh[-1].id), run)
            if pending is None:
                break
        learned = self.trainer.step() if training else 0
        self._trained = training
        return {"learner_messages": len(events), "learner_examples": learned,
                "learner_unresolved": unresolved}  # fmt: skip

    def _events(self, entries: list[Entry]) -> tuple[list[tuple[str, str, Seen]], int]:
        """(entry id, profile id, event) for every message of a known person, in spool order."""
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
                    found.append((entry.id, pid, event))
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
            segment=_text(properties.get("segment")) if name in ENGINE_EVENTS[:2] else None,
        )

    def _context(self, index: int, training: bool) -> dict[str, Any]:
        """What a run of partition ``index`` predicts and sweeps with: the models (this
        instance's when it trains, else the trainer's as published), the other partitions'
        scaler statistics pooled and their lowest watermark."""
        models = self.trainer.models
        if not training:
            models = self._published.get(self.client, load_published) or models

        def predict(z: dict[str, float]) -> dict[str, tuple[float, float]]:
            return {target: model.scores(z) for target, model in models.items()}

        context: dict[str, Any] = {"client": self.client, "settings": self.settings,
                                   "scoring": self.scoring, "predict": predict}  # fmt: skip
        others = [p for p in self.sides if p != index]
        if others:
            pipe = self.client.pipeline(transaction=False)  # one slot: one round trip
            pipe.hmget(STATE, [field("watermark", p) for p in others])
            for p in others:  # (a cluster pipeline has no MGET)
                pipe.get(scaler_key(p))
            marks, *blobs = pipe.execute()
            context["floor"] = min(int(m or 0) for m in marks)
            context["others"] = self._pooled_others(tuple(blobs))
        return context

    def _pooled_others(self, blobs: tuple[bytes | None, ...]) -> Stats:
        if blobs != self._others[0]:
            stats = [pickle.loads(b).stats() for b in blobs if b is not None]  # noqa: S301
            self._others = (blobs, pool(stats))
        return self._others[1]

    # -- committing -------------------------------------------------------------------------

    def _finish(self, side: Side, outbox: Outbox, run: Run | None) -> Outbox | None:
        """Stage ``outbox``, write its records, apply it (see ``profiles.feature_side``); the
        side then holds what it left. Returns another instance's live outbox of the partition
        (now ours) when one was found in the way: it comes first, and this batch again after."""
        p = outbox.partition
        staged = self._stage(outbox)
        if staged == 0:
            taken = self._take(p)
            if taken is not None:
                return taken
        if staged != 1:
            raise LeaseLost(f"{self.reader.group}: partition {p} (applied by another)")
        for _ in range(_ROUNDS):
            try:
                self._deliver(outbox)
                break
            except RecordsMoved as moved:
                if run is None:
                    raise
                log.info("records written meanwhile by another partition; applying their "
                         "events again", extra={"people": len(moved.records)})  # fmt: skip
                for pid, raw in moved.records.items():
                    run.redo(outbox, pid, raw)
                if self._stage(outbox) != 1:
                    raise LeaseLost(f"{self.reader.group}: partition {p} (taken over)") from None
        else:
            raise RuntimeError(f"learner records still contended after {_ROUNDS} rounds")
        keys, args = applied_args(outbox, self.owner)
        if not APPLIED(self.client, keys, args):
            raise LeaseLost(f"{self.reader.group}: partition {p} (taken over)")
        side.adopt(outbox, run.scaler if run is not None else pickle.loads(outbox.scaler))  # noqa: S301
        return None

    def _stage(self, outbox: Outbox) -> int:
        p = outbox.partition
        return int(STAGE(self.client, [outbox_key(p), STATE],
                         [self.owner, field("serial", p), outbox.serial,
                          encode_outbox(outbox)]))  # fmt: skip

    def _take(self, partition: int) -> Outbox | None:
        """The partition's live outbox (a batch staged, not applied), taken over."""
        keys = [outbox_key(partition), STATE]
        raw = TAKE(self.client, keys, [self.owner, field("serial", partition)])
        return decode_outbox(raw) if raw else None

    def _deliver(self, outbox: Outbox) -> None:
        """Write the people's part of a staged batch (compare-and-set); raises ``RecordsMoved``
        with those another partition wrote since they were read."""
        moved = deliver(self.client, outbox)
        if moved:
            raise RecordsMoved(moved)

    def _complete(self) -> None:
        """Finish the batches a crash left staged in partitions this instance holds or nobody
        does (others' are theirs); one whose records moved on waits for its replay, which can
        apply their events again."""
        self._legacy_outbox()
        for partition in self.reader.layout.partitions:
            holder = self.client.get(partition.lease(self.reader.group))
            if holder is not None and holder.decode() != self.reader.consumer:
                continue
            pending = self._take(partition.index)
            if pending is None:
                continue
            log.info("finishing a batch left staged", extra={"partition": partition.index})
            try:
                self._finish(self.sides[partition.index], pending, None)
            except RecordsMoved:  # (kept ours: the replay finishes it)
                self._look.add(partition.index)
            except LeaseLost:  # applied or taken by another meanwhile
                pass

    def _legacy_outbox(self) -> None:
        """An outbox the learner before partitions left (its transaction was in, these final
        writes to people's keys maybe not): written as it would have."""
        if self.client.type(OUTBOX) not in (b"string", "string"):
            return
        old = _LEGACY.decode(self.client.get(OUTBOX) or b"")
        pipe = Pipeline(self.client)
        for pid, record in old.records.items():
            pipe.command("SET", learner_key(pid), record)
        for pid, args in old.scores.items():
            pipe.script(SET_SCORES, [profile_keys(pid)[0]], args)
        for pid in old.erased:
            pipe.command("DEL", learner_key(pid))
        for reply in pipe.execute():
            if isinstance(reply, Exception):
                raise reply
        self.client.delete(OUTBOX)

    def _load_sides(self) -> None:
        pipe = self.client.pipeline(transaction=True)  # one slot: as of one moment
        pipe.hgetall(STATE)
        for p in self.sides:
            pipe.get(scaler_key(p))
        raw, *scalers = pipe.execute()
        state = {k.decode(): v.decode() for k, v in raw.items()}
        for (p, side), scaler in zip(self.sides.items(), scalers):
            side.load(state, scaler)
        self._look = {p.index for p in self.reader.held}

    # -- drained partitions -----------------------------------------------------------------

    def _drained(self, partition: Partition) -> bool:
        last = self.client.xrevrange(partition.log, count=1)
        if not last:
            return True
        at = last[0][0]
        return _entry_order(at.decode() if isinstance(at, bytes) else at) <= _entry_order(
            self.sides[partition.index].applied
        )

    def _catch_up(self, partitions: list[Partition]) -> None:
        """Drained partitions move their watermark to the clock, or without one to the
        furthest partition's (what comes to them now is new), and settle the churn deadlines
        that passed: again whenever the lowest watermark of all moves on."""
        self._looked = time.monotonic()
        if not partitions:
            return
        found = self.client.hmget(STATE, [field("watermark", p) for p in self.sides])
        marks = {p: int(m or 0) for p, m in zip(self.sides, found)}
        now = int(self.clock() * 1000) if self.clock is not None else max(marks.values())
        marks |= {p.index: max(marks[p.index], now) for p in partitions}
        bound = min(marks.values()) - LATENESS_MS  # (what their sweeps may reach at most)
        for partition in partitions:
            side = self.sides[partition.index]
            ahead, sweep = now - side.watermark, bound - side.swept
            if (ahead <= 0 and sweep <= 0) or (self.clock and ahead < 1_000 and sweep < 1_000):
                continue
            training = self._training()
            pending = self._take(side.index) if side.index in self._look else None
            self._look.discard(side.index)
            while True:
                context = self._context(side.index, training)
                if pending is not None:
                    pending = self._finish(side, pending, Run.resumed(pending, side, [], **context))
                    continue
                run = Run(side, **context)
                run.watermark = max(run.watermark, now)
                run.apply([], [])
                pending = self._finish(side, run.outbox(side.applied, side.applied), run)
                if pending is None:
                    break


class _LegacyOutbox(msgspec.Struct, kw_only=True):
    records: dict[str, bytes]
    scores: dict[str, list[str | float]]
    erased: list[str]


_LEGACY = msgspec.msgpack.Decoder(_LegacyOutbox)


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
