"""Candidate lists for recommendations, computed by SQL in ClickHouse and cached in Redis.

``refresh`` writes every list at once into the hash ``{rec}:lists`` (field -> JSON list of
``[item, score]``, best first), so readers see one consistent set:

- ``popular``: time-decayed interest over the last ``days`` (a view 1, an add to cart 3, a
  purchase 5, halved every ``half_life_days``);
- ``popular:<category>``: the same within each category;
- ``trending``: the last day's interest against the daily mean of the week before it
  (smoothed: (recent + 1) / (before + 1), at least 3 recent events);
- ``viewed:<item>``: items viewed by the same people on the same day, by cosine similarity
  (co-views / √(views × views)), pairs seen at least ``min_support`` times;
- ``bought:<item>``: items bought in the same orders, likewise.

Python never pulls raw events: ClickHouse returns the lists, already ranked and cut.

Examples:
    >>> sorted(LISTS)
    ['bought', 'popular', 'popular_by_category', 'trending', 'viewed']
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis

from collector.store import EventStore, sql_time

__all__ = ["LISTS", "RECS", "Settings", "candidates", "refresh", "request_refresh"]

log = logging.getLogger("kairos.recs")

RECS = "{rec}:lists"
WANTED = "{rec}:wanted"  # set to ask the recommendations worker for a refresh now
_ITEM = "JSONExtractString(properties, 'product_id')"
_INTEREST = f"""
interest AS (
    SELECT {_ITEM} AS item, JSONExtractString(properties, 'category') AS category, timestamp,
           if(event = 'Product Viewed', 1, 3) AS weight
    FROM events
    WHERE type = 'track' AND event IN ('Product Viewed', 'Product Added')
      AND timestamp >= {{since:DateTime64(3)}} AND timestamp < {{now:DateTime64(3)}}
    UNION ALL
    SELECT JSONExtractString(product, 'product_id') AS item,
           JSONExtractString(product, 'category') AS category, timestamp, 5 AS weight
    FROM events ARRAY JOIN JSONExtractArrayRaw(properties, 'products') AS product
    WHERE type = 'track' AND event = 'Order Completed'
      AND timestamp >= {{since:DateTime64(3)}} AND timestamp < {{now:DateTime64(3)}}
)"""
_DECAYED = (
    "sum(weight * exp(-dateDiff('second', timestamp, {now:DateTime64(3)}) "
    "/ {half_life:Float64} * ln(2)))"
)
LISTS: dict[str, str] = {
    "popular": f"""
WITH {_INTEREST}
SELECT 'popular', item, {_DECAYED} AS score FROM interest WHERE item != ''
GROUP BY item ORDER BY score DESC LIMIT {{top:UInt32}}""",
    "popular_by_category": f"""
WITH {_INTEREST}
SELECT concat('popular:', category), item, {_DECAYED} AS score FROM interest
WHERE item != '' AND category != ''
GROUP BY category, item ORDER BY score DESC LIMIT {{per_list:UInt32}} BY category""",
    "trending": f"""
WITH {_INTEREST}
SELECT 'trending', item,
       (countIf(timestamp >= {{now:DateTime64(3)}} - toIntervalDay(1)) + 1)
       / (countIf(timestamp < {{now:DateTime64(3)}} - toIntervalDay(1)
                  AND timestamp >= {{now:DateTime64(3)}} - toIntervalDay(8)) / 7 + 1) AS score
FROM interest WHERE item != ''
GROUP BY item HAVING countIf(timestamp >= {{now:DateTime64(3)}} - toIntervalDay(1)) >= 3
ORDER BY score DESC LIMIT {{per_list:UInt32}}""",
    "viewed": f"""
WITH views AS (
    SELECT DISTINCT if(profile_id != '', profile_id, anonymous_id) AS who,
           toDate(timestamp) AS day, {_ITEM} AS item
    FROM events
    WHERE type = 'track' AND event = 'Product Viewed' AND {_ITEM} != ''
      AND timestamp >= {{since:DateTime64(3)}} AND timestamp < {{now:DateTime64(3)}}
),
counts AS (SELECT item, count() AS n FROM views GROUP BY item),
pairs AS (
    SELECT a.item AS first, b.item AS second, count() AS together
    FROM views AS a INNER JOIN views AS b ON a.who = b.who AND a.day = b.day
    WHERE a.item != b.item
    GROUP BY first, second HAVING together >= {{min_support:UInt32}}
)
SELECT concat('viewed:', p.first), p.second, p.together / sqrt(ca.n * cb.n) AS score
FROM pairs AS p
INNER JOIN counts AS ca ON ca.item = p.first
INNER JOIN counts AS cb ON cb.item = p.second
ORDER BY p.first, score DESC LIMIT {{per_list:UInt32}} BY p.first""",
    "bought": """
WITH orders AS (
    SELECT arrayDistinct(arrayFilter(x -> x != '', arrayMap(
               p -> JSONExtractString(p, 'product_id'),
               JSONExtractArrayRaw(properties, 'products')))) AS items
    FROM events
    WHERE type = 'track' AND event = 'Order Completed'
      AND timestamp >= {since:DateTime64(3)} AND timestamp < {now:DateTime64(3)}
),
counts AS (SELECT arrayJoin(items) AS item, count() AS n FROM orders GROUP BY item),
pairs AS (
    SELECT pair.1 AS first, pair.2 AS second, count() AS together
    FROM orders
    ARRAY JOIN arrayFlatten(arrayMap(
        x -> arrayMap(y -> (x, y), arrayFilter(y -> y != x, items)), items)) AS pair
    GROUP BY first, second HAVING together >= {min_support:UInt32}
)
SELECT concat('bought:', p.first), p.second, p.together / sqrt(ca.n * cb.n) AS score
FROM pairs AS p
INNER JOIN counts AS ca ON ca.item = p.first
INNER JOIN counts AS cb ON cb.item = p.second
ORDER BY p.first, score DESC LIMIT {per_list:UInt32} BY p.first""",
}


class Settings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How the lists are computed (the config file's ``[recommendations]``)."""

    days: int = 30
    half_life_days: float = 7.0
    min_support: int = 2
    top: int = 500  # popular overall
    per_list: int = 50  # every other list
    refresh_minutes: float = 10.0


def refresh(
    store: EventStore,
    client: redis.Redis,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Compute every list and replace the cached set; returns how many lists of each kind."""
    settings = settings or Settings()
    now = now or datetime.now(UTC)
    started = time.monotonic()
    since = datetime.fromtimestamp(now.timestamp() - settings.days * 86_400, UTC)
    params: dict[str, Any] = {
        "now": sql_time(now), "since": sql_time(since), "top": settings.top,
        "per_list": settings.per_list, "min_support": settings.min_support,
        "half_life": settings.half_life_days * 86_400,
    }  # fmt: skip
    lists: dict[str, list[list[Any]]] = {}
    kinds: dict[str, int] = {}
    for kind, sql in LISTS.items():
        rows = store.query_sync(sql, params, limited=False).rows
        for name, item, score in rows:
            lists.setdefault(name, []).append([item, round(float(score), 6)])
        kinds[kind] = len({row[0] for row in rows})
    pipe = client.pipeline(transaction=True)
    pipe.delete(RECS)
    if lists:
        pipe.hset(RECS, mapping={name: msgspec.json.encode(found) for name, found in lists.items()})
    pipe.execute()
    log.info("recommendation lists refreshed",
             extra={"lists": kinds, "seconds": round(time.monotonic() - started, 2)})  # fmt: skip
    return kinds


def candidates(client: redis.Redis, names: list[str]) -> dict[str, list[tuple[str, float]]]:
    """The cached lists ``names`` (missing ones are empty)."""
    if not names:
        return {}
    found = client.hmget(RECS, names)
    return {name: [(str(i), float(s)) for i, s in msgspec.json.decode(raw)] if raw else []
            for name, raw in zip(names, found)}  # fmt: skip


def request_refresh(client: redis.Redis) -> None:
    """Ask the recommendations worker to recompute the lists at its next pass."""
    client.set(WANTED, 1)
