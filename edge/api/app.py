"""App composition: routes, middleware, and the clients opened for the app's lifetime.

The app holds no pipeline worker: the spool is drained by worker processes
(edge.runtime.workers) that ``kairos up`` supervises, and reads go to the event store wherever
it lives (collector.store).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from collector import Spool, layout_of
from collector.coalesce import Coalescer
from collector.consent import SuppressionCache
from collector.store import open_store
from decisions.catalog import REFRESH_SECONDS, Catalog
from decisions.choice import Decider
from decisions.identity import Verifier
from decisions.records import DecisionIds
from edge.access.keys import REFRESH_SECONDS as KEYS_REFRESH
from edge.access.keys import Keyring
from edge.api.cors import CORS
from edge.api.limits import RequestLimits, answer
from edge.openapi import document as openapi
from edge.pages import audit as audit_page
from edge.pages import dashboard, demo, messaging, policies, preferences
from edge.pages import sessions as session_pages
from edge.pages import users as user_pages
from edge.routes import (
    audit,
    broadcasts,
    decide,
    evaluation,
    journeys,
    keys,
    messages,
    models,
    onchain,
    ops,
    placements,
    products,
    profiles,
    recommendations,
    sdk,
    segments,
    sql,
    subscriptions,
    templates,
    tracking,
    users,
    wallets,
)
from edge.routes.decide import DecideEndpoint
from edge.runtime.logs import redact
from edge.runtime.settings import Settings
from edge.runtime.stores import async_redis_client, redis_client
from profiles import ProfileStore

__all__ = ["BROWSER_PATHS", "create_app"]

log = logging.getLogger("kairos.app")


async def _refresh(suppression: SuppressionCache, client: redis.asyncio.Redis) -> None:
    """Keep this process's suppression list current (an erasure reaches every API replica
    within a second; the profile updater checks the list itself too)."""
    while True:
        try:
            await suppression.refresh(client)
        except redis.RedisError:
            pass  # Redis down: ingestion answers 503 anyway; try again shortly
        await asyncio.sleep(1.0)


async def _load(what: str, refresh: Callable[[], Awaitable[None]]) -> None:
    """The first load at startup: a Redis that does not answer in 2 s is logged, not fatal
    (``_keep_current`` tries again)."""
    try:
        await asyncio.wait_for(refresh(), 2.0)
    except (TimeoutError, redis.RedisError, OSError) as exc:
        log.warning(f"{what} not loaded yet", extra={"error": str(exc)})


async def _keep_current(what: str, refresh: Callable[[], Awaitable[None]], seconds: float) -> None:
    """Reload this process's copy of ``what`` every ``seconds``; while Redis fails, keep the
    last one (logged once). The placements and policies (see decisions.catalog), and the
    named keys: a key revoked on another instance stops working here within
    ``edge.access.keys.REFRESH_SECONDS``."""
    failing = False
    while True:
        await asyncio.sleep(seconds)
        try:
            await refresh()
            failing = False
        except (redis.RedisError, OSError) as exc:
            if not failing:
                log.warning(f"{what} not reloaded; keeping the last", extra={"error": str(exc)})
            failing = True


# What a shop's pages call from their own origin with the public write key: the only paths
# that answer cross-origin calls (edge.api.cors). Everything else takes the secret key, or is
# same-origin.
BROWSER_PATHS = (
    "/v1/decide",
    *(f"/v1/{kind}" for kind in tracking.KINDS),
    "/v1/wallets/nonce",
    "/v1/wallets/link",
)


class _DecideFirst:
    """The app's front: ``POST /v1/decide`` straight to its endpoint, everything else through
    CORS, then the limits, then the Starlette app. The decide path is the one a page waits on;
    Starlette's middleware stack and router cost about an eighth of its throughput and give it
    nothing (the endpoint answers its own errors). Its CORS headers and limits are the same
    policies, applied here as calls: as two more middleware layers they cost a twentieth
    (coroutine frames every resumption passes through, the headers read twice more, a wrapper
    around ``send``). A body without ``Content-Length`` (chunked) takes the general path, where
    the limits count it as it streams in."""

    def __init__(self, cors: CORS, limits: RequestLimits):
        self.app = self.cors = cors  # the general path: CORS, limits, Starlette
        self.limits = limits
        self.decide = DecideEndpoint()
        self.browser = "/v1/decide" in cors.paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/decide" and scope["method"] == "POST":
            headers = dict(scope["headers"])
            limits = self.limits
            if limits.off or not limits.max_body or b"content-length" in headers:
                origin = headers.get(b"origin")
                extra = (
                    self.cors.headers_for(origin) if origin is not None and self.browser else None
                )
                refused = None if limits.off else limits.admit(scope, headers)
                if refused is not None:  # (CORS's headers too: a browser may read a 429)
                    refused["headers"] += extra or []
                    await answer(send, refused)
                else:
                    await self.decide.serve(scope, receive, send, headers, extra)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> ASGIApp:
    """The engine's HTTP app: CORS, then rate and size limits, then the routes."""
    redact(settings.write_key, settings.secret_key, settings.identity_secret)
    verifier = Verifier(settings.identity_secret, settings.identity_verification == "required")
    if not verifier.required:
        log.warning(
            "identity verification is off: /v1/decide takes any userId a browser names as that "
            "person (their traits, their browsing); sign userHash on your site and set "
            '[identity] verification = "required"'
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # A stuck Redis must not hold a request forever (the decide path gives up much sooner).
        client = async_redis_client(settings.redis_url, timeout=10)
        client_sync = redis_client(settings.redis_url)
        store = open_store(settings.store_url)
        suppression = SuppressionCache()
        layout = layout_of(client_sync, settings.spool_partitions)
        spool = Spool(client, layout, limit=settings.spool_limit,
                      replicas=settings.spool_replicas)  # fmt: skip
        catalog, keyring = Catalog(), Keyring()
        reload_catalog = functools.partial(catalog.refresh, client)
        reload_keys = functools.partial(keyring.refresh, client)
        await _load("placements", reload_catalog)
        await _load("API keys", reload_keys)
        limited.keyring = keyring
        tasks = [
            asyncio.create_task(_refresh(suppression, client)),
            asyncio.create_task(_keep_current("API keys", reload_keys, KEYS_REFRESH)),
            asyncio.create_task(_keep_current("placements", reload_catalog, REFRESH_SECONDS)),
        ]
        # The decide path has its own pipeline: its timeout must not touch ingestion's.
        decider = Decider(
            catalog, Coalescer(client, settings.decide_timeout), suppression, settings.seed,
            verifier, layout, ids=DecisionIds.of_secret(settings.secret_key),
        )  # fmt: skip
        # Email systems' recommendations wait for Redis longer than a page would (its own
        # pipeline: a big batch must not time out the decide path's requests).
        recommender = Decider(catalog, Coalescer(client, 10.0), suppression, settings.seed,
                              layout=layout, ids=decider.ids)  # fmt: skip
        # Everything made so far lives as long as the app: keep it out of the garbage
        # collector's scans, which otherwise pause requests for milliseconds (p99 latency).
        gc.collect()
        gc.freeze()
        log.info("api ready", extra={"store": settings.store_url})
        try:
            yield {
                "settings": settings,
                "keyring": keyring,
                "limits": limited,
                "redis": client,
                "redis_sync": client_sync,
                "spool": spool,
                "store": store,
                "suppression": suppression,
                "profiles": ProfileStore(client_sync),
                "catalog": catalog,
                "decider": decider,
                "recommender": recommender,
            }
        finally:
            for task in tasks:
                task.cancel()
            await spool.calls.aclose()
            await decider.calls.aclose()
            await recommender.calls.aclose()
            await store.close()
            await client.aclose()
            client_sync.close()

    app = Starlette(
        routes=[
            *decide.routes,  # what _DecideFirst does not take (OPTIONS, other methods)
            *tracking.routes,
            *placements.routes,
            *evaluation.routes,
            *sql.routes,
            *profiles.routes,
            *segments.routes,
            *models.routes,
            *dashboard.routes,
            *messaging.routes,
            *policies.routes,
            *audit_page.routes,
            *session_pages.routes,
            *user_pages.routes,
            *users.routes,
            *products.routes,
            *journeys.routes,
            *templates.routes,
            *broadcasts.routes,
            *messages.routes,
            *subscriptions.routes,
            *preferences.routes,
            *onchain.routes,
            *wallets.routes,
            *recommendations.routes,
            *audit.routes,
            *ops.routes,
            *keys.routes,
            *openapi.routes,
            *sdk.routes,
            *demo.routes,
        ],
        lifespan=lifespan,
    )
    # CORS outermost, so a browser can read a 429 or a 413 and back off.
    limited = RequestLimits(app, settings.limits, settings.write_key, settings.secret_key)
    cors = CORS(limited, settings.cors_origins, BROWSER_PATHS)
    return _DecideFirst(cors, limited)
