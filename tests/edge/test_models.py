"""Predictive scores end to end: simulated shoppers through the HTTP API, the learner worker,
scores on profiles, a segment on scores, GET /v1/models and /metrics; lifetime value from
ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from edge.runtime.config import Config
from edge.runtime.stores import redis_client
from profiles.learner import STATE, ModelSettings
from profiles.shoppers import ShopperStream, send
from profiles.store import ProfileStore
from profiles.valuation import refit
from tests.conftest import WRITE_KEY, Engine
from tests.helpers import bearer, eventually, members

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path


def scored(r: redis.Redis, name: str) -> dict[str, float]:
    """Every live profile's score ``name``, read from Redis."""
    scores = {}
    for key in r.scan_iter("{p:*}", count=1_000):
        fields = r.hmget(key, f"s:{name}", "merged_into")
        if fields[0] is not None and fields[1] is None:
            scores[key.decode()[3:-1]] = float(fields[0])
    return scores


def test_scores_reach_profiles_segments_and_the_models_api(
    engine_factory: Any, settings: Any
) -> None:
    config = Config(models=ModelSettings(churn_days=3, conversion_days=3))
    engine = engine_factory(settings, learner=True, config=config)
    r = redis_client(settings.redis_url)
    answer = engine.client.put(f"{engine.url}/v1/segments/likely_churn", headers=bearer(),
                               json={"rule": {"field": "scores.churn", "op": "gt", "value": 0.7}})  # fmt: skip
    assert answer.status_code == 201, answer.text
    start = datetime.now(UTC) - timedelta(days=30)
    stream = ShopperStream(shoppers=400, days=30, seed=5, start=start)
    sent = send(stream.messages(), engine.url, WRITE_KEY)
    assert sent > 5_000

    def learned_everything() -> bool:
        last = r.xinfo_stream("{spool}:log")["last-generated-id"].decode()
        return (r.hget(STATE, "applied") or b"").decode() == last and not r.scard("{seg}:rescored")

    eventually(learned_everything, timeout=120)
    churn = scored(r, "churn")
    likely = {pid for pid, value in churn.items() if value > 0.7}
    assert 0 < len(likely) < len(churn)  # the model separates people
    eventually(lambda: members(engine, "likely_churn") == likely, timeout=30)

    # The profile API shows the scores; the models API how well they predict.
    shopper = stream.shoppers[0]
    profile = engine.client.get(f"{engine.url}/v1/profiles/anonymous_id:{shopper.anonymous_id}",
                                headers=bearer()).json()  # fmt: skip
    assert set(profile["scores"]) >= {"conversion", "conversion_session", "churn"}

    def published() -> dict[str, Any]:  # the summary of everything learned
        found = engine.client.get(f"{engine.url}/v1/models", headers=bearer()).json()
        applied = (r.hget(STATE, "applied") or b"").decode()
        return found if found["models"] and found.get("applied") == {"0": applied} else {}

    models = {m["target"]: m for m in eventually(published)["models"]}
    assert set(models) == {"conversion", "conversion_session", "churn"}
    # Better than chance; how much better depends on how this run's HTTP batches fell (the
    # learner's own tests measure quality on fixed batches).
    assert models["churn"]["examples"] > 100 and models["churn"]["calibration"]
    assert models["churn"]["roc_auc"] > 0.5
    assert 0.0 <= models["churn"]["ece"] <= 1.0 and models["churn"]["calibrated"]
    assert set(models["churn"]["uncalibrated"]) == {"roc_auc", "log_loss", "ece"}
    assert engine.client.get(f"{engine.url}/v1/models").status_code == 401
    metrics = engine.client.get(f"{engine.url}/metrics").text
    assert 'kairos_model_roc_auc{model="churn"}' in metrics
    assert 'kairos_model_ece{model="churn"}' in metrics
    assert "kairos_learner_messages_total" in metrics


def test_lifetime_value_is_fitted_from_order_history(engine: Engine) -> None:
    """Buyers with orders stored in ClickHouse get scores.ltv, purchases and alive."""
    start = datetime(2026, 5, 1, tzinfo=UTC)  # fixed: calendar days decide the frequencies
    stream = ShopperStream(shoppers=1_500, days=120, seed=11, start=start)
    messages = list(stream.messages())
    send(messages, engine.url, WRITE_KEY)
    orders = sum(1 for m in messages if m.get("event") == "Order Completed")
    eventually(lambda: engine.sql("SELECT count() FROM events WHERE event = 'Order Completed' "
                                  "AND profile_id != ''")[0][0] == orders, timeout=60)  # fmt: skip
    r = redis_client(engine.settings.redis_url)
    done: list[tuple[int, int]] = []
    fit = refit(_store(engine), r, horizon_days=90, now=start + timedelta(days=120),
                progress=lambda *p: done.append(p))  # fmt: skip
    buyers = {s.anonymous_id for s in stream.shoppers if s.orders}
    assert fit["customers"] == len(buyers) and done[-1] == (len(buyers), len(buyers))
    assert 0 < fit["beta_geo"]["r"] and 0 < fit["gamma_gamma"]["p"]
    store = ProfileStore(r)
    ltv = scored(r, "ltv")
    assert len(ltv) == len(buyers)
    # Those who bought often and recently are worth more than one-time buyers.
    loyal = [s for s in stream.shoppers if s.orders >= 3]
    once = [s for s in stream.shoppers if s.orders == 1]

    def mean_ltv(shoppers: list[Any]) -> float:
        links = store.lookup([f"anonymous_id:{s.anonymous_id}" for s in shoppers])
        values = [ltv.get(store.resolve(pid), 0.0) for pid in links.values()]
        return sum(values) / len(values)

    assert mean_ltv(loyal) > 2 * mean_ltv(once)


def _store(engine: Engine) -> Any:
    from collector.store import open_store

    return open_store(engine.settings.store_url)
