"""Journeys on a spool of four partitions: instances share the partitions, each waking and
sending its partitions' timers and outbox; one person's events come through two partitions (a
laptop and a phone), so two instances may change one run at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
import redis

from collector import Layout, SpoolReader, layout_of, wire
from collector.spool import append_now
from edge.runtime.settings import Settings
from edge.runtime.workers import start
from journeys import store
from journeys.runs import RUN, Run
from journeys.shards import shard_of
from journeys.spec import JOURNEY
from journeys.worker import JourneyWorker
from profiles.store import identity_key
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, worker_needs
from tests.helpers import eventually, resolve_profiles
from tests.journeys.conftest import Clock, Receiver, abandoned_cart, put_journey, run_of, track

FOUR = Layout(4)
HOUR = 3_600_000


def devices(partition: int, prefix: str, count: int = 1) -> list[str]:
    """Anonymous ids that land in ``partition``."""
    return [f"{prefix}{i}" for i in range(2000) if FOUR.of(f"{prefix}{i}") == partition][:count]


def elsewhere(device: str) -> str:
    """A second device of the same person, in another partition."""
    return next(f"{device}-phone{n}" for n in range(100)
                if FOUR.of(f"{device}-phone{n}") != FOUR.of(device))  # fmt: skip


def login(device: str, user: str) -> wire.Message:
    return wire.Identify(anonymous_id=device, user_id=user, message_id=f"{device}-login")


def did(device: str, event: str) -> wire.Message:
    return wire.Track(event=event, anonymous_id=device, message_id=f"{device}-{event}")


def journey(body: dict[str, Any]) -> Any:
    return JOURNEY.decode(msgspec.json.encode(body))


def pid_of(r: redis.Redis, device: str) -> str:
    return str(r.get(identity_key("anonymous_id", device)).decode())


@pytest.fixture
def instances(r: redis.Redis) -> Iterator[Callable[..., list[JourneyWorker]]]:
    """Make journeys workers holding the partitions named (``a=[0, 2]``), on one clock; their
    leases are let go at the end."""
    made: list[JourneyWorker] = []

    def make(clock: list[int], **held: list[int]) -> list[JourneyWorker]:
        for name, partitions in held.items():
            for index in partitions:
                r.set(FOUR.partition(index).lease("journeys"), name, px=60_000)
        for name, partitions in held.items():
            reader = SpoolReader(r, "journeys", name, FOUR)
            reader.ensure_group()
            reader.balance(force=True)
            assert [p.index for p in reader.held] == partitions
            made.append(JourneyWorker(reader, r, clock=lambda: clock[0]))
        return made[-len(held) :]

    yield make
    for worker in made:
        worker.reader.release()


def poll(worker: JourneyWorker) -> None:
    """One turn of the worker's loop: a batch (or none), then its timers and outbox."""
    entries = worker.reader.read(100, 1)
    if entries:
        worker.reader.ack(entries, worker.process(entries))
    else:
        worker.idle()
    worker.tick()


def settle(*workers: JourneyWorker, turns: int = 3) -> None:
    for _ in range(turns):
        for each in workers:
            poll(each)


def runs_of(r: redis.Redis, pid: str) -> dict[str, Run]:
    return {k.decode(): RUN.decode(v) for k, v in r.hgetall(store.runs_key(pid)).items()}


def steps_said(r: redis.Redis, pid: str) -> list[str]:
    """The "Journey Step Completed" events of the person in the spool, in every partition."""
    found = []
    for partition in FOUR.partitions:
        for _, fields in r.xrange(partition.log):
            for msg in wire.from_lines(fields.get(b"e", b"")):
                said = wire.as_dict(msg.properties) if hasattr(msg, "properties") else {}
                if getattr(msg, "event", "") == "Journey Step Completed" and (
                        said.get("profile_id") == pid):  # fmt: skip
                    found.append(said["step"])
    return sorted(found)


def checkout(url: str) -> dict[str, Any]:
    """Waits for an order for an hour: thanks if it comes, else a nudge."""
    return {
        "trigger": {"kind": "event", "event": "Product Added"},
        "start": "wait",
        "steps": {
            "wait": {"type": "wait", "until_event": "Order Completed", "timeout": "1h",
                     "timeout_next": "nudge", "next": "thanks"},
            "nudge": {"type": "webhook", "url": f"{url}/nudge", "next": "end"},
            "thanks": {"type": "webhook", "url": f"{url}/thanks", "next": "end"},
            "end": {"type": "end"},
        },
    }  # fmt: skip


def test_a_timer_and_an_order_racing_over_one_run_make_one_step_and_one_action(
    r: redis.Redis, receiver: Receiver, instances: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The laptop's instance wakes the run (its hour is up) while the phone's instance applies
    the order it was waiting for: both read the run before either saves. One of them wins; the
    other reads the run again and finds nothing left to do."""
    layout_of(r, 4)
    store.put_journey(r, "checkout", journey(checkout(receiver.url)))
    (laptop,), (phone,) = devices(0, "laptop-"), devices(1, "phone-")
    append_now(r, [login(laptop, "u1"), did(laptop, "Product Added"), login(phone, "u1")], FOUR)
    resolve_profiles(r, FOUR)
    pid = pid_of(r, laptop)
    assert pid_of(r, phone) == pid
    clock = [int(time.time() * 1000)]
    a, b = instances(clock, a=[0, 2], b=[1, 3])
    settle(a, b)
    assert runs_of(r, pid)["checkout"].step == "wait"
    clock[0] += HOUR + 60_000
    poll(b)  # partitions 1 and 3 caught up past the hour, just before the order comes
    append_now(r, [did(phone, "Order Completed")], FOUR)
    resolve_profiles(r, FOUR)
    both_read = threading.Barrier(2, timeout=30)
    real, waited = store.read_people, set()

    def read_people(client: redis.Redis, pids: list[str]) -> dict[str, store.People]:
        found = real(client, pids)
        if pid in pids and threading.get_ident() not in waited:  # the first read only
            waited.add(threading.get_ident())
            both_read.wait()
        return found

    monkeypatch.setattr(store, "read_people", read_people)
    failures: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(lambda: (a.idle(), a.tick()),)),
               threading.Thread(target=run, args=(lambda: poll(b),))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures and len(waited) == 2
    settle(a, b)  # whatever the winner queued is sent (the outbox is the laptop's partition's)
    assert len(receiver.received) == 1, [m["path"] for m in receiver.received]
    run_now = runs_of(r, pid)["checkout"]
    nudged = receiver.received[0]["path"] == "/nudge"
    assert run_now.ended == "completed"
    assert ("Order Completed" in run_now.seen) != nudged  # the order applied, or not at all
    assert steps_said(r, pid) == (["nudge", "wait"] if nudged else ["thanks"])
    assert r.hlen(store.actions_key(pid)) == 0


def test_an_exit_through_another_partition_is_applied_before_the_timer(
    r: redis.Redis, receiver: Receiver, instances: Any
) -> None:
    """The laptop's run waits in partition 0; the order comes from the phone, through
    partition 1, before the hour is up, and its instance is behind. The timers wait for it:
    the laptop is not reminded, and the other shopper (no order) is, once it has caught up."""
    layout_of(r, 4)
    store.put_journey(r, "cart", journey(abandoned_cart(receiver.url)))
    (laptop, other), (phone,) = devices(0, "laptop-", 2), devices(1, "phone-")
    append_now(r, [login(laptop, "u1"), login(phone, "u1")], FOUR)
    append_now(r, [did(laptop, "Product Added"), did(other, "Product Added")], FOUR)
    resolve_profiles(r, FOUR)
    clock = [int(time.time() * 1000)]
    a, b = instances(clock, a=[0, 2], b=[1, 3])
    settle(a, b)  # both entered; every partition caught up (before the hour is up)
    append_now(r, [did(phone, "Order Completed")], FOUR)
    resolve_profiles(r, FOUR)
    clock[0] += HOUR + 60_000
    settle(a)  # b has not read the order yet
    assert receiver.received == []
    assert r.zcard(shard_of(FOUR, 0).timers) == 2  # neither timer fired
    settle(b, a)
    assert runs_of(r, pid_of(r, laptop))["cart"].ended == "exited: Order Completed"
    assert [m["json"]["person"]["identities"]["anonymous_id"] for m in receiver.received] == [
        [other]
    ]


def test_timers_and_actions_from_before_partitions_are_partition_zeros(
    r: redis.Redis, receiver: Receiver, instances: Any
) -> None:
    """A data dir from before: a run waiting in the one timers key, an action in the one
    outbox (its item in ``{jrn}:actions``), now on a spool of four partitions. The instance
    holding partition 0 works them; the other does not touch them."""
    layout_of(r, 4)
    store.put_journey(r, "cart", journey(abandoned_cart(receiver.url)))
    now = int(time.time() * 1000)
    waiting = Run("cart", "p_waiting", 1, now - 2 * HOUR, "wait", due=now - HOUR)
    r.hset(store.runs_key("p_waiting"), "cart", msgspec.json.encode(waiting))
    r.zadd(store.TIMERS, {"p_waiting cart": waiting.due})
    queued = Run("cart", "p_queued", 1, now - 2 * HOUR, "end", ended="completed", ended_at=now)
    r.hset(store.runs_key("p_queued"), "cart", msgspec.json.encode(queued))
    key = "cart|p_queued|1|remind"
    r.hset(store.ACTIONS, key, msgspec.json.encode(store.Outgoing("cart", "p_queued", 1, "remind",
                                                                  now - HOUR)))  # fmt: skip
    r.zadd(store.OUTBOX, {key: now - HOUR})
    clock = [now]
    zero, rest = instances(clock, zero=[0, 1], rest=[2, 3])
    settle(rest, zero, rest)
    assert sorted(m["headers"]["Idempotency-Key"] for m in receiver.received) == [
        "cart|p_queued|1|remind", "cart|p_waiting|1|remind"]  # fmt: skip
    assert r.hlen(store.ACTIONS) == 0 and r.zcard(store.OUTBOX) == 0 and r.hlen(store.SENT) == 2
    assert runs_of(r, "p_waiting")["cart"].ended == "completed"


# -- whole engines: two journeys workers (``kairos worker journeys``' own builder) --


class Pair:
    """Journeys workers sharing a four-partition spool, on one clock; each stops alone."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.clock = Clock()
        self.running: dict[str, tuple[threading.Event, threading.Thread]] = {}

    def launch(self, name: str) -> None:
        stop = threading.Event()
        api = (self.engine.url, WRITE_KEY, SECRET_KEY)
        needs = worker_needs(self.engine.settings.redis_url, name, api=api)
        thread = start("journeys", needs, stop, interval=0.05, clock=self.clock)
        self.running[name] = (stop, thread)

    def stop(self, name: str) -> None:
        stop, thread = self.running.pop(name)
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()

    def held(self, r: redis.Redis) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for partition in FOUR.partitions:
            holder = r.get(partition.lease("journeys"))
            if holder is not None:
                found.setdefault(holder.decode(), []).append(partition.index)
        return found


@pytest.fixture
def pair(
    engine_factory: Callable[..., Engine], settings: Settings, r: redis.Redis
) -> Iterator[Pair]:
    layout_of(r, 4)  # before any worker touches the spool: the first one fixes its count
    made = Pair(engine_factory(settings, spool_partitions=4))
    made.launch("jrn-a")
    made.launch("jrn-b")
    eventually(lambda: sorted(map(len, made.held(r).values())) == [2, 2])
    yield made
    for name in list(made.running):
        made.stop(name)


def identify(engine: Engine, device: str, user: str) -> None:
    answer = engine.post("/v1/identify", {"anonymousId": device, "userId": user})
    assert answer.status_code == 200


def reminded(receiver: Receiver) -> list[str]:
    """Idempotency-Keys of the deliveries answered 200."""
    return [m["headers"]["Idempotency-Key"] for m in receiver.received if m["status"] == 200]


def test_two_instances_on_four_partitions_send_every_action_once(
    pair: Pair, receiver: Receiver, r: redis.Redis
) -> None:
    engine = pair.engine
    put_journey(engine, "abandoned_cart", abandoned_cart(receiver.url))
    people = [f"shopper-{i}" for i in range(40)]
    buyers = people[::4]  # they order on their phone, through another partition: they exit
    for who in buyers:
        identify(engine, who, f"user-{who}")
        identify(engine, elsewhere(who), f"user-{who}")
    eventually(lambda: all(r.get(identity_key("anonymous_id", elsewhere(w))) == r.get(
        identity_key("anonymous_id", w)) is not None for w in buyers))  # fmt: skip
    for who in people:
        track(engine, who, "Product Added", product_id="hat1")
    eventually(lambda: all(run_of(engine, w, "abandoned_cart") for w in people))
    homes = {w: run_of(engine, w, "abandoned_cart").get("home", 0) for w in people}
    assert homes == {w: FOUR.of(w) for w in people}  # where the entering event came through
    assert set(homes.values()) == {0, 1, 2, 3}
    for who in buyers:
        track(engine, elsewhere(who), "Order Completed", revenue=20)
    eventually(lambda: all(run_of(engine, w, "abandoned_cart").get("ended") for w in buyers))
    pair.clock.forward(61)
    stayed = len(people) - len(buyers)
    eventually(lambda: len(receiver.received) >= stayed)
    time.sleep(1.0)  # anything sent twice would come now
    keys = reminded(receiver)
    assert len(keys) == len(set(keys)) == stayed
    got = sorted(m["json"]["person"]["identities"]["anonymous_id"][0] for m in receiver.received)
    assert got == sorted(set(people) - set(buyers))
    assert all(r.hlen(shard_of(FOUR, p).sent) for p in range(4))  # each partition sent some
    assert all(run_of(engine, w, "abandoned_cart")["ended"] == "completed"
               for w in set(people) - set(buyers))  # fmt: skip


def test_an_instance_that_stops_hands_its_timers_and_outbox_to_the_other(
    pair: Pair, receiver: Receiver, r: redis.Redis
) -> None:
    """When ``jrn-a`` stops, its partitions hold waits not yet due (the late shoppers) and
    reminders the receiver refused (the early ones, waiting for a retry): ``jrn-b`` takes the
    partitions and sends every reminder once."""
    engine = pair.engine
    put_journey(engine, "abandoned_cart", abandoned_cart(receiver.url))
    early, late = [f"early-{i}" for i in range(16)], [f"late-{i}" for i in range(16)]
    for who in early:
        track(engine, who, "Product Added")
    eventually(lambda: all(run_of(engine, w, "abandoned_cart") for w in early))
    pair.clock.forward(30)
    for who in late:
        track(engine, who, "Product Added")
    eventually(lambda: all(run_of(engine, w, "abandoned_cart") for w in late))
    receiver.status = 503
    pair.clock.forward(31)  # the early waits end; their reminders are refused
    pids = [pid_of(r, w) for w in early]

    def all_refused() -> bool:
        pending = store.pending_actions(r, pids)
        return all(len(found) == 1 and all(a.attempts for a in found.values())
                   for found in pending.values())  # fmt: skip

    eventually(all_refused)
    left = pair.held(r)["jrn-a"]
    assert any(r.zcard(shard_of(FOUR, p).timers) for p in left)  # late waits
    assert any(r.zcard(shard_of(FOUR, p).outbox) for p in left)  # early reminders
    pair.stop("jrn-a")
    eventually(lambda: pair.held(r) == {"jrn-b": [0, 1, 2, 3]})
    receiver.status = 200
    pair.clock.forward(31)  # the late waits end; the early reminders' retries are due
    eventually(lambda: len(reminded(receiver)) >= len(early) + len(late))
    time.sleep(1.0)
    keys = reminded(receiver)
    assert len(keys) == len(set(keys)) == len(early) + len(late)
    assert all(run_of(engine, w, "abandoned_cart")["ended"] == "completed" for w in early + late)
