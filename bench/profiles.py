"""Profile benchmark: updates/s of one profile updater, and GET /v1/profiles latency.

1. baseline  the cheapest per-message update Redis can do here: one HINCRBY per message,
             pipelined — the ceiling any profile updater on this Redis could reach;
2. updater   the real profile updater (identity resolution, merges, computed traits, lead
             score, one apply script per message, pipelined) on shopper-like traffic: page and
             product views, cart changes, orders, logins;
3. API       ``GET /v1/profiles/{id}`` under wrk, on the profiles the updater built.

The API phase's non-2xx answers are counted (the engine's rate limiter in the path, with limits
far above what wrk reaches: ``--per-key``/``--per-ip``); any fails the run (exit 1).

Prints a table and writes bench/reports/profiles.md. Needs ``wrk`` (apt-get install wrk).

    python bench/profiles.py --events 100000 --people 5000
    python bench/profiles.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
import redis.asyncio

from edge.runtime.stores import async_redis_client, redis_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    Load,
    Verdict,
    add_options,
    free_port,
    machine,
    need,
    parse,
    publish,
    start_engine,
    stop,
    wrk,
)
from collector import Layout, Spool, SpoolReader, read_request  # noqa: E402
from collector.reader import ensure_group  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from profiles import LeadScoring, ProfileStore, ProfileUpdater, ScoreRule  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "profiles.md"
SECRET = "sk_bench"
QUICK = {"events": 5_000, "people": 500, "seconds": 1}

_WRK = """
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/profiles/anonymous_id:a" .. math.random(0, __PEOPLE__ - 1), {
    ["Authorization"] = "Bearer __SECRET__"})
end
"""


def traffic(events: int, people: int, seed: int = 7) -> list[dict[str, object]]:
    """Shopper-like messages: anonymous browsing, logins, carts and orders."""
    rng = random.Random(seed)
    messages: list[dict[str, object]] = []
    for n in range(events):
        person = rng.randrange(people)
        ids = {"anonymousId": f"a{person}"}
        if rng.random() < 0.5:
            ids["userId"] = f"u{person}"
        roll = rng.random()
        product = f"sku-{rng.randrange(500)}"
        if roll < 0.45:
            msg = {"type": "page", "properties": {"path": rng.choice(["/", "/pricing", "/shoes"])}}
        elif roll < 0.75:
            msg = {
                "type": "track",
                "event": "Product Viewed",
                "properties": {"product_id": product},
            }
        elif roll < 0.88:
            msg = {"type": "track", "event": "Product Added",
                   "properties": {"product_id": product, "price": 20, "quantity": 1}}  # fmt: skip
        elif roll < 0.95:
            msg = {"type": "identify", "userId": f"u{person}", "traits": {"plan": "pro"}}
        else:
            msg = {"type": "track", "event": "Order Completed", "properties": {"revenue": 40}}
        messages.append({**ids, **msg, "messageId": f"m{n}"})
    return messages


def fill(url: str, messages: list[dict[str, object]], layout: Layout | None = None) -> None:
    """``messages`` into the spool through the real intake, 100 a request (``layout``: the
    spool's partitions, one by default)."""

    async def run() -> None:
        client = async_redis_client(url)
        spool = Spool(client, layout)
        now = datetime.now(UTC)
        for i in range(0, len(messages), 100):
            body = json.dumps({"batch": messages[i : i + 100]}).encode()
            intake = read_request(body, kind="batch", content_type="application/json",
                                  content_encoding=None, received_at=now, ip=None)  # fmt: skip
            await spool.append(intake)
        await spool.aclose()
        await client.aclose()

    asyncio.run(run())


def baseline(client: redis.Redis, count: int) -> float:
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.hincrby(f"{{b:{n % 5000}}}", "count", 1)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return count / (time.perf_counter() - started)


def run_updater(client: redis.Redis, total: int) -> float:
    ensure_group(client, "profiles")
    scoring = LeadScoring(rules=[ScoreRule("Page Viewed", 5, {"path": "/pricing"})])
    updater = ProfileUpdater(
        SpoolReader(client, "profiles", "bench"), ProfileStore(client), scoring
    )
    done, started = 0, time.perf_counter()
    while done < total:
        entries = updater.reader.read(500, 100)
        updater.process(entries)
        updater.reader.ack(entries, {})
        done += sum(e.count for e in entries)
        print(f"\r   applied {done:,} / {total:,}", end="", flush=True)
    print()
    return total / (time.perf_counter() - started)


def latency(redis_url: str, work: Path, args: argparse.Namespace) -> Load:
    """wrk (-c8) on GET /v1/profiles/anonymous_id:… for the people the updater built."""
    port = free_port()
    engine = start_engine(work / "data", port, "--redis-url", redis_url, keys=("wk_bench", SECRET),
                          limits=(args.per_ip, args.per_key))  # fmt: skip
    try:
        script = work / "profiles.lua"
        script.write_text(
            _WRK.replace("__PEOPLE__", str(args.people)).replace("__SECRET__", SECRET)
        )
        return wrk(f"http://127.0.0.1:{port}", args.seconds, 8, script)
    finally:
        stop(engine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="default %(default)s")
    parser.add_argument("--people", type=int, default=5_000, help="default %(default)s")
    parser.add_argument("--seconds", type=int, default=10, help="wrk phase (default %(default)s)")
    add_options(parser, REPORT)
    args = parse(parser, QUICK, argv)
    if not need("wrk", "bench/profiles.py"):
        return 2
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-profiles-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    verdict = Verdict()
    try:
        client = redis_client(url)
        print(
            f"1/4 spooling {args.events:,} shopper events over {args.people:,} people", flush=True
        )
        fill(url, traffic(args.events, args.people))
        print("2/4 baseline: one pipelined HINCRBY per message", flush=True)
        floor = baseline(client, args.events)
        print("3/4 the profile updater", flush=True)
        rate = run_updater(client, args.events)
        print(f"4/4 GET /v1/profiles for {args.seconds} s", flush=True)
        api = verdict.load("api", latency(url, work, args))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# Profile benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.events:,} shopper events over {args.people:,} people; one updater thread; "
        f"private Redis (AOF everysec) on the same machine ({machine()}).",
        "",
        "| phase | | events/s | × baseline |",
        "|---|---|---:|---:|",
        f"| baseline | one pipelined HINCRBY per message | {floor:,.0f} | 1.00 |",
        f"| updater | the profile updater | {rate:,.0f} | {rate / floor:.2f} |",
        "",
        f"api: `GET /v1/profiles/anonymous_id:…` (wrk -c8, {args.seconds} s, the rate limiter "
        f"in the path: per_key {args.per_key:g} requests/s): {api.rps:,.0f} requests/s, p50 "
        f"{api.p50}, p90 {api.p90}, p99 {api.p99}, non-2xx {verdict.errors('api')}.",
        "",
        *verdict.lines(),
        "",
        "Target: ≥ 20k events/s on one updater.",
    ]
    publish(args.report, lines)
    return verdict.exit_code()


if __name__ == "__main__":
    sys.exit(main())
