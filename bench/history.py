"""History benchmark: what the product asks of the events table at 100 million events.

Loads ``--events`` synthetic events (default 100,000,000) for ``--people`` people (default
1,000,000) over ``--days`` days into the engine's own ``events`` table (the real schema,
migrated as the sink does), and ``--decisions`` decisions of one two-variant placement, all
generated inside ClickHouse (``numbers()``, hashes of the row number: the same data every run),
not through the API. Then times, with the product's own SQL and read path (a read-only client,
as every reader of the store has):

1. history        one person's history page (GET /v1/profiles/{id}/events: the newest 50), for
                  ``--people-sampled`` people: p50 and p99; target p99 <= 50 ms. Timed from
                  ``events_by_person`` as the product reads it, and as it read before that
                  table (migration 4), from ``events``, in turns, after a warm-up on other
                  people;
2. backfill       a segment's "event X at least N times in D days" backfill (the profile
                  updater's history query: Order Completed in 30 days);
3. results        an experiment's sufficient statistics (GET /v1/placements/{key}/results on
                  Order Completed); target <= 2 s;
4. lists          each recommendation list (popular, popular by category, trending, viewed
                  together, bought together) over 30 days;
5. ltv            the lifetime-value refit's RFM query over every buyer;
6. dry run        a journey's dry run over 7 days (the events it replays, and the replay);
7. sink inserts   what the person copy's view costs the sink: batches of 20,000 events through
                  the intake with the view and with it detached, in turns.

Reports the table's disk size and bytes per event, and whether each target held. Each query
runs ``--repeat`` times (median shown); a query that fails fails the run (exit 1).

    python bench/history.py                      # 100M events: about 16 minutes to load here
    python bench/history.py --events 10000000 --people 100000    # a quicker look
    python bench/history.py --reuse              # time again on the data of the last run

Writes bench/reports/history.md.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import machine, publish  # noqa: E402
from collector import connect, embedded_url, migrate  # noqa: E402
from collector.schema import INTAKE_SETTINGS, drop_tables  # noqa: E402
from collector.store import LocalStore, sql_time  # noqa: E402
from decisions.placements import Placement  # noqa: E402
from decisions.results import placement_results  # noqa: E402
from edge.cli.progress import Progress  # noqa: E402
from edge.routes.profiles import HISTORY_PAGE  # noqa: E402
from edge.runtime.workers import HISTORY_COUNTS  # noqa: E402
from journeys.dryrun import simulate  # noqa: E402
from journeys.spec import Journey  # noqa: E402
from profiles.strategies import LISTS  # noqa: E402
from profiles.valuation import RFM  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "history.md"
CHUNK = 5_000_000  # rows per INSERT … SELECT
PRODUCTS, CATEGORIES = 5_000, 50

# One synthetic event per row number n, every field a function of n (fixed data, no seed to
# keep): the person, the kind of event, the time within the window, the product.
_EVENTS = """
INSERT INTO events (message_id, type, event, name, timestamp, original_timestamp, received_at,
                    anonymous_id, user_id, profile_id, page_url, page_path, user_agent, ip,
                    library_name, library_version, channel, properties, context)
SELECT concat('m', toString(n)) AS message_id,
       multiIf(kind < 70, 'track', kind < 95, 'page', 'identify') AS type,
       if(type = 'track', multiIf(what < 55, 'Product Viewed', what < 75, 'Product Added',
          what < 80, 'Order Completed', what < 88, 'Decision Clicked',
          what < 94, 'Journey Entered', 'Signed Up'), '') AS event,
       if(type = 'page', 'Product', '') AS name,
       fromUnixTimestamp64Milli(
           toInt64({end_ms:Int64} - intDiv(cityHash64(n, 3), 7) % {span_ms:Int64}), 'UTC'
       ) AS timestamp,
       timestamp AS original_timestamp, timestamp AS received_at,
       concat('a', toString(person)) AS anonymous_id,
       if(person % 5 < 2, concat('u', toString(person)), '') AS user_id,
       concat('p', toString(person)) AS profile_id,
       if(type = 'page', concat('https://shop.example/p/', toString(product)), '') AS page_url,
       if(type = 'page', concat('/p/', toString(product)), '') AS page_path,
       'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36'
           AS user_agent,
       concat('10.', toString(person % 250), '.', toString(intDiv(person, 250) % 250), '.0') AS ip,
       'kairos.js' AS library_name, '1.4.0' AS library_version, 'web' AS channel,
       multiIf(
           event IN ('Product Viewed', 'Product Added'),
           concat('{"product_id":"sku-', toString(product), '","category":"c',
                  toString(product % {categories:UInt32}), '","price":',
                  toString(5 + product % 95), '}'),
           event = 'Order Completed',
           concat('{"revenue":', toString(10 + cityHash64(n, 5) % 190),
                  ',"products":[{"product_id":"sku-', toString(product),
                  '","category":"c', toString(product % {categories:UInt32}),
                  '"},{"product_id":"sku-', toString((product * 7 + 1) % {products:UInt32}),
                  '","category":"c', toString((product * 7 + 1) % {categories:UInt32}), '"}]}'),
           event = 'Decision Clicked',
           concat('{"placement":"home_hero","decision_id":"d', toString(n), '"}'),
           event = 'Journey Entered',
           concat('{"journey":"winback","profile_id":"p', toString(person), '","step":"start"}'),
           '{}') AS properties,
       '{"library":{"name":"kairos.js","version":"1.4.0"},"locale":"en-US"}' AS context
FROM (
    SELECT number AS n, cityHash64(n, 1) % 100 AS kind, cityHash64(n, 2) % 100 AS what,
           cityHash64(n, 4) % {people:UInt32} AS person,
           (cityHash64(n, 6) % 1000) * (cityHash64(n, 6) % 1000) % {products:UInt32} AS product
    FROM numbers({start:UInt64}, {count:UInt64})
)
"""

# Decisions of one placement: each unit (a person's anonymous id) sees one of two variants.
_DECISIONS = """
INSERT INTO decisions (decisionId, timestamp, placement, variant, arm, policy, policyRevision,
                       propensity, profileId, anonymousId, userId, features, items, context,
                       fallback)
SELECT concat('d', toString(number)), fromUnixTimestamp64Milli(
           toInt64({end_ms:Int64} - intDiv(cityHash64(number, 8), 7) % {span_ms:Int64}), 'UTC'),
       'home_hero', if(person % 2 = 0, 'classic', 'bold'), person % 2, 'ab', 1, 0.5,
       concat('p', toString(person)), concat('a', toString(person)), '', [], [], '{}', ''
FROM (SELECT number, cityHash64(number, 9) % {people:UInt32} AS person
      FROM numbers({count:UInt64}))
"""

# An abandoned-cart journey: entered on Product Added, left on Order Completed, its goal.
_JOURNEY = {
    "trigger": {"kind": "event", "event": "Product Added"},
    "start": "wait",
    "steps": {
        "wait": {"type": "wait", "duration": "1d", "next": "remind"},
        "remind": {"type": "webhook", "url": "http://127.0.0.1:9/remind", "next": "end"},
        "end": {"type": "end"},
    },
    "exit": [{"event": "Order Completed"}],
    "goal": "Order Completed",
}

_SIZE = """
SELECT sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts
WHERE active AND database = currentDatabase() AND table = {table:String}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000_000)
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--decisions", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument(
        "--people-sampled",
        type=int,
        default=200,
        metavar="N",
        help="people whose history page is timed (default %(default)s)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each other query")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/kairos-history-bench"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the data already in --data-dir (a previous run's)",
    )
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 200,000 events in a temp dir, each query once",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.quick:
        args.events, args.people, args.decisions = 200_000, 2_000, 20_000
        args.people_sampled, args.repeat, args.reuse = 20, 1, False
        args.data_dir = Path(tempfile.mkdtemp(prefix="kairos-history-"))
        atexit.register(shutil.rmtree, args.data_dir, ignore_errors=True)

    url = embedded_url(args.data_dir)
    client = connect(url)
    end = datetime(2026, 11, 30, tzinfo=UTC)
    span = timedelta(days=args.days)
    if not args.reuse:
        drop_tables(client)
        migrate(client)
        load(client, args, end, span)
    store = LocalStore(url)
    rows, disk, raw = client.query(_SIZE, parameters={"table": "events"}).result_rows[0]
    _, copy_disk, _ = client.query(_SIZE, parameters={"table": "events_by_person"}).result_rows[0]
    timings: dict[str, list[float]] = {}
    failures: list[str] = []

    def timed(name: str, run: Any, times: int) -> Any:
        answer = None
        for _ in range(times):
            started = time.perf_counter()
            try:
                answer = run()
            except Exception as exc:  # a failed query fails the run, after the rest
                failure = f"{name}: {str(exc).splitlines()[0][:300]}"
                if failure not in failures:
                    failures.append(failure)
                return None
            timings.setdefault(name, []).append(time.perf_counter() - started)
        return answer

    people = [f"p{(n * 7_919) % args.people}" for n in range(args.people_sampled)]
    # The page as it read before migration 4 (from ``events``, by its bloom filter), and as the
    # product reads it (from ``events_by_person``), person by person in turns, after a warm-up
    # on other people (a live engine's indexes are in memory; these people's rows are not).
    before = HISTORY_PAGE.replace("FROM events_by_person", "FROM events")
    pages = [(before, "history, from events"), (HISTORY_PAGE, "history")]
    for n in range(20):
        for sql, _ in pages:
            store.query_sync(
                sql,
                {
                    "profiles": [f"p{(n * 104_729 + 1) % args.people}"],
                    "anonymous": [],
                    "users": [],
                    "limit": 50,
                },
                limited=False,
            )
    bar = Progress(len(people), "history pages")
    for turn, pid in enumerate(people):
        for sql, label in pages if turn % 2 else pages[::-1]:
            timed(label, lambda pid=pid, sql=sql: store.query_sync(
                sql, {"profiles": [pid], "anonymous": [], "users": [], "limit": 50},
                limited=False,
            ), 1)  # fmt: skip
        bar.advance()
    now = sql_time(end)
    month = sql_time(end - timedelta(days=30))
    timed("backfill", lambda: store.query_sync(
        HISTORY_COUNTS, {"event": "Order Completed", "days": 30}, limited=False),
        args.repeat)  # fmt: skip
    placement = msgspec.convert({"variants": [{"key": "classic"}, {"key": "bold"}]}, Placement)
    results = timed("results", lambda: asyncio.run(placement_results(
        store, "home_hero", placement, metric="Order Completed", since=end - span,
        until=end)), args.repeat)  # fmt: skip
    for name, sql in LISTS.items():
        params = {"since": month, "now": now, "half_life": 7 * 86_400.0, "top": 100,
                  "per_list": 20, "min_support": 3}  # fmt: skip
        timed(f"list {name}", lambda sql=sql, params=params: store.query_sync(
            sql, params, limited=False), args.repeat)  # fmt: skip
    timed("ltv", lambda: store.query_sync(RFM, {"now": now}, limited=False), args.repeat)
    journey = msgspec.convert(_JOURNEY, Journey)
    report = timed("dry run", lambda: simulate(
        store, None, "winback", journey, end - timedelta(days=7), end), args.repeat)  # fmt: skip

    sink = sink_cost(url, rounds=2 if args.quick else 4)
    lines = report_lines(args, rows, disk, raw, copy_disk, timings, results, report)
    lines += ["", "The sink's inserts (20,000 events a batch through the intake, as the sink sends "
              "them), with the person copy's view and with it detached, in turns: "
              + ", ".join(f"{a:,.0f} vs {b:,.0f} events/s ({a / b:.2f}×)" for a, b in sink)
              + "."]  # fmt: skip
    lines.append("")
    for name, limit, how in [("history", 0.050, "p99"), ("results", 2.0, "median")]:
        if name in timings:
            value = percentile(timings[name], 99) if how == "p99" else median(timings[name])
            verdict = "met" if value <= limit else "**missed**"
            lines.append(f"- Target {name} {how} <= {limit * 1000:,.0f} ms: {verdict} "
                         f"({value * 1000:,.0f} ms).")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    lines += ["", f"Peak memory of this process (the embedded engine and Python): {peak:.1f} GiB."]
    lines += ["", "**FAILED**: " + "; ".join(failures) if failures else "**PASS**: every query "
              "answered.", "", f"Machine: {machine()}."]  # fmt: skip
    publish(args.report, lines)
    if failures:
        print("FAILED: " + "; ".join(failures), flush=True)
        return 1
    return 0


def load(client: Any, args: argparse.Namespace, end: datetime, span: timedelta) -> None:
    """The synthetic events and decisions, in chunks, with a progress bar."""
    common = {"end_ms": int(end.timestamp() * 1000), "span_ms": int(span.total_seconds() * 1000),
              "people": args.people, "products": PRODUCTS, "categories": CATEGORIES}  # fmt: skip
    bar = Progress(args.events, "events")
    started = time.perf_counter()
    for start in range(0, args.events, CHUNK):
        count = min(CHUNK, args.events - start)
        client.command(_EVENTS, parameters={**common, "start": start, "count": count},
                       settings={"max_insert_threads": 2})  # fmt: skip
        bar.advance(count)
    loaded = time.perf_counter() - started
    print(f"loaded {args.events:,} events in {loaded:,.0f} s "
          f"({args.events / loaded:,.0f}/s)", flush=True)  # fmt: skip
    client.command(_DECISIONS, parameters={**common, "count": args.decisions})
    print(f"loaded {args.decisions:,} decisions", flush=True)
    settle(client)


def settle(client: Any, quiet: float = 10.0, limit: float = 1_200.0) -> None:
    """Wait for the background merges the load started to finish (a table that has been live
    for a while, not one just bulk-loaded), ``limit`` seconds at most."""
    started = time.monotonic()
    calm_since = None
    while time.monotonic() - started < limit:
        merging = client.command("SELECT count() FROM system.merges")
        if merging:
            calm_since = None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            break
        time.sleep(1)
    parts = client.query("SELECT table, count() FROM system.parts WHERE active "
                         "AND database = currentDatabase() GROUP BY table").result_rows  # fmt: skip
    print(
        f"merges settled after {time.monotonic() - started:,.0f} s; active parts: "
        + ", ".join(f"{table} {n}" for table, n in sorted(parts)),
        flush=True,
    )


def sink_cost(url: str, rounds: int) -> list[tuple[float, float]]:
    """Events/s the sink's inserts reach with ``events_by_person``'s view and without it, in a
    database of its own in the same engine: (with, without) per round."""
    import clickhouse_connect

    connect(url).command("DROP DATABASE IF EXISTS sink_cost SYNC")
    connect(url).command("CREATE DATABASE sink_cost")
    client = clickhouse_connect.get_client(dsn=url, database="sink_cost")
    migrate(client)
    body = b"".join(msgspec.json.encode({
        "type": "track", "messageId": f"MID{n}", "event": "Product Viewed",
        "anonymousId": f"a{n % 5_000}", "profileId": f"p{n % 5_000}",
        "receivedAt": "2026-11-20 10:00:00.000",
        "properties": {"product_id": f"sku-{n % 500}", "category": f"c{n % 50}", "price": 12.5},
        "context": {"ip": "10.1.2.0", "userAgent": "Mozilla/5.0",
                    "library": {"name": "kairos.js", "version": "1.4.0"}},
    }) + b"\n" for n in range(20_000)).decode()  # fmt: skip

    def insert(label: str) -> float:
        started = time.perf_counter()
        client.raw_insert("events_intake", None, body.replace("MID", f"{label}-"),
                          settings={**INTAKE_SETTINGS, "insert_deduplication_token": label},
                          fmt="JSONEachRow")  # fmt: skip
        return time.perf_counter() - started

    insert("warm-up")
    found = []
    for n in range(rounds):  # batch by batch in turns: background merges weigh on both alike
        spent = {True: 0.0, False: 0.0}
        for k in range(10):
            for copy in (True, False) if k % 2 else (False, True):
                if not copy:
                    client.command("DETACH TABLE events_by_person_mv")
                try:
                    spent[copy] += insert(f"{n}-{k}-{copy}")
                finally:
                    if not copy:
                        client.command("ATTACH TABLE events_by_person_mv")
        found.append((10 * 20_000 / spent[True], 10 * 20_000 / spent[False]))
    client.command("DROP DATABASE sink_cost SYNC")
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def report_lines(
    args: argparse.Namespace,
    rows: int,
    disk: int,
    raw: int,
    copy_disk: int,
    timings: dict[str, list[float]],
    results: Any,
    report: Any,
) -> list[str]:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"

    lines = [
        "# History at scale",
        "",
        f"{rows:,} events for {args.people:,} people over {args.days} days, "
        f"{args.decisions:,} decisions (`python bench/history.py"
        + (f" --events {args.events}" if args.events != 100_000_000 else "")
        + (f" --people {args.people}" if args.people != 1_000_000 else "")
        + "`), "
        "embedded ClickHouse (chdb), the product's own queries through its read path.",
        "",
        f"Events table: **{disk / 2**30:,.2f} GiB** on disk ({raw / 2**30:,.1f} GiB "
        f"uncompressed), **{disk / max(rows, 1):,.1f} bytes per event**; its copy ordered by "
        f"person (`events_by_person`, for history pages) {copy_disk / 2**30:,.2f} GiB, "
        f"{copy_disk / max(rows, 1):,.1f} bytes per event: "
        f"**{(disk + copy_disk) / max(rows, 1):,.1f} bytes per event** in all.",
        "",
        "| query | median | p99 | runs |",
        "|---|---:|---:|---:|",
    ]
    for name, values in timings.items():
        lines.append(f"| {name} | {ms(median(values))} | {ms(percentile(values, 99))} | "
                     f"{len(values)} |")  # fmt: skip
    if results is not None:
        units = sum(v["units"] for v in results["variants"])
        lines += ["", f"The experiment's results covered {units:,} units."]
    if report is not None:
        lines += [f"The dry run replayed 7 days: {report.people:,} people would have entered."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
