"""Lifetime value on profiles: RFM summaries from ClickHouse, BG/NBD + Gamma-Gamma, scores.

ClickHouse sums each buyer's orders per day (``properties.revenue``, else ``total``) and returns
one row per profile: repeat purchase days (``frequency``), days from the first purchase day to
the last (``recency``) and to now (``T``), and the mean value of the repeat days
(``monetary``). Python fits the models on those rows (``profiles.ltv``) and writes, per buyer:

- ``scores.ltv``: the expected value of their purchases over the horizon (default 90 days);
- ``scores.purchases``: how many purchase days are expected in it;
- ``scores.alive``: the probability that they are still a customer.

The learner worker refits on a schedule (``[models] ltv_refit_hours``, default daily);
``kairos ltv`` refits now, with a progress bar.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import redis

from collector.store import EventStore, sql_time
from profiles.ltv import BetaGeo, GammaGamma, lifetime_value
from profiles.membership import RESCORED
from profiles.store import SET_SCORES, profile_keys

__all__ = ["LTV", "RFM", "refit"]

log = logging.getLogger("kairos.ltv")

LTV = "{learn}:ltv"  # the last fit: parameters, customers, when
_CHUNK = 1_000
RFM = """
SELECT profile_id,
       count() - 1 AS frequency,
       dateDiff('day', min(day), max(day)) AS recency,
       dateDiff('day', min(day), toDate({now:DateTime64(3)})) AS T,
       if(count() > 1, (sum(value) - argMin(value, day)) / (count() - 1), 0) AS monetary
FROM (
    SELECT profile_id, toDate(timestamp) AS day,
           sum(if(JSONHas(properties, 'revenue'), JSONExtractFloat(properties, 'revenue'),
                  JSONExtractFloat(properties, 'total'))) AS value
    FROM events
    WHERE type = 'track' AND event = 'Order Completed' AND profile_id != ''
      AND timestamp <= {now:DateTime64(3)}
    GROUP BY profile_id, day
)
GROUP BY profile_id
"""


def refit(
    store: EventStore,
    client: redis.Redis,
    horizon_days: float = 90.0,
    now: datetime | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, Any]:
    """Fit on every buyer's history and write their scores; returns what ``{learn}:ltv``
    keeps. Raises ValueError when there are too few repeat buyers to fit."""
    now = now or datetime.now(UTC)
    started = time.monotonic()
    rows = store.query_sync(RFM, {"now": sql_time(now)}, limited=False).rows
    pids = [row[0] for row in rows]
    frequency, recency, age, monetary = (np.array([row[i] for row in rows], dtype=float)
                                         for i in range(1, 5))  # fmt: skip
    if int((frequency > 0).sum()) < 10:
        raise ValueError(f"too few repeat buyers to fit ({int((frequency > 0).sum())}; need 10)")
    bg = BetaGeo().fit(frequency, recency, age)
    gg = GammaGamma().fit(frequency, np.where(frequency > 0, monetary, 0.0))
    purchases, value = lifetime_value(bg, gg, horizon_days, frequency, recency, age, monetary)
    alive = bg.probability_alive(frequency, recency, age)
    for start in range(0, len(pids), _CHUNK):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + _CHUNK, len(pids))):
            SET_SCORES.queue(pipe, [profile_keys(pids[i])[0]], [
                "s:ltv", round(float(value[i]), 2), "s:purchases", round(float(purchases[i]), 4),
                "s:alive", round(float(alive[i]), 4)])  # fmt: skip
        pipe.sadd(RESCORED, *pids[start : start + _CHUNK])
        pipe.execute()
        if progress is not None:
            progress(min(start + _CHUNK, len(pids)), len(pids))
    fit = {
        "fitted_at": now.isoformat(),
        "customers": len(pids),
        "repeat_customers": int((frequency > 0).sum()),
        "horizon_days": horizon_days,
        "beta_geo": {k: round(v, 6) for k, v in bg.params_.items()},
        "gamma_gamma": {k: round(v, 6) for k, v in gg.params_.items()},
        "seconds": round(time.monotonic() - started, 2),
    }
    client.set(LTV, msgspec.json.encode(fit))
    log.info("lifetime value refitted", extra={"customers": len(pids), "seconds": fit["seconds"]})
    return fit


def last_fit(client: redis.Redis) -> dict[str, Any] | None:
    raw = client.get(LTV)
    return msgspec.json.decode(raw) if raw is not None else None
