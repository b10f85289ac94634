"""Learner benchmark: how fast the learner keeps up with the spool, and how well it predicts.

In one run, on a private Redis holding simulated shoppers' events (``profiles.shoppers``)
after the profile updater has resolved them:

1. naive      what a first attempt looks like: per event, one awaited Redis read of the
              profile, one River pipeline (StandardScaler | LogisticRegression) predicting and
              learning, one Redis write of the score;
2. learner    the learner itself: for every event its person's record read and written, three
              models predicting, scores written to the profile, examples queued and learned
              as their deadlines pass, all in one transaction per batch;
3. in process one predict + learn of the default model (shared scaler, logistic regression)
              per labelled example, in µs.

Prints a table and writes bench/reports/learner.md, with each model's prequential quality. No
phase goes through the HTTP API, so there are no answers to count and no rate limits to set.

    python bench/learner.py --shoppers 3000 --days 60
    python bench/learner.py --quick
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import redis
from river import linear_model, preprocessing

from edge.runtime.stores import redis_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import add_options, machine, parse, publish  # noqa: E402
from bench.profiles import fill  # noqa: E402
from collector import SpoolReader  # noqa: E402
from collector.reader import Entry, ensure_group  # noqa: E402
from edge.cli.progress import Progress  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from profiles import ProfileStore, ProfileUpdater  # noqa: E402
from profiles.history import NUMERIC, Example  # noqa: E402
from profiles.learner import Learner, ModelSettings  # noqa: E402
from profiles.models import Model, Scaler  # noqa: E402
from profiles.shoppers import ShopperStream  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "learner.md"
QUICK = {"shoppers": 150, "days": 10.0, "churn_days": 3.0}


def drain(reader: SpoolReader, step: object, total: int, label: str) -> float:
    """Read the whole spool through ``step(entries)``; returns messages per second."""
    bar = Progress(total, label)
    started, done = time.perf_counter(), 0
    while entries := reader.read(20, 10):
        counters = step(entries)  # type: ignore[operator]
        reader.ack(entries, counters if isinstance(counters, dict) else {})
        count = sum(e.count for e in entries)
        done += count
        bar.advance(count)
    return done / (time.perf_counter() - started)


def naive(client: redis.Redis) -> Callable[[list[Entry]], dict[str, float]]:
    """The naive learner's step (a cost baseline: it learns whether the person has ordered)."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    learner = Learner(SpoolReader(client, "baseline", "bench"), client, clock=None)

    def step(entries: list[Entry]) -> dict[str, float]:
        owners = learner.profile_ids([e for e in entries if e.kind == "events"])
        for entry in entries:
            for pid in owners.get(entry.ref, []):
                fields = client.hgetall(f"{{p:{pid}}}")
                x = {k.decode(): float(v) for k, v in fields.items()
                     if k in (b"page_views", b"sessions", b"orders", b"revenue")}  # fmt: skip
                p = model.predict_proba_one(x).get(True, 0.0)
                model.learn_one(x, x.get("orders", 0.0) > 0)
                client.hset(f"{{p:{pid}}}", "s:naive", p)
        return {}

    return step


def per_example(examples: list[tuple[Example, bool]]) -> float:
    """µs for one predict + learn of the default model on the learner's own examples."""
    scaler, model = Scaler(NUMERIC), Model("conversion")
    scaled = [(scaler(e.x, learn=True), y) for e, y in examples]
    index = iter(range(10**9))

    def step() -> None:
        z, y = scaled[next(index) % len(scaled)]
        model.learn(z, y, model.predict(z))

    rounds = min(len(scaled), 20_000)
    return min(timeit.repeat(step, number=rounds, repeat=3)) / rounds * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shoppers", type=int, default=3_000, help="default %(default)s")
    parser.add_argument("--days", type=float, default=60.0, help="default %(default)s")
    parser.add_argument(
        "--churn-days",
        type=float,
        default=14.0,
        help="churn window (default %(default)s: the engine's 30 would label its first "
        "examples only after 30 simulated days)",
    )
    add_options(parser, REPORT, engine=False)
    args = parse(parser, QUICK, argv)
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-learner-"))
    server = EmbeddedRedis(work / "redis-home")
    url = server.start()
    try:
        client = redis_client(url)
        stream = ShopperStream(args.shoppers, args.days, seed=7)
        messages = list(stream.messages())
        print(f"1/4 {len(messages):,} events of {args.shoppers:,} shoppers into the spool",
              flush=True)  # fmt: skip
        fill(url, messages)
        for group in ("profiles", "baseline", "learner"):
            ensure_group(client, group)
        print("2/4 the profile updater resolves them (not timed)", flush=True)
        updater = ProfileUpdater(SpoolReader(client, "profiles", "bench"), ProfileStore(client))
        drain(updater.reader, updater.process, len(messages), "profiles")
        print("3/4 baseline, then the learner", flush=True)
        baseline = drain(SpoolReader(client, "baseline", "bench"), naive(client),
                         len(messages), "naive")  # fmt: skip
        examples: list[tuple[Example, bool]] = []
        learner = Learner(SpoolReader(client, "learner", "bench"), client,
                          ModelSettings(churn_days=args.churn_days), clock=None,
                          on_example=lambda e, y: examples.append((e, y)))  # fmt: skip
        rate = drain(learner.reader, learner.process, len(messages), "learner")
        print("4/4 in process: predict + learn per example", flush=True)
        micro = per_example([(e, y) for e, y in examples if e.target == "conversion"])
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# Learner benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{len(messages):,} events of {args.shoppers:,} simulated shoppers over {args.days:g} "
        f"days; private Redis (AOF everysec); one learner; {machine()}.",
        "",
        "| phase | pass | events/s | × baseline |",
        "|---|---|---:|---:|",
        f"| naive | per event a profile read, one pipeline, a score write | {baseline:,.0f} | "
        "1.00 |",
        f"| learner | records, 3 predictions, scores, examples, learning | {rate:,.0f} | "
        f"{rate / baseline:.2f} |",
        "",
        f"in process: one predict + learn of the default model (scaler + logistic regression): "
        f"**{micro:.1f} µs**.",
        "",
        "Prequential quality (each prediction made before its label was known; rolling window "
        f"of the last 5,000 labelled examples; churn window {args.churn_days:g} days):",
        "",
        "| model | examples | positives | ROC AUC | log loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for model in learner.models.values():
        s = model.summary()
        lines.append(f"| {s['target']} | {s['examples']:,} | {s['positives']:,} | "
                     f"{s['roc_auc']} | {s['log_loss']} |")  # fmt: skip
    lines += ["", "Target: ≥ 5,000 events/s end to end from the spool on one learner."]
    publish(args.report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
