"""Recommendations benchmark: GET /v1/recommendations against a bare endpoint, and the batch form.

In one run on this machine, with a realistic shop built through the real pipeline:

1. history    ``--users`` people (default 100,000) browse a catalog of ``--items`` products
              (default 10,000 in 100 categories; each person leans to one category), add to
              carts and order: about ten events each, through the spool into embedded
              ClickHouse (the sink), the catalog (the recommendations worker) and the profiles
              (the profile updater); then the candidate lists are computed from ClickHouse;
2. bare       a Starlette endpoint answering a constant JSON of the same size (the baseline);
3. kairos     ``kairos up --workers none`` (one uvicorn worker) on that Redis: GET
              /v1/recommendations/user_id:<random person>?placement=email_weekly&n=4, a
              placement whose Thompson sampler chooses among four strategies; each answer
              reads the profile, the lists and the catalog, and logs the decision;
4. batch      POST /v1/recommendations/batch with 1,000 recipients per call, without and with
              the rendered email block: recipients per second.

Every phase's non-2xx answers are counted (the engine's rate limiter in the path, with limits far
above what the load reaches: ``--per-key``/``--per-ip``), and every recommendation answered must
be in the spool's decision log; else the run prints one ``FAILED:`` line and exits 1.

Prints a table and writes bench/reports/recs.md. Needs ``wrk`` (apt-get install wrk).

    python bench/recs.py --users 100000 --items 10000 --seconds 10
    python bench/recs.py --quick
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from edge.runtime.stores import redis_client

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
    serve_app,
    spool_decisions,
    start_engine,
    stop,
    wrk,
)
from bench.profiles import run_updater  # noqa: E402
from bench.recs_quality import train  # noqa: E402
from collector import embedded_url  # noqa: E402
from decisions.placements import PLACEMENT, put_placement  # noqa: E402
from edge.cli.progress import Progress  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from profiles.strategies import RECS, Settings  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "recs.md"
WRITE_KEY, SECRET_KEY = "wk_bench", "sk_bench"
QUICK = {"users": 1_000, "items": 500, "seconds": 1, "batches": 1}
END = datetime(2026, 9, 1, tzinfo=UTC)
SHOP = "https://shop.example/p/"
EMAIL = {
    "name": "Picked for you",
    "recommend": {"n": 4},
    "reward": {"kind": "items", "window_hours": 168},
    "variants": [{"key": "popular"}, {"key": "viewed_together"}, {"key": "bought_together"},
                 {"key": "favourite_category"}],
}  # fmt: skip

_BARE_APP = """
import json
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

ITEM = {"id": "sku-00000", "name": "Product 0", "url": "https://shop.example/p/sku-00000",
        "category": "c00", "price": 40.0,
        "image": "https://shop.example/img/sku-00000.jpg"}
BODY = json.dumps({"decisionId": "d_0", "placement": "email_weekly", "strategy": "popular",
                   "items": [ITEM] * 4}).encode()

async def recommendations(request):
    return Response(BODY, media_type="application/json")

app = Starlette(routes=[Route("/v1/recommendations/{id:path}", recommendations)])
"""

_WRK = """
math.randomseed(7)
wrk.headers["Authorization"] = "Bearer __KEY__"
request = function()
  local path = "/v1/recommendations/user_id:u" .. math.random(0, __USERS__ - 1) ..
    "?placement=email_weekly&n=4"
  return wrk.format("GET", path)
end
"""


def shop(users: int, items: int, days: int = 30, seed: int = 7) -> list[dict[str, Any]]:
    """About ten e-commerce events per person over ``days`` days, in time order."""
    rng = random.Random(seed)
    categories = max(1, items // 100)
    products = [{"product_id": f"sku-{i:05d}", "name": f"Product {i}", "url": f"{SHOP}sku-{i:05d}",
                 "image_url": f"https://shop.example/img/sku-{i:05d}.jpg",
                 "category": f"c{i % categories:02d}", "price": round(10 + (i * 37) % 190, 2)}
                for i in range(items)]  # fmt: skip
    by_category = [products[c::categories] for c in range(categories)]
    messages = []
    bar = Progress(users, "people's history")
    for person in range(users):
        ids = {"userId": f"u{person}", "anonymousId": f"a{person}"}
        liked = by_category[rng.randrange(categories)]
        at = END - timedelta(days=rng.uniform(0, days))
        cart: list[dict[str, Any]] = []
        for _ in range(rng.randint(4, 12)):
            product = rng.choice(liked) if rng.random() < 0.7 else rng.choice(products)
            messages.append({"type": "track", "event": "Product Viewed", **ids,
                             "timestamp": at.isoformat(), "properties": product})  # fmt: skip
            at += timedelta(seconds=rng.uniform(10, 120))
            if rng.random() < 0.15:
                cart.append(product)
                messages.append({"type": "track", "event": "Product Added", **ids,
                                 "timestamp": at.isoformat(), "properties": product})  # fmt: skip
        if cart and rng.random() < 0.5:
            order = {"order_id": f"o{person}", "products": cart}
            messages.append({"type": "track", "event": "Order Completed", **ids,
                             "timestamp": at.isoformat(), "properties": order})  # fmt: skip
        bar.advance()
    messages.sort(key=lambda m: m["timestamp"])
    for n, message in enumerate(messages):
        message["messageId"] = f"m{n}"
        message["timestamp"] = message["timestamp"].replace("+00:00", "Z")
    return messages


def batch_rate(
    url: str, users: int, calls: int, template: str | None, verdict: Verdict, phase: str
) -> tuple[float, int]:
    """Recipients per second through POST /v1/recommendations/batch (1,000 per call), and the
    recipients given a decision; each call's status goes to the verdict."""
    rng = random.Random(11)
    body: dict[str, Any] = {"placement": "email_weekly", "n": 4}
    if template:
        body["template"] = template
    done = decided = 0
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {SECRET_KEY}"},
                      timeout=120) as client:  # fmt: skip
        for _ in range(calls):
            recipients = [f"user_id:u{rng.randrange(users)}" for _ in range(1_000)]
            answer = client.post(
                "/v1/recommendations/batch", json={**body, "recipients": recipients}
            )
            failed = not 200 <= answer.status_code < 300
            verdict.answers(phase, 1, int(failed))
            if failed:
                continue
            results = answer.json()["results"]
            done += len(results)
            decided += sum("decisionId" in r for r in results)
    return done / (time.perf_counter() - started), decided


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000, help="default %(default)s")
    parser.add_argument("--items", type=int, default=10_000, help="default %(default)s")
    parser.add_argument("--seconds", type=int, default=10, help="per phase (default %(default)s)")
    parser.add_argument("--connections", type=int, default=8, help="default %(default)s")
    parser.add_argument("--batches", type=int, default=5, help="batch calls (default %(default)s)")
    add_options(parser, REPORT)
    args = parse(parser, QUICK, argv)
    if not need("wrk", "bench/recs.py"):
        return 2
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-recs-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    results: dict[str, Any] = {}
    verdict = Verdict()
    try:
        client = redis_client(url)
        print(f"1/4 history: {args.users:,} people, {args.items:,} items", flush=True)
        messages = shop(args.users, args.items)
        train(messages, url, embedded_url(work / "clickhouse"), Settings())
        run_updater(client, len(messages))
        lists = client.hlen(RECS)
        put_placement(client, "email_weekly", PLACEMENT.decode(msgspec.json.encode(EMAIL)))
        script = work / "recs.lua"
        script.write_text(_WRK.replace("__KEY__", SECRET_KEY).replace("__USERS__", str(args.users)))

        print(f"2/4 bare endpoint ({args.seconds} s, -c{args.connections})", flush=True)
        proc, port = serve_app(work, "bare", _BARE_APP)
        try:
            results["bare"] = verdict.load(
                "bare", wrk(f"http://127.0.0.1:{port}", args.seconds, args.connections, script)
            )
        finally:
            proc.terminate()
            proc.wait()

        print(f"3/4 kairos GET /v1/recommendations ({args.seconds} s)", flush=True)
        port = free_port()
        limits = (args.per_ip, args.per_key)
        engine = start_engine(work / "data", port, "--redis-url", url, "--workers", "none",
                              keys=(WRITE_KEY, SECRET_KEY), limits=limits)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            sample = httpx.get(
                f"{base}/v1/recommendations/user_id:u1?placement=email_weekly",
                headers={"Authorization": f"Bearer {SECRET_KEY}"},
            ).json()
            print(f"   e.g. {sample['strategy']}: {[i['id'] for i in sample['items']]}")
            before = spool_decisions(client)
            got = verdict.load(
                "kairos", wrk(f"http://127.0.0.1:{port}", args.seconds, args.connections, script)
            )
            verdict.decisions("kairos", got.ok, spool_decisions(client) - before)
            results["kairos"] = got
            print(f"4/4 batch: {args.batches} calls of 1,000 recipients, plain and rendered")
            for phase, template in (("batch", None), ("batch-rendered", "grid")):
                before = spool_decisions(client)
                rate, decided = batch_rate(base, args.users, args.batches, template, verdict, phase)
                verdict.decisions(phase, decided, spool_decisions(client) - before)
                results[phase] = rate
        finally:
            stop(engine)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    publish(args.report, report(results, args, len(messages), lists, verdict))
    return verdict.exit_code()


def report(
    results: dict[str, Any], args: argparse.Namespace, events: int, lists: int, verdict: Verdict
) -> list[str]:
    bare: Load = results["bare"]
    ours: Load = results["kairos"]
    ratio = verdict.ratio(ours.rps, bare.rps, "kairos", "bare")
    lines = [
        f"# Recommendations benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.users:,} people's history ({events:,} events) over {args.items:,} items, "
        f"{lists:,} cached candidate lists; one uvicorn worker each, wrk -t1 "
        f"-c{args.connections}, {args.seconds} s per phase; private Redis (AOF everysec); the "
        f"engine's rate limiter in the path (per_key {args.per_key:g} requests/s); {machine()}.",
        "",
        "| phase | endpoint | requests/s | × bare | p50 | p99 | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| bare | bare Starlette, constant JSON | {bare.rps:,.0f} | 1.00 | {bare.p50} | "
        f"{bare.p99} | {verdict.errors('bare')} |",
        f"| kairos | GET /v1/recommendations (n=4) | {ours.rps:,.0f} | {ratio} | {ours.p50} | "
        f"{ours.p99} | {verdict.errors('kairos')} |",
        "",
        "POST /v1/recommendations/batch, 1,000 recipients per call (batch: "
        f"{verdict.errors('batch')} failed calls, batch-rendered: "
        f"{verdict.errors('batch-rendered')}): {results['batch']:,.0f} recipients/s as JSON, "
        f"{results['batch-rendered']:,.0f} recipients/s with the rendered email block "
        "(HTML + text).",
        "",
        *verdict.lines(),
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
