"""Journeys benchmark: trigger evaluation with 100 active journeys, and timer lateness.

In one run, on a private Redis, with ``--journeys`` journeys (default 100: each triggered by
Product Viewed or Product Added in one of a thousand collections — about one event in twenty
enters one —, exited by an order, waiting, then emitting an event) and shopper-like events
resolved by the profile updater first:

1. naive     what a first attempt looks like: definitions cached, but per event one round trip
             to read the person's runs, every journey's trigger tested, one round trip to write
             the runs it entered;
2. worker    the journeys worker on the same spool: per batch, runs read in one pipeline,
             journeys indexed by trigger event, profiles read only for who may enter, runs,
             timers and actions written in two pipelines;
3. lateness  the worker running as in production (its spool loop, with the profile updater
             beside it) while events arrive at ``--rate`` per second for ``--seconds``, the
             journeys' waits now 2 s: how long after its due time each timer was woken.

Prints a table and writes bench/reports/journeys.md. No phase goes through the HTTP API (the
passes call the worker in process), so there are no answers to count and no rate limits to set.

    python bench/journeys.py --events 50000 --rate 2000 --seconds 20
    python bench/journeys.py --quick
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import redis

from edge.runtime.stores import redis_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import add_options, machine, parse, publish  # noqa: E402
from bench.profiles import fill, run_updater  # noqa: E402
from collector import SpoolReader, wire  # noqa: E402
from collector.reader import ensure_group, profile_ids  # noqa: E402
from edge.cli.progress import Progress  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from journeys.runs import RUN, Person, enter, triggers  # noqa: E402
from journeys.spec import JOURNEY, Journey  # noqa: E402
from journeys.store import put_journey, runs_key  # noqa: E402
from journeys.worker import JourneyWorker  # noqa: E402
from profiles import LeadScoring, ProfileStore, ProfileUpdater  # noqa: E402
from profiles.computed import event_name  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "journeys.md"
QUICK = {"events": 2_000, "people": 200, "journeys": 10, "rate": 200, "seconds": 2}


def definitions(count: int, wait: str) -> dict[str, Journey]:
    found = {}
    for i in range(count):
        body = {
            "trigger": {"kind": "event", "event": ("Product Viewed", "Product Added")[i % 2],
                        "where": {"collection": f"k{i}"}},
            "entry": {"reentry": "days", "reentry_days": 1},
            "exit": [{"event": "Order Completed"}],
            "start": "wait",
            "steps": {"wait": {"type": "wait", "duration": wait, "next": "say"},
                      "say": {"type": "emit", "event": f"Journey {i} Nudge", "next": "end"},
                      "end": {"type": "end"}},
        }  # fmt: skip
        found[f"j{i:03d}"] = JOURNEY.decode(msgspec.json.encode(body))
    return found


def traffic(events: int, people: int, seed: int = 7, prefix: str = "") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    messages = []
    for n in range(events):
        roll = rng.random()
        name = "Product Viewed" if roll < 0.75 else "Product Added" if roll < 0.97 else (
            "Order Completed")  # fmt: skip
        product = rng.randrange(5_000)
        properties = {"product_id": f"sku-{product}", "collection": f"k{product % 1_000}"}
        messages.append({"type": "track", "event": name, "properties": properties,
                         "anonymousId": f"{prefix}a{rng.randrange(people)}",
                         "messageId": f"{prefix}m{n}"})  # fmt: skip
    return messages


def naive(client: redis.Redis, journeys: dict[str, Journey], total: int) -> float:
    """Events/s of the first attempt (see the module's docstring)."""
    ensure_group(client, "naive")
    reader = SpoolReader(client, "naive", "bench")
    bar = Progress(total, "naive")
    started, done = time.perf_counter(), 0
    while entries := reader.read(100, 10):
        pids = profile_ids(client, entries)
        for entry in entries:
            for msg, pid in zip(entry.messages(), pids.get(entry.ref, [])):
                name = event_name(msg) or ""
                properties = wire.as_dict(msg.properties)
                runs = {k.decode(): RUN.decode(v) for k, v in client.hgetall(runs_key(pid)).items()}
                person = Person(pid)
                entered = {}
                for key, journey in journeys.items():
                    if triggers(journey, name, properties, person) and key not in runs:
                        entered[key] = msgspec.json.encode(enter(key, pid, 1, 0, journey.start))
                if entered:
                    client.hset(runs_key(pid), mapping=entered)
                done += 1
        reader.ack(entries, {})
        bar.advance(sum(e.count for e in entries))
    return done / (time.perf_counter() - started)


def worker_rate(client: redis.Redis, total: int) -> float:
    ensure_group(client, "journeys")
    worker = JourneyWorker(SpoolReader(client, "journeys", "bench"), client)
    bar = Progress(total, "journeys worker")
    started, done = time.perf_counter(), 0
    while done < total and (entries := worker.reader.read(100, 10)):
        worker.reader.ack(entries, worker.process(entries))
        count = sum(e.count for e in entries)
        done += count
        bar.advance(count)
    # (What it appended itself, "Journey Entered", comes after: the profile updater, not
    # running in this phase, has yet to resolve it.)
    return done / (time.perf_counter() - started)


def lateness(url: str, journeys: int, rate: int, seconds: int, people: int) -> dict[str, float]:
    """Timer lateness (ms) with the worker, the profile updater and a steady stream of events."""
    client = redis_client(url)
    for key, journey in definitions(journeys, "2s").items():
        put_journey(client, key, journey)
    stop = threading.Event()
    # The consumers of the phases before (their leases are still theirs: the same names take
    # the partitions at once, where others would stand by until those leases lapse).
    updater = ProfileUpdater(SpoolReader(client, "profiles", "bench"),
                             ProfileStore(client), LeadScoring())  # fmt: skip
    worker = JourneyWorker(SpoolReader(client, "journeys", "bench"),
                           redis_client(url), interval=0.05)  # fmt: skip
    threads = [threading.Thread(target=updater.run, args=(stop,), daemon=True),
               threading.Thread(target=worker.run, args=(stop,), daemon=True)]  # fmt: skip
    for thread in threads:
        thread.start()
    bar = Progress(seconds, f"live: {rate:,} events/s")
    for second in range(seconds):
        tick = time.monotonic()
        fill(url, traffic(rate, people, seed=100 + second, prefix=f"live{second}-"))
        bar.advance()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    time.sleep(4)  # the last waits fall due
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    late = sorted(worker.lateness)
    if not late:
        return {"timers": 0}
    return {"timers": len(late), "p50": statistics.median(late),
            "p99": late[int(len(late) * 0.99) - 1], "max": late[-1]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000, help="default %(default)s")
    parser.add_argument("--people", type=int, default=5_000, help="default %(default)s")
    parser.add_argument("--journeys", type=int, default=100, help="default %(default)s")
    parser.add_argument(
        "--rate", type=int, default=2_000, help="live events/s (default %(default)s)"
    )
    parser.add_argument("--seconds", type=int, default=20, help="live phase (default %(default)s)")
    add_options(parser, REPORT, engine=False)
    args = parse(parser, QUICK, argv)
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-journeys-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    try:
        client = redis_client(url)
        for group in ("naive", "journeys"):
            ensure_group(client, group)
        journeys = definitions(args.journeys, "1h")
        for key, journey in journeys.items():
            put_journey(client, key, journey)
        print(f"1/4 {args.events:,} events of {args.people:,} people (the profile updater)",
              flush=True)  # fmt: skip
        fill(url, traffic(args.events, args.people))
        run_updater(client, args.events)
        print("2/4 naive", flush=True)
        slow = naive(client, journeys, args.events)
        for pid in client.scan_iter("{p:*}:journeys"):
            client.delete(pid)
        print("3/4 the journeys worker", flush=True)
        fast = worker_rate(client, args.events)
        entered = sum(client.hlen(k) for k in client.scan_iter("{p:*}:journeys"))
        print(f"4/4 timer lateness ({args.seconds} s at {args.rate:,} events/s)", flush=True)
        late = lateness(url, args.journeys, args.rate, args.seconds, args.people)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# Journeys benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.journeys} active journeys, {args.events:,} events of {args.people:,} people "
        f"(resolved by the profile updater first), one process, private Redis; {machine()}.",
        "",
        "| phase | pass | events/s | × naive |",
        "|---|---|---:|---:|",
        f"| naive | per event a read of the person's runs, every trigger tested, a write | "
        f"{slow:,.0f} | 1.00 |",
        f"| worker | journeys worker | {fast:,.0f} | {fast / slow:.2f} |",
        "",
        f"Runs entered: {entered:,}. lateness: timer lateness with the worker live at "
        f"{args.rate:,} "
        f"events/s for {args.seconds} s (2 s waits, {late.get('timers', 0):,} timers): "
        f"p50 {late.get('p50', 0):.0f} ms, p99 {late.get('p99', 0):.0f} ms, "
        f"max {late.get('max', 0):.0f} ms.",
    ]
    publish(args.report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
