"""ClickHouse schema: versioned, idempotent migrations applied on start.

Each migration runs once (its version is recorded in ``schema_migrations``) and is written so
that running it twice is harmless too: two processes starting together cannot break the schema.
The same SQL serves the embedded engine (chdb) and a ClickHouse server.

The sink inserts spool payloads as they are (a JSON line per message) into ``events_intake``, a
Null table; the materialized view ``events_intake_mv`` maps each message to an ``events`` row in
ClickHouse itself: one JSON parse per message in C++, none in Python.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["INTAKE_SETTINGS", "MIGRATIONS", "migrate"]

log = logging.getLogger("kairos.schema")

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
    profile_id String COMMENT 'the profile identity resolution gave the event when it arrived',
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

# Spool messages as the collector wrote them (collector.wire); unknown keys are skipped and
# nested objects read as their JSON text.
_INTAKE = """
CREATE TABLE IF NOT EXISTS events_intake
(
    type String,
    messageId String,
    event String,
    name String,
    anonymousId String,
    userId String,
    previousId String,
    groupId String,
    timestamp Nullable(DateTime64(3, 'UTC')),
    originalTimestamp Nullable(DateTime64(3, 'UTC')),
    sentAt Nullable(DateTime64(3, 'UTC')),
    receivedAt DateTime64(3, 'UTC'),
    channel String,
    requestIp String,
    profileId String,
    properties String,
    traits String,
    context String
)
ENGINE = Null
"""

# Event time corrected for client clock skew as Segment does (original + receivedAt - sentAt),
# never later than receivedAt; page fields from page properties, else context.page; identify
# traits sent in context.traits (RudderStack) merged under the message's own.
_INTAKE_VIEW = """
CREATE MATERIALIZED VIEW IF NOT EXISTS events_intake_mv TO events AS
WITH
    coalesce(timestamp, originalTimestamp) AS sent_time,
    coalesce(sent_time, receivedAt) AS original,
    if(sent_time IS NOT NULL AND sentAt IS NOT NULL,
       addMilliseconds(original, dateDiff('millisecond', sentAt, receivedAt)),
       original) AS corrected,
    if(context = '', '{}', context) AS ctx_json,
    JSONExtract(ctx_json, 'Tuple(ip String, userAgent String, traits String,
        page Tuple(url String, path String, referrer String, title String),
        library Tuple(name String, version String))') AS ctx,
    JSONExtract(if(type = 'page' AND properties != '', properties, '{}'),
        'Tuple(url String, path String, referrer String, title String)') AS own,
    if(traits = '', '{}', traits) AS own_traits
SELECT
    messageId AS message_id,
    type,
    if(type = 'track', event, '') AS event,
    name,
    least(greatest(corrected, toDateTime64(0, 3, 'UTC')), receivedAt) AS timestamp,
    original AS original_timestamp,
    sentAt AS sent_at,
    receivedAt AS received_at,
    anonymousId AS anonymous_id,
    userId AS user_id,
    profileId AS profile_id,
    previousId AS previous_id,
    groupId AS group_id,
    if(own.url != '', own.url, ctx.page.url) AS page_url,
    if(own.path != '', own.path, ctx.page.path) AS page_path,
    if(own.referrer != '', own.referrer, ctx.page.referrer) AS page_referrer,
    if(own.title != '', own.title, ctx.page.title) AS page_title,
    ctx.userAgent AS user_agent,
    if(ctx.ip != '', ctx.ip, requestIp) AS ip,
    ctx.library.name AS library_name,
    ctx.library.version AS library_version,
    channel,
    if(properties = '', '{}', properties) AS properties,
    if(type = 'identify' AND startsWith(ctx.traits, '{'),
       JSONMergePatch(ctx.traits, own_traits), own_traits) AS traits,
    ctx_json AS context
FROM events_intake
"""

# Settings for inserting spool payloads into events_intake.
INTAKE_SETTINGS = {
    "input_format_json_read_objects_as_strings": 1,
    "input_format_skip_unknown_fields": 1,
    "date_time_input_format": "best_effort",
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}

# Decisions as /v1/decide logs them (the sink inserts the spool's JSON lines as they are).
_DECISIONS = """
CREATE TABLE IF NOT EXISTS decisions
(
    decisionId String,
    timestamp DateTime64(3, 'UTC'),
    placement LowCardinality(String),
    variant String,
    arm UInt16,
    policy LowCardinality(String),
    policyRevision UInt64,
    propensity Float64 COMMENT 'the probability with which the variant was chosen',
    profileId String,
    anonymousId String,
    userId String,
    features Array(Float64) COMMENT 'the context features a contextual policy used',
    context String CODEC(ZSTD(3)) COMMENT 'the request context as sent (JSON)',
    fallback LowCardinality(String) COMMENT 'why the default was shown without the policy, if so',
    INDEX idx_decision decisionId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_profile profileId TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (placement, toDate(timestamp), timestamp)
SETTINGS non_replicated_deduplication_window = 1000
"""

# (version, name, statements)
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "events table and its intake", [_EVENTS, _INTAKE, _INTAKE_VIEW]),
    (2, "decisions table", [_DECISIONS]),
    (
        3,
        "recommended items on decisions",
        [
            "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS items Array(String) "
            "COMMENT 'a recommendation''s item ids, in the order shown' AFTER features"
        ],
    ),
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
        # A statement, not ``client.insert``: that one imports pandas (34 MB in every process).
        client.command(
            "INSERT INTO schema_migrations (version, name) "
            "VALUES ({version:UInt32}, {name:String})",
            parameters={"version": version, "name": name},
        )
        log.info("schema migration applied", extra={"version": version, "migration": name})
        applied.append(version)
    return applied
