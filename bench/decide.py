"""Decision benchmark: /v1/decide against a bare endpoint, and the policy's own cost in process.

Runs, in one go on this machine, each server on one uvicorn worker (uvloop + httptools), wrk
(-t1) as load, the same request body shape for all:

1. bare     a Starlette endpoint that reads the body and answers a constant JSON (the baseline);
2. naive    what a first attempt looks like: one awaited redis-py HGETALL of the profile per
            request, then numpy Beta sampling for the choice (no logging);
3. kairos   ``kairos up --workers none`` on a Redis holding real profiles: /v1/decide for one
            Thompson-sampling placement with two templated variants, a profile lookup per
            request (visitors drawn from the people the profile updater built), the decision
            logged to the spool before the answer.

Then, in process: choose + update of a 10-arm Beta Thompson sampler, per call; and MABWiser's
predict + partial_fit for comparison when it is installed (``pip install mabwiser``; bench only).

Prints a table and writes bench/reports/decide.md. Needs ``wrk`` (apt-get install wrk).

    python bench/decide.py --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import timeit
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bandits.mab import BetaThompson  # noqa: E402
from bench.ingest import free_port, publish, wait_http, wait_port  # noqa: E402
from bench.profiles import fill, run_updater, traffic  # noqa: E402
from decisions.placements import PLACEMENT, put_placement  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "decide.md"
WRITE_KEY, SECRET_KEY = "wk_bench", "sk_bench"

HERO = {
    "default": "classic",
    "policy": {"kind": "thompson"},
    "variants": [
        {"key": "classic", "content": {"image": "/img/classic.jpg"}},
        {"key": "sale", "template": "<h1>Hi {{ first_name or 'there' }}: 20% off</h1>"},
    ],
}

_BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = (b'{"decisions":{"home_hero":{"decisionId":"d_0","variant":"classic",'
        b'"content":null,"propensity":1.0}}}')

async def decide(request):
    await request.body()
    return Response(BODY, media_type="application/json")

app = Starlette(routes=[Route("/v1/decide", decide, methods=["POST"])])
"""

_NAIVE_APP = """
import json, os
import numpy as np
import redis.asyncio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
rng = np.random.default_rng()

async def decide(request):
    ask = json.loads(await request.body())
    pid = await client.get("{id:anonymous_id:" + ask["anonymousId"] + "}")
    profile = await client.hgetall("{p:" + (pid or b"").decode() + "}")
    arm = int(np.argmax(rng.beta([1.0, 1.0], [1.0, 1.0])))
    return JSONResponse({"decisions": {"home_hero": {"variant": ["classic", "sale"][arm],
                         "traits": len(profile)}}})

app = Starlette(routes=[Route("/v1/decide", decide, methods=["POST"])])
"""

# A visitor drawn from the people the profile updater built, per request.
_WRK = r"""
math.randomseed(7)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic __AUTH__"
wrk.headers["Origin"] = "https://shop.example"
request = function()
  local body = '{"anonymousId":"a' .. math.random(0, __PEOPLE__ - 1) .. '",' ..
    '"placements":["home_hero"],"context":{"userAgent":"Mozilla/5.0 (iPhone; Mobile)",' ..
    '"page":{"url":"https://shop.example/","referrer":"https://www.google.com/"}}}'
  return wrk.format(nil, "/v1/decide", nil, body)
end
"""


def wrk(port: int, seconds: int, connections: int, script: Path) -> dict[str, float | str]:
    """requests/s, total requests, p50, p99 and non-2xx answers of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50": latency.get("50", "?"),
        "p99": latency.get("99", "?"),
        "non2xx": int(errors.group(1)) if errors else 0,
    }


def logged(client: redis.Redis) -> dict[str, int]:
    """Decisions in the spool, and the entries they came in (one per event-loop tick)."""
    entries = decisions = 0
    last = "-"
    while batch := client.xrange("{spool}:log", min=last, count=10_000):
        for _id, fields in batch:
            if b"d" in fields:
                entries, decisions = entries + 1, decisions + int(fields[b"n"])
        last = "(" + batch[-1][0].decode()
    return {"entries": entries, "logged": decisions}


def serve_app(
    work: Path, name: str, source: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    (work / f"{name}.py").write_text(textwrap.dedent(source))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"{name}:app", "--port", str(port), "--log-level",
         "warning", "--no-access-log"],
        cwd=work, env={**os.environ, **env},
    )  # fmt: skip
    wait_port(port)
    return proc, port


def in_process(rounds: int = 100_000) -> dict[str, float]:
    """µs per choose + update of a 10-arm Beta Thompson sampler (and MABWiser's, if present)."""
    policy = BetaThompson(10, seed=1)
    rng = np.random.default_rng(1)
    truth = np.linspace(0.01, 0.1, 10)
    draws = rng.random(rounds)

    def step(i: int = 0) -> None:
        arm, _ = policy.choose(None, rng)
        policy.update(arm, float(draws[i % rounds] < truth[arm]))

    for i in range(2_000):  # warm up: the first posterior estimates
        step(i)
    ours = min(timeit.repeat(step, number=rounds, repeat=3)) / rounds * 1e6
    result = {"kairos": ours}
    try:
        from mabwiser.mab import MAB, LearningPolicy
    except ImportError:
        return result
    mab = MAB(arms=list(range(10)), learning_policy=LearningPolicy.ThompsonSampling(), seed=1)
    mab.fit(decisions=list(range(10)), rewards=[0] * 10)

    def mab_step() -> None:
        arm = mab.predict()
        mab.partial_fit(decisions=[arm], rewards=[int(rng.random() < truth[arm])])

    rounds_mab = 5_000
    result["mabwiser"] = (
        min(timeit.repeat(mab_step, number=rounds_mab, repeat=3)) / rounds_mab * 1e6
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="per phase (default %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--people", type=int, default=5_000, help="default %(default)s")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench/decide.py needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-decide-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    results: dict[str, dict[str, float | str]] = {}
    try:
        client = redis.Redis.from_url(url)
        print(f"1/5 profiles for {args.people:,} people (the profile updater)", flush=True)
        fill(url, traffic(args.people * 10, args.people))
        run_updater(client, args.people * 10)
        put_placement(client, "home_hero", PLACEMENT.decode(msgspec.json.encode(HERO)))
        script = work / "decide.lua"
        auth = __import__("base64").b64encode(f"{WRITE_KEY}:".encode()).decode()
        script.write_text(_WRK.replace("__AUTH__", auth).replace("__PEOPLE__", str(args.people)))

        for step, (name, source) in enumerate((("bare", _BARE_APP), ("naive", _NAIVE_APP)), 2):
            print(f"{step}/5 {name} endpoint ({args.seconds} s, -c{args.connections})", flush=True)
            proc, port = serve_app(work, name, source, {"REDIS_URL": url})
            try:
                results[name] = wrk(port, args.seconds, args.connections, script)
            finally:
                proc.terminate()
                proc.wait()

        print(f"4/5 kairos /v1/decide ({args.seconds} s, -c{args.connections})", flush=True)
        port = free_port()
        log = open(work / "engine.log", "ab")  # noqa: SIM115 - handed to the child
        engine = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "up", "--port", str(port), "--data-dir",
             str(work / "data"), "--redis-url", url, "--workers", "none", "--write-key",
             WRITE_KEY, "--secret-key", SECRET_KEY, "--log-format", "json"],
            stdout=log, stderr=log, cwd=ROOT,
        )  # fmt: skip
        log.close()
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            results["kairos"] = wrk(port, args.seconds, args.connections, script)
            results["kairos"].update(logged(client))
        finally:
            engine.send_signal(2)
            engine.wait(timeout=120)
        print("5/5 in process: 10-arm Thompson sampling, choose + update", flush=True)
        micro = in_process()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, micro, args)
    return 0


def report(
    results: dict[str, dict[str, float | str]], micro: dict[str, float], args: argparse.Namespace
) -> None:
    base = float(results["bare"]["rps"])
    lines = [
        f"# Decision benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"One uvicorn worker each, wrk -t1 -c{args.connections}, {args.seconds} s per phase; "
        f"one placement (Thompson sampling, two variants, one templated); visitors drawn from "
        f"{args.people:,} real profiles; private Redis (AOF everysec); all on this 2-core machine.",
        "",
        "| endpoint | requests/s | × bare | p50 | p99 | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"bare": "bare endpoint, constant JSON (baseline)",
             "naive": "naive: awaited redis-py reads + numpy sampling",
             "kairos": "kairos /v1/decide (profile read, choice, logged)"}  # fmt: skip
    for key, label in names.items():
        r = results[key]
        lines.append(f"| {label} | {float(r['rps']):,.0f} | {float(r['rps']) / base:.2f} | "
                     f"{r['p50']} | {r['p99']} | {r['non2xx']} |")  # fmt: skip
    kairos = results["kairos"]
    lines += [
        "",
        f"Decisions logged to the spool during the kairos phase: {int(kairos['logged']):,} "
        f"for {int(kairos['requests']):,} answered requests, "
        f"in {int(kairos['entries']):,} stream entries (the decisions of one event-loop tick "
        "share an entry).",
        "",
        f"In process, 10-arm Beta Thompson sampling, choose + update: **{micro['kairos']:.1f} µs**"
        + (
            f"; MABWiser ThompsonSampling predict + partial_fit: {micro['mabwiser']:.0f} µs "
            f"({micro['mabwiser'] / micro['kairos']:.0f}× slower)."
            if "mabwiser" in micro
            else " (install mabwiser to compare)."
        ),  # fmt: skip
        "",
        "Targets: /v1/decide ≥ 0.5× the bare endpoint, p99 ≤ 10 ms at 32 connections; "
        "choose + update ≤ 20 µs.",
    ]
    publish(REPORT, lines)


if __name__ == "__main__":
    sys.exit(main())
