"""The learner's trainer: the one place the models learn, from the examples every partition's
feature side queues (``profiles.feature_side``), as their deadlines pass.

**Who.** The learner instance holding spool partition 0, while it also holds the role
``{learn}:trainer``: a lease (``claim.lua``) renewed as it works and let go at a clean stop or
when partition 0 goes elsewhere, so that the next holder of partition 0 takes it over at once
(else when it lapses). On a one-partition spool, or with one instance, that is the instance
that applies every batch, and its feature side predicts with these very models; feature sides
elsewhere predict with the models it publishes (below).

**When.** Event time. Each feature side records its partition's watermark (``watermark:<p>``
in ``{learn}:state``: the newest event it applied; once its partition is drained, the wall
clock, or without a clock the furthest partition's watermark). The trainer's watermark is the
lowest of them: it never passes a partition that is behind, whose events may still settle a
label or bring a person back. What is due by it, less five minutes (events arrive a little
late), is learned in deadline order, each example with its label (settled early by an order or
a return; else 0 for conversion, 1 for churn) and its features scaled by the pooled scaler.

**Exactly once.** The models live in memory. A round of learning is recorded by one script
(``learned.lua``): it takes the examples out of the queue and their labels, appends each as it
was learned (scaled features, label, prediction) to the redo log ``{learn}:redo``, counts them
(``learned:<target>``) and moves ``round`` on, but only if ``round`` is still the one the
trainer's models stand for and every example still waits (an erasure may have taken one). So
an example is in the queue or in the models (checkpoint + redo log), never both, never
neither; a trainer that another has overtaken (it recorded a round since), or whose recording
failed, records nothing: it restores (checkpoint, redo log and ``round`` read in one
transaction) and learns again. ``on_example`` hears of an example once its round is recorded.
The checkpoint (``checkpointed.lua``: one SET of the pickled models and their metrics, the redo
log emptied, under the same check) comes every ``checkpoint_seconds``, at a stop or hand-over,
and once 20,000 examples wait in the redo log. The lease keeps two instances from doing the
work twice; ``round`` keeps the models right even if two do.

**The scaler** is learned by the feature sides, each from the moments it predicts for (every
event, as the one learner did), and saved with each batch of its partition (exactly once, with
its position). The trainer scales with the pool of every partition's statistics, as saved;
a feature side with its own pooled with the others' as last saved (``Scaler.pooled``, exact).
Predictions and learning so use the same scale, that of every event so far, and a
one-partition spool's scaler is the one it always was. (The trainer fitting it on the examples
it learns would fit it on labelled moments only, days late: a shop's first predictions would
meet an empty scaler.)

**Publication.** When it has learned since — as often as publishing costs a tenth of its time
at most (after every round, for the default logistic models; a forest less often), at least
every ``publish_seconds`` (5), and at each checkpoint — the trainer writes the classifiers and
their calibrators (``profiles.calibration``) to ``{learn}:published`` and bumps
``{learn}:published:version``; feature sides elsewhere load them again when the version moves,
so their scores lag the trainer's models by up to that interval and a batch. It also keeps
the summary ``GET /v1/models`` shows (``{learn}:models``) every two seconds.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from collector.leases import RELEASE
from collector.scripts import lua
from profiles.history import NUMERIC, Example
from profiles.models import Model, ModelSettings, Scaler

__all__ = [
    "CHECKPOINT",
    "LABELS",
    "LATENESS_MS",
    "PUBLISHED",
    "QUEUE",
    "REDO",
    "ROLE",
    "STATE",
    "SUMMARY",
    "VERSION",
    "Trainer",
    "field",
    "load_published",
    "scaler_key",
]

log = logging.getLogger("kairos.learner")

QUEUE = "{learn}:queue"  # waiting examples (JSON arrays, starting with the profile id) by deadline
LABELS = "{learn}:labels"  # example id -> label settled early
STATE = "{learn}:state"  # positions, serials and watermarks per partition; round, learned counts
CHECKPOINT = "{learn}:checkpoint"
REDO = "{learn}:redo"  # what the models learned since the checkpoint, in order
SUMMARY = "{learn}:models"
ROLE = "{learn}:trainer"  # who trains (a lease)
PUBLISHED = "{learn}:published"  # the classifiers, for feature sides elsewhere
VERSION = "{learn}:published:version"
LATENESS_MS = 5 * 60_000
SWEEP_MAX = 10_000  # examples learned per round at most (the rest in the next)
_REDO_MAX = 20_000  # examples in the redo log that bring the next checkpoint forward
_SUMMARY_SECONDS = 2.0

LEARNED = lua(__file__, "learned.lua")
CHECKPOINTED = lua(__file__, "checkpointed.lua")
CLAIM = lua(__file__, "claim.lua")
EXAMPLE = msgspec.json.Decoder(Example)


class _Redo(msgspec.Struct, array_like=True):
    """A line of the redo log: an example as it was learned (``raw`` missing in lines written
    before calibration)."""

    target: str
    z: dict[str, float]
    label: bool
    p: float
    raw: float | None = None


# MessagePack rather than JSON: a scaled feature may be inf or nan, and must come back as it was.
_REDO = msgspec.msgpack.Decoder(_Redo)
_REDO_ENCODE = msgspec.msgpack.Encoder().encode


def field(name: str, partition: int) -> str:
    """A partition's field in ``STATE``: ``name:<p>``, and ``name`` for partition 0 (so a
    one-partition spool keeps the names it had before partitions)."""
    return f"{name}:{partition}" if partition else name


def scaler_key(partition: int) -> str:
    """Where a partition's feature side keeps its scaler (pickled)."""
    return f"{{learn}}:scaler:{partition}" if partition else "{learn}:scaler"


class Trainer:
    """The models of one learner instance, and the trainer's work when it holds the role."""

    def __init__(
        self,
        client: redis.Redis,
        settings: ModelSettings,
        partitions: int,
        holder: str,
        lease_ms: int = 15_000,
        publish_seconds: float = 5.0,
        on_example: Callable[[Example, bool], object] | None = None,
    ):
        self.client = client
        self.settings = settings
        self.partitions = partitions
        self.holder = holder
        self.lease_ms = lease_ms
        self.publish_seconds = publish_seconds
        self.on_example = on_example
        self.models = settings.models()
        self.round: int | None = 0  # the round of learning the models stand for (None: unknown)
        self.watermark = 0
        self._redo = 0  # examples in the redo log
        self._renewed: float | None = None  # when the role was last known ours
        self._saved_at = time.monotonic()
        self._published_at = 0.0
        self._summary_at = 0.0
        self._unpublished = False  # learned since the last publication
        self._publishing = 0.0  # seconds the last publication took
        self._scaler: tuple[tuple[bytes | None, ...], Scaler] = ((), Scaler(NUMERIC))

    # -- the role ---------------------------------------------------------------------------

    def claim(self) -> bool:
        """Hold the role, renewing it when a third of the lease has passed; True while ours."""
        now = time.monotonic()
        if self._renewed is not None and now - self._renewed < self.lease_ms / 3000:
            return True
        if CLAIM(self.client, [ROLE], [self.holder, self.lease_ms]):
            if self._renewed is None:
                log.info("trainer role taken", extra={"holder": self.holder})
            self._renewed = now
            return True
        self._renewed = None
        return False

    @property
    def held(self) -> bool:
        return self._renewed is not None

    def release(self) -> None:
        """Checkpoint and let the role go (the next holder of partition 0 takes it at once)."""
        if self._renewed is None:
            return
        try:
            self.checkpoint()
        finally:
            self._renewed = None
            RELEASE(self.client, [ROLE], [self.holder])
            log.info("trainer role let go", extra={"holder": self.holder})

    # -- the models -------------------------------------------------------------------------

    def restore(self) -> None:
        """Load the last checkpoint and re-learn the redo log: the models as the last recorded
        round left them."""
        pipe = self.client.pipeline(transaction=True)  # one {learn} slot: all or none
        pipe.get(CHECKPOINT)
        pipe.lrange(REDO, 0, -1)
        pipe.hmget(STATE, ["round", "trained"])
        raw, redo, (round_, trained) = pipe.execute()
        self.models = self.settings.models()
        if raw is not None:
            self.models = pickle.loads(raw)["models"]  # noqa: S301 - our own, in our own Redis
        for line in redo:
            done = _REDO.decode(line)
            self.models[done.target].learn(done.z, done.label, done.p, done.raw)
        self.round, self._redo = int(round_ or 0), len(redo)
        self.watermark = max(self.watermark, int(trained or 0))
        if raw is not None or redo:
            examples = {t: m.quality.examples for t, m in self.models.items()}
            extra = {"redo": len(redo), "round": self.round, "examples": examples}
            log.info("models restored", extra=extra)

    def step(self) -> int:
        """Learn every example due by the trainer's watermark; how many were learned."""
        names = ["round", *(field("watermark", p) for p in range(self.partitions))]
        round_, *marks = self.client.hmget(STATE, names)
        if int(round_ or 0) != self.round:  # another trainer learned since, or a failure
            self.restore()
        self.watermark = max(self.watermark, min(int(m or 0) for m in marks))
        learned = 0
        while found := self.client.zrangebyscore(
            QUEUE, "-inf", self.watermark - LATENESS_MS, start=0, num=SWEEP_MAX
        ):
            done = self._learn(found)
            if done is None:
                break
            learned += done
            if len(found) < SWEEP_MAX:
                break
        return learned

    def _learn(self, members: list[bytes]) -> int | None:
        """One round: learn ``members`` (in deadline order) and record it; None when it could
        not be recorded (the models are restored)."""
        examples = [EXAMPLE.decode(m) for m in members]
        ids = [e.id for e in examples]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(LABELS, ids)
        for p in range(self.partitions):  # (a cluster pipeline has no MGET)
            pipe.get(scaler_key(p))
        labels, *scalers = pipe.execute()
        scale = self._pooled(tuple(scalers))
        assert self.round is not None
        start, self.round = self.round, None  # ahead of Redis until recorded
        lines, counts, done = [], {}, []
        for example, raw in zip(examples, labels):
            label = bool(int(raw)) if raw is not None else example.target == "churn"
            z = scale(example.x)
            self.models[example.target].learn(z, label, example.p, example.raw)
            lines.append(_REDO_ENCODE((example.target, z, label, example.p, example.raw)))
            counts[example.target] = counts.get(example.target, 0) + 1
            done.append((example, label))
        args: list[Any] = [start, self.watermark, len(members), *members, *ids, len(lines), *lines]
        for target, count in counts.items():
            args += [target, count]
        reply = LEARNED(self.client, [STATE, QUEUE, LABELS, REDO], args)
        if reply != 1:
            why = "an example left the queue" if reply == -1 else "another trainer learned"
            log.info(f"learning not recorded ({why} meanwhile); restoring the models")
            self.restore()
            return None
        self.round, self._redo, self._unpublished = start + 1, self._redo + len(lines), True
        if self.on_example is not None:
            for example, label in done:
                self.on_example(example, label)
        return len(done)

    def _pooled(self, blobs: tuple[bytes | None, ...]) -> Scaler:
        """The pool of the partitions' scalers as saved (kept while they have not moved)."""
        if blobs != self._scaler[0]:
            saved = [pickle.loads(b) for b in blobs if b is not None]  # noqa: S301 - ours
            self._scaler = (blobs, Scaler.pooled(NUMERIC, saved) if saved else Scaler(NUMERIC))
        return self._scaler[1]

    # -- keeping them -----------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Save the models atomically (one SET: the old checkpoint or the new, never half),
        if they are the models Redis holds; then publish and summarize them."""
        if self.round is None:
            return False
        blob = pickle.dumps({"models": self.models, "round": self.round,
                             "watermark": self.watermark, "at": time.time()})  # fmt: skip
        if not CHECKPOINTED(self.client, [STATE, CHECKPOINT, REDO], [self.round, blob]):
            log.info("models not checkpointed: another trainer learned since")
            self.round = None  # (restored before the next round)
            return False
        self._saved_at, self._redo = time.monotonic(), 0
        self.publish()
        self.summarize()  # (so the summary a stopped trainer leaves is of its last models)
        log.info("models checkpointed", extra={"bytes": len(blob), "round": self.round})
        return True

    def due(self) -> None:
        """Between batches: the checkpoint, the publication and the summary, when due."""
        now = time.monotonic()
        if now - self._saved_at >= self.settings.checkpoint_seconds or self._redo >= _REDO_MAX:
            self.checkpoint()
        elif self._unpublished and now - self._published_at >= min(
            self.publish_seconds, 10 * self._publishing
        ):  # as often as it costs a tenth of the time at most (every round, for logistic models)
            self.publish()
        if now - self._summary_at >= _SUMMARY_SECONDS:  # (its metrics read every model's window)
            self.summarize()

    def publish(self) -> None:
        """The classifiers and their calibrators for feature sides elsewhere (a new version)."""
        began = time.monotonic()
        predictors = {t: (m.classifier, m.calibrator) for t, m in self.models.items()}
        pipe = self.client.pipeline(transaction=True)
        pipe.set(PUBLISHED, pickle.dumps(predictors))
        pipe.incr(VERSION)
        pipe.execute()
        self._published_at, self._unpublished = time.monotonic(), False
        self._publishing = self._published_at - began

    def summarize(self) -> None:
        """The summary ``GET /v1/models`` and ``/metrics`` show."""
        state = {k.decode(): v.decode() for k, v in self.client.hgetall(STATE).items()}
        applied = {
            name.partition(":")[2] or "0": value
            for name, value in state.items()
            if name == "applied" or name.startswith("applied:")
        }
        summary = {
            "models": [m.summary() for m in self.models.values()],
            "watermark": self.watermark,
            "applied": dict(sorted(applied.items(), key=lambda item: int(item[0]))),
            "updated": time.time(),
        }
        self.client.set(SUMMARY, msgspec.json.encode(summary))
        self._summary_at = time.monotonic()


def load_published(client: redis.Redis) -> dict[str, Model] | None:
    """The models as the trainer last published them, able to predict (their metrics are the
    trainer's), or None before the first publication."""
    raw = client.get(PUBLISHED)
    if raw is None:
        return None
    predictors = pickle.loads(raw)  # noqa: S301 - our own, in our own Redis
    models = {}
    for target, predictor in predictors.items():
        model = Model(target)
        # (A trainer from before calibration published the classifier alone.)
        model.classifier, model.calibrator = (
            predictor if isinstance(predictor, tuple) else (predictor, None)
        )
        models[target] = model
    return models
