"""ClickHouse schema: versioned, idempotent migrations applied on start.

Each migration runs once (its version is recorded in ``schema_migrations``) and is written so
that running it twice is harmless too: two processes starting together cannot break the schema.
The same SQL serves the embedded engine (chdb) and a ClickHouse server.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["EVENT_COLUMNS", "MIGRATIONS", "migrate"]

log = logging.getLogger("kairos.schema")

EVENT_COLUMNS = (
    "message_id",
    "type",
    "event",
    "name",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "anonymous_id",
    "user_id",
    "profile_id",
    "previous_id",
    "group_id",
    "page_url",
    "page_path",
    "page_referrer",
    "page_title",
    "user_agent",
    "ip",
    "library_name",
    "library_version",
    "channel",
    "properties",
    "traits",
    "context",
)

_EVENTS = """
CREATE TABLE IF NOT EXISTS events
(
    message_id String,
    type LowCardinality(String),
    event LowCardinality(String),
    name String,
    timestamp DateTime64(3, 'UTC') COMMENT 'client time corrected for clock skew',
    original_timestamp DateTime64(3, 'UTC') COMMENT 'client time as sent',
    sent_at Nullable(DateTime64(3, 'UTC')),
    received_at DateTime64(3, 'UTC'),
    anonymous_id String,
    user_id String,
    profile_id String COMMENT 'resolved person; filled by identity resolution',
    previous_id String,
    group_id String,
    page_url String,
    page_path String,
    page_referrer String,
    page_title String,
    user_agent String,
    ip String COMMENT 'truncated: IPv4 /24, IPv6 /48',
    library_name LowCardinality(String),
    library_version LowCardinality(String),
    channel LowCardinality(String),
    properties String CODEC(ZSTD(3)) COMMENT 'JSON object as sent',
    traits String CODEC(ZSTD(3)) COMMENT 'JSON object as sent',
    context String CODEC(ZSTD(3)) COMMENT 'JSON object as sent',
    INDEX idx_anonymous_id anonymous_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_profile_id profile_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_message_id message_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (type, event, toDate(timestamp), timestamp)
SETTINGS non_replicated_deduplication_window = 1000
"""

# (version, name, statements)
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "events table", [_EVENTS]),
]

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
"""


def migrate(client: Any) -> list[int]:
    """Apply the migrations ``client``'s database lacks; returns the versions applied."""
    client.command(_LEDGER)
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for version, name, statements in MIGRATIONS:
        if version in done:
            continue
        for statement in statements:
            client.command(statement)
        client.insert("schema_migrations", [(version, name)], column_names=["version", "name"])
        log.info("schema migration applied", extra={"version": version, "migration": name})
        applied.append(version)
    return applied
