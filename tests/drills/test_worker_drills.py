"""Failure drills for the pipeline workers: ``kairos up`` runs as a child process with real
traffic, a worker is SIGKILLed in the middle of its batches (three times; the supervisor
restarts it), and afterwards every count is exact — no loss, nothing applied twice. And a webhook
receiver that is down for a minute gets every journey action once it is back.

One engine serves the whole module; each drill has people of its own (their ids carry its tag),
so the drills stay independent. The outage drill's minute runs beside the others, from the
module's start. The module takes about three and a half minutes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
import pytest
import redis

from bench.profiles import fill
from collector import SpoolReader
from collector.reader import ensure_group
from edge.runtime.embedded_redis import EmbeddedRedis
from journeys.shards import layout_now, shards
from journeys.store import DEFS, pending_actions
from profiles.history import NUMERIC
from profiles.learner import (
    REDO,
    STATE,
    SUMMARY,
    TARGETS,
    Learner,
    ModelSettings,
)
from profiles.store import ProfileStore
from profiles.updater import ProfileUpdater
from tests.conftest import WRITE_KEY, Process, basic, free_port
from tests.drills.workers_support import (
    Receiver,
    Stack,
    Traffic,
    eventually,
    expected,
    in_thread,
    kill_while_busy,
    profile_of,
    second_devices,
    shoppers,
)
from tests.profiles.conftest import send

# Drills: minutes of real processes under load and failure (`pytest -m 'not slow'` skips them).
pytestmark = pytest.mark.slow

PLACEMENT = "drill_banner"
SIGNAL, OUTAGE = "drill_signal", "drill_outage"
OUTAGE_PEOPLE = [f"out-{i}" for i in range(40)]
KILLS = 3


def _config(receiver: Receiver, outage: Receiver) -> str:
    # No rate limits (the shared contract for drills that push many requests from 127.0.0.1).
    return f"""\
[limits]
per_ip = 0
per_key = 0

[placements.{PLACEMENT}]
default = "a"
policy = {{ kind = "thompson" }}
reward = {{ kind = "click" }}
variants = [{{ key = "a" }}, {{ key = "b" }}, {{ key = "c" }}]

[journeys.{SIGNAL}]
trigger = {{ kind = "event", event = "Drill Signal" }}
start = "notify"
steps.notify = {{ type = "webhook", url = "{receiver.url}/signal", next = "end" }}
steps.end = {{ type = "end" }}

[journeys.{OUTAGE}]
trigger = {{ kind = "event", event = "Outage Signal" }}
start = "notify"
steps.notify = {{ type = "webhook", url = "{outage.url}/outage", next = "end" }}
steps.end = {{ type = "end" }}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    receiver = Receiver(delay=0.03)
    receiver.start()
    outage = Receiver()  # down until the outage drill brings it up
    data_dir = tmp_path_factory.mktemp("drills") / "data"
    data_dir.mkdir()
    (data_dir / "kairos.toml").write_text(_config(receiver, outage))
    # A process per worker kind, two of each (on four partitions; one sink, which owns
    # embedded ClickHouse): each drill SIGKILLs one kind's first process in the middle of its
    # batches while the second shares the partitions with it.
    process = Process(data_dir, free_port(), ["--worker-processes", "each",
                                              "--worker-instances", "2"])  # fmt: skip
    process.start(timeout=120)
    client = redis.Redis.from_url(EmbeddedRedis(data_dir).url)
    found = Stack(process, client, receiver, outage)

    def installed() -> bool:
        """The config file's placement answers /v1/decide, and its journeys are in Redis."""
        answer = found.http.post(process.url + "/v1/decide", headers=basic(WRITE_KEY),
                                 json={"placements": [PLACEMENT], "anonymousId": "warm-up"})  # fmt: skip
        return answer.status_code == 200 and client.hlen(DEFS) == 2

    eventually(installed, timeout=60)
    found.outage_minute = in_thread(lambda: _outage_minute(found))
    yield found
    found.http.close()
    client.close()
    if process.proc is not None and process.proc.poll() is None:
        try:
            process.stop()
        except Exception:
            process.kill()
    receiver.stop()
    outage.stop()


def _kill_during_traffic(
    stack: Stack, worker: str, messages: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Send ``messages`` (100 every quarter second) while SIGKILLing ``worker`` mid-batch,
    ``KILLS`` times; traffic stops once the kills are done; then wait for the worker to catch
    up. Returns the messages sent."""
    killed = threading.Event()
    traffic = Traffic(stack, messages, enough=killed.is_set)
    kills = kill_while_busy(stack, worker, KILLS, lambda since: stack.busy(worker, since),
                            until=lambda: traffic.done() and stack.drained(worker))  # fmt: skip
    killed.set()
    traffic.join(timeout=120)
    assert kills == KILLS, f"{worker} was busy {kills} times in {len(traffic.sent)} messages"
    eventually(lambda: stack.drained(worker), timeout=120)
    print(f"{worker}: {len(traffic.sent)} messages, {kills} SIGKILLs mid-batch")
    return traffic.sent


def _assert_stored_once(stack: Stack, tag: str, sent: int) -> None:
    """Every message of the drill is in ClickHouse, once."""
    query = (f"SELECT count(), uniqExact(message_id) FROM events "
             f"WHERE startsWith(message_id, '{tag}-')")  # fmt: skip
    eventually(lambda: stack.drained("sink") and stack.sql(query)[0][0] >= sent, timeout=120)
    assert stack.sql(query) == [[sent, sent]]


def test_sink_killed_mid_batch_stores_every_event_once(stack: Stack) -> None:
    messages = _kill_during_traffic(stack, "sink", shoppers("sink", 1_000, 10, seed=11))
    _assert_stored_once(stack, "sink", len(messages))


def test_profile_updater_killed_mid_batch_counts_every_event_once(stack: Stack) -> None:
    traffic = second_devices(shoppers("prof", 1_000, 10, seed=12), "prof", seed=12)
    messages = _kill_during_traffic(stack, "profiles", traffic)
    people = expected(messages)
    wrong = {}
    for person, want in people.items():
        pids = {profile_of(stack.redis, anonymous_id) for anonymous_id in want.anonymous_ids}
        assert len(pids) == 1 and None not in pids, (person, pids)  # merged into one
        raw = stack.redis.hgetall(f"{{p:{pids.pop()}}}")
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        got = ({name: int(fields.get(f"c:{name}", 0)) for name in want.counts},
               int(fields.get("page_views", 0)), int(fields.get("orders", 0)),
               round(float(fields.get("revenue", 0)), 4))  # fmt: skip
        implied = (dict(want.counts), want.counts["Page Viewed"], want.orders,
                   round(want.revenue, 4))  # fmt: skip
        if got != implied:
            wrong[person] = (got, implied)
    assert not wrong, f"{len(wrong)} of {len(people)} profiles off: {next(iter(wrong.items()))}"
    assert sum(len(want.anonymous_ids) > 1 for want in people.values()) >= 5  # merges happened
    _assert_stored_once(stack, "prof", len(messages))


class _Died(Exception):
    """The profile updater's process dying at a chosen point."""


@pytest.mark.parametrize("when", ["before forwarding", "after forwarding"])
def test_a_profile_updater_that_dies_mid_merge_leaves_no_orphan(
    r: redis.Redis, redis_url: str, when: str
) -> None:
    """A SIGKILL lands between two writes of a merge only by chance; here it lands there on
    purpose, and the replayed batch must still leave one profile, with each event once."""
    ensure_group(r, "profiles")
    send(redis_url, {"type": "page", "anonymousId": "a1", "properties": {"path": "/"}},
         {"type": "identify", "anonymousId": "a1", "userId": "u1"},
         {"type": "page", "anonymousId": "a2", "properties": {"path": "/"}})  # fmt: skip
    dying = ProfileUpdater(SpoolReader(r, "profiles", "t"), ProfileStore(r))
    entries = dying.reader.read(100, 10)
    dying.process(entries)
    dying.reader.ack(entries, {})
    source = profile_of(r, "a2")
    send(redis_url, {"type": "identify", "anonymousId": "a2", "userId": "u1"})  # a merge
    forward = dying.store.forward

    def die(*args: Any) -> None:
        if when == "after forwarding":
            forward(*args)
        raise _Died

    dying.store.forward = die  # type: ignore[method-assign]
    with pytest.raises(_Died):
        dying.process(dying.reader.read(100, 10))
    restarted = ProfileUpdater(SpoolReader(r, "profiles", "t"), ProfileStore(r))
    entries = restarted.reader.read(100, 10)  # the pending batch first
    restarted.process(entries)
    restarted.reader.ack(entries, {})
    target = profile_of(r, "a1")
    assert profile_of(r, "a2") == target != source
    assert {k.decode(): v.decode() for k, v in r.hgetall(f"{{p:{source}}}").items()} == {
        "merged_into": target
    }
    assert r.hget(f"{{p:{target}}}", "c:Page Viewed") == b"2"


def test_learner_killed_mid_batch_learns_every_event_and_example_once(stack: Stack) -> None:
    messages = _kill_during_traffic(stack, "learner", shoppers("learn", 1_000, 10, seed=13))
    wrong = {}
    for person, want in expected(messages).items():
        (anonymous_id,) = want.anonymous_ids  # one device each here
        pid = profile_of(stack.redis, anonymous_id)
        record = json.loads(stack.redis.get(f"{{p:{pid}}}:learn") or b"{}")
        got = (record.get("events", 0), record.get("page_views", 0),
               record.get("product_views", 0), record.get("orders", 0),
               round(record.get("revenue", 0.0), 4))  # fmt: skip
        implied = (want.counts.total(), want.counts["Page Viewed"], want.counts["Product Viewed"],
                   want.orders, round(want.revenue, 4))  # fmt: skip
        if got != implied:
            wrong[person] = (got, implied)
    assert not wrong, f"{len(wrong)} learner records off: {next(iter(wrong.items()))}"

    seen: dict[str, Any] = {}

    def models_hold_every_example() -> bool:
        """The models (as published) have learned exactly the examples recorded as learned."""
        state = {k.decode(): v.decode() for k, v in stack.redis.hgetall(STATE).items()}
        summary = msgspec.json.decode(stack.redis.get(SUMMARY) or b"{}")
        seen["learned"] = {t: int(state.get(f"learned:{t}", 0)) for t in TARGETS}
        seen["held"] = {m["target"]: m["examples"] for m in summary.get("models", [])}
        seen["positions"] = {k: v for k, v in state.items() if k.partition(":")[0] == "applied"}
        published = {f"applied:{p}" if p != "0" else "applied": position
                     for p, position in summary.get("applied", {}).items()}  # fmt: skip
        return published == seen["positions"] and seen["learned"] == seen["held"]

    eventually(models_hold_every_example, timeout=60, status=lambda: seen)
    assert sum(seen["learned"].values()) > 0


@pytest.mark.parametrize("estimator", ["logistic", "tree"])
def test_a_learner_that_dies_between_checkpoints_restores_the_uninterrupted_models(
    r: redis.Redis, redis_url: str, estimator: str
) -> None:
    """The exact form of the drill above, in process: a learner that saved batches after its
    last checkpoint and then died is, once restored, the learner that never died."""
    fill(redis_url, list(shoppers("ckpt", 200, 20, seed=15)))
    ensure_group(r, "profiles")
    updater = ProfileUpdater(SpoolReader(r, "profiles", "t"), ProfileStore(r))
    while entries := updater.reader.read(200, 10):
        updater.process(entries)
        updater.reader.ack(entries, {})
    ensure_group(r, "learner")
    settings = ModelSettings(estimator=estimator, churn_days=7)
    alive = Learner(SpoolReader(r, "learner", "t"), r, settings, clock=None)
    alive.restore()
    for batch in range(1_000):
        entries = alive.reader.read(5, 10)
        if not entries:
            break
        alive.reader.ack(entries, alive.process(entries))
        if batch == 20:
            alive.checkpoint()  # the last one: everything after it is in the redo log only
    assert r.llen(REDO) > 0
    restored = Learner(SpoolReader(r, "learner", "t"), r, settings, clock=None)
    restored.restore()
    for target, model in alive.models.items():
        assert restored.models[target].summary() == model.summary()
    x = {name: 1.0 for name in NUMERIC} | {"device=mobile": 1.0}
    assert [m.predict(restored.scaler(x)) for m in restored.models.values()] == [
        m.predict(alive.scaler(x)) for m in alive.models.values()
    ]
    learned = {t: int(r.hget(STATE, f"learned:{t}") or 0) for t in TARGETS}
    assert learned == {t: m.quality.examples for t, m in alive.models.items()}
    assert sum(learned.values()) > 0


def test_reward_worker_killed_mid_batch_learns_every_decision_and_click_once(
    stack: Stack,
) -> None:
    decided: dict[str, tuple[str, str | None]] = {}  # decision id -> (variant, fallback)
    clicked: set[str] = set()
    sent_clicks: list[int] = []
    before = _policy(stack)

    def decide_and_click() -> None:
        clicks = []
        for i in range(450):
            visitor = f"rew-visitor-{i}"
            decision = stack.decide(PLACEMENT, visitor)
            decided[decision["decisionId"]] = (decision["variant"], decision.get("fallback"))
            if i % 3 == 0:
                for _ in range(1 + (i % 2)):  # some clicked twice: rewarded once
                    clicks.append({"type": "track", "event": "Decision Clicked",
                                   "anonymousId": visitor, "messageId": f"rew-click-{i}-{_}",
                                   "properties": {"decisionId": decision["decisionId"]}})  # fmt: skip
                clicked.add(decision["decisionId"])
            if len(clicks) >= 20:
                sent_clicks.append(stack.send(clicks))
                clicks = []
        sent_clicks.append(stack.send(clicks))

    deciding = in_thread(decide_and_click)
    messages = _kill_during_traffic(stack, "rewards", shoppers("rew", 1_000, 10, seed=14))
    deciding.join(timeout=120)
    assert not deciding.is_alive() and not deciding.failures  # type: ignore[attr-defined]
    eventually(lambda: stack.drained("rewards"), timeout=120)
    after = _policy(stack)
    taught = [d for d, (_, fallback) in decided.items() if not fallback]
    pulls = Counter(decided[d][0] for d in taught)
    rewards = Counter(decided[d][0] for d in taught if d in clicked)
    arms = after["arms"]
    assert [after["n"][k] - before["n"][k] for k in range(len(arms))] == [pulls[a] for a in arms]
    assert [after["s"][k] - before["s"][k] for k in range(len(arms))] == [rewards[a] for a in arms]
    assert len(taught) > 300  # most decisions came from the policy
    eventually(lambda: stack.drained("sink"))
    logged = stack.sql("SELECT variant, count() FROM decisions WHERE fallback = '' AND "
                       "startsWith(anonymousId, 'rew-visitor-') GROUP BY variant")  # fmt: skip
    assert {variant: n for variant, n in logged} == dict(pulls)  # the sink's log agrees

    def announced() -> list[list[Any]] | None:
        """One "Decision Rewarded" event per clicked decision, in ClickHouse."""
        rows = stack.sql("SELECT count(), uniqExact(message_id) FROM events WHERE "
                         "event = 'Decision Rewarded' AND startsWith(anonymous_id, 'rew-')")  # fmt: skip
        return rows if rows[0][0] >= sum(rewards.values()) else None

    assert eventually(announced) == [[sum(rewards.values())] * 2]
    _assert_stored_once(stack, "rew", len(messages) + sum(sent_clicks))


def _policy(stack: Stack) -> dict[str, Any]:
    raw = stack.redis.get(f"{{pol:{PLACEMENT}}}")
    if raw is None:
        return {"arms": ["a", "b", "c"], "n": [0.0] * 3, "s": [0.0] * 3}
    learned = json.loads(raw)
    return {"arms": learned["arms"], "n": learned["state"]["n"], "s": learned["state"]["s"]}


def _signal(stack: Stack, event: str, people: list[str]) -> None:
    sent = [{"type": "track", "event": event, "anonymousId": who, "messageId": f"{who}-signal"}
            for who in people]  # fmt: skip
    assert stack.send(sent) == len(people)


def _delivered_people(stack: Stack, receiver: Receiver, journey: str) -> Counter[str]:
    """Answered deliveries per person (profile id), counted by Idempotency-Key."""
    return Counter(key.split("|")[1] for key in receiver.delivered(f"{journey}|"))


def test_journeys_worker_killed_during_delivery_sends_one_action_per_person(
    stack: Stack,
) -> None:
    people = [f"jrn-{i}" for i in range(200)]
    _signal(stack, "Drill Signal", people)
    kills = kill_while_busy(stack, "journeys", KILLS, lambda _: stack.receiver.handling > 0,
                            until=lambda: len(stack.receiver.delivered(f"{SIGNAL}|")) >=
                            len(people))  # fmt: skip
    assert kills >= 2, f"the journeys worker was delivering only {kills} times"
    pids = {profile_of(stack.redis, who) for who in people}
    assert None not in pids and len(pids) == len(people)
    eventually(lambda: set(_delivered_people(stack, stack.receiver, SIGNAL)) == pids)
    eventually(lambda: not _queued(stack, SIGNAL))
    time.sleep(3)  # anything sent twice would come now
    keys = stack.receiver.delivered(f"{SIGNAL}|")
    assert len(keys) == len(people)  # one action key per person
    # A delivery in flight when its worker died was answered to a dead process, and is resent
    # under the same Idempotency-Key: at most one such repeat per kill, nothing else twice.
    repeats = sum(keys.values()) - len(keys)
    print(f"journeys: {len(people)} actions, {kills} SIGKILLs in flight, {repeats} resent")
    assert repeats <= kills, keys.most_common(3)
    sent = [k for shard in shards(layout_now(stack.redis)) for k in stack.redis.hkeys(shard.sent)
            if k.startswith(f"{SIGNAL}|".encode())]  # fmt: skip
    assert len(sent) == len(people)
    assert _announced(stack, SIGNAL, len(people)) == [[len(people), len(people)]]


def _outage_minute(stack: Stack) -> None:
    """The outage drill's minute, run beside the other drills from the module's start: the
    receiver refuses connections for half a minute after every action failed once, then
    answers 503 for another half, then 200."""
    _signal(stack, "Outage Signal", OUTAGE_PEOPLE)

    def all_tried() -> bool:
        """Every action has failed at least once (connection refused)."""
        pids = [profile_of(stack.redis, who) for who in OUTAGE_PEOPLE]
        if None in pids:
            return False
        waiting = pending_actions(stack.redis, [p for p in pids if p is not None])
        found = [a for items in waiting.values() for k, a in items.items()
                 if k.startswith(f"{OUTAGE}|")]  # fmt: skip
        return len(found) == len(OUTAGE_PEOPLE) and all(a.attempts for a in found)

    eventually(all_tried, timeout=60)
    down_since = time.monotonic()
    time.sleep(max(0.0, down_since + 30 - time.monotonic()))
    stack.outage.status = 503  # up again, but failing
    stack.outage.start()
    time.sleep(max(0.0, down_since + 60 - time.monotonic()))
    stack.outage.status = 200


def test_a_receiver_down_for_a_minute_gets_every_action_once_it_is_back(stack: Stack) -> None:
    assert stack.outage_minute is not None
    stack.outage_minute.join(timeout=120)
    assert not stack.outage_minute.is_alive() and not stack.outage_minute.failures  # type: ignore[attr-defined]
    pids = {profile_of(stack.redis, who) for who in OUTAGE_PEOPLE}
    eventually(lambda: set(_delivered_people(stack, stack.outage, OUTAGE)) == pids, timeout=90)
    eventually(lambda: not _queued(stack, OUTAGE))
    time.sleep(3)  # anything sent twice would come now
    assert any(status == 503 for _, status in stack.outage.requests)  # tried while failing
    delivered = stack.outage.delivered(f"{OUTAGE}|")
    assert len(delivered) == len(OUTAGE_PEOPLE) and set(delivered.values()) == {1}
    assert _announced(stack, OUTAGE, len(OUTAGE_PEOPLE)) == [[len(OUTAGE_PEOPLE)] * 2]


def _announced(stack: Stack, journey: str, count: int) -> list[list[int]]:
    """The journey's "Journey Action Sent" events in ClickHouse (all, distinct), once ``count``
    are there."""
    query = ("SELECT count(), uniqExact(message_id) FROM events WHERE event = "
             f"'Journey Action Sent' AND JSONExtractString(properties, 'journey') = '{journey}'")  # fmt: skip
    eventually(lambda: stack.sql(query)[0][0] >= count)
    return stack.sql(query)


def _queued(stack: Stack, journey: str) -> list[bytes]:
    """The journey's actions still in an outbox (of any partition)."""
    return [k for shard in shards(layout_now(stack.redis))
            for k in stack.redis.zrange(shard.outbox, 0, -1)
            if k.startswith(f"{journey}|".encode())]  # fmt: skip
