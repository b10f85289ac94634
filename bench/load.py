"""Load test: the Locust scenarios (bench/locustfile.py) headless, with a report per endpoint.

    python -m bench.load --users 50 --duration 60

Two phases on this machine, the same Locust users in each (shoppers and an email system, 9:1):

1. bare    the baseline: ``bench.bare_shop``, a Starlette app on one uvicorn worker answering
           every endpoint with a constant of the engine's shape (``--baseline-duration``;
           0 skips it);
2. kairos  the engine: with ``--url`` a running one (keys from ``--write-key``/``--secret-key``,
           KAIROS_WRITE_KEY/KAIROS_SECRET_KEY, or ``--data-dir``'s keys.json; it needs the demo
           placements, ``kairos up --demo``), else its own ``kairos up --demo`` on a temporary
           data dir (limits that do not bind, fixed keys, ``--api-workers``), started before and
           stopped after, once its demo history is stored and its recommendations have items.

Writes to ``--out`` (default bench/reports/load): ``load.csv`` (requests, failures, requests/s,
p50/p95/p99 per endpoint, and the baseline's with the ratios), ``load.md``, ``load.html`` (the
table and SVG charts: throughput and latency percentiles over time, per-endpoint bars, memory),
``memory.csv`` (the engine's RSS per process, each second) and Locust's own CSVs and log under
``raw/``.

Our own engine runs with the rate limiter in the path and limits far above what Locust reaches
(``--per-key``/``--per-ip``). Exits 1, with one ``FAILED:`` line, if any request of either phase
failed (a status other than the one expected, a connection error), or if ClickHouse's
``decisions`` table holds fewer decisions made during the engine's phase (once the sink has
caught up) than the 200 answers carried; ratios to the baseline are left out then.

    python -m bench.load --quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import engine as engines  # noqa: E402
from bench.harness import Verdict, add_options, free_port, parse, wait_port  # noqa: E402
from bench.load_report import write  # noqa: E402
from bench.locust_run import Run, run  # noqa: E402

OUT = ROOT / "bench" / "reports" / "load"
QUICK = {"users": 10, "duration": 10, "baseline_duration": 3, "spawn_rate": 10.0, "think": 0.5}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=int, default=50, help="simulated users (default %(default)s)")
    p.add_argument("--duration", type=int, default=60, help="seconds per phase (default 60)")
    p.add_argument(
        "--spawn-rate",
        type=float,
        default=None,
        help="users started per second (default: users / 5)",
    )
    p.add_argument(
        "--think",
        type=float,
        default=1.0,
        help="mean seconds a user waits between steps (default %(default)s)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="cap all users together at this many requests/s (default: no cap)",
    )
    p.add_argument(
        "--url",
        default=None,
        help="a running engine (with the demo placements); default: start our own",
    )
    p.add_argument(
        "--write-key",
        default=os.environ.get("KAIROS_WRITE_KEY"),
        help="for --url (default: KAIROS_WRITE_KEY, else --data-dir's)",
    )
    p.add_argument(
        "--secret-key",
        default=os.environ.get("KAIROS_SECRET_KEY"),
        help="for --url (default: KAIROS_SECRET_KEY, else --data-dir's)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="for --url: its data dir, for the keys and the processes' memory",
    )
    p.add_argument(
        "--api-workers",
        type=int,
        default=None,
        metavar="N",
        help="our own engine's API processes (kairos up --api-workers)",
    )
    p.add_argument(
        "--baseline-duration",
        type=int,
        default=None,
        metavar="SECONDS",
        help="seconds of the bare baseline (default: --duration; 0: none)",
    )
    p.add_argument("--out", type=Path, default=OUT, help="report directory (default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="the users' choices (default %(default)s)")
    add_options(p, None)
    return p


def baseline(args: argparse.Namespace, seconds: int, raw: Path) -> Run:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.bare_shop:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        wait_port(port)
        return run(f"http://127.0.0.1:{port}", args.users, seconds, raw / "bare",
                   ("wk_bare", "sk_bare"), label="bare", spawn_rate=args.spawn_rate,
                   think=args.think, rate=args.rate, seed=args.seed)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait()


def setup(args: argparse.Namespace, own: bool, bare: Run | None) -> str:
    spawn = args.spawn_rate or max(1.0, args.users / 5)
    engine = (f"its own `kairos up --demo` (embedded Redis and ClickHouse, all workers, "
              f"{args.api_workers or 1} API process{'es' if (args.api_workers or 1) > 1 else ''})"
              if own else f"the engine at {args.url}")  # fmt: skip
    text = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. {args.users} Locust users (shoppers and an "
        f"email system, 9:1) for {args.duration} s, {spawn:g} started per second, think time "
        f"{args.think:g} s on average"
        + (f", capped at {args.rate:g} requests/s" if args.rate else "")
        + f"; against {engine}; Locust {version('locust')} (FastHttpUser, one process) on "
        f"the same {os.cpu_count()}-core machine (load average at the end "
        f"{os.getloadavg()[0]:.1f}: other work on it makes the figures noisier)."
    )
    if bare is not None:
        text += (f" Baseline: the same users for {bare.seconds} s against a bare Starlette app "
                 "(bench/bare_shop.py, one uvicorn worker) answering each endpoint with a "
                 "constant of the same shape.")  # fmt: skip
    return text


def judge(verdict: Verdict, run: Run) -> None:
    """A Locust phase's requests and failures."""
    total = run.total()
    verdict.answers(run.label, int(float(total["Request Count"])),
                    int(float(total["Failure Count"])), "failed requests")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse(parser(), QUICK, argv)
    verdict = Verdict(error="failed request")
    if args.url and (not args.write_key or not args.secret_key):
        if args.data_dir is None or not (args.data_dir / "keys.json").exists():
            print("--url needs --write-key and --secret-key (or KAIROS_*_KEY, or --data-dir)",
                  file=sys.stderr)  # fmt: skip
            return 2
        write_key, secret_key = engines.keys_of(args.data_dir)
        args.write_key, args.secret_key = args.write_key or write_key, args.secret_key or secret_key
    raw = args.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    seconds = args.duration if args.baseline_duration is None else args.baseline_duration
    bare = baseline(args, seconds, raw) if seconds > 0 else None
    if bare is not None:
        judge(verdict, bare)
    work = Path(tempfile.mkdtemp(prefix="kairos-load-"))
    try:
        if args.url:
            engine = engines.Engine(args.url.rstrip("/"), args.write_key, args.secret_key,
                                    args.data_dir)  # fmt: skip
            engines.ready(engine, timeout=30)
        else:
            print("starting kairos up --demo (and waiting for its demo history)", file=sys.stderr)
            engine = engines.start(work, free_port(), args.api_workers,
                                   limits=(args.per_ip, args.per_key))  # fmt: skip
        root = engine.proc.pid if engine.proc is not None else None
        try:
            started = time.time()
            kairos = run(engine.url, args.users, args.duration, raw / "kairos",
                         (engine.write_key, engine.secret_key), label="kairos",
                         spawn_rate=args.spawn_rate, think=args.think, rate=args.rate,
                         seed=args.seed,
                         watch=lambda: engines.processes(engine.data_dir, root))  # fmt: skip
            judge(verdict, kairos)
            expected = kairos.counters.get("to_log", 0)
            verdict.decisions("kairos", expected, engines.wait_decisions(engine, started, expected))
        finally:
            engines.stop(engine)
    finally:
        if (work / "engine.log").exists():
            shutil.copy(work / "engine.log", raw / "engine.log")
        shutil.rmtree(work, ignore_errors=True)
    write(args.out, kairos, bare, setup(args, engine.proc is not None, bare), verdict.lines(),
          ratios=verdict.ok(*verdict.phases))  # fmt: skip
    print((args.out / "load.md").read_text())
    print(f"(written to {args.out}: load.csv, load.md, load.html, memory.csv, raw/)")
    return verdict.exit_code()


if __name__ == "__main__":
    sys.exit(main())
