"""The reward worker on a real Redis: exactly-once learning, windows, once per decision, edits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import redis

from collector import Layout
from collector.reader import SpoolReader, ensure_group
from decisions.placements import LEARNED, PLACEMENT, put_placement, state_key
from decisions.records import Logged, new_decision_id
from decisions.rewards import RewardWorker
from tests.profiles.conftest import send

STREAM = Layout(1).partition(0).log  # a one-partition spool's stream

BANNER = {"variants": [{"key": "a"}, {"key": "b"}], "policy": {"kind": "thompson"}}


def log_decisions(r: redis.Redis, *decisions: Logged) -> None:
    lines = b"".join(msgspec.json.encode(d) + b"\n" for d in decisions)
    r.xadd(STREAM, {"n": len(decisions), "d": lines})


def decision(variant: str, arm: int, visitor: str = "v1", hours_ago: float = 0.0) -> Logged:
    return Logged(
        decision_id=new_decision_id(), timestamp=datetime.now(UTC) - timedelta(hours=hours_ago),
        placement="banner", variant=variant, arm=arm, policy="thompson", policy_revision=1,
        propensity=0.5, profile_id="", anonymous_id=visitor, user_id="", features=[],
        context=msgspec.Raw(b"{}"), fallback="",
    )  # fmt: skip


def click(d: Logged, visitor: str = "v1") -> dict[str, Any]:
    return {"type": "track", "event": "Decision Clicked", "anonymousId": visitor,
            "properties": {"decisionId": d.decision_id}}  # fmt: skip


@pytest.fixture
def worker(r: redis.Redis) -> RewardWorker:
    put_placement(r, "banner", PLACEMENT.decode(msgspec.json.encode(BANNER)))
    ensure_group(r, "rewards")
    return RewardWorker(SpoolReader(r, "rewards", "t"), r)


def learned(r: redis.Redis) -> dict[str, Any]:
    state = LEARNED.decode(r.get(state_key("banner")) or b"null")
    return {"arms": state.arms, "n": state.state["n"], "s": state.state["s"], "rev": state.rev}


def test_a_replayed_batch_teaches_nothing_twice(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    shown = [decision("b", 1, f"v{i}") for i in range(5)] + [decision("a", 0, "v9")]
    log_decisions(r, *shown)
    send(redis_url, *[click(d, f"v{i}") for i, d in enumerate(shown[:3])])
    entries = worker.reader.read(100, 10)
    worker.process(entries)
    once = learned(r)
    assert once["n"] == [1.0, 5.0] and once["s"] == [0.0, 3.0]
    # The worker dies before its ack: a new one replays the same batch from the pending list.
    again = RewardWorker(SpoolReader(r, "rewards", "t"), r)
    again.process(again.reader.read(100, 10))  # its pending batch first
    assert {k: v for k, v in learned(r).items() if k != "rev"} == {
        k: v for k, v in once.items() if k != "rev"}  # fmt: skip
    rewarded = r.xrange(STREAM)
    assert sum(b"Decision Rewarded" in f.get(b"e", b"") for _, f in rewarded) == 1  # one entry
    assert sum(f.get(b"e", b"").count(b"Decision Rewarded") for _, f in rewarded) == 3


def test_each_decision_is_rewarded_once_and_only_in_its_window(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    fresh, stale = decision("b", 1, "v1"), decision("a", 0, "v2", hours_ago=30)
    log_decisions(r, fresh, stale)
    send(redis_url, click(fresh, "v1"), click(fresh, "v1"), click(stale, "v2"))
    counters = worker.process(worker.reader.read(100, 10))
    assert learned(r)["s"] == [0.0, 1.0]
    assert counters["rewards"] == 1 and counters["rewards_late"] == 1
    assert counters["decision_clicks"] == 3


def test_an_edit_keeps_what_surviving_variants_learned(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    shown = [decision("b", 1, f"v{i}") for i in range(4)]
    log_decisions(r, *shown)
    send(redis_url, click(shown[0], "v0"))
    worker.reader.ack(entries := worker.reader.read(100, 10), worker.process(entries))
    edited = {"variants": [{"key": "c"}, {"key": "b"}], "policy": {"kind": "thompson"}}
    put_placement(r, "banner", PLACEMENT.decode(msgspec.json.encode(edited)))
    log_decisions(r, decision("c", 0, "v7"))
    worker.process(worker.reader.read(100, 10))
    assert {k: v for k, v in learned(r).items() if k != "rev"} == {
        "arms": ["c", "b"], "n": [1.0, 4.0], "s": [0.0, 1.0]}  # fmt: skip
