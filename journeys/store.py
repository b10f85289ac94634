"""Journeys in Redis: definitions, each person's runs and the actions they reached.

    {jrn}:defs                   hash  journey key -> JSON definition (``{jrn}:version`` bumps)
    {p:<pid>}:journeys           hash  journey key -> JSON ``Run`` (the person's latest run of it)
    {p:<pid>}:journeys:version   int   bumped by every save of the person's runs
    {p:<pid>}:journeys:actions   hash  action key -> JSON ``Outgoing``: reached, not yet done with

and per spool partition (``journeys.shards``; partition 0's are the keys of before):

    {jrn}:timers    zset  "<pid> <journey>" -> when its wait ends (ms), runs living there
    {jrn}:outbox    zset  action key -> when to (re)try sending it (ms)
    {jrn}:sent      hash  action key -> when it was delivered (ms): never twice
    {jrn}:claims    hash  action key -> who is delivering it, until when
    {jrn}:actions   hash  actions queued before they moved to their person (still sent)

An action key is "<journey>|<pid>|<entry>|<step>": the same run reaching the same step again
(a replayed batch, a restarted worker) finds its action already there and adds nothing.

A person's runs are saved by ``save.lua``, a compare-and-set on the person's version, with the
actions they reached in the same script: two instances (an event through one partition, a
timer on another; two devices) never overwrite each other's step, and an update that lost the
race leaves no action behind. Timers and the outbox are indexes of that state (a run's due
time, an action waiting), kept by ``journeys.queues``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis

from collector.partitions import Layout
from collector.pipeline import Pipeline
from collector.scripts import lua
from journeys.runs import RUN, Run
from journeys.shards import shard_of
from journeys.spec import JOURNEY, Journey

__all__ = [
    "ACTIONS",
    "DEFS",
    "OUTBOX",
    "SENT",
    "TIMERS",
    "Outgoing",
    "People",
    "actions_key",
    "delete_journey",
    "journeys",
    "pending_actions",
    "put_journey",
    "read_people",
    "runs_key",
    "save_people",
]

DEFS, VERSION = "{jrn}:defs", "{jrn}:version"
_ZERO = shard_of(Layout(1), 0)  # partition 0's keys, whatever the partition count
TIMERS, OUTBOX, SENT = _ZERO.timers, _ZERO.outbox, _ZERO.sent
ACTIONS = str(_ZERO.legacy)  # actions queued before they lived with their person
SAVE = lua(__file__, "save.lua")


class Outgoing(msgspec.Struct, omit_defaults=True):
    """An action waiting to be sent."""

    journey: str
    pid: str
    entry: int
    step: str
    created: int  # ms
    attempts: int = 0
    last_error: str = ""
    home: int = 0  # the partition whose outbox holds it (its run's)


OUTGOING = msgspec.json.Decoder(Outgoing)


@dataclass
class People:
    """One person's runs as read, and the version they were read at (what a save compares)."""

    version: int = 0
    runs: dict[str, Run] = field(default_factory=dict)


def runs_key(pid: str) -> str:
    return f"{{p:{pid}}}:journeys"


def version_key(pid: str) -> str:
    return f"{{p:{pid}}}:journeys:version"


def actions_key(pid: str) -> str:
    return f"{{p:{pid}}}:journeys:actions"


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
    return {pid: found.runs for pid, found in read_people(client, pids).items()}


def read_people(client: redis.Redis, pids: list[str]) -> dict[str, People]:
    """Each person's runs and their version. The version is read first: a save in between
    makes the version older than the runs, so the save that follows fails and reads again
    (the other way round, it would succeed on runs older than the version)."""
    pipe = client.pipeline(transaction=False)
    for pid in pids:
        pipe.get(version_key(pid))
        pipe.hgetall(runs_key(pid))
    replies = pipe.execute()
    return {
        pid: People(int(version or 0), {k.decode(): RUN.decode(v) for k, v in found.items()})
        for pid, version, found in zip(pids, replies[::2], replies[1::2])
    }


def read_versions(client: redis.Redis, pids: list[str]) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for pid in pids:
        pipe.get(version_key(pid))
    return {pid: int(v or 0) for pid, v in zip(pids, pipe.execute())}


def save_people(
    client: redis.Redis,
    saves: dict[str, tuple[People, list[Run], dict[str, Outgoing]]],
) -> dict[str, int]:
    """Save each person's changed runs and new actions, unless their runs changed since
    ``People`` was read; the new version of each person (0: changed meanwhile, nothing saved)."""
    if not saves:
        return {}
    pipe = Pipeline(client)
    for pid, (read, runs, outgoing) in saves.items():
        args: list[Any] = [read.version, len(runs)]
        for run in runs:
            args += [run.journey, msgspec.json.encode(run)]
        for key, item in outgoing.items():
            args += [key, msgspec.json.encode(item)]
        pipe.script(SAVE, [runs_key(pid), version_key(pid), actions_key(pid)], args)
    replies = pipe.execute()
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return {pid: int(version) for pid, version in zip(saves, replies)}


def pending_actions(client: redis.Redis, pids: list[str]) -> dict[str, dict[str, Outgoing]]:
    """Each person's actions reached and not yet done with, by action key."""
    pipe = client.pipeline(transaction=False)
    for pid in pids:
        pipe.hgetall(actions_key(pid))
    return {
        pid: {k.decode(): OUTGOING.decode(v) for k, v in found.items()}
        for pid, found in zip(pids, pipe.execute())
    }


def pid_of(action: str) -> str:
    """The person of an action key (journey keys and profile ids hold no "|")."""
    return action.split("|", 2)[1]
