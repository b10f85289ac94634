"""One person's way through one journey, as pure functions of the definition, the run, the person
and the time (``now``, in ms, always passed in: tests fast-forward days).

A ``Run`` sits on one step. ``advance`` moves it through branches, splits and actions until it
reaches a wait (it then says when it is ``due``, or which event it waits for) or an end; the
actions passed on the way come back as ``Action`` values, each with an idempotency key unique
to person, journey, entry and step, for the worker to send. ``on_event`` applies one of the
person's events: an exit rule ends the run, the event a wait is for moves it on. A run in the
journey's holdout (``group_of``) ends as it starts, "exited: holdout", and passes no step.

Examples:
    >>> from journeys.spec import JOURNEY
    >>> journey = JOURNEY.decode(b'{"trigger": {"kind": "event", "event": "Product Added"},'
    ...     b' "start": "wait", "exit": [{"event": "Order Completed"}], "steps": {'
    ...     b'"wait": {"type": "wait", "duration": "1h", "next": "remind"},'
    ...     b'"remind": {"type": "emit", "event": "Reminded", "next": "end"},'
    ...     b'"end": {"type": "end"}}}')
    >>> run, actions = advance(journey, enter("cart", "p1", 1, 0), Person("p1"), now=0)
    >>> run.step, run.due, actions
    ('wait', 3600000, [])
    >>> run, actions = advance(journey, run, Person("p1"), now=3_600_000)
    >>> run.ended, [a.step for a in actions]
    ('completed', ['remind'])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from bandits.hashing import bucket
from collector.onchain import event_name as onchain_event
from journeys.spec import (
    ACTIONS,
    Branch,
    End,
    EventTrigger,
    Journey,
    OnchainTrigger,
    ScoreCrossed,
    SegmentEntered,
    SegmentExited,
    Split,
    Wait,
    parse_duration,
)
from profiles.segments import View, matches

__all__ = [
    "RUN",
    "Action",
    "Person",
    "Run",
    "advance",
    "enter",
    "group_of",
    "may_enter",
    "on_event",
    "reads_profile",
    "trigger_event",
    "triggers",
]

_MAX_STEPS = 200  # per advance: the definition forbids loops without a wait; this is a guard


class Run(msgspec.Struct, omit_defaults=True):
    journey: str
    pid: str
    entry: int  # 1 for the first time the person entered, 2 for the second, …
    entered: int  # ms
    step: str = ""
    due: int = 0  # ms: when the current wait ends (0: not waiting on the clock)
    waiting_for: str = ""  # the event the current wait is for
    seen: list[str] = []  # events the person sent since entering (for branches)
    vars: dict[str, str] = {}  # what decide steps chose: placement -> variant
    ended: str = ""  # "" while running; "completed", or "exited: <event>"
    ended_at: int = 0
    # The spool position of the last event applied, per partition (replays change nothing):
    # partition 0's here, the others' by partition in ``applied_in``.
    applied: str = ""
    applied_in: dict[str, str] = {}
    home: int = 0  # the partition of the event that entered it: where its timer and actions go
    group: str = "treated"  # or "holdout": entered, counted, sent nothing (journeys.lift)

    @property
    def key(self) -> str:
        return f"{self.journey}|{self.pid}|{self.entry}"

    def applied_at(self, partition: int) -> str:
        return self.applied_in.get(str(partition), "") if partition else self.applied

    def applying(self, partition: int, at: str) -> Run:
        """This run with ``at`` as the position applied in ``partition``."""
        if not partition:
            return msgspec.structs.replace(self, applied=at)
        return msgspec.structs.replace(self, applied_in={**self.applied_in, str(partition): at})


RUN = msgspec.json.Decoder(Run)


@dataclass(frozen=True)
class Action:
    """An action step reached: the worker builds and sends it (once: ``key``)."""

    step: str
    key: str  # journey|pid|entry|step


@dataclass
class Person:
    """What branches and entry rules read of the person."""

    pid: str
    view: View | None = None
    segments: list[str] = field(default_factory=list)
    timezone: str | None = None


def enter(
    journey_key: str,
    pid: str,
    entry: int,
    now: int,
    start: str = "",
    home: int = 0,
    group: str = "treated",
) -> Run:
    return Run(journey_key, pid, entry, now, start, home=home, group=group)


def group_of(journey: Journey, journey_key: str, pid: str) -> str:
    """The person's group: "holdout" for the journey's ``holdout`` share of people, else
    "treated". The same on every entry (a sticky bucket of person and journey), so a held-out
    person is never treated later, and raising the share only adds people to the holdout.

    Examples:
        >>> from journeys.spec import JOURNEY
        >>> journey = JOURNEY.decode(b'{"trigger": {"kind": "event", "event": "Signed Up"},'
        ...     b' "goal": "Order Completed", "holdout": 0.3, "start": "end",'
        ...     b' "steps": {"end": {"type": "end"}}}')
        >>> groups = [group_of(journey, "welcome", f"p{i}") for i in range(1000)]
        >>> groups.count("holdout"), group_of(journey, "welcome", "p1") == groups[1]
        (316, True)
    """
    point = bucket(pid, f"journey-holdout:{journey_key}")
    return "holdout" if point < journey.holdout else "treated"


def may_enter(
    journey: Journey, last: Run | None, person: Person, now: int, entered: list[int] = []
) -> bool:
    """Whether the person may enter now, after ``last`` (their latest run of it, if any);
    ``entered``: when they last entered each of their journeys (for the frequency cap)."""
    cap = journey.entry.cap
    if cap is not None and sum(now - at < cap.days * 86_400_000 for at in entered) >= cap.journeys:
        return False
    if last is not None:
        if not last.ended:
            return False  # never twice at once
        if journey.entry.reentry == "once":
            return False
        if journey.entry.reentry == "days":
            if now - last.entered < journey.entry.reentry_days * 86_400_000:
                return False
    if journey.entry.segment is not None and journey.entry.segment not in person.segments:
        return False
    rule = journey.entry.rule
    return rule is None or (person.view is not None and matches(rule, person.view))


def advance(
    journey: Journey, run: Run, person: Person, now: int, passed: list[str] | None = None
) -> tuple[Run, list[Action]]:
    """Move ``run`` as far as it goes at ``now``; the actions it passed, in order. ``passed``
    gets the name of every step the run completes on the way."""
    done = passed if passed is not None else []
    if run.ended:
        return run, []
    if run.group == "holdout":  # what the journey earns is measured against these: no step
        return _ended(run, "exited: holdout", now), []
    run = msgspec.structs.replace(run, step=run.step or journey.start)
    actions: list[Action] = []
    for _ in range(_MAX_STEPS):
        step = journey.steps[run.step]
        if isinstance(step, End):
            return _ended(run, "completed", now), actions
        if isinstance(step, Wait):
            if run.due == 0 and not run.waiting_for:  # just arrived: start waiting
                return _waiting(step, run, person, now), actions
            if now < run.due:
                return run, actions  # not yet
            following = step.timeout_next if step.until_event else step.next
            done.append(run.step)
            run = msgspec.structs.replace(run, step=following or step.next, due=0, waiting_for="")
            continue
        done.append(run.step)
        if isinstance(step, Branch):
            run = msgspec.structs.replace(run, step=_branch(step, run, person))
            continue
        if isinstance(step, Split):
            run = msgspec.structs.replace(run, step=_split(step, run))
            continue
        assert isinstance(step, ACTIONS)
        actions.append(Action(run.step, f"{run.key}|{run.step}"))
        run = msgspec.structs.replace(run, step=step.next)
    raise RuntimeError(f"journey {run.journey}: more than {_MAX_STEPS} steps without a wait")


def on_event(
    journey: Journey, run: Run, event: str, properties: dict[str, Any], now: int
) -> tuple[Run, bool]:
    """Apply one of the person's events; True if the run must be advanced now."""
    if run.ended:
        return run, False
    for rule in journey.exit:
        if rule.event == event and _where(rule.where, properties):
            return _ended(run, f"exited: {event}", now), False
    seen = run.seen if event in run.seen else [*run.seen, event]
    run = msgspec.structs.replace(run, seen=seen)
    if run.waiting_for == event:
        step = journey.steps[run.step]
        assert isinstance(step, Wait)
        return msgspec.structs.replace(run, step=step.next, due=0, waiting_for=""), True
    return run, False


def triggers(journey: Journey, name: str, properties: dict[str, Any], person: Person) -> bool:
    """Whether the person's event ``name`` (with ``properties``) triggers ``journey``."""
    trigger = journey.trigger
    if isinstance(trigger, EventTrigger):
        return name == trigger.event and all(
            properties.get(k) == v for k, v in trigger.where.items()
        )
    if isinstance(trigger, SegmentEntered | SegmentExited):
        wanted = "Segment Entered" if isinstance(trigger, SegmentEntered) else "Segment Exited"
        return name == wanted and properties.get("segment") == trigger.segment
    if isinstance(trigger, OnchainTrigger):
        return (
            name == onchain_event(trigger.event)
            and (trigger.contract is None or properties.get("contract") == trigger.contract)
            and (trigger.direction is None or properties.get("direction") == trigger.direction)
        )
    if isinstance(trigger, ScoreCrossed):
        if person.view is None:
            return False
        score = person.view.scores.get(trigger.score, person.view.computed.get(trigger.score))
        return isinstance(score, int | float) and score >= trigger.above
    return False


def reads_profile(journey: Journey) -> bool:
    """Whether entering or moving through ``journey`` needs the person's profile."""
    if journey.entry.rule is not None or journey.entry.segment is not None:
        return True
    if isinstance(journey.trigger, ScoreCrossed):
        return True
    if any(isinstance(s, Wait) and s.until_time for s in journey.steps.values()):
        return True  # the person's timezone
    return any(
        isinstance(s, Branch) and any(c.rule is not None or c.segment is not None for c in s.cases)
        for s in journey.steps.values()
    )


def trigger_event(journey: Journey) -> str | None:
    """The event name that can trigger ``journey`` (None: any event may, a score trigger)."""
    trigger = journey.trigger
    if isinstance(trigger, EventTrigger):
        return trigger.event
    if isinstance(trigger, SegmentEntered):
        return "Segment Entered"
    if isinstance(trigger, SegmentExited):
        return "Segment Exited"
    if isinstance(trigger, OnchainTrigger):
        return onchain_event(trigger.event)
    return None


def exits(journey: Journey, event: str, properties: dict[str, Any]) -> bool:
    return any(r.event == event and _where(r.where, properties) for r in journey.exit)


def _where(wanted: dict[str, Any], properties: dict[str, Any]) -> bool:
    return all(properties.get(k) == v for k, v in wanted.items())


def _ended(run: Run, why: str, now: int) -> Run:
    return msgspec.structs.replace(run, ended=why, ended_at=now, due=0, waiting_for="")


def _waiting(step: Wait, run: Run, person: Person, now: int) -> Run:
    if step.duration:
        return msgspec.structs.replace(run, due=now + parse_duration(step.duration))
    if step.until_event:
        due = now + parse_duration(step.timeout or "1d")
        return msgspec.structs.replace(run, due=due, waiting_for=step.until_event)
    assert step.until_time is not None
    return msgspec.structs.replace(run, due=_next_local(step.until_time, person.timezone, now))


def _next_local(hh_mm: str, timezone: str | None, now: int) -> int:
    """The next ``hh_mm`` on the person's clock (UTC if their timezone is unknown)."""
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    local = datetime.fromtimestamp(now / 1000, zone)
    hour, minute = map(int, hh_mm.split(":"))
    at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at <= local:
        at += timedelta(days=1)
    return int(at.timestamp() * 1000)


def _branch(step: Branch, run: Run, person: Person) -> str:
    for case in step.cases:
        if case.segment is not None and case.segment in person.segments:
            return case.next
        if case.event_since_entry is not None and case.event_since_entry in run.seen:
            return case.next
        if case.rule is not None and person.view is not None and matches(case.rule, person.view):
            return case.next
    return step.otherwise


def _split(step: Split, run: Run) -> str:
    """A weighted path, the same for the person every time (hash of person, journey, step)."""
    digest = hashlib.sha256(f"{run.journey}|{run.pid}|{run.step}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(p.weight for p in step.paths)
    for path in step.paths:
        point -= path.weight
        if point < 0:
            return path.next
    return step.paths[-1].next
