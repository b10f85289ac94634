"""Change detection in the engine: the reward worker records the change a placement's policy
found (once, also when a batch is replayed) and saves the restarted state, on a single Redis
and on a Redis Cluster; ``GET /v1/placements/{key}`` lists the changes and the placement's
dashboard page marks them on its allocation chart."""

from __future__ import annotations

import msgspec
import redis

from collector.reader import SpoolReader
from decisions.changes import Detected, changes_key, detected, record
from decisions.rewards import RewardWorker
from tests.conftest import Engine
from tests.decisions.test_rewards import click, decision, learned, log_decisions, place, worker
from tests.helpers import placement, put_placement, signed_in
from tests.profiles.conftest import send

__all__ = ["worker"]  # the reward worker's fixture, shared with test_rewards

DETECTING = {"variants": [{"key": "a"}, {"key": "b"}],
             "policy": {"kind": "thompson", "detect_changes": True}}  # fmt: skip


def test_the_worker_records_a_change_once_and_saves_the_restart(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    place(r, "banner", DETECTING)
    for i in range(60):  # "a" is clicked every other time, each click right after its decision
        shown = decision("a", 0, f"v{i}")
        log_decisions(r, shown)
        if i % 2 == 0:
            send(redis_url, click(shown, f"v{i}"))
    log_decisions(r, *[decision("a", 0, f"w{i}") for i in range(60)])  # ...and then never
    entries = worker.reader.read(1000, 10)
    counters = worker.process(entries)
    assert counters["policy_changes"] == 1
    found = detected(r, "banner")
    assert [(c.variant, c.direction, c.partition) for c in found] == [("a", "fell", 0)]
    assert 0.3 <= found[0].rate <= 0.5  # 30 clicks in the ~90 decisions before the alarm
    state = learned(r)
    assert state["restarts"] == 1 and sum(state["n"]) < 60  # evidence before it is forgotten
    # A worker that dies before its ack: the next one replays the batch and records nothing.
    again = RewardWorker(SpoolReader(r, "rewards", "t"), r)
    replayed = again.reader.read(1000, 10)
    assert "policy_changes" not in again.process(replayed)
    again.reader.ack(replayed, {})
    assert len(detected(r, "banner")) == 1


def test_the_list_is_capped_and_in_the_placements_slot(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    record(
        pipe, "hero", [Detected(at=i, variant="a", direction="rose", rate=0.1) for i in range(150)]
    )
    pipe.execute()
    found = detected(r, "hero")
    assert len(found) == 100 and found[0].at == 149  # newest first
    assert changes_key("hero").startswith("{pol:hero}")  # one slot with the learned state


def test_the_api_and_the_placement_page_show_the_changes(engine: Engine, r: redis.Redis) -> None:
    put_placement(engine, "hero", DETECTING)
    shown = placement(engine, "hero")["learned"]
    assert shown["changes"] == [] and shown["restarts"] == 0
    at = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    r.lpush(changes_key("hero"), msgspec.json.encode(
        Detected(at=at, variant="b", direction="fell", rate=0.0812, partition=0)))  # fmt: skip
    assert placement(engine, "hero")["learned"]["changes"] == [
        {"at": "2026-01-01T00:00:00Z", "variant": "b", "direction": "fell", "rate": 0.0812,
         "partition": 0}]  # fmt: skip
    with signed_in(engine) as web:
        page = web.get("/dashboard/placements/hero").text
    assert "Changes detected" in page and "b fell (8.12% since the previous restart)" in page


def test_a_placement_without_detection_says_nothing_of_changes(engine: Engine) -> None:
    put_placement(engine, "plain", {"variants": [{"key": "a"}, {"key": "b"}]})
    assert "changes" not in placement(engine, "plain")["learned"]
    with signed_in(engine) as web:
        assert "Change detection" not in web.get("/dashboard/placements/plain").text
