"""API processes benchmark: ``kairos up --api-workers N`` for N = 1 and 2 on the same machine.

Each run is ``kairos up --workers sink --api-workers N`` on a Redis holding real profiles (the
profile updater built them, as in bench/decide.py), with wrk (-t1) as load on two endpoints:

1. /v1/decide   one Thompson-sampling placement, a visitor drawn from the people per request;
2. /v1/track    one Product Viewed event per request, through the spool.

The sink is paused (SIGSTOP) while wrk runs, so that the numbers are those of the API tier that
``--api-workers`` scales (the spool just grows; nothing is lost, it drains afterwards). The runs
alternate (1, 2, 1, 2, … for ``--rounds``) and each cell is the best round: on a shared machine,
other work only ever slows a run down.

Prints a table and writes bench/reports/api_workers.md. Needs ``wrk`` (apt-get install wrk).

    python bench/api_workers.py --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decide import _WRK, HERO, SECRET_KEY, WRITE_KEY, wrk  # noqa: E402
from bench.ingest import free_port, wait_http  # noqa: E402
from bench.profiles import fill, run_updater, traffic  # noqa: E402
from decisions.placements import PLACEMENT, put_placement  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "api_workers.md"

_TRACK = r"""
math.randomseed(11)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic __AUTH__"
request = function()
  local body = '{"anonymousId":"a' .. math.random(0, __PEOPLE__ - 1) .. '",' ..
    '"event":"Product Viewed","properties":{"sku":"sku-' .. math.random(1, 500) .. '"}}'
  return wrk.format(nil, "/v1/track", nil, body)
end
"""


def run(
    work: Path, url: str, processes: int, args: argparse.Namespace, attempt: int
) -> dict[str, dict]:
    """wrk on /v1/decide and /v1/track against ``kairos up --api-workers processes``."""
    data = work / f"data-{processes}-{attempt}"
    data.mkdir()
    (data / "kairos.toml").write_text("[limits]\nper_ip = 0\nper_key = 0\n")
    port = free_port()
    with open(work / f"engine-{processes}.log", "ab") as log:
        engine = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "up", "--port", str(port), "--data-dir", str(data),
             "--redis-url", url, "--workers", "sink", "--api-workers", str(processes),
             "--spool-limit", "0", "--write-key", WRITE_KEY, "--secret-key", SECRET_KEY,
             "--log-format", "json", "--log-level", "warning"],
            stdout=log, stderr=log, cwd=ROOT,
        )  # fmt: skip
    results = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        sink = int((data / "run" / "sink.pid").read_text())
        os.kill(sink, signal.SIGSTOP)
        try:
            for name in ("decide", "track"):
                print(f"  {processes} API process(es): /v1/{name}", flush=True)
                script = work / f"{name}.lua"
                wrk(port, 2, args.connections, script)  # warm-up: every process is serving
                results[name] = wrk(port, args.seconds, args.connections, script)
        finally:
            os.kill(sink, signal.SIGCONT)
    finally:
        engine.send_signal(signal.SIGINT)
        engine.wait(timeout=180)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="per run (default %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--people", type=int, default=5_000, help="default %(default)s")
    parser.add_argument("--rounds", type=int, default=2, help="default %(default)s")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/api_workers.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-api-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    results: dict[int, dict[str, dict]] = {}
    try:
        client = redis.Redis.from_url(url)
        print(f"profiles for {args.people:,} people (the profile updater)", flush=True)
        fill(url, traffic(args.people * 10, args.people))
        run_updater(client, args.people * 10)
        put_placement(client, "home_hero", PLACEMENT.decode(msgspec.json.encode(HERO)))
        auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        for name, source in (("decide", _WRK), ("track", _TRACK)):
            text = source.replace("__AUTH__", auth).replace("__PEOPLE__", str(args.people))
            (work / f"{name}.lua").write_text(text)
        for attempt in range(args.rounds):
            for processes in (1, 2):
                got = run(work, url, processes, args, attempt)
                best = results.setdefault(processes, got)
                for name, r in got.items():
                    if float(r["rps"]) > float(best[name]["rps"]):
                        best[name] = r
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    return 0


def report(results: dict[int, dict[str, dict]], args: argparse.Namespace) -> None:
    lines = [
        "# API processes: `kairos up --api-workers N`",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores; wrk -t1 "
        f"-c{args.connections}, {args.seconds} s per run, best of {args.rounds} alternating "
        "rounds; the sink paused during each run.",
        "",
        "| endpoint | API processes | requests/s | × one process | p50 | p99 | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("decide", "track"):
        base = float(results[1][name]["rps"])
        for processes, runs in results.items():
            r = runs[name]
            lines.append(
                f"| /v1/{name} | {processes} | {float(r['rps']):,.0f} | "
                f"{float(r['rps']) / base:.2f} | {r['p50']} | {r['p99']} | {r['non2xx']} |"
            )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    REPORT.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
