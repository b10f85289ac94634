"""Fixtures: real Redis and the real embedded ClickHouse engine, started for the suite.

Every test that uses Redis (``redis_url`` and everything built on it) runs twice: on a single
redis-server and on a 3-master Redis Cluster on loopback ports (``[single]`` / ``[cluster]`` in
its id). REDIS_URL / REDIS_CLUSTER_URL point them at servers of your own instead. chdb allows
one data directory per process, so the suite shares one and each test starts from empty tables.
Redis is flushed before every test.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from clickhouse_connect.driver.httputil import default_pool_manager

from collector import connect, embedded_url
from collector.schema import drop_tables
from collector.store import open_store
from edge.api.app import create_app
from edge.api.limits import Limits
from edge.runtime.config import Config
from edge.runtime.embedded_redis import EmbeddedRedis
from edge.runtime.settings import Settings
from edge.runtime.stores import redis_client
from edge.runtime.workers import Needs, start
from tests.browser import launched
from tests.clickhouse_http import ClickHouseFront
from tests.redis_cluster import RedisCluster

WRITE_KEY = "wk_test"
SECRET_KEY = "sk_test"
IDENTITY_SECRET = "idsec_test"

# Every process the tests start inherits this mark (through os.environ), however deep: at the
# end of the session none may still run (see ``pytest_sessionfinish``).
SESSION_MARK = "PYTEST_KAIROS_SESSION"
os.environ[SESSION_MARK] = f"{os.getpid()}-{time.time_ns()}"
_LEFT_GRACE = 20.0  # seconds processes get to finish stopping once the last test is done


def started_by_the_tests() -> list[tuple[int, str]]:
    """(pid, command line) of each live process carrying this session's mark, but this one."""
    mark = f"{SESSION_MARK}={os.environ[SESSION_MARK]}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if (entry / "stat").read_text().split(") ")[-1].startswith("Z"):
                continue  # exited, not yet reaped by its parent
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found.append((int(entry.name), command.strip()))
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The ClickHouse paths a test runs on: the embedded engine, and for the modules marked
    ``clickhouse_http`` the HTTP client path too (``only=True``: that path alone); with
    CLICKHOUSE_URL set, the real server alone."""
    if "clickhouse_server" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("clickhouse_http")
    if os.environ.get("CLICKHOUSE_URL"):
        paths = ["server"]
    elif marker is None:
        paths = ["chdb"]
    else:
        paths = ["http"] if marker.kwargs.get("only") else ["chdb", "http"]
    metafunc.parametrize("clickhouse_server", paths, indirect=True, scope="session")


@pytest.hookimpl(tryfirst=True)  # before -m selects by the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the [cluster] run of each Redis test ``cluster`` (the fast loop leaves them out);
    the HTTP path runs on the single Redis server only (it changes nothing Redis sees)."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if params.get("redis_server") == "cluster":
            if params.get("clickhouse_server") == "http":
                dropped.append(item)
                continue
            item.add_marker(pytest.mark.cluster)
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process a test started outlives the session (an orphaned worker, a
    server a fixture forgot): it is killed, and named."""
    deadline = time.monotonic() + _LEFT_GRACE
    while (left := started_by_the_tests()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not left:
        return
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  {pid}: {command[:200]}" for pid, command in left]
    message = "processes started by the tests were still running at the end (killed now):"
    if reporter is not None:
        reporter.write_line("\n".join([message, *lines]), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture(scope="session", params=["single", "cluster"])
def redis_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # fmt: skip
    """A single redis-server, then a 3-master Redis Cluster: each Redis test runs on both."""
    url = os.environ.get("REDIS_URL" if request.param == "single" else "REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    server: EmbeddedRedis | RedisCluster
    if request.param == "single":
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    else:
        server = RedisCluster(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    yield server.start()
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    with redis_client(redis_server) as client:
        client.flushall()  # on a cluster: on every master
    return redis_server


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis_client(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def clickhouse_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded engine's data dir: one per process, shared by both paths to it."""
    return tmp_path_factory.mktemp("ch") / "clickhouse"


@pytest.fixture(scope="session")
def clickhouse_server(request: pytest.FixtureRequest, clickhouse_path: Path) -> Iterator[str]:
    """CLICKHOUSE_URL when set (a real server); else the embedded engine, in process
    (``[chdb]``) or, for the modules marked ``clickhouse_http``, also over clickhouse-connect's
    HTTP client through the test front in ``tests/clickhouse_http.py`` (``[http]``)."""
    if request.param == "server":
        yield os.environ["CLICKHOUSE_URL"]
    elif request.param == "chdb":
        yield embedded_url(clickhouse_path.parent)
    else:
        front = ClickHouseFront(str(clickhouse_path)).start()
        print("FRONT", front.port)
        yield front.url
        front.stop()
        default_pool_manager().clear()  # the HTTP clients' kept-alive connections to it


@pytest.fixture
def clickhouse_url(clickhouse_server: str) -> str:
    client = connect(clickhouse_server)
    drop_tables(client)
    return clickhouse_server


@pytest.fixture
def ch(clickhouse_url: str) -> Any:
    return connect(clickhouse_url)


@pytest.fixture
def settings(redis_url: str, clickhouse_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        store_url=clickhouse_url,
        write_key=WRITE_KEY,
        secret_key=SECRET_KEY,
        identity_secret=IDENTITY_SECRET,
        seed=7,
        limits=Limits(per_ip=0, per_key=0),  # tests push many requests from 127.0.0.1
    )


@dataclass
class Engine:
    url: str
    settings: Settings
    client: httpx.Client

    def post(
        self, path: str, body: Any, key: str | None = WRITE_KEY, **kwargs: Any
    ) -> httpx.Response:
        headers = {**(basic(key) if key else {}), **kwargs.pop("headers", {})}
        return self.client.post(self.url + path, json=body, headers=headers, **kwargs)

    def sql(self, query: str) -> list[list[Any]]:
        answer = self.client.post(
            self.url + "/v1/sql", json={"query": query}, headers=basic(SECRET_KEY)
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["rows"]

    def wait_stored(self, count: int, timeout: float = 30.0) -> int:
        """Wait until ``events`` holds ``count`` rows; returns what it holds then."""
        deadline = time.monotonic() + timeout
        stored = -1
        while time.monotonic() < deadline:
            stored = self.sql("SELECT count() FROM events")[0][0]
            if stored >= count:
                break
            time.sleep(0.1)
        return stored


def worker_needs(
    redis_url: str,
    consumer: str,
    config: Config | None = None,
    clickhouse_url: str = "",
    api: tuple[str, str, str] | None = None,
) -> Needs:
    """What a worker started by a test is given (the stores the fixtures started)."""
    history = open_store(clickhouse_url) if clickhouse_url else None
    return Needs(redis=redis_client(redis_url), consumer=consumer, config=config or Config(),
                 history=history, clickhouse_url=clickhouse_url, api=api)  # fmt: skip


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns signals
        pass


@pytest.fixture
def engine_factory(clickhouse_url: str) -> Iterator[Callable[..., Engine]]:
    """Start the real app (uvicorn, real stores) in a thread, and unless ``sink=False`` a sink
    thread beside it, as the sink worker process would run; all stop at teardown."""
    running: list[tuple[_Server, threading.Thread, httpx.Client]] = []
    stop = threading.Event()
    sinks: list[threading.Thread] = []

    def launch(
        settings: Settings,
        sink: bool = True,
        profiles: bool = True,
        rewards: bool = True,
        learner: bool = False,
        config: Any = None,
        **changes: Any,
    ) -> Engine:
        # The port is bound here and handed to uvicorn: no other process can take it between
        # choosing it and listening on it.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        settings = replace(settings, port=listener.getsockname()[1], **changes)

        def run(name: str, **options: Any) -> None:
            given = worker_needs(settings.redis_url, f"test-{name}", config, clickhouse_url)
            sinks.append(start(name, given, stop, **options))

        if rewards:
            run("rewards", interval=0.05)
        if learner:  # on event time only: simulated histories lie in the past
            run("learner", interval=0.05, clock=None)
        if profiles:  # before the sink: it stamps the profile ids the updater resolves
            run("profiles", interval=0.05)
        if sink:
            run("sink", interval=0.2)
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        server = _Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "engine did not start"
            time.sleep(0.02)
        client = httpx.Client(timeout=30)
        running.append((server, thread, client))
        return Engine(f"http://127.0.0.1:{settings.port}", settings, client)

    yield launch
    for server, thread, client in running:
        server.should_exit = True
        thread.join(timeout=30)
        client.close()
    stop.set()
    for sink in sinks:
        sink.join(timeout=30)


@pytest.fixture
def engine(engine_factory: Callable[..., Engine], settings: Settings) -> Engine:
    return engine_factory(settings)


@dataclass
class Process:
    """``kairos up`` as a child process on its own data dir (its own chdb and Redis)."""

    data_dir: Path
    port: int
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, wait: bool = True) -> Process:
        env = {**os.environ, "KAIROS_WRITE_KEY": WRITE_KEY, "KAIROS_SECRET_KEY": SECRET_KEY,
               "KAIROS_IDENTITY_SECRET": IDENTITY_SECRET}  # fmt: skip
        with open(self.data_dir / "engine.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("kairos")),
                    "up",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--log-format",
                    "json",
                    *self.args,
                ],
                stdout=log,
                stderr=log,
                env=env,
            )
        return self.wait_healthy(timeout) if wait else self

    def wait_healthy(self, timeout: float = 60.0) -> Process:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data_dir / "engine.log").read_text()[-3000:]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("kairos up did not become healthy")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(2)  # Ctrl-C
        return self.proc.wait(timeout=60)


@pytest.fixture
def kairos_process(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    made: list[Process] = []

    def make(*args: str) -> Process:
        process = Process(tmp_path / "data", free_port(), list(args))
        process.data_dir.mkdir(exist_ok=True)
        made.append(process)
        return process

    yield make
    for process in made:  # shown with a failing test's output: what the engine complained of
        log = process.data_dir / "engine.log"
        complaints = [line for line in log.read_text(errors="replace").splitlines()
                      if '"level": "warning"' in line or '"level": "error"' in line] if log.exists() else []  # fmt: skip
        print(*complaints[-30:], sep="\n")
    for process in made:  # as a user stops it (Ctrl-C); killed only if that does not work
        if process.proc is not None and process.proc.poll() is None:
            try:
                process.stop()
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), for one test module."""
    yield from launched()
