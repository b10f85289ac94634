"""Capacity, end to end: how fast the engine fully processes a shop's traffic, and how the
worker side grows with worker hosts.

The workload: simulated shoppers (``profiles.shoppers``, seeded), captured once as 100-message
``/v1/batch`` bodies in time order, with a ``/v1/decide`` of the hero placement on every other
landing page and a click on every tenth decision.

(a) fully processed: ``kairos up`` on embedded defaults, everything on this machine; the
    workload is replayed as fast as the API acknowledges it, and the clock stops when every
    worker kind has caught up with every partition, every event of the workload is in
    ClickHouse with its profile id, and every decision is stored and learned from (its click
    rewarded). Beside it, the delay from an event's acknowledgement to its profile: probes (a
    page view of a new visitor, alone in its request) every 50 ms while the load runs, each
    timed until its identity resolves in Redis.
(b) scaling: the workload is written into a spool of ``--partitions`` partitions first (the API
    alone), then drained by one worker host pinned to one core (``taskset``), and again, on a
    fresh data dir, by two hosts pinned to one core each; on a single Redis and on a 3-master
    Redis Cluster (loopback). Redis itself is not pinned. Drained: every consumer group has
    acknowledged every entry of every partition.

Every answer but a 2xx fails the run. Prints a table and writes bench/reports/capacity.md.

    python bench/capacity.py                 # both parts, 6,000 shoppers
    python bench/capacity.py --part scaling --shoppers 2000
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402

from bench.harness import add_options, free_port, machine, parse, publish, start_engine, stop  # noqa: E402
from collector.partitions import layout_of  # noqa: E402
from edge.runtime.embedded_redis import EmbeddedRedis  # noqa: E402
from edge.runtime.stores import redis_client  # noqa: E402
from profiles.trainer import QUEUE, REDO  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "capacity.md"
WRITE_KEY, SECRET_KEY = "wk_bench", "sk_bench"
QUICK = {"shoppers": 150}
GROUPS = ("sink", "profiles", "rewards", "recs", "journeys", "learner")
HERO = {
    "variants": [{"key": "a", "content": {"title": "A"}}, {"key": "b", "content": {"title": "B"}}],
    "policy": {"kind": "thompson"},
    "reward": {"kind": "click"},
}


@dataclass
class Workload:
    bodies: list[bytes]  # /v1/batch bodies, in order
    decide_for: list[list[str]]  # per body: the anonymous ids to ask a decision for after it
    messages: int


@dataclass
class Replay:
    acked: int = 0  # messages
    decisions: int = 0  # made by the policy (logged, rewarded)
    defaults: int = 0  # answered 200 with the default variant (``fallback``: not logged)
    clicks: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def capture(shoppers: int, seed: int = 11) -> Workload:
    from profiles.shoppers import ShopperStream

    bodies, decide_for, chunk, landing = [], [], [], []
    count = 0
    for n, message in enumerate(ShopperStream(shoppers=shoppers, days=30, seed=seed).messages()):
        chunk.append(message)
        if message.get("name") == "Home" and n % 2 == 0:
            landing.append(message["anonymousId"])
        if len(chunk) == 100:
            bodies.append(json.dumps({"batch": chunk}).encode())
            decide_for.append(landing)
            count += len(chunk)
            chunk, landing = [], []
    if chunk:
        bodies.append(json.dumps({"batch": chunk}).encode())
        decide_for.append(landing)
        count += len(chunk)
    return Workload(bodies, decide_for, count)


def replay(url: str, work: Workload, connections: int = 16) -> Replay:
    """Post the workload as fast as it is acknowledged, ``connections`` at a time."""
    done, lock = Replay(), threading.Lock()
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(work.bodies)):
        todo.put(index)

    def worker() -> None:
        with httpx.Client(base_url=url, auth=(WRITE_KEY, ""), timeout=60) as client:
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                answer = client.post(
                    "/v1/batch",
                    content=work.bodies[index],
                    headers={"content-type": "application/json"},
                )
                clicks = []
                if answer.status_code != 200:
                    with lock:
                        done.errors.append(f"/v1/batch {answer.status_code}: {answer.text[:200]}")
                    continue
                for number, visitor in enumerate(work.decide_for[index]):
                    asked = client.post(
                        "/v1/decide",
                        json={
                            "placements": ["hero"],
                            "anonymousId": visitor,
                            "writeKey": WRITE_KEY,
                        },
                    )
                    if asked.status_code != 200:
                        with lock:
                            done.errors.append(
                                f"/v1/decide {asked.status_code}: {asked.text[:200]}"
                            )
                        continue
                    hero = asked.json()["decisions"]["hero"]
                    decision = hero["decisionId"]
                    if hero.get("fallback"):  # e.g. Redis did not answer within the timeout
                        with lock:
                            done.defaults += 1
                    if (index + number) % 10 == 0:
                        clicks.append(
                            {
                                "type": "track",
                                "event": "Decision Clicked",
                                "anonymousId": visitor,
                                "messageId": f"click-{decision}",
                                "properties": {"decisionId": decision},
                            }
                        )
                with lock:
                    done.acked += (
                        100 if index < len(work.bodies) - 1 else (work.messages % 100 or 100)
                    )
                    done.decisions += len(work.decide_for[index])  # less the defaults, below
                if clicks:
                    answer = client.post("/v1/batch", json={"batch": clicks})
                    with lock:
                        if answer.status_code != 200:
                            done.errors.append(f"/v1/batch {answer.status_code}")
                        else:
                            done.clicks += len(clicks)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.seconds = time.monotonic() - started
    done.decisions -= done.defaults
    return done


def drained(client: redis.Redis, groups: tuple[str, ...] = GROUPS) -> bool:
    """Every group has acknowledged every entry of every partition."""
    for partition in layout_of(client).partitions:
        try:
            infos = {_text(i["name"]): i for i in client.xinfo_groups(partition.log)}
        except redis.ResponseError:
            continue
        last = client.xrevrange(partition.log, count=1)
        head = _text(last[0][0]) if last else "0-0"
        for group in groups:
            info = infos.get(group)
            if (
                info is None
                or info["pending"]
                or _order(_text(info["last-delivered-id"])) < _order(head)
            ):
                return False
    return True


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- (a) fully processed --------------------------------------------------------------------


def probe_delays(
    url: str, client: redis.Redis, stop_at: threading.Event, errors: list[str]
) -> list[float]:
    """Seconds from each probe's acknowledgement to its identity resolving, while load runs."""
    delays: list[float] = []
    waiting: list[tuple[str, float]] = []
    with httpx.Client(base_url=url, auth=(WRITE_KEY, ""), timeout=30) as http:
        n = 0
        while not stop_at.is_set() or waiting:
            if not stop_at.is_set():
                n += 1
                who = f"probe-{os.getpid()}-{n}"
                answer = http.post(
                    "/v1/batch",
                    json={
                        "batch": [{"type": "page", "anonymousId": who, "messageId": f"probe-{who}"}]
                    },
                )
                if answer.status_code == 200:
                    waiting.append((who, time.monotonic()))
                else:  # counted: a run with a refused probe fails
                    errors.append(f"probe /v1/batch {answer.status_code}: {answer.text[:200]}")
            now = time.monotonic()
            found = (
                client.mget([f"{{id:anonymous_id:{who}}}" for who, _ in waiting]) if waiting else []
            )
            still = []
            for (who, acked), pid in zip(waiting, found):
                if pid is not None:
                    delays.append(now - acked)
                elif now - acked < 600:
                    still.append((who, acked))
            waiting = still
            time.sleep(0.05)
    return delays


def fully_processed(work: Workload, base: Path, name: str, *options: str,
                    root: Path = ROOT) -> dict[str, Any]:  # fmt: skip
    """(a) on ``kairos up --spool-limit 0 OPTIONS`` run from the source tree ``root``."""
    data = base / f"full-{name}" / "data"
    data.mkdir(parents=True)
    port = free_port()
    engine = start_engine(data, port, "--spool-limit", "0", *options, keys=(WRITE_KEY, SECRET_KEY),
                          root=root)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        http = httpx.Client(
            base_url=url, timeout=30, headers={"authorization": f"Bearer {SECRET_KEY}"}
        )
        answer = http.put("/v1/placements/hero", json=HERO)
        answer.raise_for_status()
        time.sleep(1.5)  # the API processes load it
        client = redis.Redis(unix_socket_path=str(data / "redis" / "redis.sock"))
        memory_before = int(client.info("memory")["used_memory"])
        stop_probes = threading.Event()
        delays: list[float] = []
        probe_errors: list[str] = []
        prober = threading.Thread(
            target=lambda: delays.extend(probe_delays(url, client, stop_probes, probe_errors))
        )
        started = time.monotonic()
        prober.start()
        done = replay(url, work)
        stop_probes.set()
        acked_at = time.monotonic()
        expected = done.acked
        while True:
            rows = _sql(
                http,
                "SELECT count(), countIf(profile_id != '') FROM events "
                "WHERE startsWith(message_id, 'sim-')",
            )
            decisions = _sql(http, "SELECT count() FROM decisions")[0][0]
            if rows[0] == [expected, expected] and decisions >= done.decisions and drained(client):
                break
            if time.monotonic() - acked_at > 1800:
                raise RuntimeError(f"not fully processed after 30 minutes: {rows}, {decisions}")
            time.sleep(0.5)
        finished = time.monotonic()
        prober.join()
        done.errors += probe_errors  # a refused probe fails the run too
        stats = {k.decode(): float(v) for k, v in client.hgetall("{spool}:stats").items()}
        return {
            "memory": _memory(client, memory_before),
            "replay": done,
            "acked_rate": done.acked / done.seconds,
            "processed_rate": done.acked / (finished - started),
            "seconds": finished - started,
            "delays": sorted(delays),
            "stats": stats,
        }
    finally:
        stop(engine)


def _memory(client: redis.Redis, before: int) -> dict[str, float]:
    """What Redis holds once the workload is processed: the dedup window's sets (they go after
    28 hours) and the learner's buffers (its redo log and queue, emptied at each checkpoint)
    apart from the rest, which stays with the people (profiles, identities, their learner
    records and decision memory)."""
    used = int(client.info("memory")["used_memory"]) - before
    dedup = sum(int(client.memory_usage(key) or 0) for part in layout_of(client).partitions
                for key in client.scan_iter(f"{part.seen}*"))  # fmt: skip
    buffers = sum(int(client.memory_usage(key) or 0) for key in (REDO, QUEUE))
    profiles = sum(1 for _ in client.scan_iter("{p:*}", count=1000, _type="hash"))
    return {
        "used": used,
        "dedup": dedup,
        "buffers": buffers,
        "profiles": profiles,
        "per_profile": (used - dedup - buffers) / max(1, profiles),
    }


def _sql(http: httpx.Client, query: str) -> list[list[Any]]:
    answer = http.post("/v1/sql", json={"query": query})
    answer.raise_for_status()
    return list(answer.json()["rows"])


def baseline_tree(revision: str, base: Path) -> Path:
    """A worktree of ``revision`` under ``base`` (removed at exit)."""
    tree = base / "baseline-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision],
                   check=True, capture_output=True)  # fmt: skip
    remove = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)]
    atexit.register(lambda: subprocess.run(remove, capture_output=True))
    return tree


# -- (b) scaling ----------------------------------------------------------------------------


class Redises:
    """A private redis-server (the embedded one, AOF on), or a 3-master cluster on loopback
    ports (the tests' own, AOF on too)."""

    def __init__(self, base: Path, cluster: bool):
        self.server: RedisCluster | EmbeddedRedis
        if cluster:
            self.server = RedisCluster(base / "cluster", masters=3)
            self.url = self.server.start()
            self.nodes = [f"redis://127.0.0.1:{port}/0" for port in self.server.ports]
        else:
            self.server = EmbeddedRedis(base)  # in base/redis
            self.url = self.server.start()
            self.nodes = [self.url]

    def cpu_seconds(self) -> float:
        total = 0.0
        for url in self.nodes:
            with redis.Redis.from_url(url) as node:
                info = node.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total

    def stop(self) -> None:
        self.server.stop()


def scaling_run(
    work: Workload, base: Path, cluster: bool, hosts: int, partitions: int
) -> dict[str, Any]:
    base.mkdir(parents=True)
    data = base / "data"
    data.mkdir()
    servers = Redises(base, cluster)
    flags = ["--redis-url", servers.url, *(["--redis-cluster"] if cluster else [])]
    try:
        port = free_port()
        api = start_engine(
            data,
            port,
            "--workers",
            "none",
            "--spool-limit",
            "0",
            "--spool-partitions",
            str(partitions),
            *flags,
            keys=(WRITE_KEY, SECRET_KEY),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(
                base_url=url, timeout=30, headers={"authorization": f"Bearer {SECRET_KEY}"}
            ) as http:
                http.put("/v1/placements/hero", json=HERO).raise_for_status()
            time.sleep(1.5)
            filled = replay(url, work)
        finally:
            stop(api)  # it owns embedded ClickHouse while it runs: the first host's sink next
        client = redis_client(servers.url)  # (the hosts make their groups at the spool's start)
        cpu_before = servers.cpu_seconds()
        procs = []
        env = {**os.environ, "KAIROS_WRITE_KEY": WRITE_KEY, "KAIROS_SECRET_KEY": SECRET_KEY}
        store = data / "run" / "store.sock"
        store.parent.mkdir(exist_ok=True)
        for host in range(hosts):
            kinds = "all" if host == 0 else ",".join(g for g in GROUPS if g != "sink")
            argv = [
                "taskset",
                "-c",
                str(host % os.cpu_count()),
                sys.executable,
                "-m",
                "edge.cli",
                "worker",
                kinds,
                *flags,
                "--data-dir",
                str(data),
                "--log-format",
                "json",
                "--consumer",
                f"host{host}",
            ]
            # The first host's sink owns embedded ClickHouse and answers the others' reads.
            argv += ["--serve", str(store)] if host == 0 else ["--store-url", f"unix://{store}"]
            log = open(base / f"host{host}.log", "ab")
            procs.append(subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=ROOT))
        started = None
        deadline = time.monotonic() + 1800
        while True:
            members = [client.zcard(f"{{spool}}:members:{g}") for g in GROUPS if g != "sink"]
            if started is None and members and min(members) >= hosts:
                started = time.monotonic()  # every host is in: the clock starts
            if started is not None and drained(client):
                break
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker host exited with {proc.returncode}")
            assert time.monotonic() < deadline, "not drained in 30 minutes"
            time.sleep(0.2)
        seconds = time.monotonic() - started
        cpu = servers.cpu_seconds() - cpu_before
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
        return {
            "filled": filled,
            "seconds": seconds,
            "rate": filled.acked / seconds,
            "redis_cpu_per_event": cpu / filled.acked,
        }
    finally:
        servers.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shoppers", type=int, default=6000, help="simulated shoppers (default %(default)s)"
    )
    parser.add_argument("--part", choices=["both", "full", "scaling"], default="both")
    parser.add_argument(
        "--partitions", type=int, default=4, help="the scaling runs' spool (default %(default)s)"
    )
    parser.add_argument(
        "--instances",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="(a)'s runs: kairos up --worker-instances N for each N, comma-separated (default 1,2)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="(a) first on the engine at git revision REV (a worktree of it, run with this "
        "venv), as it runs by default: the same-run baseline (the docs' is 9775f95^, the "
        "engine before issue 17)",
    )
    add_options(parser, REPORT)
    args = parse(parser, QUICK, argv)
    base = Path(tempfile.mkdtemp(prefix="kairos-capacity-"))
    print(f"capturing the workload ({args.shoppers} shoppers)…", file=sys.stderr)
    work = capture(args.shoppers)
    lines = [
        f"# Capacity ({machine()})",
        "",
        f"Workload: {work.messages:,} messages from {args.shoppers:,} simulated shoppers, "
        "a decision on every other landing page, a click on every tenth decision.",
        "",
    ]
    failures: list[str] = []
    if args.part in ("both", "full"):
        lines += [
            "## (a) Fully processed, `kairos up` on embedded defaults",
            "",
            "| engine (`--worker-instances`, or a revision) | acknowledged | ack rate | "
            "fully processed in | fully processed rate | ack → profile p50 | p99 | probes |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        notes = []
        runs = [(str(n), ["--worker-instances", str(n)], ROOT) for n in args.instances]
        if args.baseline:
            runs.insert(0, (f"`{args.baseline}`", [], baseline_tree(args.baseline, base)))
        for instances, options, root in runs:
            print(f"(a) fully processed, kairos up {' '.join(options)} from {root}…",
                  file=sys.stderr)  # fmt: skip
            full = fully_processed(work, base, instances.strip("`"), *options, root=root)
            done = full["replay"]
            failures += done.errors[:5]
            d, mem = full["delays"], full["memory"]
            p50 = d[len(d) // 2] if d else float("nan")
            p99 = d[int(len(d) * 0.99)] if d else float("nan")
            lines.append(
                f"| {instances} | {done.acked:,} | {full['acked_rate']:,.0f}/s | "
                f"{full['seconds']:.1f} s | {full['processed_rate']:,.0f}/s | "
                f"{p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms | {len(d)} |"
            )
            notes += [
                f"{instances}: decisions {done.decisions:,} (and {done.defaults:,} answered "
                f"with the default variant: the decide timeout), clicks "
                f"{done.clicks:,}; answers other than 2xx: {len(done.errors)}. Redis after it: "
                f"{mem['used'] / 1e6:,.1f} MB more than before, of which the dedup window's sets "
                f"{mem['dedup'] / 1e6:,.1f} MB (they expire after 28 h) and the learner's "
                f"buffers {mem['buffers'] / 1e6:,.1f} MB (emptied at checkpoints); the rest over "
                f"{mem['profiles']:,} profiles: **{mem['per_profile']:,.0f} bytes per "
                f"profile**, {mem['per_profile'] / 1e3:,.2f} GB per million.",
                "",
            ]
        lines += ["", *notes]
    if args.part in ("both", "scaling"):
        lines += [
            "## (b) Scaling: the spool filled first, then drained by worker hosts",
            "",
            f"{args.partitions} partitions; each host pinned to one core (`taskset`), "
            "Redis not pinned.",
            "",
            "| Redis | 1 host | 2 hosts | ratio | Redis CPU per event (1 host) |",
            "|---|---:|---:|---:|---:|",
        ]
        for cluster in (False, True):
            name = "3-master cluster" if cluster else "single"
            rates = []
            cpu = 0.0
            for hosts in (1, 2):
                print(f"(b) {name}, {hosts} host(s)…", file=sys.stderr)
                run = scaling_run(
                    work, base / f"scale-{name[:6]}-{hosts}", cluster, hosts, args.partitions
                )
                failures += run["filled"].errors[:5]
                rates.append(run["rate"])
                cpu = cpu or run["redis_cpu_per_event"]
            lines.append(
                f"| {name} | {rates[0]:,.0f}/s | {rates[1]:,.0f}/s | "
                f"{rates[1] / rates[0]:.2f}× | {cpu * 1e6:.1f} µs |"
            )
        lines.append("")
    if failures:
        lines += ["**FAILED**: answers other than 2xx:", "", *[f"- {f}" for f in failures], ""]
    publish(args.report, lines)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
