"""Profile benchmark: updates/s of one profile updater, and GET /v1/profiles latency.

1. baseline  the cheapest per-message update Redis can do here: one HINCRBY per message,
             pipelined — the ceiling any profile updater on this Redis could reach;
2. updater   the real profile updater (identity resolution, merges, computed traits, lead
             score, one apply script per message, pipelined) on shopper-like traffic: page and
             product views, cart changes, orders, logins;
3. API       ``GET /v1/profiles/{id}`` under wrk, on the profiles the updater built.

Prints a table and writes bench/reports/profiles.md. Needs ``wrk`` (apt-get install wrk).

    python bench/profiles.py --events 100000 --people 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
import redis.asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import free_port, publish, wait_http  # noqa: E402
from collector import Spool, SpoolReader, read_request  # noqa: E402
from collector.spool import ensure_group  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from profiles import LeadScoring, ProfileStore, ProfileUpdater, ScoreRule  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "profiles.md"
SECRET = "sk_bench"

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


def fill(url: str, messages: list[dict[str, object]]) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(url)
        spool = Spool(client)
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


def latency(redis_url: str, work: Path, people: int, seconds: int) -> dict[str, str]:
    port = free_port()
    log = open(work / "engine.log", "ab")  # noqa: SIM115 - handed to the child
    engine = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "up", "--port", str(port), "--data-dir",
         str(work / "data"), "--redis-url", redis_url, "--secret-key", SECRET,
         "--write-key", "wk_bench", "--log-format", "json"],
        stdout=log, stderr=log, cwd=ROOT,
    )  # fmt: skip
    log.close()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        script = work / "profiles.lua"
        script.write_text(_WRK.replace("__PEOPLE__", str(people)).replace("__SECRET__", SECRET))
        out = subprocess.run(
            ["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", "-s", str(script),
             f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        engine.send_signal(2)
        engine.wait(timeout=120)
    import re

    latencies = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {**latencies, "rps": rps, "non2xx": non2xx.group(1) if non2xx else "0"}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="default %(default)s")
    parser.add_argument("--people", type=int, default=5_000, help="default %(default)s")
    parser.add_argument("--seconds", type=int, default=10, help="wrk phase (default %(default)s)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/profiles.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-profiles-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    try:
        client = redis.Redis.from_url(url)
        print(
            f"1/4 spooling {args.events:,} shopper events over {args.people:,} people", flush=True
        )
        fill(url, traffic(args.events, args.people))
        print("2/4 baseline: one pipelined HINCRBY per message", flush=True)
        floor = baseline(client, args.events)
        print("3/4 the profile updater", flush=True)
        rate = run_updater(client, args.events)
        print(f"4/4 GET /v1/profiles for {args.seconds} s", flush=True)
        api = latency(url, work, args.people, args.seconds)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# Profile benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.events:,} shopper events over {args.people:,} people; one updater thread; "
        "private Redis (AOF everysec) on the same 2-core machine.",
        "",
        "| | events/s | × baseline |",
        "|---|---:|---:|",
        f"| baseline: one pipelined HINCRBY per message | {floor:,.0f} | 1.00 |",
        f"| profile updater | {rate:,.0f} | {rate / floor:.2f} |",
        "",
        f"`GET /v1/profiles/anonymous_id:…` (wrk -c8, {args.seconds} s): {float(api['rps']):,.0f} "
        f"requests/s, p50 {api.get('50')}, p90 {api.get('90')}, p99 {api.get('99')}, "
        f"non-2xx {api['non2xx']}.",
        "",
        "Target: ≥ 20k events/s on one updater.",
    ]
    publish(REPORT, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
