"""Journeys in Redis: definitions, each person's runs, the timers, and the outbox of actions.

    {jrn}:defs            hash   journey key -> JSON definition (``{jrn}:version`` bumps on change)
    {p:<pid>}:journeys    hash   journey key -> JSON ``Run`` (the person's latest run of it)
    {jrn}:timers          zset   "<pid> <journey>" -> when its wait ends (ms)
    {jrn}:outbox          zset   action key -> when to (re)try sending it (ms)
    {jrn}:actions         hash   action key -> JSON ``Outgoing`` (what to send, attempts so far)
    {jrn}:sent            hash   action key -> when it was delivered (ms): never twice

An action key is "<journey>|<pid>|<entry>|<step>": the same run reaching the same step again
(a replayed batch, a restarted worker) finds its action already there and adds nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis

from journeys.runs import RUN, Run
from journeys.spec import JOURNEY, Journey

__all__ = [
    "ACTIONS",
    "DEFS",
    "OUTBOX",
    "SENT",
    "TIMERS",
    "Outgoing",
    "delete_journey",
    "journeys",
    "put_journey",
    "runs_key",
]

DEFS, VERSION = "{jrn}:defs", "{jrn}:version"
TIMERS, OUTBOX, ACTIONS, SENT = "{jrn}:timers", "{jrn}:outbox", "{jrn}:actions", "{jrn}:sent"


class Outgoing(msgspec.Struct, omit_defaults=True):
    """An action waiting in the outbox."""

    journey: str
    pid: str
    entry: int
    step: str
    created: int  # ms
    attempts: int = 0
    last_error: str = ""


OUTGOING = msgspec.json.Decoder(Outgoing)


def runs_key(pid: str) -> str:
    return f"{{p:{pid}}}:journeys"


def journeys(client: redis.Redis) -> dict[str, Journey]:
    return {k.decode(): JOURNEY.decode(v) for k, v in client.hgetall(DEFS).items()}


def put_journey(client: redis.Redis, key: str, journey: Journey) -> bool:
    """Create or replace a journey; True if it changed. People in it stay on their step (a
    step that no longer exists ends their run)."""
    current = client.hget(DEFS, key)
    if current is not None:
        before = JOURNEY.decode(current)
        if msgspec.structs.replace(before, revision=journey.revision) == journey:
            return False
    revision = int(client.incr(VERSION))
    saved = msgspec.structs.replace(journey, revision=revision)
    client.hset(DEFS, key, msgspec.json.encode(saved))
    return True


def delete_journey(client: redis.Redis, key: str) -> bool:
    pipe = client.pipeline(transaction=True)
    pipe.hdel(DEFS, key)
    pipe.incr(VERSION)
    deleted, _ = pipe.execute()
    return bool(deleted)


def read_runs(client: redis.Redis, pids: list[str]) -> dict[str, dict[str, Run]]:
    """Each person's runs, by journey key."""
    pipe = client.pipeline(transaction=False)
    for pid in pids:
        pipe.hgetall(runs_key(pid))
    return {
        pid: {k.decode(): RUN.decode(v) for k, v in found.items()}
        for pid, found in zip(pids, pipe.execute())
    }


def save(client: redis.Redis, runs: list[Run], outgoing: dict[str, Outgoing], now: int) -> None:
    """The actions first (a crash before the runs repeats the same keys: nothing twice), then
    the runs and their timers."""
    pipe = client.pipeline(transaction=False)
    for key, item in outgoing.items():
        pipe.hsetnx(ACTIONS, key, msgspec.json.encode(item))
        pipe.zadd(OUTBOX, {key: now}, nx=True)
    pipe.execute()
    pipe = client.pipeline(transaction=False)
    for run in runs:
        pipe.hset(runs_key(run.pid), run.journey, msgspec.json.encode(run))
        member = f"{run.pid} {run.journey}"
        if run.due and not run.ended:
            pipe.zadd(TIMERS, {member: run.due})
        else:
            pipe.zrem(TIMERS, member)
    pipe.execute()


def due_timers(client: redis.Redis, now: int, count: int = 500) -> list[tuple[str, str, int]]:
    """(pid, journey, due ms) of the waits that have ended by ``now``, the earliest first."""
    found = client.zrangebyscore(TIMERS, "-inf", now, start=0, num=count, withscores=True)
    return [(*m.decode().split(" ", 1), int(due)) for m, due in found]


def due_actions(client: redis.Redis, now: int, count: int = 100) -> list[tuple[str, Outgoing]]:
    keys = [k.decode() for k in client.zrangebyscore(OUTBOX, "-inf", now, start=0, num=count)]
    if not keys:
        return []
    found = client.hmget(ACTIONS, keys)
    return [(k, OUTGOING.decode(raw)) for k, raw in zip(keys, found) if raw is not None]


def settle(client: redis.Redis, key: str, now: int, outcome: str) -> None:
    """An action done with: ``sent`` (kept in SENT) or dropped (cancelled, undeliverable)."""
    pipe = client.pipeline(transaction=True)
    if outcome == "sent":
        pipe.hset(SENT, key, now)
    pipe.zrem(OUTBOX, key)
    pipe.hdel(ACTIONS, key)
    pipe.execute()


def retry(client: redis.Redis, key: str, item: Outgoing, at: int, error: str) -> None:
    updated = msgspec.structs.replace(item, attempts=item.attempts + 1, last_error=error[:500])
    pipe = client.pipeline(transaction=True)
    pipe.hset(ACTIONS, key, msgspec.json.encode(updated))
    pipe.zadd(OUTBOX, {key: at})
    pipe.execute()


def was_sent(client: redis.Redis, key: str) -> bool:
    return bool(client.hexists(SENT, key))


def describe(client: redis.Redis) -> dict[str, Any]:
    return {"timers": client.zcard(TIMERS), "outbox": client.zcard(OUTBOX)}
