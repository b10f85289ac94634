"""Recommendation quality offline: leave each shopper's last order out, recommend from before it.

On simulated shoppers (``profiles.shoppers``, fixed dates ending 2026-09-01):

1. split      per shopper (their ``anonymousId``, which the simulator keeps after login), the
              last ``Order Completed`` is held out, with everything that shopper did from the
              start of the session that holds it (a session ends after 30 minutes of silence),
              so the views and cart of the buying session do not give the answer away. A
              shopper is evaluated when something is known of them before that session (a
              viewed product or a cart item); everyone else's events all stay, later ones too:
              the lists are computed once, as of the end of the period;
2. train      the remaining events go through the spool into embedded ClickHouse (the sink)
              and the catalog (the recommendations worker), and the candidate lists are
              computed once (``profiles.strategies.refresh``, its settings, except that the
              window covers the whole period);
3. score      per evaluated shopper, ``Person`` is what the profile worker would hold before the
              held-out session (viewed products newest first, at most ``VIEWED_MAX``; the cart
              as adds, removals and orders left it), every strategy recommends ``k`` items (no
              filters: nothing excluded, no backfill from ``popular``), and the held-out
              order's products are the relevant ones:
              hit rate@k (any of them in the top k), NDCG@k (binary gain, ideal DCG over
              min(k, products in the order)) and coverage (share of shoppers given ≥ 1 item).

Prints a table per k and writes bench/reports/recs_quality.md; lift is hit rate / popular's.

No HTTP and no engine (the strategies are called in process), so no answers to count and no
limits to set.

    python bench/recs_quality.py --shoppers 3000 --days 60 --seed 7 --k 4 10
    python bench/recs_quality.py --quick
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from edge.runtime.stores import redis_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import add_options, parse, publish  # noqa: E402
from bench.profiles import fill  # noqa: E402
from collector import Sink, SpoolReader, connect, embedded_url, migrate  # noqa: E402
from collector.reader import ensure_group  # noqa: E402
from collector.store import open_store  # noqa: E402
from edge.cli.progress import Progress  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from profiles.recommend import STRATEGIES, Person, recommend  # noqa: E402
from profiles.recommender import Recommender  # noqa: E402
from profiles.shoppers import ShopperStream  # noqa: E402
from profiles.store import SESSION_GAP_MS, VIEWED_MAX  # noqa: E402
from profiles.strategies import Settings, refresh  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "recs_quality.md"
END = datetime(2026, 9, 1, tzinfo=UTC)  # fixed: same-day co-views follow the calendar
_GAP = timedelta(milliseconds=SESSION_GAP_MS)
QUICK = {"shoppers": 300, "days": 10.0, "k": [4]}


@dataclass(frozen=True)
class Case:
    """One evaluated shopper: what is known of them, and what they bought next."""

    user: str
    who: Person
    bought: frozenset[str]


@dataclass(frozen=True)
class Scores:
    """Sums over the evaluated shoppers of one strategy at one k; means as properties."""

    users: int = 0
    hits: int = 0
    dcg: float = 0.0  # sum of NDCG@k
    covered: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.users if self.users else 0.0

    @property
    def ndcg(self) -> float:
        return self.dcg / self.users if self.users else 0.0

    @property
    def coverage(self) -> float:
        return self.covered / self.users if self.users else 0.0

    @property
    def margin(self) -> float:
        """Half-width of the hit rate's 95% interval (normal approximation)."""
        p = self.hit_rate
        return 1.96 * math.sqrt(p * (1 - p) / self.users) if self.users else 0.0


@dataclass
class Evaluation:
    events: int
    training: int
    cases: list[Case]
    scores: dict[int, dict[str, Scores]] = field(default_factory=dict)  # k -> strategy -> scores


def _time(message: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(message["timestamp"])


def _person(history: list[dict[str, Any]]) -> Person:
    """Viewed products and cart after ``history``, as the profile worker keeps them."""
    viewed: list[str] = []
    cart: dict[str, None] = {}
    for message in history:
        event, properties = message.get("event"), message.get("properties", {})
        if event == "Product Viewed":
            item = properties["product_id"]
            viewed = [item, *(v for v in viewed if v != item)]
        elif event == "Product Added":
            cart[properties["product_id"]] = None
        elif event == "Product Removed":
            cart.pop(properties["product_id"], None)
        elif event == "Order Completed":
            cart.clear()
    return Person(viewed[:VIEWED_MAX], sorted(cart))


def split(messages: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Case]]:
    """The training messages (time order kept) and the evaluated shoppers."""
    messages = list(messages)
    by_user: dict[str, list[int]] = {}
    for n, message in enumerate(messages):
        by_user.setdefault(message["anonymousId"], []).append(n)
    dropped: set[int] = set()
    cases = []
    for user, mine in by_user.items():
        orders = [i for i, n in enumerate(mine) if messages[n].get("event") == "Order Completed"]
        if not orders:
            continue
        start = orders[-1]
        while start > 0 and _time(messages[mine[start]]) - _time(messages[mine[start - 1]]) < _GAP:
            start -= 1
        who = _person([messages[n] for n in mine[:start]])
        products = messages[mine[orders[-1]]]["properties"].get("products", [])
        bought = frozenset(p["product_id"] for p in products)
        if not bought or not (who.viewed or who.cart):
            continue  # nothing to find, or nothing known before: not evaluated, all kept
        cases.append(Case(user, who, bought))
        dropped.update(mine[start:])
    return [m for n, m in enumerate(messages) if n not in dropped], cases


def train(
    messages: list[dict[str, Any]], redis_url: str, store_url: str, settings: Settings
) -> None:
    """``messages`` into ClickHouse and the catalog through the spool, then the lists as of END."""
    client = redis_client(redis_url)
    fill(redis_url, messages)
    migrate(connect(store_url))
    for group in ("sink", "recs"):
        ensure_group(client, group)
    sink = Sink(SpoolReader(client, "sink", "bench"), connect(store_url), profiles_group=None)
    stop, bar = threading.Event(), Progress(len(messages), "events into ClickHouse")
    while entries := sink.reader.read(200, 10):
        sink.store_batch(entries, stop)
        sink.reader.ack(entries, {})
        bar.advance(sum(e.count for e in entries))
    catalog = Recommender(SpoolReader(client, "recs", "bench"), client, store=None)
    while entries := catalog.reader.read(200, 10):
        catalog.reader.ack(entries, catalog.process(entries))
    refresh(open_store(store_url), client, settings, END)
    client.close()


def _ndcg(found: list[str], relevant: frozenset[str], k: int) -> float:
    dcg = sum(1 / math.log2(rank + 2) for rank, item in enumerate(found[:k]) if item in relevant)
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def score(client: redis.Redis, cases: list[Case], k: int) -> dict[str, Scores]:
    """Every strategy's scores at ``k`` over ``cases``."""
    results = {}
    bar = Progress(len(cases) * len(STRATEGIES), f"recommendations @{k}")
    for strategy in STRATEGIES:
        hits, dcg, covered = 0, 0.0, 0
        for case in cases:
            found = [item.id or "" for item in recommend(client, strategy, case.who, n=k)]
            hits += any(item in case.bought for item in found[:k])
            dcg += _ndcg(found, case.bought, k)
            covered += bool(found)
            bar.advance()
        results[strategy] = Scores(len(cases), hits, dcg, covered)
    return results


def evaluate(
    redis_url: str,
    store_url: str,
    shoppers: int = 3_000,
    days: float = 60.0,
    seed: int = 7,
    ks: Iterable[int] = (4,),
    settings: Settings | None = None,
) -> Evaluation:
    """Simulate, hold out, train on an empty Redis and ClickHouse, and score at each k."""
    stream = ShopperStream(shoppers, days, seed=seed, start=END - timedelta(days=days))
    messages = list(stream.messages())
    training, cases = split(messages)
    settings = settings or Settings(days=math.ceil(days))
    train(training, redis_url, store_url, settings)
    result = Evaluation(len(messages), len(training), cases)
    client = redis_client(redis_url)
    for k in ks:
        result.scores[k] = score(client, cases, k)
    client.close()
    return result


def table(scores: dict[str, Scores], k: int) -> list[str]:
    base = scores["popular"].hit_rate
    lines = [
        f"| strategy | users | hit@{k} | ndcg@{k} | coverage | lift vs popular |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in sorted(scores.items(), key=lambda kv: -kv[1].hit_rate):
        lift = f"{s.hit_rate / base:.2f}" if base else "–"
        lines.append(f"| {name} | {s.users:,} | {s.hit_rate:.3f} ± {s.margin:.3f} | "
                     f"{s.ndcg:.3f} | {s.coverage:.2f} | {lift} |")  # fmt: skip
    return lines


def reading(scores: dict[str, Scores], k: int) -> str:
    """The table in words: the numbers from ``scores``, the why from the simulator's design."""
    popular, category = scores["popular"].hit_rate, scores["favourite_category"].hit_rate
    learned = [scores[name].hit_rate for name in ("viewed_together", "bought_together")]
    verdict = "beat" if min(learned) > popular else "do not both beat"
    lifts = " and ".join(f"{h / popular:.1f}×" if popular else "–" for h in learned)
    return (
        f"At k = {k} the co-occurrence strategies (viewed_together, bought_together: "
        f"{learned[0]:.3f}, {learned[1]:.3f}) {verdict} popularity ({popular:.3f}; lifts "
        f"{lifts}); favourite_category reaches {category:.3f}. Simulated shoppers browse and "
        "buy mostly in one favourite category (70% of views) and pick products uniformly "
        "within it (cheaper ones added more often), so there is no item-to-item affinity to "
        'find beyond the category: co-occurrence lists mostly learn "same category", which the '
        "category's own popular items also capture. abandoned_cart "
        f"({scores['abandoned_cart'].hit_rate:.3f}) is high because a simulated cart survives "
        "sessions until an order: many held-out orders contain what was already in the cart, "
        "which every other strategy is barred from showing. trending (the last day against "
        "the week before) has nothing to find on a simulator whose tastes do not change."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shoppers", type=int, default=3_000, help="default %(default)s")
    parser.add_argument("--days", type=float, default=60.0, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=7, help="default %(default)s")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 10], help="default 4 10")
    parser.add_argument("--min-support", type=int, default=Settings().min_support,
                        help="co-occurrence pairs seen fewer times are dropped (default "
                        "%(default)s)")  # fmt: skip
    add_options(parser, REPORT, engine=False)
    args = parse(parser, QUICK, argv)
    settings = Settings(days=math.ceil(args.days), min_support=args.min_support)
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-recs-"))
    server = EmbeddedRedis(work / "redis-home")
    try:
        result = evaluate(server.start(), embedded_url(work), args.shoppers, args.days,
                          args.seed, args.k, settings)  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    cases = result.cases
    products = sum(len(c.bought) for c in cases)
    carried = sum(len(c.bought & set(c.who.cart)) for c in cases)
    lines = [
        f"# Recommendation quality offline, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.shoppers:,} simulated shoppers over {args.days:g} days (seed {args.seed}): "
        f"{result.events:,} events, {result.training:,} kept for training; {len(cases):,} "
        f"shoppers evaluated on their held-out last order ({products / max(len(cases), 1):.2f} "
        f"products on average, {carried / max(products, 1):.0%} of them already in the cart "
        f"before the buying session). Lists as of {END:%Y-%m-%d}, window {settings.days} days, "
        f"min support {settings.min_support}; no backfill, nothing excluded. Hit rate ± its 95% "
        "interval; lift is hit rate / popular's.",
    ]
    for k, scores in result.scores.items():
        lines += ["", f"## k = {k}", "", *table(scores, k)]
    first = min(result.scores)
    lines += ["", "## Reading", "", reading(result.scores[first], first)]
    publish(args.report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
