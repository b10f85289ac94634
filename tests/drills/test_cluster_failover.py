"""The failover drill: a Redis Cluster master dies under load (a replica takes over), and with
``--spool-replicas 1`` every message the engine acknowledged is stored, exactly once.

Each master has two replicas: the one promoted still has a replica to confirm appends to (with
one replica each, the new master has none, and ``WAIT 1`` refuses every append until an
operator adds one: that is what the option promises)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from collector.partitions import Layout
from tests.drills.conftest import Deadline, Sender, stored_counts, wait_stored
from tests.redis_cluster import RedisCluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # nine nodes, a whole engine, load


def test_a_master_failover_loses_no_acknowledged_message(drill_engine: Any, tmp_path: Path) -> None:
    deadline = Deadline(300)
    cluster = RedisCluster(tmp_path / "cluster", masters=3, replicas=2)
    cluster.start()
    try:
        log = Layout(4).partition(0).log  # the drill engine's spool has four partitions
        doomed = cluster.master_of(log)
        survivor = next(p for p in cluster.ports if p != doomed)  # the URL the engine is given
        engine = drill_engine("--redis-url", f"redis://127.0.0.1:{survivor}/0",
                              "--spool-replicas", "1", "--workers", "sink,profiles")  # fmt: skip
        engine.start(timeout=90)
        senders = [Sender(engine.url, f"f{i}", size=20) for i in range(3)]
        for sender in senders:
            sender.start()

        def acked() -> int:
            return sum(len(s.acked) for s in senders)

        deadline.wait_for("load before the failover", lambda: acked() >= 600)
        cluster.kill(doomed)  # SIGKILL: what it had not replicated is gone with it
        before = acked()
        deadline.wait_for("acknowledgements after the failover", lambda: acked() >= before + 600)
        assert cluster.master_of(log) != doomed  # its replica serves the partition now
        for sender in senders:
            sender.finish()
        for sender in senders:
            wait_stored(engine, sender.prefix, sender.acked, deadline)
            counts = stored_counts(engine, sender.prefix)
            assert all(counts[m] == 1 for m in sender.acked), "an acknowledged message twice"
            assert set(counts.values()) == {1}, "a message stored twice"
        refused = sum(len(s.refused) for s in senders)
        print(f"acknowledged {acked()}, refused during the failover {refused}")
    finally:
        cluster.stop()
