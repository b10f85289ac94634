"""What a journey (or a broadcast) earns: its people against a holdout that was sent nothing.

The people exposed (a journey's "Journey Entered", with ``properties.journey`` = its key and
``properties.group`` = treated or holdout) are split by a sticky hash (``journeys.runs.group_of``)
before anything is sent, so the holdout is what the treated people would have done without the
journey. ClickHouse returns, per group, what the statistics need and nothing more (one GROUP BY
over one join; Python never pulls rows per person): people exposed, people who did the goal
event within the window after their first exposure (event times on both sides, as
``journeys.stats`` compares them), and the sum and sum of squares of their revenue in that
window (the goal events' ``properties.revenue``, else ``total``, as placement results read it;
0 without). ``compare`` then sets every other group against the holdout.

How to read it:

- ``rate``: the share of the group's people who converted within the window; ``revenuePerPerson``:
  revenue in the window per person exposed (those who bought nothing count as 0).
- ``vsHoldout.conversion.difference``: the lift in absolute terms, treated rate − holdout rate
  (0.041 is 4.1 percentage points); ``lift``: relative, treated / holdout − 1 (null while the
  holdout's rate is 0); ``revenue``: the same for revenue per person. Randomised assignment is
  what makes the difference the journey's effect, not who happens to enter it.
- ``differenceCI`` / ``liftCI``: a 95% confidence sequence (mSPRT, ``bandits.frequentist
  .sequential``), and ``pValue``: the always-valid p-value that goes with it (p < 0.05 exactly
  when the interval leaves out 0). Both stay valid however often they are looked at: the chance
  that a journey with no effect ever shows p < 0.05, on any day it is checked, is below 5%. So
  checking the results daily and stopping when they are clear is safe; the price is an interval
  wider than a fixed-horizon test's at any one look.
- People exposed lately have not had their whole window yet: rates are then lower in every
  group alike, which leaves the comparison fair but the rates low until the window has passed.

Examples:
    >>> found = compare({"treated": Group(2000, 600, 30_000.0, 1_800_000.0),
    ...                  "holdout": Group(1000, 200, 10_000.0, 600_000.0)})
    >>> [g["group"] for g in found], found[0]["rate"], found[1]["revenuePerPerson"]
    (['treated', 'holdout'], 0.3, 10.0)
    >>> conversion = found[0]["vsHoldout"]["conversion"]
    >>> round(conversion["difference"], 3), [round(x, 3) for x in conversion["differenceCI"]]
    (0.1, [0.05, 0.15])
    >>> round(conversion["lift"], 2), conversion["pValue"] < 0.001
    (0.5, True)
    >>> for sentence in found[0]["summary"].split(". "):
    ...     print(sentence)
    Treated people converted 10.0 points more often than held-out people (95% interval 5.0 to 15.0)
    Revenue per person: +5.00 (95% interval 2.20 to 7.80).
    >>> found[1]["vsHoldout"] is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bandits.frequentist import Comparison, sequential
from bandits.stats import Sample
from collector.store import EventStore, sql_time
from journeys.spec import Journey, parse_duration

__all__ = ["CONTROL", "Exposure", "Group", "compare", "group_stats", "journey_results"]

CONTROL = "holdout"
_LOOKBACK = timedelta(days=90)  # without ``since``: as placement results

_STATS = """
WITH exposed AS (
    SELECT if(JSONExtractString(properties, 'profile_id') != '',
              JSONExtractString(properties, 'profile_id'), profile_id) AS pid,
           argMin(JSONExtractString(properties, {group_property:String}), timestamp) AS tagged,
           min(timestamp) AS first_seen
    FROM events
    WHERE type = 'track' AND event = {exposure:String}
      AND JSONExtractString(properties, {of:String}) = {key:String}
      AND timestamp >= {since:DateTime64(3)} AND timestamp < {until:DateTime64(3)}
    GROUP BY pid
    HAVING pid != ''
),
goals AS (
    SELECT profile_id AS pid, timestamp,
           if(JSONHas(properties, 'revenue'), JSONExtractFloat(properties, 'revenue'),
              JSONExtractFloat(properties, 'total')) AS revenue
    FROM events
    WHERE type = 'track' AND event = {goal:String} AND profile_id != ''
      AND timestamp > {since:DateTime64(3)}
      AND timestamp <= {until:DateTime64(3)} + toIntervalMillisecond({window:UInt64})
),
per_person AS (
    SELECT e.pid AS pid, any(e.tagged) AS tagged,
           countIf(IN_WINDOW) AS hits, sumIf(g.revenue, IN_WINDOW) AS value
    FROM goals AS g
    RIGHT JOIN exposed AS e ON g.pid = e.pid
    GROUP BY e.pid
)
SELECT if(tagged = '', {unlabelled:String}, tagged) AS grp, count() AS people,
       countIf(hits > 0) AS converted, sum(value) AS total, sum(value * value) AS squares
FROM per_person
GROUP BY grp
ORDER BY grp
""".replace(
    "IN_WINDOW",
    "g.pid != '' AND g.timestamp > e.first_seen "
    "AND g.timestamp <= e.first_seen + toIntervalMillisecond({window:UInt64})",
)
# Strictly after the first exposure: when the goal is also what triggers the journey, the
# entering event itself is not a conversion. The exposures on the join's right: ClickHouse
# builds its hash table from the right side, and there are fewer people than goal events
# (decisions.results measured the same). An unmatched exposure comes with an empty ``g.pid``.


@dataclass(frozen=True, slots=True)
class Exposure:
    """What was exposed, and how the events say so: ``event`` (e.g. "Journey Entered") whose
    ``properties[of]`` is ``key`` and whose ``properties[group_property]`` names the person's
    group; exposures without a group (before groups existed) count in ``unlabelled``."""

    event: str
    of: str
    key: str
    group_property: str = "group"
    unlabelled: str = "treated"


@dataclass(frozen=True, slots=True)
class Group:
    """One group's sufficient statistics: people exposed, people who converted, and the sum
    and sum of squares of their revenue in the window (mergeable: add two to merge them)."""

    people: int
    converted: int
    revenue: float
    squares: float

    @property
    def conversions(self) -> Sample:
        return Sample(self.people, float(self.converted), float(self.converted))

    @property
    def value(self) -> Sample:
        return Sample(self.people, self.revenue, self.squares)

    def __add__(self, other: Group) -> Group:
        return Group(self.people + other.people, self.converted + other.converted,
                     self.revenue + other.revenue, self.squares + other.squares)  # fmt: skip


def group_stats(
    store: EventStore,
    exposure: Exposure,
    goal: str,
    window_ms: int,
    since: datetime,
    until: datetime,
) -> dict[str, Group]:
    """Per group, its ``Group`` statistics for the people first exposed in ``since``..``until``
    (their goal events count up to ``window_ms`` after that, even past ``until``)."""
    params = {"exposure": exposure.event, "of": exposure.of, "key": exposure.key,
              "group_property": exposure.group_property, "unlabelled": exposure.unlabelled,
              "goal": goal, "window": window_ms, "since": sql_time(since),
              "until": sql_time(until)}  # fmt: skip
    rows = store.query_sync(_STATS, params, limited=False).rows
    return {str(group): Group(int(people), int(converted), float(total), float(squares))
            for group, people, converted, total, squares in rows}  # fmt: skip


def compare(
    groups: Mapping[str, Group], control: str = CONTROL, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """Each group's figures, the control (the holdout) last, and every other group against it
    (``vsHoldout``: null for the control itself, and while no one is in it)."""
    empty = Group(0, 0, 0.0, 0.0)
    base = groups.get(control, empty)
    found = []
    for name in [*sorted(g for g in groups if g != control), control]:
        group = groups.get(name, empty)
        shown: dict[str, Any] = {
            "group": name,
            "people": group.people,
            "converted": group.converted,
            "rate": group.conversions.mean,
            "revenue": group.revenue,
            "revenuePerPerson": group.value.mean,
            "revenueVariance": group.value.variance,
            "vsHoldout": None,
            "summary": "",
        }
        if name != control and base.people and group.people:
            conversion = sequential(base.conversions, group.conversions, alpha, proportion=True)
            revenue = sequential(base.value, group.value, alpha, proportion=False)
            shown["vsHoldout"] = {"conversion": _lift(conversion), "revenue": _lift(revenue)}
            shown["summary"] = _summary(name, conversion, revenue, alpha)
        elif name != control:
            shown["summary"] = "No one in this group or the holdout yet: nothing to compare."
        found.append(shown)
    return found


def journey_results(
    store: EventStore,
    key: str,
    journey: Journey,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The document of ``GET /v1/journeys/{key}/results``: its treated people against its
    holdout, on its goal within its goal window (people who entered since..until: by default
    the last 90 days)."""
    until = until or datetime.now(UTC) + timedelta(seconds=1)
    since = since or until - _LOOKBACK
    document: dict[str, Any] = {
        "journey": key,
        "goal": journey.goal,
        "goalWindow": journey.goal_window,
        "holdout": journey.holdout,
        "control": CONTROL,
        "window": {"since": since, "until": until},
        "groups": [],
        "method": _METHOD,
    }
    if not journey.goal:
        return document  # nothing to measure: no goal
    exposure = Exposure("Journey Entered", "journey", key)
    window = parse_duration(journey.goal_window)
    found = group_stats(store, exposure, journey.goal, window, since, until)
    document["groups"] = compare({"treated": Group(0, 0, 0.0, 0.0), CONTROL: Group(0, 0, 0.0, 0.0),
                                  **found})  # fmt: skip
    return document


_METHOD = [
    "people: by profile, in the group of their first entry in the window (intent to treat); "
    "the holdout is chosen by a sticky hash of person and journey, before anything is sent",
    "converted: did the goal event after entering and within the goal window (event times)",
    "revenuePerPerson: the goal events' revenue (properties.revenue, else total) in the window, "
    "per person entered; revenueVariance: its variance across people",
    "difference: treated − holdout (a rate's in percentage points / 100); lift: relative, "
    "treated / holdout − 1",
    "differenceCI, liftCI, pValue: always-valid 95% confidence sequence and p-value (mSPRT), "
    "safe to check daily and to stop on",
]


def _lift(result: Comparison) -> dict[str, Any]:
    relative = result.control != 0
    return {
        "difference": result.difference,
        "differenceCI": list(result.difference_ci),
        "lift": result.lift if relative else None,
        "liftCI": list(result.lift_ci) if relative else None,
        "pValue": result.p_value,
    }


def _summary(name: str, conversion: Comparison, revenue: Comparison, alpha: float) -> str:
    """A sentence on conversion (and one on revenue, if there was any) for a person to read."""
    who = "Treated people" if name == "treated" else f"People in {name}"
    level = f"{1 - alpha:.0%}"
    points = conversion.difference * 100
    low, high = (x * 100 for x in conversion.difference_ci)
    if points == 0:
        said = f"{who} converted as often as held-out people"
    else:
        said = (f"{who} converted {abs(points):.1f} points {'more' if points > 0 else 'less'} "
                "often than held-out people")  # fmt: skip
    said += f" ({level} interval {low:.1f} to {high:.1f})"
    if low <= 0 <= high:
        said += ": not distinguishable from no difference yet"
    said += "."
    if revenue.control or revenue.treatment:
        low, high = revenue.difference_ci
        said += (f" Revenue per person: {revenue.difference:+,.2f} "
                 f"({level} interval {low:,.2f} to {high:,.2f}).")  # fmt: skip
    return said
