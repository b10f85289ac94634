"""The timers and the outbox of each partition (``journeys.shards``), kept as indexes of the
people's saved runs and actions (``journeys.store``).

The runs are saved in the person's slot and the indexes live in the partitions' slots, so no
script can write both: an index is written after the save it reflects, by whoever saved.

- **Timers**: a run waiting on the clock has the member "<pid> <journey>" in its home
  partition's timers, scored with its due time. After placing a person's timers the placer
  reads the person's version again, and places them again from the newer runs if another save
  came in between: whichever placement is written last, it was made from the last runs saved.
  A member left behind (a save that died before placing) is harmless: when it fires, the run
  is read and the member moved or removed. A run whose timer a crash left unplaced is placed
  again when its batch is replayed (``reindex``).
- **Outbox**: an action saved with its run is added to its partition's outbox (``NX``: a retry
  time stays), and again on replay. Delivering one first claims it (``claim.lua``), records
  it as sent before anything else, then forgets it; an outbox entry whose action is gone is
  dropped.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

import msgspec
import redis

from collector.partitions import Layout
from collector.scripts import lua
from journeys.runs import Run
from journeys.shards import Shard, shard_of
from journeys.store import (
    ACTIONS,
    OUTGOING,
    Outgoing,
    People,
    actions_key,
    pid_of,
    read_people,
    read_versions,
)

__all__ = [
    "CLAIM_MS",
    "claim",
    "due_actions",
    "due_timers",
    "find_action",
    "index_actions",
    "place_timers",
    "reindex",
    "retry",
    "settle",
    "was_sent",
]

CLAIM = lua(__file__, "claim.lua")
CLAIM_MS = 60_000  # longer than a delivery takes (a decision, a rendered block, a POST: 10 s each)
_ROUNDS = 32  # each round means another save of the person came in between: a few at most

Wanted = dict[str, dict[str, set[int]]]  # pid -> journey -> partitions its member may be in


def member(pid: str, journey: str) -> str:
    return f"{pid} {journey}"


def _waiting(run: Run | None) -> bool:
    return run is not None and not run.ended and run.due > 0


def place_timers(
    client: redis.Redis, layout: Layout, wanted: Wanted, people: dict[str, People]
) -> None:
    """Make the timers of ``wanted`` runs say what the people's saved runs say (``people``: as
    saved or read), removing their members from the other partitions named."""
    for _ in range(_ROUNDS):
        if not wanted:
            return
        pipe = client.pipeline(transaction=False)
        for pid, journeys in wanted.items():
            for journey, partitions in journeys.items():
                run = people[pid].runs.get(journey)
                home = run.home if run is not None and _waiting(run) else None
                for index in partitions | ({home} if home is not None else set()):
                    timers = shard_of(layout, index).timers
                    if index == home and run is not None:
                        pipe.zadd(timers, {member(pid, journey): run.due})
                    else:
                        pipe.zrem(timers, member(pid, journey))
        pipe.execute()
        # Only now (another round trip: a cluster runs a pipeline's nodes in parallel).
        versions = read_versions(client, list(wanted))
        moved = [pid for pid, version in versions.items() if version != people[pid].version]
        people = {**people, **read_people(client, moved)} if moved else people
        wanted = {pid: wanted[pid] for pid in moved}
    raise RuntimeError(f"journeys: timers of {sorted(wanted)} kept changing while placed")


def due_timers(
    client: redis.Redis, shard: Shard, upto: int, count: int = 500
) -> list[tuple[str, str, int]]:
    """(pid, journey, due ms) of the partition's waits that have ended by ``upto``."""
    found = client.zrangebyscore(shard.timers, "-inf", upto, start=0, num=count, withscores=True)
    return [(*m.decode().split(" ", 1), int(due)) for m, due in found]


def index_actions(client: redis.Redis, layout: Layout, actions: Iterable[tuple[str, Outgoing]],
                  at: int | None = None) -> None:  # fmt: skip
    """Put saved actions in their partitions' outboxes (due ``at``, else when made), unless
    there already (a retry keeps its time)."""
    pipe = client.pipeline(transaction=False)
    for key, item in actions:
        pipe.zadd(shard_of(layout, item.home).outbox, {key: item.created if at is None else at},
                  nx=True)  # fmt: skip
    if len(pipe):
        pipe.execute()


def reindex(client: redis.Redis, layout: Layout, people: dict[str, People],
            journeys: Container[str]) -> None:  # fmt: skip
    """Place every timer and outbox entry of these people again (after a replay, or when a
    timer of theirs fired: a save may have died before its indexes were written); only the
    timers of runs of ``journeys`` (a deleted journey's runs wake no more)."""
    wanted = {pid: {j: {r.home} for j, r in found.runs.items() if j in journeys}
              for pid, found in people.items()}  # fmt: skip
    place_timers(client, layout, {pid: runs for pid, runs in wanted.items() if runs}, people)
    pipe = client.pipeline(transaction=False)
    for pid in people:
        pipe.hgetall(actions_key(pid))
    found = [(k.decode(), OUTGOING.decode(v)) for items in pipe.execute() for k, v in items.items()]
    index_actions(client, layout, found)


def due_actions(client: redis.Redis, shard: Shard, upto: int, count: int = 100) -> list[str]:
    return [k.decode() for k in client.zrangebyscore(shard.outbox, "-inf", upto, start=0,
                                                      num=count)]  # fmt: skip


def claim(client: redis.Redis, shard: Shard, key: str, holder: str, now: int) -> bool:
    """Whether the due action ``key`` is now ``holder``'s to deliver (for ``CLAIM_MS``)."""
    return bool(CLAIM(client, [shard.outbox, shard.claims], [key, holder, now, now + CLAIM_MS]))


def find_action(client: redis.Redis, shard: Shard, key: str) -> tuple[Outgoing, str] | None:
    """The action and the hash it is in: its person's, else (partition 0) the one of before."""
    where = actions_key(pid_of(key))
    raw = client.hget(where, key)
    if raw is None and shard.legacy is not None:
        where, raw = ACTIONS, client.hget(ACTIONS, key)
    return (OUTGOING.decode(raw), where) if raw is not None else None


def was_sent(client: redis.Redis, shard: Shard, key: str) -> bool:
    return bool(client.hexists(shard.sent, key))


def settle(client: redis.Redis, shard: Shard, key: str, where: str | None, now: int,
           outcome: str) -> None:  # fmt: skip
    """An action done with: ``sent`` (recorded first: a crash after it never sends it again),
    or dropped (cancelled, undeliverable). The action goes before its outbox entry, so an entry
    put back meanwhile finds nothing to send."""
    if outcome == "sent":
        client.hset(shard.sent, key, now)
    if where is not None:
        client.hdel(where, key)
    pipe = client.pipeline(transaction=True)  # the partition's slot
    pipe.zrem(shard.outbox, key)
    pipe.hdel(shard.claims, key)
    pipe.execute()


def retry(client: redis.Redis, shard: Shard, key: str, item: Outgoing, where: str, at: int,
          error: str) -> None:  # fmt: skip
    updated = msgspec.structs.replace(item, attempts=item.attempts + 1, last_error=error[:500])
    client.hset(where, key, msgspec.json.encode(updated))
    pipe = client.pipeline(transaction=True)
    pipe.zadd(shard.outbox, {key: at})
    pipe.hdel(shard.claims, key)
    pipe.execute()
