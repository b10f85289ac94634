"""Decision benchmark: /v1/decide against a bare endpoint, the whole engine on one core, and the
policy's own cost in process.

Runs, in one go on this machine, each server on one uvicorn worker (uvloop + httptools), wrk
(-t1) as load, the same request body for all (a visitor drawn from ``--people`` per request):

1. bare          a Starlette endpoint that reads the body and answers a constant JSON (the
                 baseline);
2. naive         what a first attempt looks like: one awaited redis-py HGETALL of the profile
                 per request, then numpy Beta sampling for the choice (no logging);
3. kairos        ``kairos up --workers none`` on a Redis holding real profiles: /v1/decide for
                 one Thompson-sampling placement with two variants (one templated), a profile
                 lookup per request (visitors drawn from the people the profile updater built),
                 the decision logged to the spool before the answer, the rate limiter in the
                 path;
4. bare-1core    the bare endpoint pinned to one core (``taskset -c 0``), wrk on another;
5. kairos-1core  the whole engine pinned to that core: ``kairos up`` with every worker and its
                 embedded Redis (children inherit the affinity), so the sink, the reward worker
                 and the others consume the decision log on the same core while it answers.

Then, in process: choose + update of a 10-arm Beta Thompson sampler, per call; and MABWiser's
predict + partial_fit for comparison when it is installed (``pip install mabwiser``; bench only).

The verdict: every phase must answer only 2xx (wrk's non-2xx and socket errors are counted),
and every decision answered must be logged — in the spool (kairos) or in ClickHouse's
``decisions`` table once the sink has caught up (kairos-1core); else the run prints one
``FAILED:`` line and exits 1, and ratios are shown only for phases without errors. The engine's
limits are ``--per-key``/``--per-ip`` (default far above what wrk reaches here: the limiter runs
on every request but never binds).

Prints a table and writes bench/reports/decide.md. Needs ``wrk`` (apt-get install wrk).

    python bench/decide.py                            # every phase, best of 3 rounds
    python bench/decide.py --quick                    # seconds, for the test
    python bench/decide.py --phases bare,kairos --rounds 5 --seconds 10
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import tempfile
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import numpy as np
import redis

from edge.runtime.stores import redis_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bandits.mab import BetaThompson  # noqa: E402
from bench.engine import processes  # noqa: E402
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
from bench.profiles import fill, run_updater, traffic  # noqa: E402
from collector.reader import group_lags  # noqa: E402
from decisions.placements import PLACEMENT, put_placement  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "decide.md"
WRITE_KEY, SECRET_KEY = "wk_bench", "sk_bench"
PHASES = ("bare", "naive", "kairos", "bare-1core", "kairos-1core")
QUICK = {"seconds": 1, "people": 200, "rounds": 1, "warmup": 0, "rounds_in_process": 5_000}

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

client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])  # naive: no cluster
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


def script(work: Path, people: int) -> Path:
    """The wrk script: a POST /v1/decide per request, with the write key."""
    path = work / "decide.lua"
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    path.write_text(_WRK.replace("__AUTH__", auth).replace("__PEOPLE__", str(people)))
    return path


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

    rounds_mab = max(500, rounds // 20)
    result["mabwiser"] = (
        min(timeit.repeat(mab_step, number=rounds_mab, repeat=3)) / rounds_mab * 1e6
    )
    return result


class Run:
    """One benchmark run: its scratch dir, its Redis with real profiles, and what it found."""

    def __init__(self, args: argparse.Namespace, work: Path, url: str):
        self.args, self.work, self.url = args, work, url
        self.client = redis_client(url)
        self.script = script(work, args.people)
        self.verdict = Verdict()
        self.best: dict[str, Load] = {}  # per phase, the round with the most requests/s
        self.rounds: dict[str, list[Load]] = {}  # per phase, every round's
        self.notes: dict[str, str] = {}
        self.answered = 0  # 200 answers of the last phase loaded (see ``load``)

    def load(self, phase: str, port: int, cpus: str | None = None) -> Load:
        """wrk on ``port``'s /v1/decide; its answers go to the verdict, the best round kept."""
        target, args = f"http://127.0.0.1:{port}", self.args
        self.answered = 0  # 200 answers, the warm-up's included: each logged a decision
        if args.warmup:  # caches filled, every code path run once; its answers count too
            warm = wrk(target, args.warmup, args.connections, self.script, cpus=cpus)
            self.answered += self.verdict.load(phase, warm).ok
        got = self.verdict.load(
            phase, wrk(target, args.seconds, args.connections, self.script, cpus=cpus)
        )
        self.answered += got.ok
        if phase not in self.best or got.rps > self.best[phase].rps:
            self.best[phase] = got
        self.rounds.setdefault(phase, []).append(got)
        print(f"   {got.rps:,.0f} requests/s, p99 {got.p99}, {got.errors:,} errors", flush=True)
        return got

    def app(self, phase: str, source: str, cpus: str | None = None) -> None:
        proc, port = serve_app(self.work, phase.replace("-", "_"), source, {"REDIS_URL": self.url},
                               cpus)  # fmt: skip
        try:
            self.load(phase, port, "1" if cpus else None)
        finally:
            proc.terminate()
            proc.wait()

    def kairos(self) -> None:
        """``kairos up --workers none`` on the shared Redis; every decision in the spool."""
        port = free_port()
        engine = start_engine(self.work / "data", port, "--redis-url", self.url, "--workers",
                              "none", keys=(WRITE_KEY, SECRET_KEY),
                              limits=(self.args.per_ip, self.args.per_key))  # fmt: skip
        try:
            before, entries_before = spool_decisions(self.client, entries=True)
            self.load("kairos", port)
            after, entries = spool_decisions(self.client, entries=True)
            self.verdict.decisions("kairos", self.answered, after - before)
            self.notes["kairos"] = (
                f"{after - before:,} decisions logged to the spool for {self.answered:,} "
                f"answered with 200 (last round, warm-up included), in "
                f"{entries - entries_before:,} stream entries (the decisions of one event-loop "
                "tick share an entry)"
            )
        finally:
            stop(engine)

    def kairos_one_core(self) -> None:
        """The whole engine on core 0 (API, workers, embedded Redis), wrk on core 1."""
        data = self.work / "data-1core"
        port = free_port()
        engine = start_engine(data, port, keys=(WRITE_KEY, SECRET_KEY), cpus="0",
                              limits=(self.args.per_ip, self.args.per_key))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            own = redis.Redis(unix_socket_path=str(data / "redis" / "redis.sock"))
            people = traffic(self.args.people * 10, self.args.people)
            fill(f"unix://{data / 'redis' / 'redis.sock'}", people)
            # The engine's own profile worker builds the profiles, on the same core.
            _until(lambda: _stat(own, "profiles_applied") >= len(people), 600, "profiles built")
            put_placement(own, "home_hero", PLACEMENT.decode(msgspec.json.encode(HERO)))
            with httpx.Client(base_url=base, timeout=10) as http:
                _until(lambda: _decides(http), 60, "the placement answers")
                # Every worker done with what came before: the load is all they have to do.
                _until(lambda: not any(group_lags(own).values()), 600, "the workers caught up")
                family = processes(data, engine.pid)
                before = {name: _cpu(pid) for name, pid in family.items()}
                started = datetime.now(UTC)
                self.load("kairos-1core", port, cpus="1")
                answered = self.answered
                stored_then = _decisions(http, started)
                used = {name: _cpu(pid) - before[name] for name, pid in family.items()}
                waited = time.monotonic()
                _until(lambda: _decisions(http, started) >= answered, 120, "", fail=False)
                stored, caught_up = _decisions(http, started), time.monotonic() - waited
            self.verdict.decisions("kairos-1core", answered, stored)
            total = sum(used.values()) or 1.0
            shares = ", ".join(f"{name} {100 * cpu / total:.0f}%" for name, cpu in
                               sorted(used.items(), key=lambda kv: -kv[1]) if cpu > 0)  # fmt: skip
            self.notes["kairos-1core"] = (
                f"{stored:,} decisions in ClickHouse for {answered:,} answered with 200 (last "
                f"round, warm-up included; {stored_then:,} stored by the end of the load; the "
                "sink caught up "
                f"{caught_up:.1f} s later); the core's time during the load (last round): "
                f"{shares}"
            )
        finally:
            stop(engine)


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stat(client: redis.Redis, name: str) -> int:
    return int(float(client.hget("{spool}:stats", name) or 0))


def _decides(http: httpx.Client) -> bool:
    ask = {"anonymousId": "a1", "placements": ["home_hero"]}
    answer = http.post("/v1/decide", json=ask, auth=(WRITE_KEY, ""))
    return answer.status_code == 200 and "fallback" not in answer.json()["decisions"]["home_hero"]


def _decisions(http: httpx.Client, since: datetime) -> int:
    """Decisions of home_hero in ClickHouse made since ``since``."""
    query = ("SELECT count() FROM decisions WHERE placement = 'home_hero' AND "
             f"toUnixTimestamp64Milli(timestamp) >= {int(since.timestamp() * 1000)}")  # fmt: skip
    answer = http.post("/v1/sql", json={"query": query},
                       headers={"Authorization": f"Bearer {SECRET_KEY}"})  # fmt: skip
    answer.raise_for_status()
    return int(answer.json()["rows"][0][0])


def _until(check: object, timeout: float, what: str, fail: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    if fail:
        raise RuntimeError(f"timed out after {timeout:g} s waiting until {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="per phase (default %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--people", type=int, default=5_000, help="default %(default)s")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="which, comma-separated (default %(default)s)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the load phases this many times and keep each one's "
                        "best round: other work on a shared machine only slows a run down "
                        "(default %(default)s)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of load before each phase, not measured (default "
                        "%(default)s)")  # fmt: skip
    parser.add_argument(
        "--rounds-in-process",
        type=int,
        default=100_000,
        help="choose + update calls timed (default %(default)s; 0: none)",
    )
    add_options(parser, REPORT)
    args = parse(parser, QUICK, argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"--phases: no phase {', '.join(unknown)} (phases: {', '.join(PHASES)})")
    if not need("wrk", "bench/decide.py"):
        return 2
    if any(p.endswith("-1core") for p in phases) and (
        (os.cpu_count() or 1) < 2 or not need("taskset", "bench/decide.py")
    ):
        print("note: the one-core phases need two cores and taskset; skipped", file=sys.stderr)
        phases = [p for p in phases if not p.endswith("-1core")]
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-decide-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    steps = len(phases) * args.rounds + 1 + (args.rounds_in_process > 0)
    step = 1
    micro: dict[str, float] = {}
    try:
        run = Run(args, work, url)
        print(
            f"{step}/{steps} profiles for {args.people:,} people (the profile updater)", flush=True
        )
        fill(url, traffic(args.people * 10, args.people))
        run_updater(run.client, args.people * 10)
        put_placement(run.client, "home_hero", PLACEMENT.decode(msgspec.json.encode(HERO)))
        for round_ in range(args.rounds):
            for phase in phases:
                step += 1
                print(f"{step}/{steps} {phase} ({args.seconds} s, -c{args.connections}"
                      + (f", round {round_ + 1}/{args.rounds}" if args.rounds > 1 else "") + ")",
                      flush=True)  # fmt: skip
                if phase == "bare":
                    run.app(phase, _BARE_APP)
                elif phase == "naive":
                    run.app(phase, _NAIVE_APP)
                elif phase == "kairos":
                    run.kairos()
                elif phase == "bare-1core":
                    run.app(phase, _BARE_APP, cpus="0")
                else:
                    run.kairos_one_core()
                shutil.rmtree(work / "data-1core", ignore_errors=True)  # a fresh engine each round
        if args.rounds_in_process > 0:
            step += 1
            print(f"{step}/{steps} in process: 10-arm Thompson sampling, choose + update",
                  flush=True)  # fmt: skip
            micro = in_process(args.rounds_in_process)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    publish(args.report, report(run, micro, args, phases))
    return run.verdict.exit_code()


_LABELS = {
    "bare": "bare endpoint, constant JSON (baseline)",
    "naive": "naive: awaited redis-py reads + numpy sampling",
    "kairos": "kairos /v1/decide (profile read, choice, logged)",
    "bare-1core": "bare endpoint, pinned to one core",
    "kairos-1core": "kairos /v1/decide, whole engine (API, all workers, Redis) on that core",
}


def report(
    run: Run, micro: dict[str, float], args: argparse.Namespace, phases: list[str]
) -> list[str]:
    verdict, best = run.verdict, run.best
    lines = [
        f"# Decision benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"One uvicorn worker each, wrk -t1 -c{args.connections}, {args.seconds} s per phase"
        + (f" after {args.warmup} s of warm-up" if args.warmup else "")
        + (f", best of {args.rounds} alternating rounds" if args.rounds > 1 else "")
        + f"; one placement (Thompson sampling, two variants, one templated); visitors drawn "
        f"from {args.people:,} real profiles; private Redis (AOF everysec); the engine's rate "
        f"limiter in the path (per_key {args.per_key:g} requests/s for the write key, the "
        "bucket wrk's requests count against; from 127.0.0.1 without X-Forwarded-For there "
        "is no per-IP bucket); "
        f"{machine()}. The one-core phases pin the server (for kairos: the API, every worker "
        "and its embedded Redis) to core 0 with taskset and wrk to core 1.",
        "",
        "| phase | endpoint | requests/s | × bare | p50 | p99 | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for phase in phases:
        r = best.get(phase)
        if r is None:
            continue
        base = "bare-1core" if phase.endswith("-1core") else "bare"
        ratio = verdict.ratio(r.rps, best[base].rps, phase, base) if base in best else "–"
        lines.append(f"| {phase} | {_LABELS[phase]} | {r.rps:,.0f} | {ratio} | {r.p50} | "
                     f"{r.p99} | {verdict.errors(phase)} |")  # fmt: skip
    lines.append("")
    for phase in ("kairos", "kairos-1core"):
        if phase in run.notes:
            lines.append(f"- {phase}: {run.notes[phase]}.")
    for phase, base in (("kairos", "bare"), ("kairos-1core", "bare-1core")):
        ours, theirs = run.rounds.get(phase, []), run.rounds.get(base, [])
        if len(ours) > 1 and len(ours) == len(theirs) and verdict.ok(phase, base):
            each = ", ".join(f"{a.rps / b.rps:.2f}" for a, b in zip(ours, theirs))
            lines.append(f"- {phase} × {base} round by round (other work on the machine "
                         f"slows either): {each}.")  # fmt: skip
    if micro:
        lines += [
            "",
            "In process, 10-arm Beta Thompson sampling, choose + update: "
            f"**{micro['kairos']:.1f} µs**"
            + (
                f"; MABWiser ThompsonSampling predict + partial_fit: {micro['mabwiser']:.0f} µs "
                f"({micro['mabwiser'] / micro['kairos']:.0f}× slower)."
                if "mabwiser" in micro
                else " (install mabwiser to compare)."
            ),
        ]  # fmt: skip
    lines += [
        "",
        *verdict.lines(),
        "",
        "Targets: /v1/decide ≥ 0.5× the bare endpoint, p99 ≤ 10 ms at 32 connections, with the "
        "rate limiter in the path; choose + update ≤ 20 µs.",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
