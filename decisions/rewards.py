"""The reward worker: a consumer group on the spool that teaches every placement's policy.

It reads the spool in order — decisions (logged by ``/v1/decide``) and events alike — and:

- counts each policy decision as a pull of its variant (fallback decisions teach nothing);
- keeps a record per decision (``{d:<id>}``) and, per identity, the latest decision of each
  placement and the sticky A/B variant (``{dv:<kind>:<value>}``, see ``decisions.records``);
- rewards a decision once, the first time it earns within its placement's window:
  ``click`` placements on a "Decision Clicked" event whose ``properties.decisionId`` names it;
  ``items`` (recommendation) placements on such a click too, or on an order (its event,
  default "Order Completed") whose ``products[]`` hold one of the items of one of the person's
  recent recommendations of the placement (the newest such decision, ``RECENT_RECS`` kept);
  ``conversion`` and ``revenue`` placements on their conversion event, attributed to the
  person's latest decision of the placement (last touch: the newest decision for the event's
  ``userId`` or ``anonymousId``), with ``properties.revenue`` (else ``total``) as the reward of
  a revenue placement;
- appends a "Decision Rewarded" event for each reward (so results and off-policy evaluation
  see them in ClickHouse), with a deterministic messageId;
- saves the changed policy states to Redis (``{pol:<key>}``) with the spool position they
  include, bumps their revision in ``{plc}:revs`` (API processes reload within a second), and
  only then acknowledges the batch.

Learning is exactly once: a replayed batch re-applies nothing at or below a state's position,
and the records' writes are idempotent. "Decision Viewed" events are counted (impressions) and
kept in ClickHouse, and so are "Email Opened" events (the open pixel of a recommendation
email); the policy learns from decisions, not views.
"""

from __future__ import annotations

import logging
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
from collector.spool import append_now
from collector.versioned import Versioned
from collector.worker import SpoolWorker
from decisions.placements import (
    LEARNED,
    REVS,
    VERSION,
    Learned,
    Placement,
    placements,
    policy_for,
    state_key,
)
from decisions.records import (
    LOGGED,
    RECENT_RECS,
    RECORD,
    VISITOR_TTL,
    Logged,
    Record,
    decision_key,
    visitor_key,
)
from profiles.store import position

__all__ = ["RewardWorker"]

log = logging.getLogger("kairos.rewards")

CLICKED, VIEWED, OPENED = "Decision Clicked", "Decision Viewed", "Email Opened"
_SEEN = (CLICKED, VIEWED, OPENED)  # events that name their decision
_props = msgspec.json.Decoder(dict[str, Any]).decode
_MARGIN_MS = 3_600_000  # records outlive their window by an hour (late, queued events)


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


@dataclass
class Batch:
    """What one batch changes, written together before the ack."""

    records: dict[str, Record] = field(default_factory=dict)  # decision id -> record to save
    visitors: dict[str, dict[str, str]] = field(default_factory=dict)  # {dv:…} -> fields to set
    rewarded: list[wire.Message] = field(default_factory=list)
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
        self._trainers: Versioned[dict[str, PolicyTrainer]] = Versioned(VERSION, {})

    def recover(self) -> None:
        self._trainers.forget()  # reload every state: another worker may have saved since

    def process(self, entries: list[Entry]) -> dict[str, float]:
        """Learn from ``entries`` and save what changed (not acknowledged here)."""
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
        """Each placement's policy as this worker trains it."""
        return self._trainers.value

    def _refresh(self) -> None:
        self._trainers.get(self.client, _trainers)

    # -- reading what the batch needs --

    def _prefetch(
        self, decisions: list[tuple[str, Logged]], events: list[tuple[str, wire.Track]]
    ) -> dict[str, Any]:
        """The records and visitor hashes the batch's events refer to, in two round trips:
        visitors (and clicked decisions) first, then the decisions those visitors point to."""
        clicked = {_decision_id(e) for _, e in events if e.event in _SEEN} - {None}
        converting = [e for _, e in events if e.event not in _SEEN]
        wanted = {k for e in converting for k in _visitor_keys(e.user_id, e.anonymous_id)}
        for _, decision in decisions:  # a recommendation adds to its visitors' recent ones
            learner = self.learners.get(decision.placement)
            if learner is not None and learner.placement.recommend is not None:
                wanted.update(_visitor_keys(decision.user_id, decision.anonymous_id))
        keys = sorted(wanted)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        ids = sorted(i for i in clicked if i is not None)
        for decision_id in ids:
            pipe.get(decision_key(decision_id))
        replies = pipe.execute()
        visitors = {
            k: {f.decode(): v.decode() for f, v in r.items()} for k, r in zip(keys, replies)
        }
        records = {i: RECORD.decode(r) for i, r in zip(ids, replies[len(keys) :]) if r is not None}
        pointed = {
            decision_id
            for fields in visitors.values()
            for name, value in fields.items()
            if name.startswith(("dl:", "dr:"))
            for decision_id in value.split(" ")[::2]
        } - set(records)
        if pointed:
            ordered = sorted(pointed)
            pipe = self.client.pipeline(transaction=False)  # one GET each: they span slots
            for decision_id in ordered:
                pipe.get(decision_key(decision_id))
            found = pipe.execute()
            records |= {i: RECORD.decode(r) for i, r in zip(ordered, found) if r is not None}
        return {"visitors": visitors, "records": records}

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
        ms = int(decision.timestamp.timestamp() * 1000)
        record = Record(
            placement=decision.placement,
            arm=arm,
            variant=decision.variant,
            at=ms,
            features=features,
            anonymous_id=decision.anonymous_id,
            user_id=decision.user_id,
            items=decision.items,
        )
        known["records"][decision.decision_id] = batch.records[decision.decision_id] = record
        for key in _visitor_keys(decision.user_id, decision.anonymous_id):
            fields = {f"dl:{decision.placement}": f"{decision.decision_id} {ms}"}
            if isinstance(learner.policy, ABTest):
                fields[f"ab:{decision.placement}"] = decision.variant
            if learner.placement.recommend is not None:
                recent = known["visitors"].get(key, {}).get(f"dr:{decision.placement}", "")
                kept = recent.split(" ")[: 2 * (RECENT_RECS - 1)] if recent else []
                if decision.decision_id not in kept[::2]:
                    kept = [decision.decision_id, str(ms), *kept]
                fields[f"dr:{decision.placement}"] = " ".join(kept)
            known["visitors"].setdefault(key, {}).update(fields)
            batch.visitors.setdefault(key, {}).update(fields)

    def _event(self, at: str, event: wire.Track, known: dict[str, Any], batch: Batch) -> None:
        records: dict[str, Record] = known["records"]
        if event.event in (VIEWED, OPENED):
            batch.count("decision_views" if event.event == VIEWED else "email_opens")
            return
        if event.event == CLICKED:
            batch.count("decision_clicks")
            decision_id = _decision_id(event)
            record = records.get(decision_id or "")
            learner = self.learners.get(record.placement) if record else None
            if record and learner and learner.placement.reward.kind in ("click", "items"):
                self._reward(at, decision_id or "", record, learner, 1.0, event, batch)
            return
        for learner in self.learners.values():
            reward = learner.placement.reward
            if learner.placement.conversion_event() != event.event:
                continue
            if reward.kind == "items":
                decision_id, record = _recommended(at, learner, event, known)
            else:
                decision_id, record = _last_touch(learner.key, event, known)
            if record is None:
                continue
            value = 1.0
            if reward.kind == "revenue":
                props = _props(event.properties)
                value = _number(props.get("revenue", props.get("total")))
            self._reward(at, decision_id, record, learner, value, event, batch)

    def _reward(
        self,
        at: str,
        decision_id: str,
        record: Record,
        learner: PolicyTrainer,
        value: float,
        event: wire.Track,
        batch: Batch,
    ) -> None:
        """Reward the decision once, if the event came within the window."""
        when = event.timestamp or event.received_at or datetime.now(UTC)
        if int(when.timestamp() * 1000) - record.at > learner.window_ms():
            batch.count("rewards_late")
            return
        if record.rewarded and record.rewarded != at:
            return  # rewarded already, by an earlier event
        arms = learner.placement.arms()
        if record.variant not in arms:
            return
        if at > learner.applied:
            arm = arms.index(record.variant)
            x = np.asarray(record.features) if learner.policy.contextual else None
            if value:
                learner.policy.reward(arm, value, x)
            learner.applied, learner.dirty = at, True
        record.rewarded = at
        batch.records[decision_id] = record
        batch.count("rewards")
        batch.rewarded.append(_announcement(decision_id, record, value, learner, event, when))

    # -- saving --

    def _save(self, batch: Batch) -> None:
        pipe = self.client.pipeline(transaction=False)
        changed = [learner for learner in self.learners.values() if learner.dirty]
        for learner in changed:
            learner.rev += 1
            pipe.set(state_key(learner.key), msgspec.json.encode(learner.learned()))
            pipe.hset(REVS, learner.key, learner.rev)
        for decision_id, record in batch.records.items():
            learner = self.learners.get(record.placement)
            ttl_ms = (learner.window_ms() if learner else 86_400_000) + _MARGIN_MS
            pipe.set(decision_key(decision_id), msgspec.json.encode(record), px=ttl_ms)
        for key, fields in batch.visitors.items():
            pipe.hset(key, mapping=fields)
            pipe.expire(key, VISITOR_TTL)
        pipe.execute()
        for learner in changed:
            learner.dirty = False
        if batch.rewarded:
            append_now(self.client, batch.rewarded)


def _trainers(client: redis.Redis) -> dict[str, PolicyTrainer]:
    """A trainer for every placement, with the state it learned so far."""
    defs = placements(client)
    pipe = client.pipeline(transaction=False)
    for key in defs:
        pipe.get(state_key(key))
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
            decisions += [(position(entry.id, i), LOGGED.decode(ln)) for i, ln in enumerate(lines)]
        elif entry.kind == "events":
            for i, msg in enumerate(entry.messages()):
                if isinstance(msg, wire.Track) and msg.event in wanted:
                    events.append((position(entry.id, i), msg))
    return decisions, events


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


def _last_touch(
    placement: str, event: wire.Track, known: dict[str, Any]
) -> tuple[str, Record | None]:
    """The newest decision of ``placement`` for any of the event's identities."""
    best, best_ms = "", -1
    for key in _visitor_keys(event.user_id, event.anonymous_id):
        value = known["visitors"].get(key, {}).get(f"dl:{placement}")
        if value:
            decision_id, _, ms = value.partition(" ")
            if int(ms) > best_ms:
                best, best_ms = decision_id, int(ms)
    return best, known["records"].get(best)


def _recommended(
    at: str, learner: PolicyTrainer, event: wire.Track, known: dict[str, Any]
) -> tuple[str, Record | None]:
    """The newest of the person's recent recommendations of the placement, not yet rewarded
    and within the window, that shows an item of the order."""
    products = _props(event.properties).get("products")
    bought = {
        str(p.get("product_id") or p.get("sku"))
        for p in (products if isinstance(products, list) else [])
        if isinstance(p, dict) and (p.get("product_id") or p.get("sku"))
    }
    if not bought:
        return "", None
    when = event.timestamp or event.received_at or datetime.now(UTC)
    ms = int(when.timestamp() * 1000)
    recent: dict[str, int] = {}
    for key in _visitor_keys(event.user_id, event.anonymous_id):
        listed = known["visitors"].get(key, {}).get(f"dr:{learner.key}", "").split(" ")
        recent |= {d: int(at) for d, at in zip(listed[::2], listed[1::2]) if d}
    for decision_id, shown in sorted(recent.items(), key=lambda found: -found[1]):
        record = known["records"].get(decision_id)
        if record is None or record.rewarded not in ("", at):  # rewarded by an earlier event
            continue
        if not 0 <= ms - shown <= learner.window_ms():
            continue
        if bought & set(record.items):
            return decision_id, record
    return "", None


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if np.isfinite(number) else 0.0


def _announcement(
    decision_id: str,
    record: Record,
    value: float,
    learner: PolicyTrainer,
    event: wire.Track,
    when: datetime,
) -> wire.Message:
    properties = {
        "decisionId": decision_id,
        "placement": record.placement,
        "variant": record.variant,
        "reward": value,
        "kind": learner.placement.reward.kind,
        "trigger": event.event,
        "triggerMessageId": event.message_id,
    }
    return wire.Track(
        event="Decision Rewarded",
        user_id=record.user_id or None,
        anonymous_id=record.anonymous_id or None,
        message_id=f"reward-{decision_id}",
        timestamp=when,
        received_at=datetime.now(UTC),
        properties=msgspec.Raw(msgspec.json.encode(properties)),
        context=msgspec.Raw(b'{"library":{"name":"kairos-rewards"}}'),
    )
