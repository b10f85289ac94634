"""``kairos up`` as users run it: a child process with its own Redis and ClickHouse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from edge.runtime.stores import is_cluster, redis_client
from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, Process, basic, free_port
from tests.helpers import eventually, put_placement

KAIROS = str(Path(sys.executable).with_name("kairos"))


def send(process: Process, batches: int, size: int, prefix: str = "m") -> int:
    with httpx.Client(timeout=30, headers=basic(WRITE_KEY)) as client:
        for b in range(batches):
            batch = [
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "anonymousId": f"a{i}",
                    "messageId": f"{prefix}{b}-{i}",
                }
                for i in range(size)
            ]
            answer = client.post(process.url + "/v1/batch", json={"batch": batch})
            assert answer.status_code == 200, answer.text
    return batches * size


def sql(process: Process, query: str) -> Any:
    answer = httpx.post(
        process.url + "/v1/sql", json={"query": query}, headers=basic(SECRET_KEY), timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["rows"]


def wait_rows(process: Process, count: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while (rows := sql(process, "SELECT count() FROM events")[0][0]) < count:
        assert time.monotonic() < deadline, f"{rows} of {count} rows after {timeout} s"
        time.sleep(0.2)
    return int(rows)


def test_keys_are_generated_once_kept_and_printed(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS_")}
    proc = subprocess.Popen(
        [KAIROS, "up", "--data-dir", str(data), "--port", str(port), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (data / "keys.json").exists() or _unhealthy(port):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        keys = json.loads((data / "keys.json").read_text())
        assert keys["write_key"].startswith("wk_") and keys["secret_key"].startswith("sk_")
        assert keys["identity_secret"].startswith("idsec_")
        assert oct((data / "keys.json").stat().st_mode & 0o777) == "0o600"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert keys["write_key"] in out and keys["secret_key"] in out
    assert keys["identity_secret"] in out  # new on this start: shown once
    # `kairos sql` finds the secret key in the data dir by itself.
    assert json.loads((data / "keys.json").read_text()) == keys


def _unhealthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code != 200
    except httpx.HTTPError:
        return True


@pytest.mark.slow  # a whole `kairos up` under load or restarts
def test_ctrl_c_stops_cleanly_and_a_restart_finds_all_data(kairos_process: Any) -> None:
    engine = kairos_process().start()
    sent = send(engine, 20, 50)
    assert wait_rows(engine, sent) == sent
    # Accepted but not yet stored when Ctrl-C comes: the spool keeps them.
    late = send(engine, 5, 50, prefix="late")
    assert engine.stop() == 0
    assert not (engine.data_dir / "redis" / "redis.sock").exists()  # Redis stopped with it
    engine.start()
    assert wait_rows(engine, sent + late) == sent + late
    # A duplicate of something sent before the restart is still recognised.
    send(engine, 1, 50)
    time.sleep(1.5)
    assert sql(engine, "SELECT count() FROM events")[0][0] == sent + late


@pytest.mark.slow  # a whole `kairos up` under load or restarts
def test_a_second_engine_on_the_same_data_dir_refuses_to_start(kairos_process: Any) -> None:
    first = kairos_process().start()
    second = subprocess.run(
        [KAIROS, "up", "--data-dir", str(first.data_dir), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "another Kairos running on" in second.stderr


def _kill_mid_drain(engine: Process, stats: redis.Redis, sent: int, target: str) -> None:
    """SIGKILL ``target`` ("workers": the process running every worker, the sink with them;
    "engine": all of kairos up) once some but not all of the spool is in ClickHouse, watching
    the sink's own counter."""
    deadline = time.monotonic() + 60
    while True:
        try:
            stored = int(stats.hget("{spool}:stats", "sink_inserted") or 0)
        except redis.ConnectionError:  # Redis is not up yet
            stored = 0
        if 0 < stored < sent:
            break
        assert stored < sent, "drained before the kill could land"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    if target == "engine":
        engine.kill()
    else:
        os.kill(int((engine.data_dir / "run" / "workers.pid").read_text()), signal.SIGKILL)


@pytest.mark.slow  # a whole `kairos up` under load or restarts
def test_sigkill_mid_drain_then_restart_stores_each_accepted_message_once(
    kairos_process: Any,
) -> None:
    engine = kairos_process("--workers", "none").start()
    sent = send(engine, 500, 100)  # 50,000 messages wait in the spool
    engine.stop()
    engine.args = ["--sink-batch", "200"]  # 250 inserts: time to kill in the middle
    stats = redis.Redis(unix_socket_path=str(engine.data_dir / "redis" / "redis.sock"))
    engine.start(wait=False)
    _kill_mid_drain(engine, stats, sent, "workers")  # the supervisor restarts them
    engine.wait_healthy()
    assert wait_rows(engine, sent) == sent
    time.sleep(1.5)  # nothing more trickles in
    assert sql(engine, "SELECT count(), uniqExact(message_id) FROM events") == [[sent, sent]]

    more = send(engine, 300, 100, prefix="more")
    _kill_mid_drain(engine, stats, sent + more, "engine")  # now everything at once
    stats.close()
    engine.start()
    assert wait_rows(engine, sent + more) == sent + more
    time.sleep(1.5)
    total = sent + more
    assert sql(engine, "SELECT count(), uniqExact(message_id) FROM events") == [[total, total]]


def test_help_names_the_commands_and_environment() -> None:
    done = subprocess.run([KAIROS, "up", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for text in (
        "--redis-url",
        "--clickhouse-url",
        "--data-dir",
        "KAIROS_PORT",
        "KAIROS_SECRET_KEY",
    ):
        assert text in done.stdout


@pytest.mark.slow  # a whole `kairos up` under load or restarts
def test_up_on_an_external_redis(kairos_process: Any, redis_url: str) -> None:
    """The external-server path for Redis (`--redis-url`), with embedded ClickHouse."""
    engine = kairos_process("--redis-url", redis_url).start()
    sent = send(engine, 3, 20)
    assert wait_rows(engine, sent) == sent
    assert not (engine.data_dir / "redis").exists()  # no private Redis was started
    banner = (engine.data_dir / "engine.log").read_text()
    assert ("(Redis Cluster)" in banner) == is_cluster(redis_url)
    assert redis_client(redis_url).hget("{spool}:stats", "accepted") == b"60"


@pytest.mark.slow  # a whole `kairos up` under load or restarts
def test_sigkill_of_the_profile_updater_mid_batch_keeps_counts_exact(kairos_process: Any) -> None:
    engine = kairos_process("--workers", "none").start()  # the backlog waits in the spool
    users, per_request, requests = 1000, 100, 200  # one apply script per user and batch
    with httpx.Client(timeout=30, headers=basic(WRITE_KEY)) as client:
        for b in range(requests):
            batch = [{"type": "page", "userId": f"u{(b * per_request + i) % users}",
                      "messageId": f"k{b}-{i}", "properties": {"path": "/x"}}
                     for i in range(per_request)]  # fmt: skip
            assert client.post(engine.url + "/v1/batch", json={"batch": batch}).status_code == 200
    total = requests * per_request
    engine.stop()
    engine.args = ["--workers", "profiles"]
    engine.start(wait=False)  # the updater starts on the whole backlog at once
    store = redis.Redis(unix_socket_path=str(engine.data_dir / "redis" / "redis.sock"))

    def views() -> list[int]:
        pids = store.mget([f"{{id:user_id:u{u}}}" for u in range(users)])
        pipe = store.pipeline(transaction=False)
        for pid in pids:
            pipe.hget(b"{p:" + (pid or b"none") + b"}", "page_views")
        return [int(c or 0) for c in pipe.execute()]

    deadline = time.monotonic() + 60
    while not (engine.data_dir / "redis" / "redis.sock").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    while not 0 < sum(_quietly(views)) < total:  # kill while the updater is part-way through
        assert sum(_quietly(views)) < total, "applied everything before the kill could land"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(int((engine.data_dir / "run" / "profiles.pid").read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while sum(views()) < total:  # the supervisor restarts it; it resumes from the spool
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    assert views() == [total // users] * users
    store.close()


def _quietly(read: Any) -> list[int]:
    """``read()``, or nothing while Redis is still starting."""
    try:
        return list(read())
    except redis.ConnectionError:
        return []


@pytest.mark.slow  # a whole `kairos up` under load or restarts
def test_simulate_then_refit_lifetime_value(kairos_process: Any) -> None:
    """`kairos simulate` drives a running engine; `kairos ltv` refits from what it stored."""
    engine = kairos_process().start()
    cli = [sys.executable, "-m", "edge.cli"]
    done = subprocess.run(
        [*cli, "simulate", "--shoppers", "800", "--days", "90", "--url", engine.url,
         "--write-key", WRITE_KEY],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sent = int(done.stderr.rsplit("sent ", 1)[1].split(" events")[0].replace(",", ""))
    assert wait_rows(engine, sent) == sent
    refit = subprocess.run([*cli, "ltv", "--data-dir", str(engine.data_dir)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refit.returncode == 0, refit.stderr
    assert "BG/NBD r=" in refit.stdout and "Gamma-Gamma p=" in refit.stdout
    (buyer,) = sql(engine, "SELECT any(anonymous_id) FROM events WHERE event = 'Order Completed'")[
        0
    ]
    profile = httpx.get(f"{engine.url}/v1/profiles/anonymous_id:{buyer}",
                        headers={"Authorization": f"Bearer {SECRET_KEY}"}).json()  # fmt: skip
    assert profile["scores"]["ltv"] > 0 and 0 < profile["scores"]["alive"] <= 1


def test_a_busy_port_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    import socket

    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = subprocess.run([KAIROS, "up", "--port", str(port), "--data-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port N or KAIROS_PORT=N" in done.stderr
    assert done.stdout == "" and not (tmp_path / "keys.json").exists()  # no banner, no keys


def test_kairos_keys_prints_them_for_the_shell(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS_")}
    missing = subprocess.run([KAIROS, "keys", "--data-dir", str(tmp_path)], env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 1 and "start the engine once" in missing.stderr
    (tmp_path / "keys.json").write_text(json.dumps({"write_key": "wk_1", "secret_key": "sk_2"}))
    older = subprocess.run([KAIROS, "keys", "--env", "--data-dir", str(tmp_path)], env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert older.stdout.splitlines() == [  # made before the identity secret existed
        "KAIROS_URL=http://127.0.0.1:8000",
        "KAIROS_WRITE_KEY=wk_1",
        "KAIROS_SECRET_KEY=sk_2",
    ]
    (tmp_path / "keys.json").write_text(
        json.dumps({"write_key": "wk_1", "secret_key": "sk_2", "identity_secret": "idsec_3"})
    )
    shown = subprocess.run([KAIROS, "keys", "--env", "--data-dir", str(tmp_path)], env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert shown.stdout.splitlines() == [
        "KAIROS_URL=http://127.0.0.1:8000",
        "KAIROS_WRITE_KEY=wk_1",
        "KAIROS_SECRET_KEY=sk_2",
        "KAIROS_IDENTITY_SECRET=idsec_3",
    ]
    table = subprocess.run([KAIROS, "keys", "--data-dir", str(tmp_path)], env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert "identity    idsec_3   (private: your server signs userHash with it)" in table.stdout
    env["KAIROS_PORT"] = "8123"
    moved = subprocess.run([KAIROS, "keys", "--env", "--data-dir", str(tmp_path)], env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert moved.stdout.splitlines()[0] == "KAIROS_URL=http://127.0.0.1:8123"


def test_help_texts_print_as_written() -> None:
    shown = subprocess.run([KAIROS, "report", "--help"], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    assert "95% interval" in shown.replace("\n", " ") and "%%" not in shown


def test_simulate_follows_its_history_with_live_decisions(engine: Engine, tmp_path: Path) -> None:
    """`kairos simulate` sends the history as events, then, with the secret key, live sessions
    that ask /v1/decide for every placement there is; without the key, events only, said so."""
    put_placement(engine, "home_hero", {"variants": [{"key": "a", "content": {"n": 1}},
                                                     {"key": "b", "content": {"n": 2}}]})  # fmt: skip
    put_placement(engine, "cart_offer", {
        "reward": {"kind": "conversion", "event": "Order Completed"},
        "variants": [{"key": "none"}, {"key": "ten_off", "content": {"code": "TEN"}}]})  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIROS_")}
    cli = [sys.executable, "-m", "edge.cli", "simulate", "--shoppers", "120", "--days", "5",
           "--url", engine.url, "--write-key", WRITE_KEY, "--data-dir", str(tmp_path)]  # fmt: skip
    sent = 0
    for extra in ([], ["--seed", "8", "--live", "60", "--secret-key", SECRET_KEY]):
        done = subprocess.run([*cli, *extra], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        sent += int(done.stderr.rsplit("sent ", 1)[1].split(" events")[0].replace(",", ""))
        if not extra:
            assert (
                "no secret key (KAIROS_SECRET_KEY, --secret-key, or keys.json in --data-dir) "
                "to list the placements with: events only, no decisions"
            ) in done.stderr
            assert engine.sql("SELECT count() FROM decisions") == [[0]]
    assert "live: 60 sessions deciding cart_offer, home_hero …" in done.stderr
    decisions = int(done.stderr.split("live: ")[2].split(" decisions")[0].replace(",", ""))
    assert decisions >= 60  # every session sees the home page
    eventually(lambda: engine.sql("SELECT count() FROM decisions")[0][0] == decisions, timeout=60)
    # The reward worker's own events (Decision Rewarded) land beside the sent ones: count the
    # sent ones only, once they are all in.
    sent_only = "SELECT count() FROM events WHERE event != 'Decision Rewarded'"
    eventually(lambda: engine.sql(sent_only)[0][0] >= sent, timeout=60)
    time.sleep(0.5)  # nothing more comes
    assert engine.sql(sent_only) == [[sent]]
    found = engine.client.get(f"{engine.url}/v1/placements/home_hero/results",
                              headers={"Authorization": f"Bearer {SECRET_KEY}"}).json()  # fmt: skip
    assert all(v["units"] > 0 for v in found["variants"]), found["variants"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--clickhouse-cluster", "kairos"],
                     "a ClickHouse cluster needs --clickhouse-url, a node of it", id="embedded"),
        pytest.param(["--clickhouse-cluster", "two words", "--clickhouse-url", "http://h:8123"],
                     "--clickhouse-cluster: a ClickHouse cluster name is letters, digits and _",
                     id="bad-name"),
    ],
)  # fmt: skip
def test_a_clickhouse_cluster_is_checked_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = subprocess.run([KAIROS, "up", "--port", str(free_port()), "--data-dir", str(tmp_path),
                           *args], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr
