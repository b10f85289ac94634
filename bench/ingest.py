"""Ingestion benchmark: acknowledged events/s against a discard baseline, and the sink's drain rate.

Runs, in one go on this machine, each API on one uvicorn worker (uvloop + httptools), wrk as load:

1. discard   a bare Starlette endpoint that reads the body and answers 200 (the baseline);
2. ingest    ``kairos up --workers none``: validation, dedup and the spool append only;
3. drain     the same engine restarted with only its sink worker: how fast the spool empties
             into ClickHouse;
4. steady    ``kairos up`` as users run it: ingestion while the sink and the profile worker
             drain, all of it (API, workers, Redis, wrk) sharing this machine's cores.

Every request is a 100-event /v1/batch of browser-like track calls with unique messageIds.
Prints a table and writes bench/reports/ingest.md. Needs ``wrk`` (apt-get install wrk).

    python bench/ingest.py --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

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
    start_engine,
    stop,
    wrk,
)

REPORT = ROOT / "bench" / "reports" / "ingest.md"
WRITE_KEY, SECRET_KEY = "wk_bench", "sk_bench"
QUICK = {"seconds": 1}

_DISCARD_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def discard(request):
    await request.body()
    return Response(b'{"success":true}', media_type="application/json")

app = Starlette(routes=[Route("/v1/batch", discard, methods=["POST"])])
"""

# One 100-event batch per request; messageIds carry the wrk thread, a counter and the index.
BATCH_SCRIPT = r"""
local counter = 0
local thread_id = "t"
function init(args)
  thread_id = args[1]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Basic __AUTH__"
end
function request()
  counter = counter + 1
  local parts = {}
  for i = 1, 100 do
    parts[i] = string.format(
      '{"type":"track","event":"Product Viewed","anonymousId":"anon-%d","messageId":"%s-%d-%d",' ..
      '"timestamp":"2026-11-26T10:00:00.000Z","properties":{"product_id":"sku-%d","name":"Trail ' ..
      'running shoe","category":"Shoes","price":89.9,"currency":"EUR","position":%d},' ..
      '"context":{"library":{"name":"bench","version":"1.0"},' ..
      '"page":{"url":"https://shop.example/p/%d","path":"/p/%d",' ..
      '"referrer":"https://www.google.com/"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) ' ..
      'AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"}}',
      i % 50, thread_id, counter, i, i, i, i, i)
  end
  local body = '{"batch":[' .. table.concat(parts, ",") .. '],"sentAt":"2026-11-26T10:00:01.000Z"}'
  return wrk.format(nil, nil, nil, body)
end
"""


def engine(data_dir: Path, port: int, args: argparse.Namespace, *extra: str) -> Any:
    limits = (args.per_ip, args.per_key)
    return start_engine(data_dir, port, "--spool-limit", "0", *extra,
                        keys=(WRITE_KEY, SECRET_KEY), limits=limits)  # fmt: skip


def stats(data_dir: Path) -> dict[str, int]:
    client = redis.Redis(unix_socket_path=str(data_dir / "redis" / "redis.sock"))
    raw = client.hgetall("{spool}:stats")
    client.close()
    return {k.decode(): int(float(v)) for k, v in raw.items()}


def _sql(port: int, query: str) -> list[list[Any]]:
    """A read-only query through the engine's /v1/sql (the secret key)."""
    auth = base64.b64encode(f"{SECRET_KEY}:".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/sql", data=json.dumps({"query": query}).encode(),
        headers={"authorization": f"Basic {auth}", "content-type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as answer:
        return list(json.loads(answer.read())["rows"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="each load phase (default %(default)s)"
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk connections (default %(default)s)"
    )
    add_options(parser, REPORT)
    args = parse(parser, QUICK, argv)
    if not need("wrk", "bench/ingest.py"):
        return 2

    work = Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    script = work / "batch.lua"
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    script.write_text(BATCH_SCRIPT.replace("__AUTH__", auth))
    results: dict[str, dict[str, Any]] = {}
    verdict = Verdict()

    def load(phase: str, port: int) -> dict[str, Any]:
        got = verdict.load(
            phase,
            wrk(
                f"http://127.0.0.1:{port}/v1/batch",
                args.seconds,
                args.connections,
                script,
                f"{phase}{time.time_ns()}",
            ),
        )
        return {"load": got, "events": got.rps * 100}  # fmt: skip

    try:
        print(f"1/4 discard baseline ({args.seconds} s, {args.connections} connections)",
              flush=True)  # fmt: skip
        discard, port = serve_app(work, "discard", _DISCARD_APP)
        try:
            results["discard"] = load("discard", port)
        finally:
            discard.terminate()
            discard.wait()

        data = work / "data"
        port = free_port()
        print("2/4 ingest only (kairos up --workers none)", flush=True)
        proc = engine(data, port, args, "--workers", "none")
        try:
            results["ingest"] = load("ingest", port)
            accepted = stats(data)["accepted"]
        finally:
            stop(proc)

        print(f"3/4 drain {accepted:,} spooled events into ClickHouse", flush=True)
        proc = engine(data, port, args, "--workers", "sink")  # drains as soon as it is up
        try:
            first = 0
            while (inserted := stats(data).get("sink_inserted", 0)) == 0:
                time.sleep(0.005)
            started, first = time.monotonic(), inserted  # timed from the first stored batch on
            while stats(data).get("sink_inserted", 0) < accepted:
                time.sleep(0.02)
            drain_seconds = max(time.monotonic() - started, 1e-3)
        finally:
            stop(proc)
        results["drain"] = {"events": (accepted - first) / drain_seconds,
                            "seconds": drain_seconds}  # fmt: skip

        print("4/4 steady state (kairos up: the API and both workers)", flush=True)
        proc = engine(data, port, args)
        try:
            before = stats(data)
            results["steady"] = load("steady", port)
            after = stats(data)
            assert after.get("duplicates", 0) == before.get("duplicates", 0), (
                "the load repeated ids"
            )
            stored = after.get("sink_inserted", 0) - before.get("sink_inserted", 0)
            applied = after.get("profiles_applied", 0) - before.get("profiles_applied", 0)
            results["steady"]["stored"] = stored / args.seconds
            results["steady"]["applied"] = applied / args.seconds
            results["steady"]["lag"] = after["accepted"] - after.get("sink_inserted", 0)
            # Then until everything is stored: each event must carry its profile id.
            started, accepted = time.monotonic(), after["accepted"]
            while stats(data).get("sink_inserted", 0) < accepted:
                if time.monotonic() - started > 900:
                    raise RuntimeError("the sink did not catch up within 15 minutes")
                time.sleep(0.2)
            results["steady"]["caught_up"] = time.monotonic() - started
            results["steady"]["unresolved"] = stats(data).get("sink_unresolved", 0)
            total, missing = _sql(port, "SELECT count(), countIf(profile_id = '') FROM events "
                                  "WHERE startsWith(message_id, 'steady')")[0]  # fmt: skip
            verdict.answers("profile ids", int(total), int(missing),
                            "events stored without a profile id")  # fmt: skip
            results["steady"]["stored_total"], results["steady"]["missing"] = total, missing
        finally:
            stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish(args.report, report(results, args, verdict))
    return verdict.exit_code()


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, verdict: Verdict
) -> list[str]:
    base = results["discard"]["events"]
    rows = [
        ("discard", "discard endpoint (baseline)"),
        ("ingest", "kairos /v1/batch, ingest only"),
        ("steady", "kairos /v1/batch, sink running"),
    ]
    lines = [
        f"# Ingestion benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"One uvicorn worker each, wrk -t1 -c{args.connections}, {args.seconds} s per phase, "
        "100-event batches (~51 KB) with unique messageIds; embedded Redis (AOF everysec) "
        f"and chdb; the engine's rate limiter in the path (per_key {args.per_key:g}, per_ip "
        f"{args.per_ip:g} requests/s); {machine()}.",
        "",
        "| phase | endpoint | events/s acknowledged | × baseline | p50 | p99 | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for phase, name in rows:
        r = results[phase]
        got: Load = r["load"]
        ratio = verdict.ratio(r["events"], base, phase, "discard")
        lines.append(f"| {phase} | {name} | {r['events']:,.0f} | {ratio} | {got.p50} | "
                     f"{got.p99} | {verdict.errors(phase)} |")  # fmt: skip
    lines += [
        "",
        "Drain (spool → ClickHouse, the sink worker alone, from its first stored batch on): "
        f"**{results['drain']['events']:,.0f} events/s** ({results['drain']['seconds']:.1f} s).",
        f"While ingesting at full speed (steady), the sink stored "
        f"{results['steady']['stored']:,.0f} events/s and the profile worker applied "
        f"{results['steady']['applied']:,.0f}/s; the sink ended {results['steady']['lag']:,.0f} "
        f"events behind (the spool holds them: the sink waits for the profile worker, up to "
        f"--sink-profile-wait) and caught up {results['steady']['caught_up']:.1f} s after the "
        f"load; of the {results['steady']['stored_total']:,} events it stored, "
        f"{results['steady']['missing']:,} have no profile id.",
        "",
        *verdict.lines(),
        "",
        "Targets: ≥ 100k events/s acknowledged and ≥ 0.1× the baseline; drain ≥ 50k events/s.",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
