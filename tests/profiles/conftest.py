from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import redis.asyncio

from collector import Spool, SpoolReader, read_request
from collector.reader import ensure_group
from edge.runtime.stores import async_redis_client
from profiles import LeadScoring, ProfileStore, ProfileUpdater
from profiles.scoring import ScoreRule


def send(redis_url: str, *messages: dict[str, Any], received_at: datetime | None = None) -> None:
    """Messages through the real intake and spool, one request each."""

    async def run() -> None:
        client = async_redis_client(redis_url)
        spool = Spool(client)
        for msg in messages:
            intake = read_request(
                json.dumps({"batch": [msg]}).encode(), kind="batch",
                content_type="application/json", content_encoding=None,
                received_at=received_at or datetime.now(UTC), ip="198.51.100.7",
            )  # fmt: skip
            await spool.append(intake)
        await spool.aclose()
        await client.aclose()

    asyncio.run(run())


@pytest.fixture
def store(r: redis.Redis) -> ProfileStore:
    return ProfileStore(r)


@pytest.fixture
def updater(r: redis.Redis, store: ProfileStore) -> ProfileUpdater:
    ensure_group(r, "profiles")
    scoring = LeadScoring(rules=[ScoreRule("Page Viewed", 10, {"path": "/pricing"}),
                                 ScoreRule("Webinar Signed Up", 25)])  # fmt: skip
    return ProfileUpdater(SpoolReader(r, "profiles", "test"), store, scoring)


@pytest.fixture
def drain(updater: ProfileUpdater) -> Callable[[], int]:
    """Apply everything in the spool; returns how many messages."""

    def run() -> int:
        applied = 0
        while entries := updater.reader.read(100, 10):
            updater.process(entries)
            updater.reader.ack(entries, {})
            applied += sum(e.count for e in entries)
        return applied

    return run


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result
