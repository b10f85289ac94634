"""The reward worker on a real Redis: exactly-once learning, windows, once per decision, edits;
attribution from the decision id alone, forged ids, last touch, contextual clicks, and memory
that is bounded by people × placements (no key per decision)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import redis

from collector import Layout, layout_of, wire
from collector.reader import SpoolReader, ensure_group
from collector.spool import append_now
from decisions.placements import LEARNED, PLACEMENT, put_placement, state_key
from decisions.records import SIGNING_KEY, DecisionIds, Logged, new_decision_id
from decisions.rewards import RewardWorker
from tests.profiles.conftest import send

STREAM = Layout(1).partition(0).log  # a one-partition spool's stream

BANNER = {"variants": [{"key": "a"}, {"key": "b"}], "policy": {"kind": "thompson"}}
IDS = DecisionIds.of_secret("sk_rewards_test")


def log_decisions(r: redis.Redis, *decisions: Logged) -> None:
    lines = b"".join(msgspec.json.encode(d) + b"\n" for d in decisions)
    r.xadd(STREAM, {"n": len(decisions), "d": lines})


def decision(
    variant: str,
    arm: int,
    visitor: str = "v1",
    hours_ago: float = 0.0,
    placement: str = "banner",
    features: list[float] | None = None,
    ids: DecisionIds = IDS,
) -> Logged:
    """A decision as /v1/decide logs it: its id signed, carrying placement, arm and time."""
    when = datetime.now(UTC) - timedelta(hours=hours_ago)
    decision_id = ids.new(placement, arm, variant, 0.5, int(when.timestamp() * 1000))
    return Logged(
        decision_id=decision_id, timestamp=when, placement=placement, variant=variant, arm=arm,
        policy="thompson", policy_revision=1, propensity=0.5, profile_id="", anonymous_id=visitor,
        user_id="", features=features or [], context=msgspec.Raw(b"{}"), fallback="",
    )  # fmt: skip


def click(d: Logged | str, visitor: str = "v1") -> dict[str, Any]:
    decision_id = d if isinstance(d, str) else d.decision_id
    return {"type": "track", "event": "Decision Clicked", "anonymousId": visitor,
            "properties": {"decisionId": decision_id}}  # fmt: skip


def order(visitor: str, revenue: float = 1.0) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "anonymousId": visitor,
            "properties": {"revenue": revenue}}  # fmt: skip


def place(r: redis.Redis, key: str, body: dict[str, Any]) -> None:
    put_placement(r, key, PLACEMENT.decode(msgspec.json.encode(body)))


@pytest.fixture
def worker(r: redis.Redis) -> RewardWorker:
    place(r, "banner", BANNER)
    ensure_group(r, "rewards")
    r.set(SIGNING_KEY, IDS.key)  # as the API processes publish it
    return RewardWorker(SpoolReader(r, "rewards", "t"), r)


def run(worker: RewardWorker) -> dict[str, float]:
    """Apply and acknowledge what the spool holds, as the worker's loop does."""
    entries = worker.reader.read(1000, 10)
    counters = worker.process(entries)
    worker.reader.ack(entries, counters)
    return counters


def learned(r: redis.Redis, key: str = "banner") -> dict[str, Any]:
    state = LEARNED.decode(r.get(state_key(key)) or b"null")
    return {"arms": state.arms, "rev": state.rev, **state.state}


def rewarded(r: redis.Redis) -> list[dict[str, Any]]:
    """The properties of every "Decision Rewarded" event the worker appended."""
    found = []
    for _, entry in r.xrange(STREAM):
        for line in entry.get(b"e", b"").splitlines():
            message = msgspec.json.decode(line)
            if message.get("event") == "Decision Rewarded":
                found.append(message["properties"])
    return found


def keys(r: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in r.scan_iter(count=1000))


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
    announced = r.xrange(STREAM)
    assert sum(b"Decision Rewarded" in f.get(b"e", b"") for _, f in announced) == 1  # one entry
    assert sum(f.get(b"e", b"").count(b"Decision Rewarded") for _, f in announced) == 3


def test_each_decision_is_rewarded_once_and_only_in_its_window(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    fresh, stale = decision("b", 1, "v1"), decision("a", 0, "v2", hours_ago=30)
    log_decisions(r, fresh, stale)
    send(redis_url, click(fresh, "v1"), click(fresh, "v1"), click(stale, "v2"))
    counters = worker.process(worker.reader.read(100, 10))
    assert learned(r)["s"] == [0.0, 1.0]
    assert counters["rewards"] == 1 and counters["rewards_late"] == 1
    assert counters["decision_clicks"] == 3 and counters["rewards_repeated"] == 1


def test_a_repeated_click_rewards_nothing_again_whichever_worker_sees_it(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    shown = decision("b", 1)
    log_decisions(r, shown)
    send(redis_url, click(shown))
    assert run(worker)["rewards"] == 1
    send(redis_url, click(shown))  # the visitor clicks again, another batch
    assert run(worker).get("rewards", 0) == 0
    # Another worker process, which holds nothing in memory: what stops it is in Redis.
    worker.reader.release()  # (the first one stopped: the partition is free for it)
    restarted = RewardWorker(SpoolReader(r, "rewards", "t2"), r)
    send(redis_url, click(shown))
    counters = run(restarted)
    assert counters.get("rewards", 0) == 0 and counters["rewards_repeated"] == 1
    assert learned(r)["s"] == [0.0, 1.0] and len(rewarded(r)) == 1


def test_a_click_is_attributed_from_its_id_alone(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    """No record of the decision anywhere: not in Redis, not even in the spool the worker read."""
    made = datetime.now(UTC) - timedelta(minutes=5)
    decision_id = IDS.new("banner", 1, "b", 0.25, int(made.timestamp() * 1000))
    assert not [k for k in keys(r) if k.startswith(("{d:", "{dv:"))]
    send(redis_url, click(decision_id, "someone"))
    counters = run(worker)
    assert counters["rewards"] == 1 and learned(r)["s"] == [0.0, 1.0]
    [announced] = rewarded(r)
    assert announced["decisionId"] == decision_id and announced["variant"] == "b"
    assert announced["placement"] == "banner" and announced["kind"] == "click"


def test_forged_and_tampered_ids_are_not_rewarded_and_are_counted(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    real = decision("a", 0)
    other_engine = decision("b", 1, ids=DecisionIds.of_secret("someone else's secret"))
    body = real.decision_id[2:]
    flipped = "A" if body[13] != "A" else "B"  # a character of the arm's bytes
    tampered = "d_" + body[:13] + flipped + body[14:]
    log_decisions(r, real)
    send(redis_url, click(other_engine.decision_id), click(tampered), click("d_hello"),
         click(new_decision_id()))  # fmt: skip
    counters = run(worker)
    assert counters["decision_clicks"] == 4
    assert counters["rewards_forged"] == 3  # another engine's key, tampered with, made up
    assert counters["rewards_unsigned"] == 1  # a plain id: a fallback's, which earns nothing
    assert "rewards" not in counters and learned(r)["s"] == [0.0, 0.0] and rewarded(r) == []
    send(redis_url, click(real))  # the real one still earns
    assert run(worker)["rewards"] == 1 and learned(r)["s"] == [1.0, 0.0]


def test_the_worker_follows_the_published_key(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    place(r, "offer", {"variants": [{"key": "a"}, {"key": "b"}], "policy": {"kind": "thompson"},
                       "reward": {"kind": "conversion", "event": "Order Completed"}})  # fmt: skip
    log_decisions(r, decision("a", 0, "shopper", placement="offer"))
    send(redis_url, click(decision("b", 1)))
    assert run(worker)["rewards"] == 1
    rotated = DecisionIds.of_secret("sk_rotated")
    r.set(SIGNING_KEY, rotated.key)  # the secret key changed: the API publishes its new key
    send(redis_url, click(decision("b", 1, ids=rotated)), click(decision("b", 1)))
    counters = run(worker)
    assert counters["rewards"] == 1 and counters["rewards_forged"] == 1  # the old key is gone
    send(redis_url, order("shopper"))  # last touch reads the visitor hash: no key needed
    assert run(worker)["rewards"] == 1 and learned(r, "offer")["s"] == [1.0, 0.0]


def test_an_order_rewards_the_persons_latest_decision(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    place(r, "offer", {"variants": [{"key": "a"}, {"key": "b"}],
                       "policy": {"kind": "gaussian_thompson"},
                       "reward": {"kind": "revenue", "event": "Order Completed"}})  # fmt: skip
    older = decision("a", 0, "shopper", hours_ago=2, placement="offer")
    newer = decision("b", 1, "shopper", hours_ago=1, placement="offer")
    log_decisions(r, older)
    run(worker)
    log_decisions(r, newer, decision("a", 0, "someone else", placement="offer"))
    run(worker)
    send(redis_url, order("shopper", 40), order("shopper", 25))
    counters = run(worker)
    assert counters["rewards"] == 1 and counters["rewards_repeated"] == 1
    [announced] = rewarded(r)
    assert announced["decisionId"] == newer.decision_id and announced["reward"] == 40
    assert learned(r, "offer")["n"] == [2.0, 1.0] and learned(r, "offer")["s"] == [0.0, 40.0]
    # What last touch kept: the person's latest decision of the placement, not a pointer.
    latest = r.hget("{dv:anonymous_id:shopper}", "dl:offer")
    assert latest is not None and msgspec.json.decode(latest) == [newer.decision_id, []]


def test_a_decision_and_its_order_in_one_batch(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    place(r, "offer", {"variants": [{"key": "a"}, {"key": "b"}], "policy": {"kind": "thompson"},
                       "reward": {"kind": "conversion", "event": "Order Completed"}})  # fmt: skip
    shown = decision("b", 1, "shopper", placement="offer")
    log_decisions(r, shown)
    send(redis_url, order("shopper"))
    assert run(worker)["rewards"] == 1
    assert [p["decisionId"] for p in rewarded(r)] == [shown.decision_id]


def test_a_contextual_policy_learns_from_a_click_on_the_latest_decision(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    place(r, "pdp", {"variants": [{"key": "a"}, {"key": "b"}],
                     "policy": {"kind": "linucb", "features": ["bias", "device:mobile"]}})  # fmt: skip
    older = decision("a", 0, "m1", placement="pdp", features=[1.0, 1.0])
    latest = decision("b", 1, "m1", placement="pdp", features=[1.0, 0.0])
    log_decisions(r, older, latest)
    run(worker)  # decided in an earlier batch: the click below knows only the id
    send(redis_url, click(latest, "m1"))
    counters = run(worker)
    assert counters["rewards"] == 1 and "rewards_unlearned" not in counters
    assert learned(r, "pdp")["b"] == [[0.0, 0.0], [1.0, 0.0]]  # reward × the latest's features
    # An older decision's features are not kept: rewarded (results see it), not learned from.
    send(redis_url, click(older, "m1"))
    counters = run(worker)
    assert counters["rewards"] == 1 and counters["rewards_unlearned"] == 1
    assert learned(r, "pdp")["b"] == [[0.0, 0.0], [1.0, 0.0]]
    assert [p["decisionId"] for p in rewarded(r)] == [latest.decision_id, older.decision_id]


def test_a_contextual_click_in_the_decisions_own_batch_is_learned(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    place(r, "pdp", {"variants": [{"key": "a"}, {"key": "b"}],
                     "policy": {"kind": "linucb", "features": ["bias", "device:mobile"]}})  # fmt: skip
    first = decision("a", 0, "m1", placement="pdp", features=[1.0, 1.0])
    log_decisions(r, first, decision("b", 1, "m1", placement="pdp", features=[1.0, 0.0]))
    send(redis_url, click(first, "m1"))
    counters = run(worker)
    assert counters["rewards"] == 1 and "rewards_unlearned" not in counters
    assert learned(r, "pdp")["b"] == [[1.0, 1.0], [0.0, 0.0]]


def test_an_edit_keeps_what_surviving_variants_learned(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    shown = [decision("b", 1, f"v{i}") for i in range(4)]
    log_decisions(r, *shown)
    send(redis_url, click(shown[0], "v0"))
    run(worker)
    edited = {"variants": [{"key": "c"}, {"key": "b"}], "policy": {"kind": "thompson"}}
    place(r, "banner", edited)
    log_decisions(r, decision("c", 0, "v7"))
    worker.process(worker.reader.read(100, 10))
    assert {k: v for k, v in learned(r).items() if k in ("arms", "n", "s")} == {
        "arms": ["c", "b"], "n": [1.0, 4.0], "s": [0.0, 1.0]}  # fmt: skip


def test_a_click_after_an_edit_moved_its_variant_rewards_that_variant(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    shown = decision("b", 1)
    log_decisions(r, shown)
    run(worker)
    place(r, "banner", {"variants": [{"key": "b"}, {"key": "c"}], "policy": {"kind": "thompson"}})
    send(redis_url, click(shown))
    assert run(worker)["rewards"] == 1
    assert {k: v for k, v in learned(r).items() if k in ("arms", "s")} == {
        "arms": ["b", "c"], "s": [1.0, 0.0]}  # fmt: skip
    place(r, "banner", {"variants": [{"key": "c"}], "policy": {"kind": "thompson"}})
    send(redis_url, click(decision("b", 1)))  # a variant deleted since
    assert run(worker)["rewards_unresolved"] == 1


def test_memory_is_bounded_by_people_and_placements_not_decisions(
    r: redis.Redis, worker: RewardWorker, redis_url: str
) -> None:
    """N decisions for K visitors leave K visitor hashes and no key per decision; rewards add
    fields (one per reward) to a bucket per placement and hour, not keys."""
    visitors = 20

    def decide_for_everyone(rounds: int) -> list[Logged]:
        made = [decision("ab"[n % 2], n % 2, f"v{n % visitors}") for n in range(rounds * visitors)]
        for start in range(0, len(made), 50):
            log_decisions(r, *made[start : start + 50])
        run(worker)
        return made

    decide_for_everyone(1)
    after_one = [k for k in keys(r) if k != STREAM]
    made = decide_for_everyone(10)
    assert [k for k in keys(r) if k != STREAM] == after_one  # 10× the decisions, the same keys
    assert sum(k.startswith("{dv:") for k in after_one) == visitors
    assert not [k for k in after_one if k.startswith(("{d:", "{rw:"))]
    send(redis_url, *[click(d, d.anonymous_id) for d in made[:7]])
    assert run(worker)["rewards"] == 7
    buckets = [k for k in keys(r) if k.startswith("{rw:")]
    assert 1 <= len(buckets) <= 2  # the decisions' hour (and the next, at the turn of one)
    assert sum(r.hlen(b) for b in buckets) == 7
    assert 0 < r.pttl(buckets[0]) <= (24 + 1 + 2) * 3_600_000


def test_two_workers_on_four_partitions_serve_what_one_worker_would_learn(r: redis.Redis) -> None:
    """Each partition learns apart; what API processes serve is the merge of all four."""
    four = layout_of(r, 4)
    place(r, "banner", BANNER)
    r.set(SIGNING_KEY, IDS.key)
    visitors = [f"visitor-{i}" for i in range(40)]
    shown = {v: decision("ab"[i % 2], i % 2, v) for i, v in enumerate(visitors)}
    for index in range(4):
        mine = [shown[v] for v in visitors if four.of(v) == index]
        lines = b"".join(msgspec.json.encode(d) + b"\n" for d in mine)
        r.xadd(four.partition(index).log, {"n": len(mine), "d": lines})
    clicked = visitors[::3]
    append_now(r, [wire.Track(event="Decision Clicked", anonymous_id=v, message_id=f"c-{v}",
                              properties=msgspec.Raw(msgspec.json.encode(
                                  {"decisionId": shown[v].decision_id})))
                   for v in clicked], four)  # fmt: skip
    workers = []
    for name in ("a", "b"):
        reader = SpoolReader(r, "rewards", name, four)
        reader.ensure_group()
        workers.append(RewardWorker(reader, r))
    for _ in range(3):
        for each in workers:
            each.reader.balance(force=True)
    assert sorted(len(w.reader.held) for w in workers) == [2, 2]
    for _ in range(10):
        for each in workers:
            if entries := each.reader.read(1000, 1):
                each.reader.ack(entries, each.process(entries))
    served = learned(r)
    assert served["n"] == [20.0, 20.0]
    assert served["s"] == [float(sum(shown[v].arm == arm for v in clicked)) for arm in (0, 1)]
    parts = [LEARNED.decode(r.get(f"{{pol:banner}}:part:{p}")) for p in range(4)]
    assert sum(sum(p.state["n"]) for p in parts) == 40  # each partition learned its own share
