"""What ``--spool-replicas`` costs: ingestion answered once the master has a batch, against
answered once a replica has it too (``WAIT 1``), in the same run.

Starts a Redis master and one replica (loopback, the redis-server the embedded stack runs),
then ``kairos up --workers none --redis-url <master>`` twice — ``--spool-replicas 0``, then
``1`` — under the same wrk load: 100-event ``/v1/batch`` requests with unique messageIds.
Prints a table and writes bench/reports/replicas.md. Needs ``wrk`` (apt-get install wrk).

    python bench/replicas.py --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/replicas.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.harness import (
    ROOT,
    Verdict,
    add_options,
    free_port,
    machine,
    need,
    parse,
    publish,
    start_engine,
    stop,
    wrk,
)
from bench.ingest import BATCH_SCRIPT, SECRET_KEY, WRITE_KEY
from edge.runtime.embedded_redis import redis_binary
from edge.runtime.supervisor import die_with_parent

REPORT = ROOT / "bench" / "reports" / "replicas.md"
QUICK = {"seconds": 1}


def _redis(folder: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(folder), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )  # fmt: skip


def _linked(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, socket_timeout=1) as replica:
                if replica.info("replication").get("master_link_status") == "up":
                    return
        except redis.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the replica on port {port} did not link to its master")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="each phase (default %(default)s)")
    parser.add_argument("--connections", type=int, default=32,
                        help="wrk connections (default %(default)s)")  # fmt: skip
    add_options(parser, REPORT)
    args = parse(parser, QUICK, argv)
    if not need("wrk", "bench/replicas.py"):
        return 2
    work = Path(tempfile.mkdtemp(prefix="kairos-bench-replicas-"))
    script = work / "batch.lua"
    script.write_text(BATCH_SCRIPT.replace(
        "__AUTH__", base64.b64encode(f"{WRITE_KEY}:".encode()).decode()))  # fmt: skip
    master_port, replica_port = free_port(), free_port()
    master = _redis(work / "master", master_port)
    replica = _redis(work / "replica", replica_port, "--replicaof", "127.0.0.1", str(master_port))
    verdict, rows = Verdict(), {}
    try:
        _linked(replica_port)
        for replicas in (0, 1):
            phase = f"replicas-{replicas}"
            print(f"{phase}: kairos up --spool-replicas {replicas} ({args.seconds} s)", flush=True)
            port = free_port()
            engine = start_engine(
                work / phase / "data", port, "--workers", "none", "--spool-limit", "0",
                "--redis-url", f"redis://127.0.0.1:{master_port}/0",
                "--spool-replicas", str(replicas),
                keys=(WRITE_KEY, SECRET_KEY), limits=(args.per_ip, args.per_key),
            )  # fmt: skip
            try:
                rows[phase] = verdict.load(phase, wrk(
                    f"http://127.0.0.1:{port}/v1/batch", args.seconds, args.connections,
                    script, f"{phase}{time.time_ns()}"))  # fmt: skip
            finally:
                stop(engine)
    finally:
        for server in (replica, master):
            server.terminate()
            server.wait()
    base = rows["replicas-0"]
    lines = [
        f"# --spool-replicas, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"kairos up --workers none (one API process) on a Redis master with one replica, both "
        f"on loopback; wrk -t1 -c{args.connections}, {args.seconds} s per phase; 100-event "
        f"/v1/batch requests with unique messageIds; {machine()}.",
        "",
        "| phase | answered once | events/s | × master only | p50 | p99 | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for phase, what in (("replicas-0", "the master has it"),
                        ("replicas-1", "a replica has it too (WAIT 1)")):  # fmt: skip
        load = rows[phase]
        ratio = verdict.ratio(load.rps, base.rps, phase, "replicas-0")
        lines.append(f"| {phase} | {what} | {load.rps * 100:,.0f} | {ratio} | {load.p50} | "
                     f"{load.p99} | {verdict.errors(phase)} |")  # fmt: skip
    lines += ["", *verdict.lines()]
    publish(args.report, lines)
    return verdict.exit_code()


if __name__ == "__main__":
    sys.exit(main())
