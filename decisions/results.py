"""A placement's results: sufficient statistics by SQL, compared by the statistics engine.

ClickHouse returns, per variant, what the tests need and nothing more: units (visitors, by
anonymous id else user id, counted in the variant of their first exposure: intent to treat),
converted units, the sum and sum of squares of the metric per unit, and for CUPED the same of a
pre-period covariate (the unit's value of the metric in the 30 days before their first exposure)
with the cross sum. Python never pulls raw events.

Metrics: ``reward`` (default) is the placement's own reward as the reward worker attributed it
(clicks, conversions or revenue, last touch); any other name is an event: a unit converts when
it sends that event within the attribution window after its first exposure, and its value is
the events' revenue (``properties.revenue``, else ``total``; 0 without).

Placements run by a bandit shift their allocation over time, so their naive per-variant means
are biased by when each variant was shown: the results then also carry inverse-propensity
estimates from the decision log (``ipw``), the policy's posterior per variant (``posterior``),
and the allocation over time, and ``method`` says which figure is which.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from bandits.bayesian import beta_binomial, normal
from bandits.frequentist import Comparison, cuped, holm, means, proportions, sequential, srm
from bandits.ope import snips
from bandits.stats import Paired, Sample
from collector.store import EventStore, sql_time
from decisions.placements import Placement
from decisions.records import DECISION_REWARDS

__all__ = ["SRM_THRESHOLD", "allocation", "placement_results", "store_time", "timeline"]

SRM_THRESHOLD = 0.001
_PRE_DAYS = 30
_UNITS = """
exposures AS (
    SELECT if(anonymousId != '', anonymousId, userId) AS unit,
           argMin(variant, timestamp) AS variant, min(timestamp) AS first_seen
    FROM decisions
    WHERE placement = {placement:String} AND fallback = ''
      AND timestamp >= {since:DateTime64(3)} AND timestamp < {until:DateTime64(3)}
      AND (length({units:Array(String)}) = 0
           OR has({units:Array(String)}, if(anonymousId != '', anonymousId, userId)))
    GROUP BY unit
)"""
_REWARD = (
    "WITH"
    + _UNITS
    + """,
per_unit AS (
    SELECT if(d.anonymousId != '', d.anonymousId, d.userId) AS unit, sum(r.reward) AS value,
           count() AS hits
    FROM decisions AS d
    INNER JOIN """
    + DECISION_REWARDS
    + """ AS r ON r.decision_id = d.decisionId
    WHERE d.placement = {placement:String}
    GROUP BY unit
),
pre AS (
    SELECT e.unit AS unit, count() AS value
    FROM exposures AS e
    INNER JOIN events AS ev ON ev.anonymous_id = e.unit
    WHERE ev.timestamp < e.first_seen
      AND ev.timestamp >= e.first_seen - toIntervalDay({pre_days:UInt32})
    GROUP BY e.unit
)"""
)
_EVENT = (
    (
        "WITH"
        + _UNITS
        + """,
valued AS (
    SELECT anonymous_id, user_id, timestamp,
           if(JSONHas(properties, 'revenue'), JSONExtractFloat(properties, 'revenue'),
              JSONExtractFloat(properties, 'total')) AS revenue
    FROM events
    WHERE type = 'track' AND event = {metric:String}
      AND timestamp >= {since:DateTime64(3)} - toIntervalDay({pre_days:UInt32})
      AND timestamp < {until:DateTime64(3)} + toIntervalSecond({window:UInt32})
),
per_unit AS (
    SELECT e.unit AS unit, any(e.variant) AS variant,
           sumIf(v.revenue, IN_WINDOW) AS value, countIf(IN_WINDOW) AS hits,
           sumIf(v.revenue, IN_PRE_PERIOD) + countIf(IN_PRE_PERIOD) AS pre_value
    FROM valued AS v
    RIGHT JOIN exposures AS e ON v.anonymous_id = e.unit
    GROUP BY e.unit
)"""
    )
    .replace(
        "IN_WINDOW",
        "v.anonymous_id != '' AND v.timestamp >= e.first_seen "
        "AND v.timestamp < e.first_seen + toIntervalSecond({window:UInt32})",
    )
    .replace(
        "IN_PRE_PERIOD",
        "v.anonymous_id != '' AND v.timestamp < e.first_seen "
        "AND v.timestamp >= e.first_seen - toIntervalDay({pre_days:UInt32})",
    )
)
# Every exposed unit once (an outer join: those without the event count too), the window after
# exposure and the pre-period before it (CUPED's covariate) from the one join: ClickHouse inlines
# each use of a CTE, and joining the exposures with the metric's events twice, then the
# exposures again, made an experiment's results about 2x as slow at 100M events
# (bench/history.py). The exposures on the join's right: ClickHouse builds its hash table from
# the right side, and there are fewer units than events (1.6 s rather than 1.9 s there).
_EVENT_STATS = """
SELECT variant, count() AS units, countIf(value > 0 OR hits > 0) AS conversions,
       sum(value) AS total, sum(value * value) AS squares,
       sum(pre_value) AS pre_total, sum(pre_value * pre_value) AS pre_squares,
       sum(value * pre_value) AS cross
FROM per_unit
GROUP BY variant
"""
_STATS = """
SELECT e.variant, count() AS units, countIf(u.value > 0 OR u.hits > 0) AS conversions,
       sum(u.value) AS total, sum(u.value * u.value) AS squares,
       sum(u.pre_value) AS pre_total, sum(u.pre_value * u.pre_value) AS pre_squares,
       sum(u.value * u.pre_value) AS cross
FROM exposures AS e
LEFT JOIN per_unit AS u ON u.unit = e.unit
GROUP BY e.variant
"""
_STATS = """
SELECT e.variant, count() AS units, countIf(u.value > 0 OR u.hits > 0) AS conversions,
       sum(u.value) AS total, sum(u.value * u.value) AS squares,
       sum(p.value) AS pre_total, sum(p.value * p.value) AS pre_squares,
       sum(u.value * p.value) AS cross
FROM exposures AS e
LEFT JOIN per_unit AS u ON u.unit = e.unit
LEFT JOIN pre AS p ON p.unit = e.unit
GROUP BY e.variant
"""
_TIMELINE = """
SELECT toStartOfInterval(e.first_seen, toIntervalSecond({bucket:UInt32})) AS at, e.variant,
       count() AS units, countIf(u.value > 0 OR u.hits > 0) AS conversions
FROM exposures AS e
LEFT JOIN per_unit AS u ON u.unit = e.unit
GROUP BY at, e.variant ORDER BY at
"""
_ALLOCATION = """
SELECT toStartOfInterval(timestamp, toIntervalSecond({bucket:UInt32})) AS at, variant, count()
FROM decisions
WHERE placement = {placement:String} AND fallback = ''
  AND timestamp >= {since:DateTime64(3)} AND timestamp < {until:DateTime64(3)}
GROUP BY at, variant ORDER BY at
"""
_LOG = (
    """
SELECT d.variant, d.propensity, r.reward, count() AS n
FROM decisions AS d
LEFT JOIN """
    + DECISION_REWARDS
    + """ AS r ON r.decision_id = d.decisionId
WHERE d.placement = {placement:String} AND d.fallback = '' AND d.propensity > 0
  AND d.timestamp >= {since:DateTime64(3)} AND d.timestamp < {until:DateTime64(3)}
GROUP BY d.variant, d.propensity, r.reward
"""
)


def store_time(value: datetime | str) -> datetime:
    """A time from the store (a datetime, or its ISO text through the query service), in UTC."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def placement_results(
    store: EventStore,
    key: str,
    placement: Placement,
    metric: str = "reward",
    since: datetime | None = None,
    until: datetime | None = None,
    units: list[str] | None = None,
    posterior: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The results document of ``GET /v1/placements/{key}/results``; ``units`` limits it to
    those visitors (a segment's anonymous and user ids)."""
    until = until or datetime.now(UTC) + timedelta(seconds=1)
    since = since or until - timedelta(days=90)
    params = {
        "placement": key,
        "since": sql_time(since),
        "until": sql_time(until),
        "units": units or [],
        "pre_days": _PRE_DAYS,
        "metric": metric,
        "window": int(placement.reward.window_hours * 3600),
    }
    sql = _REWARD + _STATS if metric == "reward" else _EVENT + _EVENT_STATS
    rows = (await store.query(sql, params, limited=False)).rows
    stats = {
        variant: Paired(Sample(int(units), float(total), float(squares)),
                        Sample(int(units), float(pre_total), float(pre_squares)), float(cross))
        for variant, units, _, total, squares, pre_total, pre_squares, cross in rows
    }  # fmt: skip
    converted = {row[0]: int(row[2]) for row in rows}
    arms = placement.arms()
    control = placement.default or arms[0]
    empty = Paired(Sample(0, 0.0, 0.0), Sample(0, 0.0, 0.0), 0.0)
    if metric == "reward":
        binary = placement.reward.kind != "revenue"
    else:  # an event without revenue: did the unit send it or not
        binary = all(s.post.total == 0 for s in stats.values())
    adaptive = placement.policy.kind != "ab"
    variants = [
        _variant(v, stats.get(v, empty), converted.get(v, 0), stats.get(control, empty),
                 converted.get(control, 0), binary)
        for v in arms
    ]  # fmt: skip
    treated = [v for v in variants if v["variant"] != control]
    for v, adjusted in zip(treated, holm([v["pValue"] for v in treated])):
        v["pValueHolm"] = adjusted
    weights = [v.weight for v in placement.variants]
    units = [stats.get(v, empty).n for v in arms]
    srm_p = None if adaptive else srm(units, weights)
    document: dict[str, Any] = {
        "placement": key,
        "policy": placement.policy.kind,
        "metric": metric,
        "control": control,
        "window": {"since": since, "until": until},
        "srmPValue": srm_p,
        "srm": srm_p is not None and srm_p < SRM_THRESHOLD,
        "variants": variants,
        "method": _method(binary, adaptive, len(treated)),
    }
    if adaptive:
        document["allocation"] = await allocation(store, key, since, until)
        ipw = await _ipw(store, key, arms, params)
        for v in variants:
            v["ipw"] = ipw.get(v["variant"])
            v["posterior"] = (posterior or {}).get(v["variant"])
    return document


def _variant(
    name: str, arm: Paired, converted: int, control: Paired, control_converted: int, binary: bool
) -> dict[str, Any]:
    """One variant against the control: on converted units for a yes/no metric, on the value
    per unit otherwise."""
    post, base = arm.post, control.post
    if binary:
        treated = Sample(post.n, float(converted), float(converted))
        baseline = Sample(base.n, float(control_converted), float(control_converted))
        fixed = proportions(baseline, treated)
        bayes = beta_binomial(baseline, treated) if base.n and post.n else None
        seq = sequential(baseline, treated, proportion=True)
    else:
        fixed, bayes = means(base, post), normal(base, post)
        seq = sequential(base, post, proportion=False)
    shown: dict[str, Any] = {
        "variant": name,
        "units": post.n,
        "conversions": converted,
        "rate": converted / post.n if post.n else 0.0,
        "mean": post.mean,
        **_lift(fixed),
        "pValue": fixed.p_value,
        "chanceToBeatControl": bayes.chance_to_beat_control if bayes else None,
        "expectedLoss": bayes.expected_loss if bayes else None,
        "sequential": {"pValue": seq.p_value, "liftCI": list(seq.lift_ci)},
    }
    if arm.pre.total > 0 and control.pre.total > 0:
        adjusted = cuped(control, arm)
        shown["cuped"] = {**_lift(adjusted), "pValue": adjusted.p_value}
    return shown


def _lift(result: Comparison) -> dict[str, Any]:
    return {
        "lift": result.lift,
        "liftCI": list(result.lift_ci),
        "difference": result.difference,
        "differenceCI": list(result.difference_ci),
    }


_SPAN = """
SELECT min(timestamp), max(timestamp) FROM decisions
WHERE placement = {placement:String} AND timestamp >= {since:DateTime64(3)}
  AND timestamp < {until:DateTime64(3)}
"""
_BUCKETS = (60, 600, 3600, 21_600, 86_400)  # seconds: a minute … a day


async def _bucket(store: EventStore, key: str, since: datetime, until: datetime) -> int:
    """The step for charts over time: the smallest of a minute, ten minutes, an hour, six
    hours or a day that keeps the placement's decisions within about 200 steps."""
    params = {"placement": key, "since": sql_time(since), "until": sql_time(until)}
    first, last = (await store.query(_SPAN, params, limited=False)).rows[0]
    if first is None or last is None:
        return _BUCKETS[-1]
    seconds = (store_time(last) - store_time(first)).total_seconds()
    return next((b for b in _BUCKETS if seconds / b <= 200), _BUCKETS[-1])


async def timeline(
    store: EventStore,
    key: str,
    placement: Placement,
    metric: str = "reward",
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, list[tuple[datetime, float]]]:
    """Per variant, the cumulative conversion rate of the units exposed so far, over time."""
    until = until or datetime.now(UTC) + timedelta(seconds=1)
    since = since or until - timedelta(days=90)
    params = {"placement": key, "since": sql_time(since), "until": sql_time(until), "units": [],
              "pre_days": _PRE_DAYS, "metric": metric,
              "bucket": await _bucket(store, key, since, until),
              "window": int(placement.reward.window_hours * 3600)}  # fmt: skip
    sql = (_REWARD if metric == "reward" else _EVENT) + _TIMELINE
    rows = (await store.query(sql, params, limited=False)).rows
    totals: dict[str, list[int]] = {}
    series: dict[str, list[tuple[datetime, float]]] = {}
    for at, variant, units, conversions in rows:
        at = store_time(at)
        seen = totals.setdefault(variant, [0, 0])
        seen[0], seen[1] = seen[0] + int(units), seen[1] + int(conversions)
        series.setdefault(variant, []).append((at, seen[1] / seen[0]))
    return series


async def allocation(
    store: EventStore, key: str, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """Decisions per variant per step of time (``_bucket``)."""
    bucket = await _bucket(store, key, since, until)
    params = {
        "placement": key,
        "since": sql_time(since),
        "until": sql_time(until),
        "bucket": bucket,
    }
    rows = (await store.query(_ALLOCATION, params, limited=False)).rows
    series: dict[Any, dict[str, int]] = {}
    for at, variant, count in rows:
        series.setdefault(store_time(at), {})[variant] = int(count)
    return [{"at": at, "decisions": counts} for at, counts in series.items()]


async def _ipw(
    store: EventStore, key: str, arms: list[str], params: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Per variant, the value of always showing it, by self-normalised inverse propensity
    weighting over the decision log (with a seeded bootstrap interval)."""
    rows = (await store.query(_LOG, params, limited=False)).rows
    rows = [r for r in rows if r[0] in arms]
    if not rows:
        return {}
    shown = np.array([arms.index(r[0]) for r in rows])
    propensities = np.array([float(r[1]) for r in rows])
    rewards = np.array([float(r[2] or 0.0) for r in rows])
    counts = np.array([float(r[3]) for r in rows])
    found = {}
    for index, arm in enumerate(arms):
        target = (shown == index).astype(float)
        if not target.any():
            continue
        estimate = snips(rewards, propensities, target, counts=counts, seed=7)
        found[arm] = {"value": estimate.value, "low": estimate.low, "high": estimate.high}
    return found


def _method(binary: bool, adaptive: bool, treatments: int) -> list[str]:
    notes = [
        "units: visitors (anonymous id, else user id) in the variant of their first exposure",
        "pValue: two-proportion z-test (pooled)" if binary else "pValue: Welch's t-test",
        "liftCI: 95% interval of the relative lift, delta method",
        "chanceToBeatControl, expectedLoss: Beta(1,1)-Binomial posteriors" if binary
        else "chanceToBeatControl, expectedLoss: normal posteriors of the means",
        "sequential: always-valid p-value and confidence sequence (mSPRT), safe to check daily",
        "cuped: the value per unit, its variance reduced with the unit's activity in the 30 "
        "days before exposure (CUPED)",
    ]  # fmt: skip
    if treatments > 1:
        notes.append("pValueHolm: Holm-adjusted across the treatment variants")
    if adaptive:
        notes += [
            "bandit-run: allocation changed over time, so rate/lift/pValue compare naive means "
            "(biased by when each variant was shown)",
            "ipw: self-normalised inverse-propensity estimate of always showing the variant, "
            "from the decision log (unbiased for the logged traffic), 95% bootstrap interval",
            "posterior: the policy's current belief about each variant",
        ]
    else:
        notes.append("srmPValue: chi-square of units against the configured weights; "
                     f"srm is flagged below {SRM_THRESHOLD}")  # fmt: skip
    return notes
