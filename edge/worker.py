"""Pipeline workers, each in a process of its own (or a thread, in tests).

The sink worker drains the spool into ClickHouse. When ClickHouse is embedded, the sink's process
owns the data dir and also serves the engine's read queries on a Unix socket.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import redis

from collector import Sink, SpoolReader, connect, migrate
from collector.spool import ensure_group

__all__ = ["SINK_GROUP", "run_sink_worker", "start_sink"]

log = logging.getLogger("kairos.worker")

SINK_GROUP = "sink"


def start_sink(
    redis_url: str,
    clickhouse_url: str,
    consumer: str,
    stop: threading.Event,
    batch: int = 20_000,
    interval: float = 1.0,
) -> threading.Thread:
    """Migrate the schema, then run a sink in a daemon thread until ``stop`` is set."""
    client = redis.Redis.from_url(redis_url)
    ensure_group(client, SINK_GROUP)
    migrate(connect(clickhouse_url))
    sink = Sink(
        SpoolReader(client, SINK_GROUP, consumer),
        connect(clickhouse_url),
        max_messages=batch,
        interval=interval,
    )
    thread = threading.Thread(target=sink.run, args=(stop,), name="sink", daemon=True)
    thread.start()
    return thread


def run_sink_worker(
    redis_url: str,
    clickhouse_url: str,
    consumer: str,
    batch: int = 20_000,
    serve: Path | None = None,
) -> int:
    """The sink worker process: runs until SIGTERM or SIGINT, then finishes its batch.

    With ``serve``, also answers read queries on that Unix socket (the embedded layout).
    """
    stop = threading.Event()
    sink = start_sink(redis_url, clickhouse_url, consumer, stop, batch)
    try:
        if serve is None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
        else:
            _serve_queries(clickhouse_url, serve)  # returns on SIGTERM / SIGINT
    finally:
        stop.set()
        sink.join(timeout=60)
    return 0


def _serve_queries(clickhouse_url: str, socket_path: Path) -> None:
    import uvicorn

    from collector.store import LocalStore
    from edge.server import Server
    from edge.store_service import create_store_service

    socket_path.unlink(missing_ok=True)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # the API's server speaks
    app = create_store_service(LocalStore(clickhouse_url))
    config = uvicorn.Config(app, uds=str(socket_path), log_config=None, access_log=False)
    server = Server(config)
    old_umask = os.umask(0o077)  # the socket file: this user only
    try:
        log.info("serving queries", extra={"socket": str(socket_path)})
        server.run()
    finally:
        os.umask(old_umask)
        socket_path.unlink(missing_ok=True)
