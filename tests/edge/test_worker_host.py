"""A worker host runs several worker kinds in one process (``kairos worker all``, a comma list):
each kind consumes the spool in its own thread, a thread that dies of a bug makes the host exit
1 (for the supervisor to restart it), and every line a worker's thread logs names the worker."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector import Layout
from collector.store import RemoteStore
from edge.runtime.stores import redis_client
from edge.runtime.workers import STOP_GRACE, WORKERS
from tests.helpers import eventually, fill

STREAM = Layout(1).partition(0).log  # the tests' spool has one partition

# A worker kind with a bug: it raises on its first batch. Registered in the table of the child
# process only, the way a new kind is added (its own consumer group, the SpoolWorker loop).
BUGGY = textwrap.dedent("""\
    import sys

    from collector import SpoolReader
    from collector.worker import SpoolWorker
    from edge.cli.main import main
    from edge.runtime.workers import WORKERS, WorkerKind


    class Buggy(SpoolWorker):
        name = "buggy"

        def process(self, entries):
            raise RuntimeError("a bug in the buggy worker")


    WORKERS["buggy"] = WorkerKind("buggy", "raises on its first batch",
                                  lambda needs, **_: Buggy(SpoolReader(needs.redis, "buggy",
                                                                       needs.consumer)))
    sys.exit(main(sys.argv[1:]))
""")


def _host(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own copy
        return subprocess.Popen(argv, stdout=out, stderr=out)


def _lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def _consuming(redis_url: str, proc: subprocess.Popen[bytes], names: list[str]) -> None:
    """Until every kind in ``names`` has a consumer in its group (the host is up)."""
    client = redis_client(redis_url)

    def up() -> bool:
        assert proc.poll() is None, f"the host exited with {proc.returncode}"
        if not client.exists(STREAM):
            return False
        groups = {g["name"].decode(): g["consumers"] for g in client.xinfo_groups(STREAM)}
        return all(groups.get(name) for name in names)

    try:
        eventually(up, timeout=90)
    finally:
        client.close()


@pytest.fixture
def hosts() -> Iterator[list[subprocess.Popen[bytes]]]:
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for proc in made:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # a worker process with embedded ClickHouse
def test_kairos_worker_all_runs_every_kind_and_each_consumes_the_spool(
    redis_url: str, tmp_path: Path, hosts: list[subprocess.Popen[bytes]]
) -> None:
    socket = tmp_path / "run" / "store.sock"
    socket.parent.mkdir()
    log = tmp_path / "host.log"
    hosts.append(_host([sys.executable, "-m", "edge.cli", "worker", "all", "--redis-url",
                        redis_url, "--data-dir", str(tmp_path / "data"), "--serve", str(socket),
                        "--log-format", "json"], log))  # fmt: skip
    host = hosts[0]
    _consuming(redis_url, host, list(WORKERS))
    fill(redis_url, batches=5, size=20)  # 100 orders by 7 users
    client = redis_client(redis_url)
    last = client.xinfo_stream(STREAM)["last-generated-id"]

    def everyone_caught_up() -> bool:
        """Every kind's group has read and acknowledged the last entry."""
        groups = {g["name"].decode(): g for g in client.xinfo_groups(STREAM)}
        return all(
            groups[name]["pending"] == 0 and _id(groups[name]["last-delivered-id"]) >= _id(last)
            for name in WORKERS
        )

    eventually(everyone_caught_up, timeout=60)
    store = RemoteStore(str(socket))  # the host's sink stored them and serves the reads
    try:
        assert store.query_sync("SELECT count() FROM events").rows == [[100]]
    finally:
        asyncio.run(store.close())
    assert client.exists("{id:user_id:u0}")  # the profile worker in it made the profile
    client.close()
    host.send_signal(signal.SIGTERM)
    assert host.wait(timeout=STOP_GRACE + 30) == 0
    lines = _lines(log)
    for name in WORKERS:  # each thread's lines name its worker, whichever module logged
        mine = [line["msg"] for line in lines if line.get("worker") == name]
        assert any(msg.endswith(" started") for msg in mine), name
        assert any(msg.endswith(" stopped") for msg in mine), name
    migrations = [line for line in lines if line["logger"] == "kairos.schema"]
    assert migrations and all(line.get("worker") == "sink" for line in migrations)  # start-up


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize("queries", [False, True], ids=["no-queries", "serving-queries"])
def test_a_worker_thread_that_dies_makes_the_host_exit_1(
    redis_url: str, tmp_path: Path, hosts: list[subprocess.Popen[bytes]], queries: bool
) -> None:
    """The host stops its other workers and exits 1, so that the supervisor restarts it; also
    while its main thread serves the store's queries (the sink in it, ClickHouse embedded)."""
    script = tmp_path / "buggy_host.py"
    script.write_text(BUGGY)
    names = ["sink", "rewards", "buggy"] if queries else ["rewards", "buggy"]
    socket = tmp_path / "run" / "store.sock"
    socket.parent.mkdir()
    log = tmp_path / "host.log"
    hosts.append(_host([sys.executable, str(script), "worker", ",".join(names), "--redis-url",
                        redis_url, "--data-dir", str(tmp_path / "data"), "--log-format", "json",
                        *(["--serve", str(socket)] if queries else [])], log))  # fmt: skip
    host = hosts[0]
    _consuming(redis_url, host, names)
    fill(redis_url, batches=1, size=5)
    assert host.wait(timeout=STOP_GRACE + 60) == 1
    lines = _lines(log)
    crash = next(line for line in lines if line["msg"] == "worker crashed")
    assert crash["worker"] == "buggy" and "a bug in the buggy worker" in crash["exc"]
    assert {"msg": "worker thread died; exiting so it restarts", "worker": "buggy"}.items() <= (
        next(line for line in lines if "died" in line["msg"]).items())  # fmt: skip
    assert any(line["msg"] == "reward worker stopped" for line in lines)  # stopped, not cut off


@pytest.mark.slow  # a worker process
def test_a_comma_list_runs_those_kinds_only(
    redis_url: str, tmp_path: Path, hosts: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "host.log"
    hosts.append(_host([sys.executable, "-m", "edge.cli", "worker", "rewards,profiles",
                        "--redis-url", redis_url, "--data-dir", str(tmp_path), "--store-url",
                        "none", "--log-format", "json"], log))  # fmt: skip
    host = hosts[0]
    _consuming(redis_url, host, ["profiles", "rewards"])
    host.send_signal(signal.SIGTERM)
    assert host.wait(timeout=STOP_GRACE + 30) == 0
    started = {line.get("worker") for line in _lines(log) if line["msg"].endswith(" started")}
    assert started == {"profiles", "rewards"}


@pytest.mark.slow  # a whole `kairos up`
@pytest.mark.parametrize("layout", ["one", "each"])
def test_kairos_up_runs_its_workers_in_one_process_unless_asked_for_one_per_kind(
    kairos_process: Any, layout: str
) -> None:
    engine = kairos_process("--worker-processes", layout).start(timeout=120)
    assert engine.proc is not None
    children = _children(engine.proc.pid)
    workers = {pid: argv for pid, argv in children.items() if argv[2:4] == ["edge.cli", "worker"]}
    assert len(children) == 1 + len(workers)  # and redis-server
    assert any("redis-server" in argv[0] for argv in children.values())
    named = {path.stem: int(path.read_text()) for path in (engine.data_dir / "run").glob("*.pid")}
    if layout == "one":
        assert [argv[4] for argv in workers.values()] == [",".join(WORKERS)]
        assert named == {"workers": next(iter(workers))}
    else:
        assert sorted(argv[4] for argv in workers.values()) == sorted(WORKERS)
        assert named == {argv[4]: pid for pid, argv in workers.items()}
    health = httpx.get(engine.url + "/healthz", timeout=10).json()
    assert set(health["workers"]) == set(WORKERS)  # each kind's lag, from its consumer group
    assert all("lag_seconds" in lag for lag in health["workers"].values())
    assert engine.stop() == 0
    assert not any(_alive(pid) for pid in children)


def _children(parent: int) -> dict[int, list[str]]:
    """The live child processes of ``parent``: pid -> argv."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode().split("\0")[:-1]
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and argv:
            found[int(entry.name)] = argv
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
