"""The learner on a partitioned spool: instances share the partitions' feature work and one of
them trains; together they learn what one instance learns, each example once, through a
trainer hand-over, a race of two partitions over one person's record and an erasure."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import redis

from bench.profiles import fill
from collector import Layout, SpoolReader, layout_of, wire
from collector.scripts import Script
from collector.spool import append_now
from profiles import feature_side
from profiles.feature_side import Run, due_key
from profiles.history import HISTORY, Example
from profiles.learner import OUTBOX, QUEUE, STATE, TARGETS, Learner, ModelSettings, learner_key
from profiles.privacy import erase
from profiles.shoppers import ShopperStream
from profiles.store import ProfileStore
from profiles.trainer import LATENESS_MS
from tests.helpers import resolve_profiles

FOUR = Layout(4)
Labelled = list[tuple[Example, bool]]
_READERS: list[SpoolReader] = []  # this test's, whose lease renewals stop when it ends


@pytest.fixture(autouse=True)
def _renewals_stop() -> Any:
    """A reader's renewal thread outlives its test: the next test's instance of the same name
    ("one") would find its leases renewed by it, and a hand-over would never come."""
    yield
    while _READERS:
        _READERS.pop().leases.stop_renewing()


def learner(
    r: redis.Redis,
    name: str,
    labelled: Labelled,
    group: str = "learner",
    held: set[int] | None = None,
    lease_ms: int = 10_000,
    **options: Any,
) -> Learner:
    """A learner instance ``name``; ``held``: the partitions it takes (the others' leases go to
    ``elsewhere`` unless another instance was given them)."""
    reader = SpoolReader(r, group, name, FOUR, lease_ms=lease_ms)
    _READERS.append(reader)
    reader.ensure_group()
    for p in sorted(held or ()):
        r.set(FOUR.partition(p).lease(group), name, px=lease_ms)
    return Learner(reader, r, ModelSettings(churn_days=7), clock=None, profile_wait=1.0, interval=0.01,
                   on_example=lambda *example: labelled.append(example), publish_seconds=0.0,
                   **options)  # fmt: skip


def keep_away(r: redis.Redis, *partitions: int, group: str = "learner") -> None:
    for p in partitions:
        r.set(FOUR.partition(p).lease(group), "elsewhere", px=60_000, nx=True)


def turn(each: Learner) -> bool:
    """One pass of the worker loop (``SpoolWorker.run``) in this thread; True if it applied a
    batch."""
    if each.reader.balance():
        each.recover()
    entries = each.read(threading.Event())
    if entries:
        each.reader.ack(entries, each.process(entries))
    else:
        each.idle()
    each.between()
    return bool(entries)


def drive(*learners: Learner) -> None:
    """Turns of each in turn until three rounds in a row find nothing to do."""
    quiet = 0
    while quiet < 3:
        busy = [turn(each) for each in learners]
        quiet = 0 if any(busy) else quiet + 1


def forget_learning(r: redis.Redis) -> None:
    """Every key of the learner's (the spool and the profiles stay)."""
    for pattern in ("{learn}*", "{p:*}:learn"):
        for key in list(r.scan_iter(pattern)):
            r.delete(key)


def shoppers(redis_url: str, r: redis.Redis) -> None:
    layout_of(r, 4)
    fill(redis_url, list(ShopperStream(shoppers=300, days=21, seed=11).messages()), FOUR)
    resolve_profiles(r, FOUR)


def learned(r: redis.Redis) -> dict[str, int]:
    return {t: int(r.hget(STATE, f"learned:{t}") or 0) for t in TARGETS}


def nothing_left_due(r: redis.Redis) -> None:
    """Every partition as far as the furthest, and nothing due by then still waiting: neither
    an example in the queue nor a churn deadline in any partition's set."""
    marks = {int(r.hget(STATE, f"watermark:{p}" if p else "watermark") or 0) for p in range(4)}
    (mark,) = marks
    due = mark - LATENESS_MS
    assert not r.zcount(QUEUE, "-inf", due)
    assert not [p for p in range(4) if r.zcount(due_key(p), "-inf", due)]


def once(labelled: Labelled) -> set[str]:
    """The ids of the examples learned, each learned exactly once."""
    counts = Counter(example.id for example, _ in labelled)
    assert max(counts.values()) == 1, counts.most_common(3)
    return set(counts)


def test_two_instances_learn_what_one_learns_each_example_once(
    r: redis.Redis, redis_url: str
) -> None:
    shoppers(redis_url, r)
    alone: Labelled = []
    solo = learner(r, "solo", alone, group="solo")
    drive(solo)
    nothing_left_due(r)
    expected, counts = once(alone), learned(r)
    assert sum(counts.values()) == len(expected) > 1_000
    assert {t: m.quality.examples for t, m in solo.models.items()} == counts

    forget_learning(r)
    together: Labelled = []
    one = learner(r, "one", together, held={0, 1})
    two = learner(r, "two", together, held={2, 3})
    drive(one, two)
    nothing_left_due(r)
    assert [p.index for p in one.reader.held] == [0, 1]  # both did feature work; one trained
    assert [p.index for p in two.reader.held] == [2, 3]
    assert once(together) == expected
    assert learned(r) == counts == {t: m.quality.examples for t, m in one.models.items()}
    # The second instance predicted with the models as published: about as good.
    for target in TARGETS:
        alone_auc = solo.models[target].summary()["roc_auc"]
        shared_auc = one.models[target].summary()["roc_auc"]
        assert abs(alone_auc - shared_auc) < 0.04, (target, alone_auc, shared_auc)


@pytest.mark.parametrize("how", ["stops", "dies mid-batch"])
def test_a_trainer_hand_over_learns_every_example_once(
    r: redis.Redis, redis_url: str, how: str
) -> None:
    """The instance holding partition 0 (and so the trainer's role) goes; the other takes its
    partitions and the role, restores the models from the redo log, and finishes: what was
    learned is what one instance alone learns, each example once."""
    shoppers(redis_url, r)
    alone: Labelled = []
    drive(learner(r, "solo", alone, group="solo"))
    expected = once(alone)
    forget_learning(r)

    together: Labelled = []
    one = learner(r, "one", together, held={0, 1}, lease_ms=600, trainer_lease_ms=600)
    two = learner(r, "two", together, held={2, 3}, lease_ms=600, trainer_lease_ms=600)
    while not together:  # until the trainer has learned something
        turn(one)
        turn(two)
    assert one.trainer.held and len(together) < len(expected) // 2
    if how == "stops":  # as ``SpoolWorker.run`` ends: leases let go, then the last checkpoint
        one.reader.release()
        one.stopped()
    else:
        calls = {"left": 1}
        real = one._deliver

        def dying(outbox: Any) -> None:
            if not calls["left"]:
                raise SystemExit("killed between staging a batch and applying it")
            calls["left"] -= 1
            real(outbox)

        one._deliver = dying  # type: ignore[method-assign]
        with pytest.raises(SystemExit):
            for _ in range(50):
                turn(one)
        one.reader.leases.stop_renewing()  # its leases and the trainer's role lapse
    # The other instance's next balances take the partitions once the leases lapse (600 ms;
    # a busy machine may run the last renewal late: a full suite beside other work once took
    # more than 5 s, so the bound only guards against a hang).
    deadline = time.monotonic() + 30
    while not two.reader.balance(force=True):
        assert time.monotonic() < deadline, "the partitions did not move within 30 s"
        time.sleep(0.05)
    two.recover()
    drive(two)
    nothing_left_due(r)
    assert [p.index for p in two.reader.held] == [0, 1, 2, 3] and two.trainer.held
    assert once(together) == expected
    assert learned(r) == {t: m.quality.examples for t, m in two.models.items()}
    assert sum(learned(r).values()) == len(expected)


def test_the_trainer_waits_for_a_partition_that_is_behind(r: redis.Redis, redis_url: str) -> None:
    shoppers(redis_url, r)
    labelled: Labelled = []
    ahead = learner(r, "ahead", labelled, held={0, 1, 2})
    keep_away(r, 3)
    drive(ahead)
    assert r.zcard(QUEUE) > 0 and not labelled  # partition 3 has not started: nothing is due
    r.delete(FOUR.partition(3).lease("learner"))  # now it starts
    assert ahead.reader.balance(force=True)
    ahead.recover()
    drive(ahead)
    assert labelled and not r.zcount(QUEUE, "-inf", ahead.trainer.watermark - 5 * 60_000)


def page(anonymous_id: str, n: int, day: int = 0) -> wire.Message:
    return wire.Page(anonymous_id=anonymous_id, message_id=f"{anonymous_id}-p{n}",
                     timestamp=_at(day, n), properties=msgspec.Raw(b'{"path":"/"}'))  # fmt: skip


def login(anonymous_id: str, user_id: str) -> wire.Message:
    return wire.Identify(anonymous_id=anonymous_id, user_id=user_id, timestamp=_at(0, 0),
                         message_id=f"{anonymous_id}-login")  # fmt: skip


def _at(day: int, n: int) -> datetime:
    return datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=day, minutes=n)


def devices(*partitions: int) -> list[str]:
    """One anonymous id in each of ``partitions``."""
    return [next(f"d{i}" for i in range(1_000) if FOUR.of(f"d{i}") == p) for p in partitions]


def one_person(r: redis.Redis, anonymous_ids: list[str]) -> str:
    """A person on several devices (logged in on each as one user, then a page on each): their
    profile id."""
    layout_of(r, 4)
    append_now(r, [login(d, "the-user") for d in anonymous_ids], FOUR)
    resolve_profiles(r, FOUR)  # one profile, before any event of theirs
    append_now(r, [page(d, 0) for d in anonymous_ids], FOUR)
    resolve_profiles(r, FOUR)
    store = ProfileStore(r)
    found = store.lookup([f"anonymous_id:{d}" for d in anonymous_ids])
    (pid,) = {store.resolve(p) for p in found.values()}
    return pid


def drain(each: Learner) -> None:
    while entries := each.reader.read(100, 1):
        each.reader.ack(entries, each.process(entries))


@pytest.mark.parametrize("writes", ["compare-and-set", "plain SET"])
def test_two_partitions_racing_over_one_person_count_each_event_once(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, writes: str
) -> None:
    """The person's two devices hash to partitions 0 and 1, which two instances hold; both read
    the person's record before either writes it. With plain SETs (the check that shows the race
    is real) the second write loses the first one's events."""
    zero, one = devices(0, 1)
    pid = one_person(r, [zero, one])
    keep_away(r, 2, 3)
    first = learner(r, "first", [], held={0})
    second = learner(r, "second", [], held={1})
    drain(first)
    drain(second)
    before = HISTORY.decode(r.get(learner_key(pid)))
    assert before.events == 2

    append_now(r, [page(d, n, day=1) for d in (zero, one) for n in range(1, 4)], FOUR)
    resolve_profiles(r, FOUR)
    read = threading.Barrier(2, timeout=30)
    real = Run._load

    def load(self: Run, pids: set[str]) -> None:
        wanted = pids - self.people.keys()
        real(self, pids)
        if pid in wanted:  # both hold the record as it was before either writes
            read.wait()

    monkeypatch.setattr(Run, "_load", load)
    if writes == "plain SET":
        monkeypatch.setattr(feature_side, "RECORD", Script("redis.call('SET', KEYS[1], ARGV[2])"
                                                           " return 1"))  # fmt: skip
    failed: list[BaseException] = []

    def work(each: Learner) -> None:
        try:
            drain(each)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failed.append(exc)

    threads = [threading.Thread(target=work, args=(each,)) for each in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failed, failed
    after = HISTORY.decode(r.get(learner_key(pid)))
    if writes == "plain SET":
        assert after.events == before.events + 3  # one partition's three pages lost
        return
    assert after.events == after.page_views == before.events + 6
    assert after.sessions == 2 and after.by == {"0": 2, "1": 2}


def test_an_erasure_reaches_every_partition(r: redis.Redis) -> None:
    """The erased person's devices are in partitions 0 and 2, held by two instances: each
    partition's erasure command takes what it holds of them; a bystander keeps theirs."""
    zero, two, other = devices(0, 2, 3)
    pid = one_person(r, [zero, two])
    append_now(r, [page(d, n, day) for d in (zero, two, other) for day in (1, 3)
                   for n in range(1, 4)], FOUR)  # fmt: skip
    resolve_profiles(r, FOUR)
    a = learner(r, "a", [], held={0, 1})
    b = learner(r, "b", [], held={2, 3})
    drive(a, b)
    bystander = ProfileStore(r).lookup([f"anonymous_id:{other}"])[f"anonymous_id:{other}"]

    def waiting(person: str) -> list[bytes]:
        return [m for m in r.zrange(QUEUE, 0, -1) if msgspec.json.decode(m)[0] == person]

    def deadlines(person: str) -> list[int]:
        return [p for p in range(4) if r.zscore(due_key(p), person) is not None]

    assert r.exists(learner_key(pid)) and waiting(pid) and deadlines(pid)
    assert waiting(bystander) and deadlines(bystander) == [3]
    erase(ProfileStore(r), pid)
    drive(a, b)
    assert not r.exists(learner_key(pid)) and not waiting(pid) and not deadlines(pid)
    assert r.exists(learner_key(bystander)) and waiting(bystander) and deadlines(bystander) == [3]


def test_an_outbox_the_learner_before_partitions_left_is_written_at_start(r: redis.Redis) -> None:
    """That learner applied a batch in one transaction, then wrote people's keys from an outbox
    kept in it (a string); one it left behind is written as it would have been."""
    store = ProfileStore(r)
    r.hset("{p:kept}", "first_seen", 1)
    legacy = {"records": {"kept": b'{"events":3}'}, "scores": {"kept": ["s:churn", 0.25]},
              "erased": ["gone"]}  # fmt: skip
    r.set(OUTBOX, msgspec.msgpack.encode(legacy))
    r.set(learner_key("gone"), b"{}")
    Learner(SpoolReader(r, "learner", "t"), r, clock=None).restore()
    assert r.get(learner_key("kept")) == b'{"events":3}' and not r.exists(learner_key("gone"))
    assert store.client.hget("{p:kept}", "s:churn") == b"0.25" and not r.exists(OUTBOX)
