"""The worker table is the one declaration of the worker kinds: the CLI, docker-compose and
/healthz follow it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from edge.runtime.workers import WORKERS, select

ROOT = Path(__file__).resolve().parents[2]
NOT_WORKERS = {"redis", "clickhouse", "api"}


COMPOSE_FILES = ["docker-compose.yml", "docker-compose.cluster.yml"]


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_docker_compose_runs_one_service_per_worker_kind(path: str) -> None:
    compose = yaml.safe_load((ROOT / path).read_text())
    services = compose["services"]
    stores = {name for name in services if name.startswith(("redis", "clickhouse", "keeper"))}
    assert set(services) - NOT_WORKERS - stores == set(WORKERS)
    for name, kind in WORKERS.items():
        command = services[name]["command"]
        assert command[:3] == ["kairos", "worker", name], name
        assert ("--api-url" in command) == ("api" in kind.needs), name


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_docker_compose_says_what_each_worker_does(path: str) -> None:
    text = (ROOT / path).read_text()
    for name, kind in WORKERS.items():
        (comment,) = re.findall(rf"^  {name}:  # (.*)$", text, flags=re.M)
        assert kind.summary in comment, name


def test_the_cluster_compose_file_is_a_replicated_cluster() -> None:
    """Nine nodes (3 masters, 2 replicas each: WAIT 1 still holds after a failover), joined
    once, and every Kairos process told it is a cluster that must confirm appends."""
    compose = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
    services = compose["services"]
    nodes = [name for name in services if name.startswith("redis-") and name[6:].isdigit()]
    assert len(nodes) == 9
    for name in nodes:
        command = services[name]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--cluster-announce-hostname") + 1] == name
    assert "--cluster-replicas 2" in services["redis-cluster"]["command"][0]
    for name in ["api", *WORKERS]:
        environment = services[name]["environment"]
        assert (
            environment["KAIROS_REDIS_CLUSTER"] == "1"
            and environment["KAIROS_SPOOL_REPLICAS"] == "1"
        )
        assert services[name]["depends_on"]["redis-cluster"]["condition"] == (
            "service_completed_successfully")  # fmt: skip


def test_the_cluster_compose_file_runs_a_sharded_replicated_clickhouse() -> None:
    """Two shards of two replicas, each node naming its own shard and replica, one Keeper, and
    every Kairos process told the cluster's name (the parse by ClickHouse itself is in
    tests/collector/test_cluster_schema.py)."""
    compose = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
    services = compose["services"]
    config = ElementTree.fromstring(compose["configs"]["clickhouse-cluster"]["content"])
    shards = config.findall("remote_servers/kairos/shard")
    hosts = [[replica.findtext("host") for replica in shard.findall("replica")] for shard in shards]
    assert hosts == [["clickhouse-1", "clickhouse-2"], ["clickhouse-3", "clickhouse-4"]]
    assert config.findtext("zookeeper/node/host") == "keeper" and "keeper" in services
    for shard, names in enumerate(hosts, start=1):
        for name in names:
            environment = services[name]["environment"]
            assert (environment["CLICKHOUSE_SHARD"], environment["CLICKHOUSE_REPLICA"]) == (
                str(shard), name)  # fmt: skip
            assert services[name]["configs"][0]["source"] == "clickhouse-cluster"
    for name in ["api", *WORKERS]:
        environment = services[name]["environment"]
        assert environment["KAIROS_CLICKHOUSE_CLUSTER"] == "kairos"
        assert environment["KAIROS_CLICKHOUSE_URL"].split("@")[1].split(":")[0] in hosts[0]


def test_the_cli_offers_exactly_the_table() -> None:
    shown = subprocess.run([sys.executable, "-m", "edge.cli", "worker", "--help"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "{" + ",".join([*WORKERS, "all"]) + "}" in shown
    for kind in WORKERS.values():
        assert kind.summary in shown
    assert "all       every kind above, in one process" in shown
    up = subprocess.run([sys.executable, "-m", "edge.cli", "up", "--help"],
                        capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert ",".join(WORKERS) in up.replace("\n", "").replace(" ", "")


def test_an_unknown_worker_is_refused_with_the_choices(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "edge.cli", "up", "--workers", "sink,nope",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    assert f"unknown worker nope (choose from {', '.join(WORKERS)}, all, or none)" in done.stderr
    assert not (tmp_path / "keys.json").exists()  # refused before anything was made


@pytest.mark.parametrize("names", ["nope", "profiles,nope", "all,nope,sink", ","])
def test_kairos_worker_refuses_an_unknown_name_with_the_choices(names: str) -> None:
    done = subprocess.run([sys.executable, "-m", "edge.cli", "worker", names],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2
    shown = "nope" if "nope" in names else repr(names)
    assert (f"argument NAME: unknown worker {shown} (choose from {', '.join(WORKERS)}, or all; "
            "several as a comma list)") in done.stderr  # fmt: skip


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        pytest.param("all", list(WORKERS), id="all"),
        pytest.param("rewards,sink", ["sink", "rewards"], id="the-table-order"),
        pytest.param(" profiles , profiles ", ["profiles"], id="spaces-and-repeats"),
    ],
)
def test_a_comma_list_names_kinds_in_the_table_order(text: str, kinds: list[str]) -> None:
    assert select(text) == kinds


def test_none_is_only_a_choice_of_kairos_up() -> None:
    assert select("none", none=True) == []
    assert select("", none=True) == []
    with pytest.raises(ValueError, match=r"^unknown worker none \(choose from sink, .*, or all;"):
        select("none")
