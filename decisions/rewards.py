"""The reward worker: a consumer group on the spool that teaches every placement's policy.

It reads the spool in order — decisions (logged by ``/v1/decide``) and events alike — and:

- counts each policy decision as a pull of its variant (fallback decisions teach nothing);
- keeps, per identity, the latest decision of each placement (with its features when the
  policy is contextual), the newest recommendations and the sticky A/B variant
  (``{dv:<kind>:<value>}``, see ``decisions.records``): nothing per decision;
- rewards a decision once, the first time it earns within its placement's window:
  ``click`` placements on a "Decision Clicked" event whose ``properties.decisionId`` names it
  (attributed from the id alone, which carries placement, arm and time and is signed: a forged
  or tampered id earns nothing and is counted, ``rewards_forged``); ``items``
  (recommendation) placements on such a click too, or on an order (its event, default "Order
  Completed") whose ``products[]`` hold one of the items of one of the person's recent
  recommendations of the placement (the newest such decision, ``RECENT_RECS`` kept);
  ``conversion`` and ``revenue`` placements on their conversion event, attributed to the
  person's latest decision of the placement (last touch: the newest decision for the event's
  ``userId`` or ``anonymousId``), with ``properties.revenue`` (else ``total``) as the reward of
  a revenue placement;
- appends a "Decision Rewarded" event for each reward (so results and off-policy evaluation
  see them in ClickHouse), with a deterministic messageId;
- records the changes a policy with ``detect_changes`` found (``decisions.changes``: it
  restarted, and the dashboard marks when);
- saves the changed policy states to Redis (``{pol:<key>}``) with the spool position they
  include, bumps their revision in ``{plc}:revs`` (API processes reload within a second), and
  only then acknowledges the batch.

Any number of reward workers share the spool's partitions. On a spool of several, each
partition has its own state per placement (``{pol:<key>}:part:<p>``, learned from that
partition's decisions and rewards, in its order), and API processes serve their merge
(``Policy.merge``): after saving its partitions' states, a worker reads every partition's and
publishes the merge, unless one already published holds a newer position of some partition
(``publish.lua``: the served state never goes back). A click is rewarded from its decision's
id wherever it arrives; a person's decisions and their browser's events share a partition.

Learning is exactly once: a replayed batch re-applies nothing at or below a state's position.
Rewards are exactly once too: each rewarded decision's id is marked, with the position of the
event that rewarded it, in a bucket of its placement and hour (``{rw:…}``) that expires after
the window; a later event finds the mark and earns nothing (``rewards_repeated``), a replay of
the same event finds its own position and re-applies (idempotently). That memory grows with
rewards, not decisions. A reward the mark could no longer guard (past the window and a margin,
by the worker's clock) is not given (``rewards_late``).

A contextual policy learns from a reward only with the decision's features: those of the
person's latest decision of the placement (kept in the visitor hash), or of a decision in the
same batch. A click on an older decision is still rewarded (its "Decision Rewarded" event
reaches results and evaluation, which read the features from the decision log) but the policy
does not learn from it: counted ``rewards_unlearned``.

"Decision Viewed" events are counted (impressions) and kept in ClickHouse, and so are "Email
Opened" events (the open pixel of a recommendation email); the policy learns from decisions,
not views.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import redis

from bandits.abtest import ABTest
from bandits.policy import Policy
from collector import wire
from collector.reader import Entry, SpoolReader
from collector.scripts import lua
from collector.spool import append_now
from collector.versioned import Versioned
from collector.worker import SpoolWorker
from decisions.changes import Detected, record
from decisions.placements import (
    LEARNED,
    REVS,
    VERSION,
    Learned,
    Placement,
    partition_state_key,
    placements,
    policy_for,
    state_key,
)
from decisions.records import (
    LATEST,
    LOGGED,
    MARGIN_MS,
    RECENT,
    RECENT_RECS,
    SIGNING_KEY,
    VISITOR_TTL,
    Claim,
    DecisionIds,
    Latest,
    Logged,
    Resolver,
    Shown,
    claim_of,
    plain_shape,
    reward_expiry,
    reward_key,
    signed_shape,
    visitor_key,
)
from profiles.store import position

__all__ = ["RewardWorker"]

log = logging.getLogger("kairos.rewards")

CLICKED, VIEWED, OPENED = "Decision Clicked", "Decision Viewed", "Email Opened"
_SEEN = (CLICKED, VIEWED, OPENED)  # events that name their decision
_props = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode
PUBLISH = lua(__file__, "publish.lua")


@dataclass(kw_only=True)
class PolicyTrainer:
    """One placement's policy as the worker trains it."""

    key: str
    placement: Placement
    policy: Policy
    rev: int
    applied: str
    dirty: bool = False

    def window_ms(self) -> int:
        return int(self.placement.reward.window_hours * 3_600_000)

    def learned(self) -> Learned:
        spec = self.placement.policy
        return Learned(
            arms=self.placement.arms(),
            kind=spec.kind,
            features=spec.features,
            rev=self.rev,
            applied=self.applied,
            state=self.policy.state(),
        )


@dataclass(frozen=True, slots=True)
class Touch:
    """A decision a reward may go to, as attribution found it: from its id (placement, arm,
    time) and, for its features, the visitor hash or the batch."""

    decision_id: str
    placement: str
    arm: int  # in the placement's arms now
    at: int  # ms since the epoch
    features: list[float] | None = None  # None: not known here (a contextual policy cannot learn)


@dataclass
class Batch:
    """What one batch changes, written together before the ack."""

    marks: dict[str, dict[str, str]] = field(default_factory=dict)  # {rw:…} -> id -> position
    expiry: dict[str, int] = field(default_factory=dict)  # {rw:…} -> when it may go (ms)
    visitors: dict[str, dict[str, str]] = field(default_factory=dict)  # {dv:…} -> fields to set
    rewarded: list[wire.Message] = field(default_factory=list)
    changes: dict[str, list[Detected]] = field(default_factory=dict)  # placement -> found
    counters: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, value: float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + value


class RewardWorker(SpoolWorker):
    name = "reward worker"

    def __init__(
        self,
        reader: SpoolReader,
        client: redis.Redis,
        max_entries: int = 500,
        interval: float = 0.2,
    ):
        super().__init__(reader, max_entries=max_entries, interval=interval)
        self.client = client
        # Per spool partition held: each placement's policy as learned from that partition.
        self._trainers: dict[int, Versioned[dict[str, PolicyTrainer]]] = {}
        self._partition = 0  # of the batch in hand
        # The key the API processes sign decision ids with, as they publish it (this worker is
        # not given the engine's secret key): read when first needed, and again when a signed
        # id fails to verify (the secret key may have changed).
        self._ids: DecisionIds | None = None
        self._resolver: tuple[dict[str, PolicyTrainer], Resolver] | None = None

    def recover(self) -> None:
        self._trainers.clear()  # reload every state: another worker may have saved since

    def process(self, entries: list[Entry]) -> dict[str, float]:
        """Learn from ``entries`` and save what changed (not acknowledged here)."""
        self._partition = entries[0].partition.index
        self._refresh()
        wanted = {*_SEEN} | {
            event
            for learner in self.learners.values()
            if (event := learner.placement.conversion_event()) is not None
        }
        decisions, events = _read(entries, wanted)
        batch = Batch()
        known = self._prefetch(decisions, events)
        for item in sorted([*decisions, *events], key=lambda item: item[0]):
            at, thing = item
            if isinstance(thing, Logged):
                self._decided(at, thing, known, batch)
            else:
                self._event(at, thing, known, batch)
        self._save(batch)
        return batch.counters

    # -- placements and their states --

    @property
    def learners(self) -> dict[str, PolicyTrainer]:
        """Each placement's policy as this worker trains it from the batch's partition."""
        return self._versioned().value

    def _versioned(self) -> Versioned[dict[str, PolicyTrainer]]:
        found = self._trainers.get(self._partition)
        if found is None:
            found = self._trainers[self._partition] = Versioned(VERSION, {})
        return found

    def _refresh(self) -> None:
        partition, count = self._partition, self.reader.layout.count
        self._versioned().get(self.client, lambda c: _trainers(c, partition, count))

    def _resolve(self) -> Resolver:
        """Finds a decision id's placement among those trained now (rebuilt after a reload)."""
        learners = self.learners
        if self._resolver is None or self._resolver[0] is not learners:
            arms = {key: learner.placement.arms() for key, learner in learners.items()}
            self._resolver = (learners, Resolver(arms))
        return self._resolver[1]

    # -- reading what the batch needs --

    def _verified(self, ids: set[str]) -> dict[str, Claim]:
        """The claims of those of ``ids`` signed with the engine's key. The key is read again
        (one GET, at most once a batch) only when a signed-looking id fails with the one known;
        when it changed, the whole batch is checked with the new one alone."""

        def check(ids: set[str]) -> dict[str, Claim]:
            verify = self._ids.verify if self._ids is not None else lambda _: None
            return {i: claim for i in ids if (claim := verify(i)) is not None}

        claims = check(ids)
        if any(signed_shape(i) for i in ids - claims.keys()):
            key = self.client.get(SIGNING_KEY)
            if isinstance(key, bytes) and (self._ids is None or key != self._ids.key):
                self._ids = DecisionIds(key)
                claims = check(ids)
        return claims

    def _prefetch(
        self, decisions: list[tuple[str, Logged]], events: list[tuple[str, wire.Track]]
    ) -> dict[str, Any]:
        """What the batch's events refer to, in at most two round trips: the visitor hashes
        and the reward marks of clicked decisions first, then the marks of the decisions those
        hashes hold (and one GET of the signing key when a clicked id fails with the one known).
        No decision is read: its id says what attribution needs."""
        resolve = self._resolve().resolve
        in_batch = {decision.decision_id for _, decision in decisions}
        clicks = [event for _, event in events if event.event == CLICKED]
        claims = self._verified({i for event in clicks if (i := _decision_id(event))})
        wanted = {
            key
            for _, event in events
            if event.event not in _SEEN
            for key in _visitor_keys(event.user_id, event.anonymous_id)
        }
        for _, decision in decisions:  # a recommendation adds to its visitors' recent ones
            learner = self.learners.get(decision.placement)
            if learner is not None and learner.placement.recommend is not None:
                wanted.update(_visitor_keys(decision.user_id, decision.anonymous_id))
        clicked: dict[str, Touch | None] = {}  # verified ids -> their decision (None: unknown)
        for event in clicks:
            decision_id = _decision_id(event) or ""
            claim = claims.get(decision_id)
            if claim is None:
                continue
            found = resolve(claim)
            clicked[decision_id] = None if found is None else Touch(decision_id, *found, claim.at)
            # A contextual policy learns from the features of the person's latest decision.
            if found is not None and self.learners[found[0]].policy.contextual:
                if decision_id not in in_batch:
                    wanted.update(_visitor_keys(event.user_id, event.anonymous_id))
        keys = sorted(wanted)
        marked = sorted({t.decision_id: t for t in clicked.values() if t is not None}.items())
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        for decision_id, touch in marked:
            pipe.hget(reward_key(touch.placement, touch.at), decision_id)
        replies = pipe.execute()
        visitors = {
            k: {f.decode(): v.decode() for f, v in r.items()} for k, r in zip(keys, replies)
        }
        marks = {i: _text(r) for (i, _), r in zip(marked, replies[len(keys) :])}
        pointed: dict[str, Touch] = {}  # decisions the visitor hashes hold
        for fields in visitors.values():
            for decision_id in _held(fields):
                claim = claim_of(decision_id)  # kept by this worker from the log: authentic
                found = resolve(claim) if claim is not None else None
                if claim is not None and found is not None:
                    pointed[decision_id] = Touch(decision_id, *found, claim.at)
        unread = sorted((i, t) for i, t in pointed.items() if i not in marks)
        if unread:
            pipe = self.client.pipeline(transaction=False)  # one HGET each: they span slots
            for decision_id, touch in unread:
                pipe.hget(reward_key(touch.placement, touch.at), decision_id)
            marks |= {i: _text(r) for (i, _), r in zip(unread, pipe.execute())}
        return {
            "visitors": visitors,
            "clicked": clicked,
            "pointed": pointed,
            "marks": marks,  # decision id -> the position of the event that rewarded it, or ""
            "features": {},  # decision id -> its features, for the decisions of this batch
        }

    # -- applying, in spool order --

    def _decided(self, at: str, decision: Logged, known: dict[str, Any], batch: Batch) -> None:
        batch.count("decisions")
        if decision.fallback:
            batch.count(f"decisions_fallback:{decision.fallback}")
            return
        learner = self.learners.get(decision.placement)
        if learner is None or decision.variant not in learner.placement.arms():
            return  # deleted or changed since: nothing to teach
        arm = learner.placement.arms().index(decision.variant)
        features = decision.features
        if at > learner.applied:
            x = np.asarray(features) if learner.policy.contextual else None
            learner.policy.pull(arm, x)
            learner.applied, learner.dirty = at, True
            self._detected(learner, decision.timestamp, batch)
        known["features"][decision.decision_id] = features
        claim = claim_of(decision.decision_id)  # (a plain id: logged before ids were signed)
        if claim is not None:  # what a later event of this batch may reward
            known["pointed"][decision.decision_id] = Touch(
                decision.decision_id, decision.placement, arm, claim.at
            )
        # What a later reward needs of it besides its id: the features, for a contextual policy.
        kept = features if learner.policy.contextual else []
        latest = _encode(Latest(decision.decision_id, kept)).decode()
        for key in _visitor_keys(decision.user_id, decision.anonymous_id):
            fields = {f"dl:{decision.placement}": latest}
            if isinstance(learner.policy, ABTest):
                fields[f"ab:{decision.placement}"] = decision.variant
            if learner.placement.recommend is not None:
                recent = _recent(known["visitors"].get(key, {}).get(f"dr:{decision.placement}"))
                if decision.decision_id not in {shown.id for shown in recent}:
                    recent = [Shown(decision.decision_id, decision.items), *recent][:RECENT_RECS]
                fields[f"dr:{decision.placement}"] = _encode(recent).decode()
            known["visitors"].setdefault(key, {}).update(fields)
            batch.visitors.setdefault(key, {}).update(fields)

    def _event(self, at: str, event: wire.Track, known: dict[str, Any], batch: Batch) -> None:
        if event.event in (VIEWED, OPENED):
            batch.count("decision_views" if event.event == VIEWED else "email_opens")
            return
        if event.event == CLICKED:
            batch.count("decision_clicks")
            touch = self._clicked(event, known, batch)
            learner = self.learners.get(touch.placement) if touch else None
            if touch and learner and learner.placement.reward.kind in ("click", "items"):
                self._reward(at, touch, learner, 1.0, event, known, batch)
            return
        for learner in self.learners.values():
            reward = learner.placement.reward
            if learner.placement.conversion_event() != event.event:
                continue
            if reward.kind == "items":
                touch = _recommended(at, learner, event, known)
            else:
                touch = _last_touch(learner, event, known)
            if touch is None:
                continue
            value = 1.0
            if reward.kind == "revenue":
                props = _props(event.properties)
                value = _number(props.get("revenue", props.get("total")))
            self._reward(at, touch, learner, value, event, known, batch)

    def _clicked(self, event: wire.Track, known: dict[str, Any], batch: Batch) -> Touch | None:
        """The decision a click names, from its id alone; counted when it names none."""
        decision_id = _decision_id(event)
        if decision_id is None:
            return None
        if decision_id not in known["clicked"]:
            # A plain id is a fallback's (which earns nothing) or older than signed ids.
            batch.count("rewards_unsigned" if plain_shape(decision_id) else "rewards_forged")
            return None
        touch: Touch | None = known["clicked"][decision_id]
        if touch is None:
            batch.count("rewards_unresolved")  # its placement or variant is gone since
            return None
        learner = self.learners[touch.placement]
        return Touch(touch.decision_id, touch.placement, touch.arm, touch.at,
                     _features(learner, decision_id, event, known))  # fmt: skip

    def _reward(
        self,
        at: str,
        touch: Touch,
        learner: PolicyTrainer,
        value: float,
        event: wire.Track,
        known: dict[str, Any],
        batch: Batch,
    ) -> None:
        """Reward the decision once, if the event came within the window (and this worker
        gets to it while the decision's reward mark is sure to be kept: ``reward_expiry``)."""
        when = event.timestamp or event.received_at or datetime.now(UTC)
        window = learner.window_ms()
        now = time.time() * 1000
        if int(when.timestamp() * 1000) - touch.at > window or now - touch.at > window + MARGIN_MS:
            batch.count("rewards_late")
            return
        marks: dict[str, str] = known["marks"]
        if marks.get(touch.decision_id, "") not in ("", at):
            batch.count("rewards_repeated")  # rewarded already, by an earlier event
            return
        arms = learner.placement.arms()
        if at > learner.applied:
            if value and not learner.policy.contextual:
                learner.policy.reward(touch.arm, value, None)
            elif value and touch.features:
                learner.policy.reward(touch.arm, value, np.asarray(touch.features))
            elif value:
                batch.count("rewards_unlearned")  # see the module's docstring
            learner.applied, learner.dirty = at, True
            self._detected(learner, when, batch)
        marks[touch.decision_id] = at
        bucket = reward_key(touch.placement, touch.at)
        batch.marks.setdefault(bucket, {})[touch.decision_id] = at
        batch.expiry[bucket] = reward_expiry(touch.at, window)
        batch.count("rewards")
        batch.rewarded.append(_announcement(touch, arms[touch.arm], value, learner, event, when))

    def _detected(self, learner: PolicyTrainer, when: datetime, batch: Batch) -> None:
        """Record the changes the policy found in its last update (it has restarted)."""
        for change in learner.policy.take_changes():
            variant = learner.placement.arms()[change.arm]
            found = Detected(at=int(when.timestamp() * 1000), variant=variant,
                             direction=change.direction, rate=round(change.rate, 6),
                             partition=self._partition)  # fmt: skip
            batch.changes.setdefault(learner.key, []).append(found)
            batch.count("policy_changes")
            log.info("policy change detected; the policy restarts",
                     extra={"placement": learner.key, "variant": variant,
                            "direction": change.direction, "rate": found.rate,
                            "partition": self._partition})  # fmt: skip

    # -- saving --

    def _save(self, batch: Batch) -> None:
        pipe = self.client.pipeline(transaction=False)
        changed = [learner for learner in self.learners.values() if learner.dirty]
        count = self.reader.layout.count
        for learner in changed:
            learner.rev += 1
            where = partition_state_key(learner.key, self._partition, count)
            pipe.set(where, msgspec.json.encode(learner.learned()))
            if count == 1:
                pipe.hset(REVS, learner.key, learner.rev)
        for bucket, rewarded in batch.marks.items():
            pipe.hset(bucket, mapping=rewarded)
            pipe.pexpireat(bucket, batch.expiry[bucket])
        for key, fields in batch.visitors.items():
            pipe.hset(key, mapping=fields)
            pipe.expire(key, VISITOR_TTL)
        for key, found in batch.changes.items():
            record(pipe, key, found)
        pipe.execute()
        for learner in changed:
            learner.dirty = False
        if count > 1:
            for learner in changed:
                _publish(self.client, learner, count)
        if batch.rewarded:
            append_now(self.client, batch.rewarded, self.reader.layout)


def _publish(client: redis.Redis, trainer: PolicyTrainer, count: int) -> None:
    """Serve the merge of every partition's state of ``trainer``'s placement."""
    key, placement = trainer.key, trainer.placement
    raws = client.mget([partition_state_key(key, p, count) for p in range(count)])
    merged: Policy | None = None
    rev, sources = 0, []
    for partition, raw in enumerate(raws):
        if raw is None:
            continue
        learned = LEARNED.decode(raw)
        policy = policy_for(key, placement, learned)
        try:
            if merged is None:
                merged = policy
            else:
                merged.merge(policy)
        except ValueError as exc:  # saved for another shape: its next save remaps it
            log.warning("partition state not merged", extra={"placement": key,
                        "partition": partition, "error": str(exc)})  # fmt: skip
            continue
        rev += learned.rev
        sources += [partition, learned.applied]
    if merged is None:
        return
    spec = placement.policy
    served = Learned(arms=placement.arms(), kind=spec.kind, features=spec.features, rev=rev,
                     applied="", state=merged.state())  # fmt: skip
    keys = [state_key(key), f"{{pol:{key}}}:sources"]
    if PUBLISH(client, keys, [msgspec.json.encode(served), *sources]):
        client.hset(REVS, key, rev)


def _trainers(client: redis.Redis, partition: int = 0, count: int = 1) -> dict[str, PolicyTrainer]:
    """A trainer for every placement, with the state it learned so far from ``partition``."""
    defs = placements(client)
    pipe = client.pipeline(transaction=False)
    for key in defs:
        pipe.get(partition_state_key(key, partition, count))
    learners = {}
    for (key, placement), raw in zip(defs.items(), pipe.execute()):
        learned = LEARNED.decode(raw) if raw is not None else None
        policy = policy_for(key, placement, learned)
        learner = PolicyTrainer(
            key=key,
            placement=placement,
            policy=policy,
            rev=learned.rev if learned else 0,
            applied=learned.applied if learned else "",
        )
        # Saved for other arms, kind or features: save it as it is now learned.
        learner.dirty = learned is not None and (
            learned.arms != placement.arms() or learned.kind != placement.policy.kind
        )
        learners[key] = learner
    return learners


def _read(
    entries: list[Entry], wanted: set[str]
) -> tuple[list[tuple[str, Logged]], list[tuple[str, wire.Track]]]:
    """The batch's decisions and its track events named in ``wanted``, with their positions."""
    decisions, events = [], []
    for entry in entries:
        if entry.kind == "decisions":
            lines = entry.payload.splitlines()
            decisions += [(_at(entry, i), LOGGED.decode(ln)) for i, ln in enumerate(lines)]
        elif entry.kind == "events":
            for i, msg in enumerate(entry.messages()):
                if isinstance(msg, wire.Track) and msg.event in wanted:
                    events.append((_at(entry, i), msg))
    return decisions, events


def _at(entry: Entry, index: int) -> str:
    """A message's position, named by its partition beyond the first (reward marks compare
    positions of events from any partition; a trainer, those of its own)."""
    at = position(entry.id, index)
    return f"{entry.partition.index}/{at}" if entry.partition.index else at


def _decision_id(event: wire.Track) -> str | None:
    found = _props(event.properties).get("decisionId")
    return found if isinstance(found, str) else None


def _visitor_keys(user_id: Any, anonymous_id: Any) -> list[str]:
    keys = []
    if user_id:
        keys.append(visitor_key("user_id", str(user_id)))
    if anonymous_id:
        keys.append(visitor_key("anonymous_id", str(anonymous_id)))
    return keys


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else ""


def _latest(value: str | None) -> Latest | None:
    if not value:
        return None
    try:
        return LATEST.decode(value)
    except msgspec.DecodeError:  # written before this layout
        return None


def _recent(value: str | None) -> list[Shown]:
    if not value:
        return []
    try:
        return RECENT.decode(value)
    except msgspec.DecodeError:  # written before this layout
        return []


def _held(fields: dict[str, str]) -> list[str]:
    """The ids of the decisions a visitor hash holds (latest and recent ones)."""
    held = []
    for name, value in fields.items():
        if name.startswith("dl:") and (latest := _latest(value)) is not None:
            held.append(latest.id)
        elif name.startswith("dr:"):
            held += [shown.id for shown in _recent(value)]
    return held


def _features(
    learner: PolicyTrainer, decision_id: str, event: wire.Track, known: dict[str, Any]
) -> list[float] | None:
    """The decision's features, if its policy needs them: known for a decision of this batch
    and for the latest decision of the placement of one of the event's identities; else None."""
    if not learner.policy.contextual:
        return []
    found: list[float] | None = known["features"].get(decision_id)
    if found:
        return found
    for key in _visitor_keys(event.user_id, event.anonymous_id):
        latest = _latest(known["visitors"].get(key, {}).get(f"dl:{learner.key}"))
        if latest is not None and latest.id == decision_id and latest.features:
            return latest.features
    return None


def _last_touch(learner: PolicyTrainer, event: wire.Track, known: dict[str, Any]) -> Touch | None:
    """The newest decision of the learner's placement for any of the event's identities."""
    best: Touch | None = None
    for key in _visitor_keys(event.user_id, event.anonymous_id):
        latest = _latest(known["visitors"].get(key, {}).get(f"dl:{learner.key}"))
        touch = known["pointed"].get(latest.id) if latest is not None else None
        if touch is not None and touch.placement == learner.key:
            if best is None or touch.at > best.at:
                best = touch
    if best is None:
        return None
    features = _features(learner, best.decision_id, event, known)
    return Touch(best.decision_id, best.placement, best.arm, best.at, features)


def _recommended(
    at: str, learner: PolicyTrainer, event: wire.Track, known: dict[str, Any]
) -> Touch | None:
    """The newest of the person's recent recommendations of the placement, not yet rewarded
    and within the window, that shows an item of the order."""
    products = _props(event.properties).get("products")
    bought = {
        str(p.get("product_id") or p.get("sku"))
        for p in (products if isinstance(products, list) else [])
        if isinstance(p, dict) and (p.get("product_id") or p.get("sku"))
    }
    if not bought:
        return None
    when = event.timestamp or event.received_at or datetime.now(UTC)
    ms = int(when.timestamp() * 1000)
    recent: dict[str, Shown] = {}
    for key in _visitor_keys(event.user_id, event.anonymous_id):
        for shown in _recent(known["visitors"].get(key, {}).get(f"dr:{learner.key}")):
            recent.setdefault(shown.id, shown)
    found = [(known["pointed"][i], shown) for i, shown in recent.items() if i in known["pointed"]]
    for touch, shown in sorted(found, key=lambda pair: -pair[0].at):
        if touch.placement != learner.key:
            continue
        if known["marks"].get(touch.decision_id, "") not in ("", at):
            continue  # rewarded by an earlier event
        if not 0 <= ms - touch.at <= learner.window_ms():
            continue
        if bought & set(shown.items):
            features = _features(learner, touch.decision_id, event, known)
            return Touch(touch.decision_id, touch.placement, touch.arm, touch.at, features)
    return None


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if np.isfinite(number) else 0.0


def _announcement(
    touch: Touch,
    variant: str,
    value: float,
    learner: PolicyTrainer,
    event: wire.Track,
    when: datetime,
) -> wire.Message:
    properties = {
        "decisionId": touch.decision_id,
        "placement": touch.placement,
        "variant": variant,
        "reward": value,
        "kind": learner.placement.reward.kind,
        "trigger": event.event,
        "triggerMessageId": event.message_id,
    }
    return wire.Track(
        event="Decision Rewarded",
        user_id=event.user_id or None,  # the person who earned it (no record keeps the decision's)
        anonymous_id=event.anonymous_id or None,
        message_id=f"reward-{touch.decision_id}",
        timestamp=when,
        received_at=datetime.now(UTC),
        properties=msgspec.Raw(msgspec.json.encode(properties)),
        context=msgspec.Raw(b'{"library":{"name":"kairos-rewards"}}'),
    )
