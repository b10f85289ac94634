"""How a journey is doing: entered, where its people are now, completed, exited (by reason),
converted (did the goal event after entering), and the actions sent per step.

Counts of what happened come from the journey events in ClickHouse (one SQL query, grouped);
who is waiting where comes from Redis (runs sit only in waits: every other step is passed at
once), by the timers of the journey in every partition.
"""

from __future__ import annotations

from typing import Any

import redis

from collector.store import EventStore
from journeys.runs import RUN
from journeys.shards import layout_now, shards
from journeys.spec import Journey
from journeys.store import runs_key

__all__ = ["active_by_step", "counts"]

_COUNTS = """
SELECT event, JSONExtractString(properties, 'reason') AS reason,
       JSONExtractString(properties, 'step') AS step,
       count() AS n, uniqExact(JSONExtractString(properties, 'profile_id')) AS people
FROM events
WHERE type = 'track' AND event IN ('Journey Entered', 'Journey Exited', 'Journey Completed',
                                   'Journey Action Sent')
  AND JSONExtractString(properties, 'journey') = {journey:String}
GROUP BY event, reason, step
"""
_CONVERTED = """
SELECT uniqExact(e.pid) FROM (
    SELECT JSONExtractString(properties, 'profile_id') AS pid, min(timestamp) AS entered
    FROM events
    WHERE type = 'track' AND event = 'Journey Entered'
      AND JSONExtractString(properties, 'journey') = {journey:String}
    GROUP BY pid
) AS e
INNER JOIN (
    SELECT profile_id AS pid, max(timestamp) AS last FROM events
    WHERE type = 'track' AND event = {goal:String} AND profile_id != '' GROUP BY pid
) AS g ON g.pid = e.pid
WHERE g.last > e.entered
"""
# Both sides are event times: "Journey Entered" carries the time of the event that entered the
# person (journeys.worker), so an order placed after it counts however late the worker ran, and
# the entering event itself (when the goal is also the trigger) does not.


def counts(store: EventStore, key: str, journey: Journey) -> dict[str, Any]:
    rows = store.query_sync(_COUNTS, {"journey": key}, limited=False).rows
    found: dict[str, Any] = {"entered": 0, "people": 0, "completed": 0, "exited": {},
                             "actions": {}}  # fmt: skip
    for event, reason, step, n, people in rows:
        if event == "Journey Entered":
            found["entered"], found["people"] = int(n), int(people)
        elif event == "Journey Completed":
            found["completed"] = int(n)
        elif event == "Journey Exited":
            found["exited"][reason] = int(n)
        else:
            found["actions"][step] = int(n)
    if journey.goal:
        params = {"journey": key, "goal": journey.goal}
        converted = store.query_sync(_CONVERTED, params, limited=False).rows
        found["converted"] = int(converted[0][0]) if converted else 0
    return found


def active_by_step(client: redis.Redis, key: str) -> dict[str, int]:
    """People waiting in each step of journey ``key`` now."""
    found = {
        member.decode().split(" ", 1)[0]
        for shard in shards(layout_now(client))
        for member, _ in client.zscan_iter(shard.timers, match=f"* {key}", count=1000)
    }  # (a timer left behind in another partition names its person twice: once here)
    pids = sorted(found)
    steps: dict[str, int] = {}
    for start in range(0, len(pids), 1000):
        pipe = client.pipeline(transaction=False)
        for pid in pids[start : start + 1000]:
            pipe.hget(runs_key(pid), key)
        for raw in pipe.execute():
            if raw is not None:
                run = RUN.decode(raw)
                if not run.ended:
                    steps[run.step] = steps.get(run.step, 0) + 1
    return steps
