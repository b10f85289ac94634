"""App composition: routes, middleware, and the clients opened for the app's lifetime.

The app holds no pipeline worker: the spool is drained by worker processes (edge.worker) that
``kairos up`` supervises, and reads go to the event store wherever it lives (collector.store).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from collector import Spool
from collector.spool import ensure_group
from collector.store import open_store
from edge import openapi, ops, sql, tracking
from edge.settings import Settings
from edge.worker import SINK_GROUP

__all__ = ["create_app"]

log = logging.getLogger("kairos.app")


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        client_sync = redis.Redis.from_url(settings.redis_url)
        ensure_group(client_sync, SINK_GROUP)  # before any append: nothing is trimmed unread
        store = open_store(settings.store_url)
        log.info("api ready", extra={"store": settings.store_url})
        try:
            yield {
                "settings": settings,
                "redis": client,
                "redis_sync": client_sync,
                "spool": Spool(client, limit=settings.spool_limit),
                "store": store,
            }
        finally:
            await store.close()
            await client.aclose()
            client_sync.close()

    return Starlette(
        routes=[*tracking.routes, *sql.routes, *ops.routes, *openapi.routes],
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
