"""Redis memory the reward worker keeps to attribute rewards: what issue 17's bounded decision
memory is measured by. It must not grow with decisions, only with people × placements (and
with rewards, for one window).

On a private Redis: one Thompson-sampling placement; ``--decisions`` decisions (JSON lines of
the decision log, as ``/v1/decide`` writes them, with signed ids, 100 per spool entry) for
``--visitors`` distinct anonymous visitors, applied by the reward worker in two halves; then
clicks on ``--clicks`` of them. After each phase the spool's own stream is deleted, so that
only what the worker keeps remains, and ``used_memory`` is read. Reports the memory after each
phase, per decision, per visitor and per reward, and the keys: one hash per visitor (``{dv:…}``,
the latest decision per placement), reward marks (``{rw:…}``, one bucket per placement and
hour) and no record per decision (``{d:…}``, which the worker kept before: 256 bytes a decision).
Fails (exit 1) if any ``{d:…}`` key is left, if a visitor has no hash, if a click is not
rewarded exactly once, or if the worker counts a forged, unsigned, unresolved or late reward.

    python bench/decision_memory.py --decisions 200000 --visitors 20000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/decision_memory.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import redis

from bench.harness import ROOT, add_options, machine, parse, publish
from collector import Layout, SpoolReader, wire
from collector.reader import ensure_group
from decisions.placements import PLACEMENT, put_placement
from decisions.records import SIGNING_KEY, DecisionIds, Logged
from decisions.rewards import RewardWorker
from edge.runtime.embedded_redis import EmbeddedRedis
from edge.runtime.stores import redis_client

STREAM = Layout(1).partition(0).log  # the bench's spool has one partition

REPORT = ROOT / "bench" / "reports" / "decision_memory.md"
QUICK = {"decisions": 20_000, "visitors": 2_000}
HERO = b'{"default": "a", "policy": {"kind": "thompson"}, "variants": [{"key": "a", "content": 1}, {"key": "b", "content": 2}]}'  # noqa: E501
# What one {d:…} record per decision cost before (bench/reports/decision_memory.md on main,
# 2026-12-02: 200,000 decisions for 20,000 visitors, 51.1 MB kept).
BEFORE_BYTES = 256
ERRORS = ("rewards_forged", "rewards_unsigned", "rewards_unresolved", "rewards_late")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=200_000, help="default %(default)s")
    parser.add_argument("--visitors", type=int, default=20_000, help="default %(default)s")
    parser.add_argument("--clicks", type=float, default=0.02,
                        help="the share of decisions clicked (default %(default)s)")  # fmt: skip
    add_options(parser, REPORT, engine=False)
    args = parse(parser, QUICK, argv)
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="kairos-bench-dmem-")))
    client = redis_client(server.start())
    ids = DecisionIds.of_secret("sk_bench")
    counters: dict[str, float] = {}
    try:
        put_placement(client, "hero", PLACEMENT.decode(HERO))
        client.set(SIGNING_KEY, ids.key)  # as the API processes publish it
        client.execute_command("MEMORY", "PURGE")
        before = int(client.info("memory")["used_memory"])
        worker = RewardWorker(SpoolReader(client, "rewards", "bench"), client)
        half = args.decisions // 2
        made = [_decisions(client, ids, range(0, half), args.visitors)]
        seconds = _apply(client, worker, counters)
        after_half = _kept(client)
        made.append(_decisions(client, ids, range(half, args.decisions), args.visitors))
        seconds += _apply(client, worker, counters)
        after_all = _kept(client)
        every = max(1, round(1 / args.clicks)) if args.clicks > 0 else 0
        clicked = [d for part in made for d in part][::every] if every else []
        _clicks(client, clicked)
        _apply(client, worker, counters)
        after_clicks = _kept(client)
        keys = _keys(client)
        buckets = list(client.scan_iter("{rw:*", count=10_000))
        marked = sum(int(client.hlen(k)) for k in buckets)
        # The buckets alone (exact): used_memory also moves with the client buffers.
        marks_bytes = sum(int(client.memory_usage(k, samples=0) or 0) for k in buckets)
    finally:
        client.close()
        server.stop()
    failures = [f"{name}: {counters[name]:,.0f}" for name in ERRORS if counters.get(name)]
    if keys["{d:"]:
        failures.append(f"{keys['{d:']:,} {{d:…}} keys: a record per decision")
    if keys["{dv:"] != args.visitors:
        failures.append(f"{keys['{dv:']:,} visitor hashes for {args.visitors:,} visitors")
    if counters.get("rewards", 0) != len(clicked) or marked != len(clicked):
        failures.append(f"{len(clicked):,} clicks: {counters.get('rewards', 0):,.0f} rewards, "
                        f"{marked:,} marked")  # fmt: skip
    kept = after_all - before
    per = kept / args.decisions
    per_reward = marks_bytes / marked if marked else 0.0
    lines = [
        f"# Decision memory, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.decisions:,} decisions of one placement for {args.visitors:,} visitors, applied "
        f"by the reward worker in two halves in {seconds:.1f} s "
        f"({args.decisions / seconds:,.0f}/s), then {len(clicked):,} clicks; private Redis; "
        f"{machine()}.",
        "",
        "| what | value |",
        "|---|---:|",
        f"| Redis memory kept after half the decisions (used_memory after − before, the spool "
        f"stream deleted) | {(after_half - before) / 1e6:,.2f} MB |",
        f"| after all of them | {kept / 1e6:,.2f} MB |",
        f"| per decision | {per:,.1f} bytes (before: {BEFORE_BYTES} bytes, a record each; now "
        "the more decisions per visitor, the less) |",
        f"| per million decisions | {per * 1e6 / 1e9:,.3f} GB (before: "
        f"{BEFORE_BYTES * 1e6 / 1e9:,.2f} GB) |",
        f"| per visitor (one placement) | {kept / args.visitors:,.0f} bytes |",
        f"| after the clicks | {(after_clicks - before) / 1e6:,.2f} MB |",
        f"| per reward (its mark: `MEMORY USAGE` of the buckets ÷ the rewards) | "
        f"{per_reward:,.0f} bytes |",
        f"| decision records `{{d:…}}` | {keys['{d:']:,} |",
        f"| visitor hashes `{{dv:…}}` | {keys['{dv:']:,} |",
        f"| reward buckets `{{rw:…}}` (rewarded decisions in them) | {keys['{rw:']:,} "
        f"({marked:,}) |",
        "",
        "What the worker keeps is one hash per identity (the latest decision of each placement; "
        "a contextual placement's also holds its features, a recommendation placement's its "
        "recent items) for as long as the visitor keeps coming (90 days after the last "
        "decision), and a mark per reward for the placement's attribution window: doubling the "
        "decisions for the same visitors leaves the memory where it was.",
    ]
    if failures:
        lines += ["", f"**FAILED**: {'; '.join(failures)}"]
    publish(args.report, lines)
    if failures:
        print(f"FAILED: {'; '.join(failures)}")
        return 1
    return 0


def _decisions(client: redis.Redis, ids: DecisionIds, numbers: range, visitors: int) -> list[str]:
    """Log decisions ``numbers`` as /v1/decide would (100 a spool entry); their ids."""
    encode = msgspec.json.Encoder().encode
    now = datetime.now(UTC)
    ms = int(now.timestamp() * 1000)
    made = []
    ensure_group(client, "rewards")
    for start in range(numbers.start, numbers.stop, 100):
        chunk = []
        for n in range(start, min(start + 100, numbers.stop)):
            decision_id = ids.new("hero", 0, "a", 0.5, ms)
            made.append(decision_id)
            chunk.append(encode(Logged(
                decision_id=decision_id, timestamp=now, placement="hero", variant="a", arm=0,
                policy="thompson", policy_revision=1, propensity=0.5, profile_id="",
                anonymous_id=f"visitor-{n % visitors}", user_id="", features=[],
                context=msgspec.Raw(b"{}"), fallback="",
            )) + b"\n")  # fmt: skip
        client.xadd(STREAM, {"n": len(chunk), "d": b"".join(chunk)})
    return made


def _clicks(client: redis.Redis, clicked: list[str]) -> None:
    """A "Decision Clicked" event for each id, as the intake leaves them in the spool."""
    ensure_group(client, "rewards")
    now = datetime.now(UTC)
    for start in range(0, len(clicked), 100):
        messages: list[wire.Message] = [
            wire.Track(event="Decision Clicked", anonymous_id="clicker", message_id=f"c-{i}",
                       timestamp=now, received_at=now,
                       properties=msgspec.Raw(msgspec.json.encode({"decisionId": i})))
            for i in clicked[start : start + 100]
        ]  # fmt: skip
        client.xadd(STREAM, {"n": len(messages), "e": wire.to_lines(messages)})


def _apply(client: redis.Redis, worker: RewardWorker, counters: dict[str, float]) -> float:
    """Let the worker apply what the spool holds; the seconds it took."""
    started = time.monotonic()
    while entries := worker.reader.read(500, 10):
        done = worker.process(entries)
        worker.reader.ack(entries, done)
        for name, value in done.items():
            counters[name] = counters.get(name, 0) + value
    return time.monotonic() - started


def _kept(client: redis.Redis) -> int:
    """``used_memory`` with the spool's stream (and the worker's group on it) deleted."""
    client.delete(STREAM)
    client.execute_command("MEMORY", "PURGE")
    return int(client.info("memory")["used_memory"])


def _keys(client: redis.Redis) -> dict[str, int]:
    return {
        prefix: sum(1 for _ in client.scan_iter(f"{prefix}*", count=10_000))
        for prefix in ("{d:", "{dv:", "{rw:")
    }


if __name__ == "__main__":
    sys.exit(main())
