"""ClickHouse schema: versioned, idempotent migrations applied on start, in one of two shapes.

Each migration runs once (its version is recorded in ``schema_migrations``) and is written so
that running it twice is harmless too: two processes starting together cannot break the schema.
The same SQL serves the embedded engine (chdb) and a ClickHouse server.

A ``Shape`` says where the tables live. On one server (or chdb) each table is a MergeTree. On a
cluster (``--clickhouse-cluster NAME``) each is a ReplicatedMergeTree ``<table>_local`` on every
shard with a Distributed ``<table>`` over them, sharded by the person, so one person's history
stays on one shard; every statement runs ``ON CLUSTER``, reads and inserts go through the
Distributed tables, and erasure (a DELETE, which a Distributed table refuses) runs on the local
ones. Both shapes are rendered from the one definition of each table below.

The sink inserts spool payloads as they are (a JSON line per message) into ``events_intake``, a
Null table; the materialized view ``events_intake_mv`` maps each message to an ``events`` row in
ClickHouse itself: one JSON parse per message in C++, none in Python.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

__all__ = [
    "INTAKE_SETTINGS",
    "MIGRATIONS",
    "RETAINED",
    "StoreSettings",
    "Shape",
    "drop_tables",
    "erasure",
    "migrate",
    "retain",
    "statements",
]

log = logging.getLogger("kairos.schema")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Shape:
    """One server (``cluster`` empty) or the ClickHouse cluster of that name.

    Examples:
        >>> Shape("kairos").local("events"), Shape().local("events")
        ('events_local', 'events')
    """

    cluster: str = ""

    def __post_init__(self) -> None:
        if self.cluster and not _NAME.fullmatch(self.cluster):
            raise ValueError(
                f"a ClickHouse cluster name is letters, digits and _: {self.cluster!r}"
            )

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {self.cluster}" if self.cluster else ""

    @property
    def insert_settings(self) -> dict[str, int]:
        """On a cluster, an insert returns once every shard has its rows (the sink acknowledges a
        batch only when it is stored, as on one server); a replayed batch carries the same
        deduplication token to the shards' replicated tables (not run on a real cluster here)."""
        return {"distributed_foreground_insert": 1} if self.cluster else {}

    def local(self, table: str) -> str:
        """The table that holds ``table``'s rows on this server: the shard's on a cluster."""
        return f"{table}_local" if self.cluster else table


@dataclass(frozen=True)
class Table:
    """A table's one definition: columns and indexes, its MergeTree keys, and the expression a
    cluster shards it by (the person)."""

    name: str
    body: str
    partition_by: str
    order_by: str
    shard_by: str
    engine: str = "MergeTree"

    def statements(self, shape: Shape) -> list[str]:
        keys = f"PARTITION BY {self.partition_by}\nORDER BY {self.order_by}"
        if not shape.cluster:
            return [f"CREATE TABLE IF NOT EXISTS {self.name}\n({self.body})\n"
                    f"ENGINE = {self.engine}\n{keys}\n"
                    "SETTINGS non_replicated_deduplication_window = 1000"]  # fmt: skip
        local = shape.local(self.name)
        # Replicated tables deduplicate inserts by themselves (replicated_deduplication_window).
        return [
            f"CREATE TABLE IF NOT EXISTS {local}{shape.on_cluster}\n({self.body})\n"
            f"ENGINE = Replicated{self.engine}("
            f"'/clickhouse/tables/{{shard}}/{{database}}/{local}', '{{replica}}')\n{keys}",
            f"CREATE TABLE IF NOT EXISTS {self.name}{shape.on_cluster} AS {local}\n"
            f"ENGINE = Distributed({shape.cluster}, currentDatabase(), {local}, "
            f"cityHash64({self.shard_by}))",
        ]


@dataclass(frozen=True)
class Statement:
    """DDL that is the same in both shapes but for ``{on_cluster}`` and the tables named
    ``{local:<table>}`` (the shard's own table on a cluster)."""

    sql: str

    def statements(self, shape: Shape) -> list[str]:
        sql = re.sub(r"\{local:(\w+)\}", lambda m: shape.local(m.group(1)), self.sql)
        return [sql.replace("{on_cluster}", shape.on_cluster)]


@dataclass(frozen=True)
class AddColumn:
    """A new column: on the shards' tables and the Distributed one over them."""

    table: str
    column: str
    after: str

    def statements(self, shape: Shape) -> list[str]:
        tables = [shape.local(self.table), self.table] if shape.cluster else [self.table]
        return [f"ALTER TABLE {table}{shape.on_cluster} ADD COLUMN IF NOT EXISTS {self.column} "
                f"AFTER {self.after}" for table in tables]  # fmt: skip


_EVENT_COLUMNS = """
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
    INDEX idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 1,"""
_PERSON = "if(profile_id != '', profile_id, anonymous_id)"

# Ordered for what most queries ask: one kind of event over a time range (segments, lists,
# results, lifetime value).
_EVENTS = Table(
    "events",
    _EVENT_COLUMNS
    + """
    INDEX idx_profile_id profile_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_message_id message_id TYPE bloom_filter(0.01) GRANULARITY 1
""",
    partition_by="toYYYYMM(timestamp)",
    order_by="(type, event, toDate(timestamp), timestamp)",
    shard_by=_PERSON,
)

# The same events ordered by the person, for one person's history (the profile's events page,
# its export): a person's events are spread over the granules of ``events`` (219 of 12,520 read
# for one person's page at 100M events, by EXPLAIN), and lie together here. A table fed by a
# view rather than a projection: a lightweight DELETE (erasure) is refused on a table with
# projections, or (lightweight_mutation_projection_mode = 'rebuild', chdb 26.9) leaves the
# erased rows visible through the projection. The one-time copy of the events stored before the
# view leaves out those the view has copied meanwhile; an event stored between the two reads of
# that copy (a fraction of a second, once) could be copied twice, and the Replacing engine drops
# such a twin at its next merge (readers do not pay for FINAL: 1.9x a page's time at 100M
# events, measured once). A column added to ``events`` must be added here too, and the view
# re-created (its SELECT * is fixed when it is created).
_EVENTS_BY_PERSON = Table(
    "events_by_person",
    _EVENT_COLUMNS.rstrip().rstrip(",") + "\n",
    partition_by="toYYYYMM(timestamp)",
    order_by="(profile_id, timestamp, message_id)",
    shard_by=_PERSON,
    engine="ReplacingMergeTree",
)
_EVENTS_BY_PERSON_VIEW = Statement(
    "CREATE MATERIALIZED VIEW IF NOT EXISTS events_by_person_mv{on_cluster} "
    "TO {local:events_by_person} AS SELECT * FROM {local:events}"
)
_EVENTS_BY_PERSON_COPY = Statement(
    "INSERT INTO events_by_person SELECT * FROM events "
    "WHERE message_id GLOBAL NOT IN (SELECT message_id FROM events_by_person)"
)

# Spool messages as the collector wrote them (collector.wire); unknown keys are skipped and
# nested objects read as their JSON text.
_INTAKE = Statement("""
CREATE TABLE IF NOT EXISTS events_intake{on_cluster}
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
""")

# Event time corrected for client clock skew as Segment does (original + receivedAt - sentAt),
# never later than receivedAt; page fields from page properties, else context.page; identify
# traits sent in context.traits (RudderStack) merged under the message's own.
_INTAKE_VIEW = Statement("""
CREATE MATERIALIZED VIEW IF NOT EXISTS events_intake_mv{on_cluster} TO events AS
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
""")

# Settings for inserting spool payloads into events_intake.
INTAKE_SETTINGS = {
    "input_format_json_read_objects_as_strings": 1,
    "input_format_skip_unknown_fields": 1,
    "date_time_input_format": "best_effort",
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}

# Decisions as /v1/decide logs them (the sink inserts the spool's JSON lines as they are).
_DECISIONS = Table(
    "decisions",
    """
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
""",
    partition_by="toYYYYMM(timestamp)",
    order_by="(placement, toDate(timestamp), timestamp)",
    shard_by="if(profileId != '', profileId, anonymousId)",
)

# Who changed what, when, from where (collector.audit): one row per change, deduplicated by
# ``id`` (an entry stored twice by a sink that died before its acknowledgement is one row with
# FINAL). Not sharded by a person: an entry names none.
_AUDIT = Table(
    "audit",
    """
    id String,
    timestamp DateTime64(3, 'UTC'),
    actor String COMMENT 'key:<name>, user:<email>, config:file, webhook:feedback',
    via LowCardinality(String) COMMENT 'api, dashboard, cli, config',
    address String COMMENT 'the client IP, as the trusted proxies tell it',
    action LowCardinality(String),
    resource LowCardinality(String),
    resource_key String,
    before String CODEC(ZSTD(3)) COMMENT 'the definition before (JSON), empty if none',
    after String CODEC(ZSTD(3)) COMMENT 'the definition after (JSON), empty if none',
    changes String CODEC(ZSTD(3)) COMMENT 'JSON list of {path, before, after}',
    INDEX idx_actor actor TYPE bloom_filter(0.01) GRANULARITY 1
""",
    partition_by="toYYYYMM(timestamp)",
    order_by="(timestamp, id)",
    shard_by="id",
    engine="ReplacingMergeTree",
)

Migration = Table | Statement | AddColumn

# (version, name, what it changes)
MIGRATIONS: list[tuple[int, str, list[Migration]]] = [
    (1, "events table and its intake", [_EVENTS, _INTAKE, _INTAKE_VIEW]),
    (2, "decisions table", [_DECISIONS]),
    (
        3,
        "recommended items on decisions",
        [
            AddColumn(
                "decisions",
                "items Array(String) COMMENT 'a recommendation''s item ids, in the order shown'",
                after="features",
            )
        ],
    ),
    (
        4,
        "events by person, for history pages",
        [_EVENTS_BY_PERSON, _EVENTS_BY_PERSON_VIEW, _EVENTS_BY_PERSON_COPY],
    ),
    (5, "audit log", [_AUDIT]),
]

_LEDGER_BODY = """
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
"""


def _ledger(shape: Shape) -> str:
    """The migrations' ledger: on a cluster one table replicated to every node (no shard in its
    path), so that any node knows what every other one applied."""
    if not shape.cluster:
        return f"CREATE TABLE IF NOT EXISTS schema_migrations\n({_LEDGER_BODY})\n" \
               "ENGINE = MergeTree\nORDER BY version"  # fmt: skip
    return (f"CREATE TABLE IF NOT EXISTS schema_migrations{shape.on_cluster}\n({_LEDGER_BODY})\n"
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{database}/schema_migrations', "
            "'{shard}-{replica}')\nORDER BY version")  # fmt: skip


def statements(shape: Shape) -> list[str]:
    """Every statement that creates the schema in ``shape``, in order (``kairos schema``)."""
    return [_ledger(shape)] + [sql for _, _, changes in MIGRATIONS for change in changes
                               for sql in change.statements(shape)]  # fmt: skip


def erasure(
    shape: Shape, profiles: list[str], anonymous_ids: list[str], user_ids: list[str]
) -> list[str]:
    """The statements that delete one person's rows: lightweight DELETEs, on the shards' own
    tables on a cluster. The identifiers are quoted into the SQL rather than bound: a query
    ``ON CLUSTER`` is queued to every node as text."""
    people = [_array(profiles), _array(anonymous_ids), _array(user_ids)]
    return [
        f"DELETE FROM {shape.local(table)}{shape.on_cluster} WHERE "
        + " OR ".join(f"{column} IN {values}" for column, values in zip(columns, people))
        for table, columns in (
            ("events", ("profile_id", "anonymous_id", "user_id")),
            ("events_by_person", ("profile_id", "anonymous_id", "user_id")),
            ("decisions", ("profileId", "anonymousId", "userId")),
        )
    ]


def _array(values: list[str]) -> str:
    """A ClickHouse Array(String) literal of ``values``."""
    quoted = (value.replace("\\", "\\\\").replace("'", "\\'") for value in values)
    return "[" + ", ".join(f"'{value}'" for value in quoted) + "]::Array(String)"


def drop_tables(client: Any) -> None:
    """Drop every table that holds rows and the migrations' ledger (tests and benchmarks start
    from an empty store with it; the intake, a Null table, holds none and stays)."""
    for table in ("events_by_person_mv", "events_by_person", "events", "decisions", "audit",
                  "schema_migrations"):  # fmt: skip
        client.command(f"DROP TABLE IF EXISTS {table} SYNC")


def migrate(client: Any, shape: Shape | None = None) -> list[int]:
    """Apply the migrations ``client``'s database lacks; returns the versions applied."""
    shape = shape or Shape()
    client.command(_ledger(shape))
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for version, name, changes in MIGRATIONS:
        if version in done:
            continue
        for change in changes:
            for statement in change.statements(shape):
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


RETAINED = ("events", "decisions", "audit")  # the tables a retention applies to
_COPIES = {"events": ("events", "events_by_person"), "decisions": ("decisions",),
           "audit": ("audit",)}  # fmt: skip


class StoreSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[clickhouse]`` in the config file: the cluster the tables live on (none: one server)
    and how many days each table keeps its rows (none: everything, for good).

    Examples:
        >>> StoreSettings(cluster="kairos", retention_days={"decisions": 180}).shape
        Shape(cluster='kairos')
    """

    cluster: str = ""
    retention_days: dict[str, Annotated[int, msgspec.Meta(ge=1)]] = msgspec.field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        Shape(self.cluster)  # a name ClickHouse takes
        unknown = sorted(set(self.retention_days) - set(RETAINED))
        if unknown:
            raise ValueError(f"retention_days: no table {unknown[0]!r} (tables: "
                             f"{', '.join(RETAINED)})")  # fmt: skip

    @property
    def shape(self) -> Shape:
        return Shape(self.cluster)


def retain(client: Any, settings: StoreSettings) -> list[str]:
    """Give each table the TTL its retention asks for, or none; returns the statements run.

    A table's TTL is changed only when it differs: a MODIFY TTL rewrites the table's parts to
    drop the expired rows, once."""
    shape, done = settings.shape, []
    for table, local, days in [(table, shape.local(copy), settings.retention_days.get(table))
                               for table in RETAINED for copy in _COPIES[table]]:  # fmt: skip
        ddl = str(client.command(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name = {table:String}",
            parameters={"table": local},
        ))  # fmt: skip
        wanted = f" TTL toDateTime(timestamp) + toIntervalDay({days})" if days else ""
        current = re.search(r" TTL .*?(?= SETTINGS |$)", ddl)
        if (current.group(0) if current else "") == wanted.rstrip():
            continue
        change = f"MODIFY{wanted}" if days else "REMOVE TTL"
        done.append(f"ALTER TABLE {local}{shape.on_cluster} {change}")
        client.command(done[-1])
        log.info("retention changed", extra={"table": table, "days": days or "none"})
    return done
