"""Redis memory the reward worker keeps per decision, for attribution: what issue 17's bounded
decision memory is measured against.

On a private Redis: one Thompson-sampling placement; ``--decisions`` decisions (JSON lines of
the decision log, as ``/v1/decide`` writes them, 100 per spool entry) for ``--visitors``
distinct anonymous visitors; the reward worker applies them all; the spool's own stream is then
deleted so that only what the worker keeps remains. Reports ``used_memory`` after minus before,
per decision and per million, and the keys: one record per decision (``{d:<id>}``, kept for
the attribution window) and one hash per visitor (``{dv:…}``, the latest decision per
placement).

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

from bench.harness import ROOT, add_options, machine, parse, publish
from collector import Layout, SpoolReader
from collector.reader import ensure_group
from decisions.placements import PLACEMENT, put_placement
from decisions.records import Logged, new_decision_id
from decisions.rewards import RewardWorker
from edge.runtime.embedded_redis import EmbeddedRedis
from edge.runtime.stores import redis_client

STREAM = Layout(1).partition(0).log  # the bench's spool has one partition

REPORT = ROOT / "bench" / "reports" / "decision_memory.md"
QUICK = {"decisions": 20_000, "visitors": 2_000}
HERO = b'{"default": "a", "policy": {"kind": "thompson"}, "variants": [{"key": "a", "content": 1}, {"key": "b", "content": 2}]}'  # noqa: E501


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=200_000, help="default %(default)s")
    parser.add_argument("--visitors", type=int, default=20_000, help="default %(default)s")
    add_options(parser, REPORT, engine=False)
    args = parse(parser, QUICK, argv)
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="kairos-bench-dmem-")))
    client = redis_client(server.start())
    try:
        put_placement(client, "hero", PLACEMENT.decode(HERO))
        ensure_group(client, "rewards")
        client.execute_command("MEMORY", "PURGE")
        before = int(client.info("memory")["used_memory"])
        encode = msgspec.json.Encoder().encode
        now = datetime.now(UTC)
        for start in range(0, args.decisions, 100):
            lines = b"".join(encode(Logged(
                decision_id=new_decision_id(), timestamp=now, placement="hero", variant="a",
                arm=0, policy="thompson", policy_revision=1, propensity=0.5,
                profile_id="", anonymous_id=f"visitor-{n % args.visitors}", user_id="",
                features=[], context=msgspec.Raw(b"{}"), fallback="",
            )) + b"\n" for n in range(start, min(start + 100, args.decisions)))  # fmt: skip
            client.xadd(STREAM, {"n": lines.count(b"\n"), "d": lines})
        worker = RewardWorker(SpoolReader(client, "rewards", "bench"), client)
        started = time.monotonic()
        while entries := worker.reader.read(500, 10):
            worker.reader.ack(entries, worker.process(entries))
        seconds = time.monotonic() - started
        client.delete(STREAM)
        client.execute_command("MEMORY", "PURGE")
        after = int(client.info("memory")["used_memory"])
        records = sum(1 for _ in client.scan_iter("{d:*", count=10_000))
        visitors = sum(1 for _ in client.scan_iter("{dv:*", count=10_000))
    finally:
        client.close()
        server.stop()
    per = (after - before) / args.decisions
    lines = [
        f"# Decision memory, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.decisions:,} decisions of one placement for {args.visitors:,} visitors, applied "
        f"by the reward worker in {seconds:.1f} s ({args.decisions / seconds:,.0f}/s); private "
        f"Redis; {machine()}.",
        "",
        "| what | value |",
        "|---|---:|",
        f"| Redis memory kept (used_memory after − before, the spool stream deleted) | "
        f"{(after - before) / 1e6:,.1f} MB |",
        f"| per decision | {per:,.0f} bytes |",
        f"| per million decisions | {per * 1e6 / 1e9:,.2f} GB |",
        f"| decision records `{{d:…}}` | {records:,} |",
        f"| visitor hashes `{{dv:…}}` | {visitors:,} |",
        "",
        "Records live for the placement's attribution window (plus a margin): at a steady rate "
        "the memory kept is the rate × the window × the bytes per decision.",
    ]
    publish(args.report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
