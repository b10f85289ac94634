"""App composition: routes, middleware, and the clients opened for the app's lifetime.

When ``settings.run_sink`` is set the sink drains the spool in a thread of this process; embedded
ClickHouse (chdb) must be used by one process only, so in embedded mode the API process owns it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from collector import Sink, Spool, SpoolReader, connect, migrate
from collector.spool import ensure_group
from edge import ops, sql, tracking
from edge.settings import Settings

__all__ = ["create_app", "start_sink"]

log = logging.getLogger("kairos.app")

SINK_GROUP = "sink"


def start_sink(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Run a sink on its own Redis and ClickHouse clients in a daemon thread."""
    reader = SpoolReader(redis.Redis.from_url(settings.redis_url), SINK_GROUP, settings.consumer)
    sink = Sink(
        reader,
        connect(settings.clickhouse_url),
        max_messages=settings.sink_batch,
        interval=settings.sink_interval,
    )
    thread = threading.Thread(target=sink.run, args=(stop,), name="sink", daemon=True)
    thread.start()
    return thread


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        client_sync = redis.Redis.from_url(settings.redis_url)
        ensure_group(client_sync, SINK_GROUP)  # before any append: nothing is trimmed unread
        migrate(connect(settings.clickhouse_url))
        sql_client = connect(settings.clickhouse_url, readonly=True)
        stop = threading.Event()
        sink = start_sink(settings, stop) if settings.run_sink else None
        log.info("engine ready", extra={"sink": bool(sink)})
        try:
            yield {
                "settings": settings,
                "redis": client,
                "redis_sync": client_sync,
                "spool": Spool(client, limit=settings.spool_limit),
                "sql_client": sql_client,
            }
        finally:
            stop.set()
            if sink is not None:
                sink.join(timeout=30)
            await client.aclose()
            client_sync.close()

    return Starlette(
        routes=[*tracking.routes, *sql.routes, *ops.routes],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                max_age=86400,
            )
        ],
        lifespan=lifespan,
    )
