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
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "bench" / "reports" / "ingest.md"
WRITE_KEY, SECRET_KEY = "wk_bench", "sk_bench"

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
_WRK_SCRIPT = r"""
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def publish(report: Path, lines: list[str]) -> None:
    """Print a report and write it (Markdown) to ``report``."""
    text = "\n".join(lines) + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    print()
    print(text)
    print(f"(written to {report.relative_to(ROOT)})")


def wrk(url: str, seconds: int, connections: int, script: Path, phase: str) -> dict[str, float]:
    """Run wrk; ``phase`` prefixes the messageIds so no phase repeats another's."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            f"{phase}{time.time_ns()}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    return {
        "rps": rps,
        "events": rps * 100,
        "non2xx": int(errors.group(1)) if errors else 0,
        "p50": latency.get("50", "?"),
        "p99": latency.get("99", "?"),
    }


def start_engine(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KAIROS_WRITE_KEY": WRITE_KEY, "KAIROS_SECRET_KEY": SECRET_KEY}
    log = open(data_dir.parent / "engine.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-format",
            "json",
            "--spool-limit",
            "0",
            *extra,
        ],
        stdout=log,
        stderr=log,
        env=env,
        cwd=ROOT,
    )
    log.close()
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)


def stats(data_dir: Path) -> dict[str, int]:
    client = redis.Redis(unix_socket_path=str(data_dir / "redis" / "redis.sock"))
    raw = client.hgetall("{spool}:stats")
    client.close()
    return {k.decode(): int(float(v)) for k, v in raw.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="each load phase (default %(default)s)"
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk connections (default %(default)s)"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/ingest.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    script = work / "batch.lua"
    auth = __import__("base64").b64encode(f"{WRITE_KEY}:".encode()).decode()
    script.write_text(_WRK_SCRIPT.replace("__AUTH__", auth))
    results: dict[str, dict[str, float]] = {}

    print(f"1/4 discard baseline ({args.seconds} s, {args.connections} connections)", flush=True)
    (work / "discard.py").write_text(textwrap.dedent(_DISCARD_APP))
    port = free_port()
    discard = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "discard:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=work,
    )
    try:
        wait_port(port)
        results["discard"] = wrk(
            f"http://127.0.0.1:{port}/v1/batch", args.seconds, args.connections, script, "discard"
        )
    finally:
        discard.terminate()
        discard.wait()

    data = work / "data"
    port = free_port()
    print("2/4 ingest only (kairos up --workers none)", flush=True)
    engine = start_engine(data, port, "--workers", "none")
    try:
        results["ingest"] = wrk(
            f"http://127.0.0.1:{port}/v1/batch", args.seconds, args.connections, script, "ingest"
        )
        accepted = stats(data)["accepted"]
    finally:
        stop(engine)

    print(f"3/4 drain {accepted:,} spooled events into ClickHouse", flush=True)
    engine = start_engine(data, port, "--workers", "sink")  # drains as soon as it is up
    try:
        first = 0
        while (inserted := stats(data).get("sink_inserted", 0)) == 0:
            time.sleep(0.005)
        started, first = time.monotonic(), inserted  # timed from the first stored batch on
        while stats(data).get("sink_inserted", 0) < accepted:
            time.sleep(0.02)
        drain_seconds = time.monotonic() - started
    finally:
        stop(engine)
    results["drain"] = {"events": (accepted - first) / drain_seconds, "seconds": drain_seconds}

    print("4/4 steady state (kairos up: the API and both workers)", flush=True)
    engine = start_engine(data, port)
    try:
        before = stats(data)
        results["steady"] = wrk(
            f"http://127.0.0.1:{port}/v1/batch", args.seconds, args.connections, script, "steady"
        )
        after = stats(data)
        assert after.get("duplicates", 0) == before.get("duplicates", 0), "the load repeated ids"
        stored = after.get("sink_inserted", 0) - before.get("sink_inserted", 0)
        applied = after.get("profiles_applied", 0) - before.get("profiles_applied", 0)
        results["steady"]["stored"] = stored / args.seconds
        results["steady"]["applied"] = applied / args.seconds
        results["steady"]["lag"] = after["accepted"] - after.get("sink_inserted", 0)
        results["steady"]["unresolved"] = after.get("sink_unresolved", 0)
    finally:
        stop(engine)

    shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    return 0


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    base = results["discard"]["events"]
    rows = [
        ("discard endpoint (baseline)", results["discard"]["events"], "1.00", results["discard"]),
        (
            "kairos /v1/batch, ingest only",
            results["ingest"]["events"],
            f"{results['ingest']['events'] / base:.2f}",
            results["ingest"],
        ),
        (
            "kairos /v1/batch, sink running",
            results["steady"]["events"],
            f"{results['steady']['events'] / base:.2f}",
            results["steady"],
        ),
    ]
    lines = [
        f"# Ingestion benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"One uvicorn worker each, wrk -t1 -c{args.connections}, {args.seconds} s per phase, "
        "100-event batches (~51 KB) with unique messageIds; embedded Redis (AOF everysec) "
        "and chdb.",
        "",
        "| endpoint | events/s acknowledged | × baseline | p50 | p99 | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, events, ratio, r in rows:
        lines.append(
            f"| {name} | {events:,.0f} | {ratio} | {r['p50']} | {r['p99']} | {r['non2xx']:.0f} |"
        )
    lines += [
        "",
        "Sink drain rate (spool → ClickHouse, the sink worker alone, from its first stored "
        f"batch on): **{results['drain']['events']:,.0f} events/s** "
        f"({results['drain']['seconds']:.1f} s).",
        f"While ingesting at full speed, the sink stored {results['steady']['stored']:,.0f} "
        f"events/s and the profile worker applied {results['steady']['applied']:,.0f}/s; the "
        f"sink ended {results['steady']['lag']:,.0f} events behind; "
        f"{results['steady']['unresolved']:,.0f} were stored without a profile id (the profile "
        "worker was more than 5 s behind).",
        "",
        "Targets: ≥ 100k events/s acknowledged and ≥ 0.1× the baseline; drain ≥ 50k events/s.",
    ]
    publish(REPORT, lines)


if __name__ == "__main__":
    sys.exit(main())
