"""Items for one person by one strategy: the cached lists (``profiles.strategies``), the person's
own browsing and cart, and the catalog's word on what may be shown.

Strategies:

- ``popular``, ``trending``: the shop-wide lists;
- ``viewed_together``: items viewed with what the person viewed last (the three newest views,
  the newest counting most);
- ``bought_together``: items bought with what is in their cart, else with what they viewed;
- ``recently_viewed``: what they viewed, newest first;
- ``abandoned_cart``: what sits in their cart;
- ``favourite_category``: the most popular items of the category they view most.

Every strategy returns only recommendable catalog items (available, in stock), never what the
person just bought (when ``exclude`` names it), never twice, and outside the cart strategies
never what is already in the cart; ``category`` and a price range narrow it further.

Examples:
    >>> sorted(STRATEGIES)[:3]
    ['abandoned_cart', 'bought_together', 'favourite_category']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from profiles.products import Item, get_items
from profiles.store import profile_keys
from profiles.strategies import candidates

__all__ = ["STRATEGIES", "Person", "person", "recommend"]

_ANCHORS = 3  # the newest views a co-occurrence strategy starts from


@dataclass(frozen=True)
class Person:
    viewed: list[str] = field(default_factory=list)  # newest first
    cart: list[str] = field(default_factory=list)


def person(client: redis.Redis, pid: str) -> Person:
    """What the profile worker keeps of a person's browsing and cart."""
    keys = profile_keys(pid)
    pipe = client.pipeline(transaction=False)
    pipe.lrange(keys[1], 0, -1)
    pipe.hkeys(keys[2])
    viewed, cart = pipe.execute()
    return Person([v.decode() for v in viewed], sorted(c.decode() for c in cart))


def _merged(client: redis.Redis, prefix: str, anchors: list[str]) -> list[str]:
    """The anchors' co-occurrence lists merged, the first anchor weighing most."""
    lists = candidates(client, [f"{prefix}:{a}" for a in anchors])
    scores: Counter[str] = Counter()
    for rank, anchor in enumerate(anchors):
        for item, score in lists[f"{prefix}:{anchor}"]:
            scores[item] += score / (rank + 1)
    return [item for item, _ in scores.most_common()]


def _shop(name: str) -> Callable[[redis.Redis, Person], list[str]]:
    return lambda client, who: [i for i, _ in candidates(client, [name])[name]]


def _favourite(client: redis.Redis, who: Person) -> list[str]:
    seen = [i for i in get_items(client, who.viewed) if i is not None and i.category]
    if not seen:
        return []
    category = Counter(i.category for i in seen).most_common(1)[0][0]
    return _shop(f"popular:{category}")(client, who)


STRATEGIES: dict[str, Callable[[redis.Redis, Person], list[str]]] = {
    "popular": _shop("popular"),
    "trending": _shop("trending"),
    "viewed_together": lambda client, who: _merged(client, "viewed", who.viewed[:_ANCHORS]),
    "bought_together": lambda client, who: _merged(
        client, "bought", who.cart or who.viewed[:_ANCHORS]
    ),
    "recently_viewed": lambda client, who: who.viewed,
    "abandoned_cart": lambda client, who: who.cart,
    "favourite_category": _favourite,
}
_OWN = ("recently_viewed", "abandoned_cart")  # strategies that show the person's own items


def recommend(
    client: redis.Redis,
    strategy: str,
    who: Person,
    n: int = 4,
    exclude: set[str] | None = None,
    category: str | None = None,
    price: tuple[float | None, float | None] = (None, None),
) -> list[Item]:
    """Up to ``n`` items by ``strategy`` (fewer when the strategy has no more to offer)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    skip = set(exclude or ())
    if strategy != "abandoned_cart":
        skip |= set(who.cart)
    if strategy not in _OWN:
        skip |= set(who.viewed[:1])  # not the very item they are looking at
    wanted = [i for i in dict.fromkeys(STRATEGIES[strategy](client, who)) if i not in skip]
    low, high = price
    chosen: list[Item] = []
    for start in range(0, len(wanted), 4 * n):  # read the catalog a few at a time
        for item in get_items(client, wanted[start : start + 4 * n]):
            if item is None or not item.recommendable():
                continue
            if category is not None and item.category != category:
                continue
            if item.price is not None and not (
                (low is None or item.price >= low) and (high is None or item.price <= high)
            ):
                continue
            chosen.append(item)
            if len(chosen) == n:
                return chosen
    return chosen
