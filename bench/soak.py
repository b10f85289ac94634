"""Soak test: the Locust scenarios at a fixed rate for minutes, no errors allowed, memory bounded.

    python -m bench.soak --minutes 10 --rate 50

Starts its own ``kairos up --demo`` (temporary data dir, the rate limiter in the path with limits
far above the rate: ``--per-key``/``--per-ip``), then runs
bench/locustfile.py's shoppers and email system paced together at ``--rate`` requests/s, and
samples the resident memory of every engine process (the API, each worker of ``run/*.pid``,
Redis) once a second. Not run in CI.

It fails (exit 1) on any of:

- an error: a failed request (a status other than the one expected, a connection error), a
  placement missing from a ``/v1/decide`` answer, a decision answered with a default because the
  engine could not decide (``timeout``, ``redis_unavailable``, ``catalog_unavailable``), or a
  worker that was restarted (its pid changed);
- fewer decisions in ClickHouse's ``decisions`` table, once the sink has caught up, than the
  200 answers of the run carried;
- a rate below 90% of ``--rate`` (the engine, or this machine, could not keep up);
- unbounded memory: for each process, RSS at the end (median of the last 30 s) may exceed RSS
  after the warm-up (median of the 30 s after the first fifth of the run, at least 30 s in) by
  at most ``--growth-mb`` (default 50 MB) or ``--growth-pct`` (default 20%) of it, whichever is
  larger. Caches and Redis' data fill during the warm-up and then level off; a leak keeps going.

Writes ``soak.md`` and ``memory.csv`` (and Locust's CSVs under ``raw/``) to ``--out`` (default
bench/reports/soak), and prints the summary; on failure the last line printed is ``FAILED: …``.

    python -m bench.soak --quick
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import engine as engines  # noqa: E402
from bench.harness import Verdict, add_options, free_port, parse  # noqa: E402
from bench.load_report import rows  # noqa: E402
from bench.locust_run import Run, run  # noqa: E402

OUT = ROOT / "bench" / "reports" / "soak"
QUICK = {"minutes": 0.5, "rate": 10.0, "users": 10, "spawn_rate": 10.0}
_DEGRADED = ("fallback:timeout", "fallback:redis_unavailable", "fallback:catalog_unavailable")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=10.0, help="how long (default %(default)s)")
    p.add_argument("--rate", type=float, default=50.0, help="requests/s (default %(default)s)")
    p.add_argument("--users", type=int, default=30, help="Locust users (default %(default)s)")
    p.add_argument(
        "--think",
        type=float,
        default=0.25,
        help="mean seconds between a user's steps (default %(default)s)",
    )
    p.add_argument(
        "--growth-mb",
        type=float,
        default=50.0,
        help="RSS a process may gain after the warm-up, MB (default %(default)s) ...",
    )
    p.add_argument(
        "--growth-pct",
        type=float,
        default=20.0,
        help="... or this percentage of its RSS then, if larger (default %(default)s)",
    )
    p.add_argument(
        "--api-workers", type=int, default=None, metavar="N", help="kairos up --api-workers N"
    )
    p.add_argument(
        "--spawn-rate",
        type=float,
        default=None,
        help="users started per second (default users / 5)",
    )
    p.add_argument("--out", type=Path, default=OUT, help="default %(default)s")
    p.add_argument("--seed", type=int, default=7, help="default %(default)s")
    add_options(p, None)
    return p


def memory(
    run: Run, growth_mb: float, growth_pct: float
) -> list[tuple[str, float, float, float, float, bool]]:
    """Per process: (name, RSS at start, after warm-up, at the end, allowed growth, within)."""
    total = max((s for s, *_ in run.memory), default=0.0)
    warm = max(30.0, total / 5)
    found = []
    names = list(dict.fromkeys(name for _, name, _, _ in run.memory))
    for name in names:
        samples = [(s, mb) for s, n, _, mb in run.memory if n == name]
        after = [mb for s, mb in samples if warm <= s < warm + 30] or [samples[0][1]]
        last = [mb for s, mb in samples if s >= total - 30] or [samples[-1][1]]
        warm_mb, end_mb = statistics.median(after), statistics.median(last)
        allowed = max(growth_mb, warm_mb * growth_pct / 100)
        found.append((name, samples[0][1], warm_mb, end_mb, allowed, end_mb - warm_mb <= allowed))
    return found


def restarts(run: Run) -> dict[str, int]:
    """How many times each process's pid changed during the run."""
    pids: dict[str, list[int]] = {}
    for _, name, pid, _ in run.memory:
        seen = pids.setdefault(name, [])
        if not seen or seen[-1] != pid:
            seen.append(pid)
    return {name: len(seen) - 1 for name, seen in pids.items() if len(seen) > 1}


def report(
    run: Run, args: argparse.Namespace, seconds: int, logged: int
) -> tuple[list[str], list[str]]:
    """(Markdown lines, problems); ``logged``: the decisions ClickHouse holds for the run."""
    table = rows(run, None)
    total = table[-1]
    c = run.counters
    verdict = Verdict(error="failed request")
    verdict.answers("soak", total["requests"], total["failures"], "failed requests")
    verdict.decisions("soak", c.get("to_log", 0), logged)
    problems = verdict.failures()
    degraded = {k.split(":", 1)[1]: c[k] for k in _DEGRADED if c.get(k)}
    if degraded:
        problems.append(f"decisions answered with defaults: {degraded}")
    if c.get("missing"):
        problems.append(f"{c['missing']:,} placements or results missing from answers")
    restarted = restarts(run)
    if restarted:
        problems.append(f"processes restarted: {restarted}")
    achieved = total["requests"] / seconds
    if achieved < 0.9 * args.rate:
        problems.append(f"rate {achieved:.1f}/s is below 90% of {args.rate:g}/s")
    held = memory(run, args.growth_mb, args.growth_pct)
    for name, _, warm, end, allowed, within in held:
        if not within:
            problems.append(
                f"{name} grew {end - warm:+.0f} MB after warm-up (allowed {allowed:.0f})"
            )
    lines = [
        f"# Soak test, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.minutes:g} minutes at {args.rate:g} requests/s ({args.users} Locust users, "
        "shoppers and an email system 9:1, paced together) against `kairos up --demo` "
        f"(embedded stores, all workers) on this {os.cpu_count()}-core machine (load average "
        f"at the end {os.getloadavg()[0]:.1f}).",
        "",
        f"**{'PASS' if not problems else 'FAIL'}**: {total['requests']:,} requests "
        f"({achieved:.1f}/s), {total['failures']:,} failed; p50 {total['p50_ms']:.0f} ms, "
        f"p95 {total['p95_ms']:.0f} ms, p99 {total['p99_ms']:.0f} ms, "
        f"max {total['max_ms']:.0f} ms.",
        "",
        "| endpoint | requests | failures | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(f"| `{r['endpoint']}` | {r['requests']:,} | {r['failures']:,} | {r['p50_ms']:.0f} ms "
          f"| {r['p95_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms |"
          for r in table[:-1]),
        "",
        "| process | RSS at start | after warm-up | at the end | growth | allowed |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {name} | {start:,.0f} MB | {warm:,.0f} MB | {end:,.0f} MB | {end - warm:+,.0f} MB "
          f"| {allowed:,.0f} MB{'' if ok else ' ✗'} |"
          for name, start, warm, end, allowed, ok in held),
        "",
        f"Decisions: {c.get('decisions', 0):,}, with content or items "
        f"{c.get('with_content', 0):,}; emails {c.get('emails', 0):,}, with items "
        f"{c.get('emails_with_items', 0):,}; {logged:,} decisions logged in ClickHouse for "
        f"{c.get('to_log', 0):,} answered with 200.",
    ]  # fmt: skip
    lines += [f"- problem: {p}" for p in problems]
    lines += [f"- Locust: {w}" for w in run.warnings[:5]]
    return lines, problems


def main(argv: list[str] | None = None) -> int:
    args = parse(parser(), QUICK, argv)
    seconds = int(args.minutes * 60)
    raw = args.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kairos-soak-"))
    try:
        print("starting kairos up --demo (and waiting for its demo history)", file=sys.stderr)
        engine = engines.start(work, free_port(), args.api_workers,
                               limits=(args.per_ip, args.per_key))  # fmt: skip
        root = engine.proc.pid if engine.proc is not None else None
        try:
            started = time.time()
            soaked = run(engine.url, args.users, seconds, raw / "soak",
                         (engine.write_key, engine.secret_key), label="soak", think=args.think,
                         rate=args.rate, seed=args.seed, spawn_rate=args.spawn_rate,
                         watch=lambda: engines.processes(engine.data_dir, root))  # fmt: skip
            expected = soaked.counters.get("to_log", 0)
            logged = engines.wait_decisions(engine, started, expected)
        finally:
            engines.stop(engine)
    finally:
        if (work / "engine.log").exists():
            shutil.copy(work / "engine.log", raw / "engine.log")
        shutil.rmtree(work, ignore_errors=True)
    lines, problems = report(soaked, args, seconds, logged)
    (args.out / "soak.md").write_text("\n".join(lines) + "\n")
    with open(args.out / "memory.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "process", "pid", "rss_mb"])
        writer.writerows((f"{s:.1f}", n, pid, f"{mb:.1f}") for s, n, pid, mb in soaked.memory)
    print("\n".join(lines))
    print(f"(written to {args.out}: soak.md, memory.csv, raw/)")
    if problems:
        print("FAILED: " + "; ".join(problems), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
