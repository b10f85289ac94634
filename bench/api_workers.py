"""API processes benchmark: ``kairos up --api-workers N`` for N = 1 and 2 on the same machine.

Each run is ``kairos up --workers sink --api-workers N`` on a Redis holding real profiles (the
profile updater built them, as in bench/decide.py), with wrk (-t1) as load on two endpoints:

1. /v1/decide   one Thompson-sampling placement, a visitor drawn from the people per request;
2. /v1/track    one Product Viewed event per request, through the spool.

The sink is paused (SIGSTOP) while wrk runs, so that the numbers are those of the API tier that
``--api-workers`` scales (the spool just grows; nothing is lost, it drains afterwards). The runs
alternate (1, 2, 1, 2, … for ``--rounds``) and each cell is the best round: on a shared machine,
other work only ever slows a run down.

Every run's non-2xx answers are counted, the warm-up's too (the engine's rate limiter in the path,
per process, with limits far above what wrk reaches: ``--per-key``/``--per-ip``), and every
decision answered must be in the spool (the sink is paused, so nothing is trimmed); else the run
prints one ``FAILED:`` line and exits 1.

Prints a table and writes bench/reports/api_workers.md. Needs ``wrk`` (apt-get install wrk).

    python bench/api_workers.py --seconds 10 --connections 32
    python bench/api_workers.py --quick
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
from typing import Any

import msgspec

from edge.runtime.stores import redis_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decide import _WRK, HERO, SECRET_KEY, WRITE_KEY  # noqa: E402
from bench.harness import (  # noqa: E402
    Load,
    Verdict,
    add_options,
    free_port,
    machine,
    need,
    parse,
    publish,
    spool_decisions,
    wait_http,
    write_limits,
    wrk,
)
from bench.profiles import fill, run_updater, traffic  # noqa: E402
from decisions.placements import PLACEMENT, put_placement  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "api_workers.md"
QUICK = {"seconds": 1, "people": 200, "rounds": 1, "warmup": 1}

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
    work: Path, url: str, processes: int, args: argparse.Namespace, attempt: int, verdict: Verdict
) -> dict[str, Load]:
    """wrk on /v1/decide and /v1/track against ``kairos up --api-workers processes``."""
    data = work / f"data-{processes}-{attempt}"
    write_limits(data, args.per_ip, args.per_key)
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
    client = redis_client(url)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=engine)
        sink = int((data / "run" / "sink.pid").read_text())
        os.kill(sink, signal.SIGSTOP)
        try:
            for name in ("decide", "track"):
                phase = f"{name}-{processes}"
                print(f"  {processes} API process(es): /v1/{name}", flush=True)
                script = work / f"{name}.lua"
                before = spool_decisions(client)
                target = f"http://127.0.0.1:{port}"
                # The warm-up (every process serving) is counted too: its answers are answers.
                warm = verdict.load(phase, wrk(target, args.warmup, args.connections, script))
                got = verdict.load(phase, wrk(target, args.seconds, args.connections, script))
                if name == "decide":
                    verdict.decisions(phase, warm.ok + got.ok, spool_decisions(client) - before)
                results[name] = got
        finally:
            os.kill(sink, signal.SIGCONT)
    finally:
        client.close()
        engine.send_signal(signal.SIGINT)
        engine.wait(timeout=180)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="per run (default %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--people", type=int, default=5_000, help="default %(default)s")
    parser.add_argument("--rounds", type=int, default=2, help="default %(default)s")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of load before each run (default %(default)s)")  # fmt: skip
    add_options(parser, REPORT)
    args = parse(parser, QUICK, argv)
    if not need("wrk", "bench/api_workers.py"):
        return 2
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-api-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    results: dict[int, dict[str, Load]] = {}
    verdict = Verdict()
    try:
        client = redis_client(url)
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
                print(f"round {attempt + 1}/{args.rounds}, {processes} API process(es)",
                      flush=True)  # fmt: skip
                got = run(work, url, processes, args, attempt, verdict)
                best = results.setdefault(processes, got)
                for name, r in got.items():
                    if r.rps > best[name].rps:
                        best[name] = r
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, args, verdict)
    return verdict.exit_code()


def report(results: dict[int, dict[str, Load]], args: argparse.Namespace, verdict: Verdict) -> Any:
    lines = [
        "# API processes: `kairos up --api-workers N`",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; wrk -t1 -c{args.connections}, "
        f"{args.seconds} s per run after {args.warmup} s of warm-up, best of {args.rounds} "
        "alternating rounds; the sink paused during each run; the rate limiter in the path "
        f"(per process: per_key {args.per_key:g} requests/s).",
        "",
        "| phase | endpoint | API processes | requests/s | × one process | p50 | p99 | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("decide", "track"):
        base = results[1][name].rps
        for processes, runs in results.items():
            r, phase = runs[name], f"{name}-{processes}"
            ratio = verdict.ratio(r.rps, base, phase, f"{name}-1")
            lines.append(
                f"| {phase} | /v1/{name} | {processes} | {r.rps:,.0f} | {ratio} | {r.p50} | "
                f"{r.p99} | {verdict.errors(phase)} |"
            )
    lines += ["", *verdict.lines()]
    publish(args.report, lines)


if __name__ == "__main__":
    sys.exit(main())
