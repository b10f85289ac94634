"""Off-policy evaluation of a placement's decision log: "how would policy X have done?"

ClickHouse returns the log grouped (one row per variant, propensity, features, reward and half,
with a count): sufficient statistics, never the raw decisions. The candidate learns from the
earlier part of the window (``train_share``) and is evaluated on the rest, the way it would
have run: learning first, then choosing. Decisions shown as a fallback (ineligible, Redis down)
are left out, and so are variants the placement no longer has.

Rewards are the "Decision Rewarded" events the reward worker wrote; by default the window ends
one attribution window ago, so the decisions evaluated had their full chance to earn.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np

from bandits.ope import Estimate, Log, evaluate
from bandits.spec import PolicySpec
from collector.store import EventStore, sql_time
from decisions.placements import Placement, policy_for
from decisions.records import DECISION_REWARDS

__all__ = ["evaluate_placement"]

_LOG = (
    """
SELECT d.variant, d.propensity, d.features, r.reward, d.timestamp < {split:DateTime64(3)} AS train,
       count() AS n
FROM decisions AS d
LEFT JOIN """
    + DECISION_REWARDS
    + """ AS r ON r.decision_id = d.decisionId
WHERE d.placement = {placement:String} AND d.fallback = '' AND d.propensity > 0
  AND d.timestamp >= {since:DateTime64(3)} AND d.timestamp < {until:DateTime64(3)}
GROUP BY d.variant, d.propensity, d.features, r.reward, train
"""
)


async def evaluate_placement(
    store: EventStore,
    key: str,
    placement: Placement,
    candidate: PolicySpec,
    since: datetime | None = None,
    until: datetime | None = None,
    train_share: float = 0.5,
    seed: int = 7,
) -> dict[str, Any]:
    until = until or datetime.now(UTC) - timedelta(hours=placement.reward.window_hours)
    since = since or until - timedelta(days=7)
    split = since + (until - since) * train_share
    result = await store.query(
        _LOG,
        {
            "placement": key,
            "since": sql_time(since),
            "until": sql_time(until),
            "split": sql_time(split),
        },
        limited=False,
    )
    arms = placement.arms()
    dims = len(candidate.features)
    rows: dict[bool, list[tuple[int, float, list[float], float, int]]] = {True: [], False: []}
    skipped = 0
    for variant, propensity, features, reward, train, count in result.rows:
        if variant not in arms or (dims and len(features) != dims):
            skipped += int(count)  # a variant since removed, or features the candidate lacks
            continue
        rows[bool(train)].append(
            (arms.index(variant), float(propensity), features[:dims], float(reward or 0), count)
        )
    policy = policy_for(key, msgspec.structs.replace(placement, policy=candidate), None, seed)
    train, test = _log(rows[True], dims), _log(rows[False], dims)
    estimates = evaluate(policy, train, test, seed=seed)
    return {
        "placement": key,
        "candidate": candidate,
        "window": {"since": since, "until": until, "split": split},
        "decisions": {"train": train.size, "evaluate": test.size, "skipped": skipped},
        "estimates": {name: _shown(e) for name, e in estimates.items()},
    }


def _log(rows: list[tuple[int, float, list[float], float, int]], dims: int) -> Log:
    return Log(
        arms=np.array([r[0] for r in rows], dtype=np.int64),
        propensities=np.array([r[1] for r in rows], dtype=float),
        rewards=np.array([r[3] for r in rows], dtype=float),
        counts=np.array([r[4] for r in rows], dtype=float),
        contexts=np.array([r[2] for r in rows], dtype=float).reshape(len(rows), dims),
    )


def _shown(estimate: Estimate) -> dict[str, Any]:
    nan = np.isnan
    return {
        "value": None if nan(estimate.value) else round(estimate.value, 6),
        "low": None if nan(estimate.low) else round(estimate.low, 6),
        "high": None if nan(estimate.high) else round(estimate.high, 6),
        "decisions": estimate.n,
        "effective_decisions": round(estimate.effective_n, 1),
    }
