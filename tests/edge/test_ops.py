from __future__ import annotations

import threading
import time
from typing import Any

from tests.conftest import Engine


def test_healthz_reports_each_store_and_the_spool(engine: Engine) -> None:
    answer = engine.client.get(engine.url + "/healthz")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["status"], body["redis"], body["clickhouse"]) == ("ok", "ok", "ok")
    assert body["spool"]["partitions"] == 1 and set(body["spool"]) == {
        "length",
        "partitions",
        "lag_seconds",
    }
    # Every worker kind of the table, running here (a lag) or not (the engine fixture runs the
    # sink, profiles and rewards workers; no learner, recs or journeys).
    assert set(body["workers"]) == {"sink", "profiles", "rewards", "learner", "recs", "journeys"}
    assert body["workers"]["journeys"] == {"status": "never started"}
    assert set(body["workers"]["sink"]) == {"lag_seconds"}


def test_healthz_is_degraded_while_the_sink_stores_events_without_profile_ids(
    engine: Engine,
) -> None:
    """Serving (200: load balancers keep the API), but monitors see it."""
    from collector import STATS
    from edge.runtime.stores import redis_client

    store = redis_client(engine.settings.redis_url)
    store.hset(STATS, "sink_unresolved_at", int(time.time()))
    answer = engine.client.get(engine.url + "/healthz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "degraded"
    assert "without profile ids" in body["warnings"][0]
    store.hset(STATS, "sink_unresolved_at", int(time.time()) - 3600)  # an hour ago
    assert engine.client.get(engine.url + "/healthz").json()["status"] == "ok"


def test_metrics_count_the_pipeline(engine: Engine) -> None:
    engine.post("/v1/batch", {"batch": [{"type": "track", "event": "E", "userId": "u"}] * 1})
    engine.post("/v1/batch", {"batch": [{"type": "track", "userId": "u"}]})
    engine.wait_stored(1)
    deadline = time.monotonic() + 10
    while "kairos_sink_lag_messages 0" not in (
        text := engine.client.get(engine.url + "/metrics").text
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "# TYPE kairos_events_accepted_total counter" in text
    assert "kairos_events_accepted_total 1" in text
    assert 'kairos_events_rejected_total{reason="invalid_message"} 1' in text
    assert "kairos_sink_messages_total 1" in text
    assert 'kairos_sink_insert_seconds_bucket{le="+Inf"} 1' in text
    assert "kairos_sink_insert_seconds_count 1" in text
    assert "kairos_spool_length" in text and "kairos_sink_lag_seconds" in text


def test_clickhouse_outage_keeps_ingestion_up_and_loses_nothing(
    engine_factory: Any, settings: Any, ch: Any
) -> None:
    """The events table goes away for a while (DETACH): inserts fail for real, the API keeps
    answering 200, the spool grows, and once the table is back everything drains."""
    engine = engine_factory(settings)
    engine.post("/v1/track", {"userId": "u", "event": "Before", "messageId": "before"})
    assert engine.wait_stored(1) == 1
    ch.command("DETACH TABLE events")
    sent = 0
    for b in range(20):
        batch = [
            {"type": "track", "event": "During", "userId": f"u{i}", "messageId": f"d{b}-{i}"}
            for i in range(50)
        ]
        assert engine.post("/v1/batch", {"batch": batch}).status_code == 200
        sent += 50
    deadline = time.monotonic() + 20
    while "kairos_sink_insert_errors_total 0" in (
        metrics := engine.client.get(engine.url + "/metrics").text
    ):
        assert time.monotonic() < deadline, "the sink never hit the outage"
        time.sleep(0.1)
    assert f"kairos_sink_lag_messages {sent}" in metrics
    health = engine.client.get(engine.url + "/healthz").json()
    assert health["spool"]["length"] >= 20
    ch.command("ATTACH TABLE events")
    stored = _wait_rows(ch, 1 + sent)
    assert stored == 1 + sent
    assert ch.query("SELECT uniqExact(message_id) FROM events").result_rows[0][0] == 1 + sent


def _wait_rows(ch: Any, count: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (rows := ch.query("SELECT count() FROM events").result_rows[0][0]) < count:
        assert time.monotonic() < deadline, f"only {rows} of {count} rows arrived"
        time.sleep(0.2)
    return int(rows)


def test_ingestion_keeps_answering_while_the_sink_is_busy(engine: Engine) -> None:
    """Requests from several threads at once all get 200 and all land."""
    errors: list[int] = []

    def send(worker: int) -> None:
        for b in range(10):
            batch = [
                {"type": "track", "event": "E", "userId": "u", "messageId": f"w{worker}-{b}-{i}"}
                for i in range(20)
            ]
            status = engine.post("/v1/batch", {"batch": batch}).status_code
            if status != 200:
                errors.append(status)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert engine.wait_stored(800) == 800


def test_openapi_describes_the_public_routes(engine: Engine) -> None:
    spec = engine.client.get(engine.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in ["/v1/batch", "/v1/track", "/v1/identify", "/v1/alias", "/v1/sql", "/healthz"]:
        assert path in spec["paths"]
    track = spec["components"]["schemas"]["Track"]
    assert "event" in track["required"] and "userId" in track["properties"]


def test_redis_down_is_503_then_recovers(engine_factory: Any, settings: Any, tmp_path: Any) -> None:
    """A Redis restart: ingestion answers 503 with Retry-After meanwhile, never a 500."""
    from dataclasses import replace

    from edge.runtime.embedded_redis import EmbeddedRedis

    private = EmbeddedRedis(tmp_path / "private")
    engine = engine_factory(replace(settings, redis_url=private.start()), sink=False)
    body = {"userId": "u", "event": "E"}
    assert engine.post("/v1/track", body).status_code == 200
    private.stop()
    down = engine.post("/v1/track", body)
    assert down.status_code == 503 and down.headers["retry-after"] == "1"
    assert down.json()["code"] == "spool_unavailable"
    health = engine.client.get(engine.url + "/healthz")
    assert health.status_code == 503 and health.json()["redis"].startswith("error")
    private.start()
    try:
        deadline = time.monotonic() + 10
        while (status := engine.post("/v1/track", body).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline
            time.sleep(0.1)
        assert engine.client.get(engine.url + "/healthz").status_code == 200
    finally:
        private.stop()
