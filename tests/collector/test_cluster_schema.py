"""The cluster shape of the schema (``--clickhouse-cluster``): its DDL parses as ClickHouse reads
it, and — with what chdb lacks swapped out — creates, migrates, erases and retains in chdb.

chdb has no Keeper (ReplicatedMergeTree fails with NO_ZOOKEEPER) and no distributed DDL queue
(ON CLUSTER is refused), so the migrating test swaps exactly those two — MergeTree for the
replicated engines, no ON CLUSTER clause — and runs the one-time copy of migration 4, which goes
through the Distributed tables, on the local ones (the shards are other hosts). The Distributed tables are created for real, over a
two-shard cluster defined in the engine's config (the one docker-compose.cluster.yml ships), in
an engine (a process) of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.schema import Shape, StoreSettings, erasure, statements
from edge.runtime.config import ConfigError, load_config


def test_cluster_ddl_parses(ch: Any) -> None:
    cluster = statements(Shape("kairos"))
    # A Distributed table beside each of the four tables, the added column on one of them too.
    assert len(cluster) == len(statements(Shape())) + 5
    for statement in cluster + erasure(Shape("kairos"), ["p'1"], [], ["u"]):
        if statement.startswith("INSERT"):  # through the Distributed tables, from any node
            assert statement.startswith("INSERT INTO events_by_person SELECT * FROM events ")
            assert "GLOBAL NOT IN" in statement  # each shard's own rows known on the initiator
            continue
        assert "ON CLUSTER kairos" in statement
        formatted = ch.command("SELECT formatQuery({sql:String})", parameters={"sql": statement})
        assert "ON CLUSTER kairos" in str(formatted)


def test_a_bad_cluster_name_or_retention_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "kairos.toml"
    config.write_text('[clickhouse]\ncluster = "two words"\n')
    with pytest.raises(ConfigError, match="a ClickHouse cluster name is letters, digits and _"):
        load_config(config)
    config.write_text("[clickhouse]\nretention_days = { sessions = 30 }\n")
    with pytest.raises(ConfigError, match="retention_days: no table 'sessions'"):
        load_config(config)
    config.write_text("[clickhouse]\nretention_days = { events = 0 }\n")
    with pytest.raises(ConfigError, match=r"Expected `int` >= 1 - at `\$.clickhouse.retention"):
        load_config(config)


ROOT = Path(__file__).resolve().parents[2]


def _compose_cluster_config() -> str:
    """The ClickHouse cluster docker-compose.cluster.yml ships (every node's config.d file)."""
    compose = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
    return str(compose["configs"]["clickhouse-cluster"]["content"])


# Run in a process of its own: one chdb engine per process, and this one has a cluster defined.
_MIGRATE = """
import json, re, sys
import clickhouse_connect
from collector.schema import Shape, StoreSettings, erasure, migrate, retain

class Swapped:
    def __init__(self, client):
        self.client = client
    def _swap(self, sql):
        sql = re.sub(r"Replicated(\\w*MergeTree)\\('[^']*', '[^']*'\\)", r"\\1", sql)
        sql = sql.replace(" ON CLUSTER kairos", "")
        if sql.startswith("INSERT INTO events_by_person"):
            sql = re.sub(r"\\b(events_by_person|events)\\b", r"\\1_local", sql)
        return sql
    def command(self, sql, **options):
        return self.client.command(self._swap(sql), **options)
    def query(self, sql, **options):
        return self.client.query(self._swap(sql), **options)

client = Swapped(clickhouse_connect.get_client(
    interface="chdb", path=sys.argv[1], chdb_options={"config-file": sys.argv[2]}))
shape = Shape("kairos")
first, second = migrate(client, shape), migrate(client, shape)
client.command("INSERT INTO events_local (message_id, profile_id, anonymous_id, timestamp) "
               "VALUES ('m1', 'p1', 'a1', now64(3)), ('m2', 'p2', 'a2', now64(3))")
for statement in erasure(shape, ["p1"], [], []):
    client.command(statement)
store = StoreSettings(cluster="kairos", retention_days={"events": 400})
changed, unchanged = retain(client, store), retain(client, store)
clusters = client.query(
    "SELECT shard_num, replica_num, host_name FROM system.clusters WHERE cluster = 'kairos'"
).result_rows
tables = client.query(
    "SELECT name, engine, engine_full, create_table_query FROM system.tables "
    "WHERE database = currentDatabase() ORDER BY name").result_rows
columns = client.query("SELECT table, name FROM system.columns WHERE name = 'items'").result_rows
left = client.query("SELECT message_id FROM events_local").result_rows
left_by_person = client.query("SELECT message_id FROM events_by_person_local").result_rows
print(json.dumps({"clusters": clusters, "first": first, "second": second, "tables": tables, "columns": columns,
                  "left": left, "left_by_person": left_by_person, "changed": changed, "unchanged": unchanged}, default=str))
"""


def test_cluster_schema_creates_and_migrates_in_chdb(tmp_path: Path) -> None:
    """On the cluster docker-compose.cluster.yml defines, as its node clickhouse-1 reads it (its
    shards are other hosts: never local here, as FACTS.md says, so nothing is queried through
    the Distributed tables)."""
    (tmp_path / "config.xml").write_text(_compose_cluster_config())
    node = {"CLICKHOUSE_SHARD": "1", "CLICKHOUSE_REPLICA": "clickhouse-1"}
    done = subprocess.run(
        [sys.executable, "-c", _MIGRATE, str(tmp_path / "data"), str(tmp_path / "config.xml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **node},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["clusters"] == [[1, 1, "clickhouse-1"], [1, 2, "clickhouse-2"],
                                 [2, 1, "clickhouse-3"], [2, 2, "clickhouse-4"]]  # fmt: skip
    assert found["first"] == [1, 2, 3, 4, 5] and found["second"] == []
    engines = {name: (engine, full) for name, engine, full, _ in found["tables"]}
    assert engines["events_local"][0] == engines["decisions_local"][0] == "MergeTree"
    assert engines["events"] == (
        "Distributed",
        "Distributed('kairos', 'default', 'events_local', "
        "cityHash64(if(profile_id != '', profile_id, anonymous_id)))",
    )
    assert engines["decisions"][1].endswith(
        "'decisions_local', cityHash64(if(profileId != '', profileId, anonymousId)))"
    )
    assert engines["events_by_person_local"][0] == "ReplacingMergeTree"
    assert engines["events_by_person"][1].endswith("'events_by_person_local', "
                                                   "cityHash64(if(profile_id != '', profile_id, anonymous_id)))")  # fmt: skip
    assert engines["audit_local"][0] == "ReplacingMergeTree"  # entries dedup by id
    assert engines["audit"][1].endswith("'audit_local', cityHash64(id))")
    assert engines["events_intake"][0] == "Null"
    assert engines["events_intake_mv"][0] == "MaterializedView"
    intake_view = next(ddl for name, _, _, ddl in found["tables"] if name == "events_intake_mv")
    assert " TO default.events " in intake_view  # through the Distributed table, to the shards
    # The migration that adds a column adds it to the shards' tables and the Distributed one.
    assert sorted(found["columns"]) == [["decisions", "items"], ["decisions_local", "items"]]
    by_person = next(ddl for name, _, _, ddl in found["tables"] if name == "events_by_person_mv")
    assert " TO default.events_by_person_local " in by_person  # a shard's rows, on that shard
    assert found["left"] == found["left_by_person"] == [["m2"]]  # erased on the shards' tables
    assert found["changed"] == [
        f"ALTER TABLE {table} ON CLUSTER kairos MODIFY TTL toDateTime(timestamp) + "
        "toIntervalDay(400)"
        for table in ("events_local", "events_by_person_local")
    ]
    assert found["unchanged"] == []


def test_store_settings_shape() -> None:
    assert StoreSettings().shape == Shape()
    assert StoreSettings(cluster="c1").shape.local("decisions") == "decisions_local"
