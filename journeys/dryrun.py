"""Dry run: replay a period of history through a journey without sending anything — "simulate
before launch".

ClickHouse returns only the events the journey reacts to (its trigger, exit rules, the events
its waits are for, its goal), per person in time order; each person then goes through the same
pure functions the worker uses (``journeys.runs``), on the events' own times, with waits ending
on their due times. Entry rules and branches read the person's profile as it is now (history
does not keep old profiles). Score triggers cannot be replayed (scores are not events).

The report: people who would have entered, entries, the actions each step would have sent,
completed and exited runs (by reason), those still waiting at the end, and converted people
(the goal event after entering, within the period).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from collector.store import EventStore, sql_time
from journeys.runs import (
    Person,
    Run,
    advance,
    enter,
    group_of,
    may_enter,
    on_event,
    trigger_event,
    triggers,
)
from journeys.spec import (
    Journey,
    ScoreCrossed,
    Wait,
)
from profiles.store import ProfileStore
from profiles.views import view_of

__all__ = ["Report", "relevant_events", "simulate"]

_EVENTS = """
SELECT if(profile_id != '', profile_id, concat('anonymous:', anonymous_id)) AS who,
       toUnixTimestamp64Milli(timestamp) AS ms, event, properties
FROM events
WHERE type = 'track' AND event IN {names:Array(String)}
  AND timestamp >= {since:DateTime64(3)} AND timestamp < {until:DateTime64(3)}
ORDER BY who, ms, message_id
"""


@dataclass
class Report:
    people: int = 0  # who would have entered
    entered: int = 0  # entries (re-entries count again)
    actions: dict[str, int] = field(default_factory=dict)  # step -> actions it would send
    completed: int = 0
    exited: dict[str, int] = field(default_factory=dict)
    waiting: int = 0  # still in the journey at the end
    converted: int = 0


def relevant_events(journey: Journey) -> list[str]:
    trigger = journey.trigger
    if isinstance(trigger, ScoreCrossed):
        raise ValueError("$.trigger: a score trigger cannot be replayed (scores are not events)")
    names = {rule.event for rule in journey.exit}
    started_by = trigger_event(journey)
    if started_by is not None:
        names.add(started_by)
    names |= {
        s.until_event for s in journey.steps.values() if isinstance(s, Wait) and s.until_event
    }
    if journey.goal:
        names.add(journey.goal)
    return sorted(names)


def simulate(
    store: EventStore,
    profiles: ProfileStore | None,
    key: str,
    journey: Journey,
    since: datetime,
    until: datetime,
) -> Report:
    params = {"names": relevant_events(journey), "since": sql_time(since), "until": sql_time(until)}
    rows = store.query_sync(_EVENTS, params, limited=False).rows
    end = int(until.timestamp() * 1000)
    report = Report()
    by_person: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
    for who, ms, event, properties in rows:
        by_person.setdefault(who, []).append((int(ms), event, msgspec.json.decode(properties)))
    people = _people(profiles, list(by_person), end)
    for who, events in by_person.items():
        person = people.get(who, Person(who))
        run: Run | None = None
        entered_at: int | None = None  # the first entry, until they convert
        for ms, event, properties in events:
            run = _wake(journey, run, person, ms, report)
            if run is not None and not run.ended:
                run, moved = on_event(journey, run, event, properties, ms)
                if run.ended:
                    _ended(run, report)
                elif moved:
                    run = _advance(journey, run, person, ms, report)
            if journey.goal == event and entered_at is not None and 0 <= entered_at <= ms:
                report.converted += 1
                entered_at = -1  # once per person
            entered = [run.entered] if run else []  # one journey replayed: the cap sees its own
            if triggers(journey, event, properties, person) and may_enter(
                journey, run, person, ms, entered
            ):
                group = group_of(journey, key, who)
                run = enter(key, who, (run.entry if run else 0) + 1, ms, journey.start, 0, group)
                report.entered += 1
                report.people += int(run.entry == 1)
                entered_at = ms if entered_at is None else entered_at
                run = _advance(journey, run, person, ms, report)
        run = _wake(journey, run, person, end, report)
        if run is not None and not run.ended:
            report.waiting += 1
    return report


def _people(profiles: ProfileStore | None, who: list[str], now: int) -> dict[str, Person]:
    pids = [w for w in who if not w.startswith("anonymous:")]
    if profiles is None or not pids:
        return {}
    found = {}
    for snapshot in profiles.read_many(pids):
        if snapshot.exists:
            found[snapshot.id] = Person(
                snapshot.id, view_of(snapshot, now), list(snapshot.segments)
            )
    return found


def _advance(journey: Journey, run: Run, person: Person, now: int, report: Report) -> Run:
    run, actions = advance(journey, run, person, now)
    for action in actions:
        report.actions[action.step] = report.actions.get(action.step, 0) + 1
    if run.ended:
        _ended(run, report)
    return run


def _wake(
    journey: Journey, run: Run | None, person: Person, until: int, report: Report
) -> Run | None:
    """Let the run's waits end, in order, up to ``until``."""
    while run is not None and not run.ended and run.due and run.due <= until:
        run = _advance(journey, run, person, run.due, report)
    return run


def _ended(run: Run, report: Report) -> None:
    if run.ended == "completed":
        report.completed += 1
    else:
        report.exited[run.ended] = report.exited.get(run.ended, 0) + 1
