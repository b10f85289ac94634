"""Items for one person by one strategy: the cached lists (``profiles.strategies``), the person's
own browsing, cart and orders, and the catalog's word on what may be shown.

Strategies:

- ``popular``, ``trending``: the shop-wide lists;
- ``viewed_together``: items viewed with what the person viewed last (the three newest views,
  the newest counting most);
- ``bought_together``: items bought with what is in their cart, else with what they viewed;
- ``recently_viewed``: what they viewed, newest first;
- ``abandoned_cart``: what sits in their cart;
- ``favourite_category``: the most popular items of the category they view most.

Every strategy returns only recommendable catalog items (available, in stock), never what the
person bought within ``Filters.exclude_bought_days``, never twice, and outside the cart
strategies never what is already in the cart; ``category`` and a price range narrow it further.

The work is a plan (``plan``: a generator that yields the Redis reads it needs, one round trip
at a time, and returns the items), so the same logic runs on a blocking client (``recommend``,
``recommend_many``) and on the decide path's pipelined asyncio connection (``arecommend``).

Examples:
    >>> sorted(STRATEGIES)[:3]
    ['abandoned_cart', 'bought_together', 'favourite_category']
    >>> Person(bought={"a": 5_000}).excluded(Filters(exclude_bought_days=1), now_ms=6_000)
    {'a'}
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import redis

from profiles.products import ITEM, ITEMS, Item
from profiles.store import profile_keys
from profiles.strategies import RECS

__all__ = [
    "STRATEGIES",
    "Filters",
    "Person",
    "arecommend",
    "person",
    "person_of",
    "plan",
    "recommend",
    "recommend_many",
]

_ANCHORS = 3  # the newest views a co-occurrence strategy starts from
_DAY_MS = 86_400_000

# A Redis command, and the plan's protocol: it yields commands, gets their replies, returns items.
Command = tuple[Any, ...]
Plan = Generator[list[Command], list[Any], list[Item]]


class Filters(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What a recommendation placement may show (its ``recommend`` section)."""

    n: Annotated[int, msgspec.Meta(ge=1, le=50)] = 4
    category: str | None = None
    min_price: Annotated[float, msgspec.Meta(ge=0)] | None = None
    max_price: Annotated[float, msgspec.Meta(ge=0)] | None = None
    exclude_bought_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0  # 0: show bought items too
    backfill: bool = True  # fill a short list from ``popular``

    def admits(self, item: Item) -> bool:
        if not item.recommendable():
            return False
        if self.category is not None and item.category != self.category:
            return False
        if item.price is None:
            return True
        return (self.min_price is None or item.price >= self.min_price) and (
            self.max_price is None or item.price <= self.max_price
        )


@dataclass(frozen=True)
class Person:
    viewed: list[str] = field(default_factory=list)  # newest first
    cart: list[str] = field(default_factory=list)
    bought: dict[str, int] = field(default_factory=dict)  # item -> ms of the newest order

    def excluded(self, filters: Filters, now_ms: int) -> set[str]:
        """The items bought recently enough not to be shown again."""
        if not filters.exclude_bought_days:
            return set()
        since = now_ms - filters.exclude_bought_days * _DAY_MS
        return {item for item, ms in self.bought.items() if ms >= since}


def person_of(profile: dict[str, str], viewed: list[str], cart: list[str]) -> Person:
    """A person from their profile hash (``bought``), viewed list and cart's item ids."""
    bought = msgspec.json.decode(profile["bought"]) if profile.get("bought") else {}
    return Person(list(viewed), sorted(cart), {str(k): int(v) for k, v in bought.items()})


def person(client: redis.Redis, pid: str) -> Person:
    """What the profile worker keeps of a person's browsing, cart and orders."""
    keys = profile_keys(pid)
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys[0], "bought")
    pipe.lrange(keys[1], 0, -1)
    pipe.hkeys(keys[2])
    bought, viewed, cart = pipe.execute()
    profile = {"bought": bought.decode()} if bought else {}
    return person_of(profile, [v.decode() for v in viewed], [c.decode() for c in cart])


def _lists(names: list[str]) -> Command:
    return ("HMGET", RECS, *names)


_LIST = msgspec.json.Decoder(list[tuple[str, float]])


def _decoded(raw: bytes | None) -> list[tuple[str, float]]:
    return _LIST.decode(raw) if raw else []


def _merged(lists: list[list[tuple[str, float]]]) -> list[str]:
    """Co-occurrence lists merged, the first anchor's weighing most."""
    scores: Counter[str] = Counter()
    for rank, found in enumerate(lists):
        for item, score in found:
            scores[item] += score / (rank + 1)
    return [item for item, _ in scores.most_common()]


def _wanted(strategy: str, who: Person) -> Generator[list[Command], list[Any], list[str]]:
    """The strategy's item ids, best first (before any filtering)."""
    if strategy == "recently_viewed":
        return who.viewed
    if strategy == "abandoned_cart":
        return who.cart
    if strategy in ("popular", "trending"):
        (raw,) = (yield [_lists([strategy])])[0]
        return [i for i, _ in _decoded(raw)]
    if strategy in ("viewed_together", "bought_together"):
        prefix = strategy.split("_")[0]
        anchors = who.viewed[:_ANCHORS] if prefix == "viewed" else who.cart or who.viewed[:_ANCHORS]
        if not anchors:
            return []
        (found,) = yield [_lists([f"{prefix}:{a}" for a in anchors])]
        return _merged([_decoded(raw) for raw in found])
    if strategy == "favourite_category":
        if not who.viewed:
            return []
        (seen,) = yield [("HMGET", ITEMS, *who.viewed)]
        categories = [c for raw in seen if raw and (c := ITEM.decode(raw).category)]
        if not categories:
            return []
        favourite = Counter(categories).most_common(1)[0][0]
        (raw,) = (yield [_lists([f"popular:{favourite}"])])[0]
        return [i for i, _ in _decoded(raw)]
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


STRATEGIES = (
    "popular",
    "trending",
    "viewed_together",
    "bought_together",
    "recently_viewed",
    "abandoned_cart",
    "favourite_category",
)
_OWN = ("recently_viewed", "abandoned_cart")  # strategies that show the person's own items


def plan(
    strategy: str,
    who: Person,
    filters: Filters,
    now_ms: int,
    n: int | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> Plan:
    """Up to ``n`` (default ``filters.n``) items by ``strategy``, none of ``exclude``; when it
    has fewer and ``filters.backfill``, the rest from ``popular``."""
    n = n or filters.n
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    skip = who.excluded(filters, now_ms) | set(exclude)
    if strategy != "abandoned_cart":
        skip |= set(who.cart)
    if strategy not in _OWN:
        skip |= set(who.viewed[:1])  # not the very item they are looking at
    chosen: list[Item] = []
    sources = [strategy] + (["popular"] if filters.backfill and strategy != "popular" else [])
    for source in sources:
        wanted = [i for i in dict.fromkeys((yield from _wanted(source, who))) if i not in skip]
        for start in range(0, len(wanted), 4 * n):  # read the catalog a few at a time
            ids = wanted[start : start + 4 * n]
            (found,) = yield [("HMGET", ITEMS, *ids)]
            for item_id, raw in zip(ids, found):
                skip.add(item_id)
                item = ITEM.decode(raw) if raw else None
                if item is None or not filters.admits(item):
                    continue
                chosen.append(msgspec.structs.replace(item, id=item_id))
                if len(chosen) == n:
                    return chosen
    return chosen


def recommend_many(client: redis.Redis, plans: list[Plan]) -> list[list[Item]]:
    """Run ``plans`` on a blocking client, the reads of all of them in one pipeline per step."""
    results: list[list[Item] | None] = [None] * len(plans)
    pending: dict[int, list[Command]] = {}
    for i, p in enumerate(plans):
        _step(p, None, i, pending, results)
    while pending:
        pipe = client.pipeline(transaction=False)
        order = list(pending.items())
        for _, commands in order:
            for command in commands:
                pipe.execute_command(*command)
        replies = iter(pipe.execute())
        pending = {}
        for i, commands in order:
            _step(plans[i], [next(replies) for _ in commands], i, pending, results)
    return [r or [] for r in results]


def _step(
    p: Plan,
    replies: list[Any] | None,
    i: int,
    pending: dict[int, list[Command]],
    results: list[list[Item] | None],
) -> None:
    try:
        pending[i] = p.send(replies) if replies is not None else next(p)
    except StopIteration as done:
        results[i] = done.value


def recommend(
    client: redis.Redis,
    strategy: str,
    who: Person,
    n: int | None = None,
    filters: Filters | None = None,
    now_ms: int | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> list[Item]:
    """Up to ``n`` (default ``filters.n``, 4) items by ``strategy`` for ``who`` (blocking
    client), none of ``exclude``.
    Without ``filters``: no backfill, and what the person bought is not excluded."""
    filters = filters or Filters(exclude_bought_days=0, backfill=False)
    now_ms = now_ms if now_ms is not None else _now_ms()
    return recommend_many(client, [plan(strategy, who, filters, now_ms, n, exclude)])[0]


async def arecommend(command: Callable[..., Awaitable[Any]], p: Plan) -> list[Item]:
    """Run ``p`` with ``command`` (``Coalescer.command``: concurrent plans share pipelines)."""
    try:
        commands = next(p)
        while True:
            replies = await asyncio.gather(*(command(*c) for c in commands))
            commands = p.send(list(replies))
    except StopIteration as done:
        return list(done.value)


def _now_ms() -> int:
    return int(time.time() * 1000)
