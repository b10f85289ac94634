"""The learner on real Redis: what it learns from simulated shoppers, that its labels never see
the future, and that a restart keeps its models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest
import redis
from scipy.optimize import minimize
from scipy.stats import rankdata

from bench.profiles import fill
from collector import SpoolReader
from collector.reader import ensure_group
from profiles.history import NUMERIC, Example
from profiles.learner import DUE, OUTBOX, QUEUE, STATE, Learner, ModelSettings, learner_key
from profiles.privacy import erase
from profiles.shoppers import ShopperStream
from profiles.store import ProfileStore
from profiles.updater import ProfileUpdater
from tests.profiles.conftest import send

Labelled = tuple[Example, bool]


def run(r: redis.Redis, learner: Learner, batch: int = 5) -> None:
    """Apply the whole spool: the profile updater first (it resolves people), then the learner."""
    ensure_group(r, "profiles")
    updater = ProfileUpdater(SpoolReader(r, "profiles", "t"), ProfileStore(r))
    while entries := updater.reader.read(200, 10):
        updater.process(entries)
        updater.reader.ack(entries, {})
    while entries := learner.reader.read(batch, 10):
        learner.reader.ack(entries, learner.process(entries))


def learner(
    r: redis.Redis, labelled: list[Labelled], group: str = "learner", **settings: Any
) -> Learner:
    ensure_group(r, group)
    return Learner(SpoolReader(r, group, "t"), r, ModelSettings(**settings), clock=None,
                   on_example=lambda *example: labelled.append(example), profile_wait=1.0)  # fmt: skip


def auc(labels: list[bool], scores: list[float]) -> float:
    y = np.asarray(labels, dtype=bool)
    ranks = rankdata(scores)
    positives, negatives = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def offline_auc(examples: list[Labelled]) -> float:
    """A logistic regression fitted on all the examples at once (test-only baseline), scored on
    the same examples: what a linear model can get out of these features."""
    names = sorted({k for e, _ in examples for k in e.x})
    matrix = np.array([[e.x.get(k, 0.0) for k in names] for e, _ in examples])
    matrix = (matrix - matrix.mean(0)) / (matrix.std(0) + 1e-9)
    matrix = np.hstack([matrix, np.ones((len(matrix), 1))])
    y = np.array([label for _, label in examples], dtype=float)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = matrix @ w
        grad = matrix.T @ (1 / (1 + np.exp(-z)) - y) + 2e-3 * w
        return float(np.sum(np.logaddexp(0, z) - y * z) + 1e-3 * w @ w), grad

    w = minimize(loss, np.zeros(matrix.shape[1]), jac=True, method="L-BFGS-B").x
    return auc(list(y.astype(bool)), list(matrix @ w))


def test_conversion_is_learned_from_simulated_shoppers(r: redis.Redis, redis_url: str) -> None:
    stream = ShopperStream(shoppers=2_500, days=60, seed=7)
    fill(redis_url, list(stream.messages()))
    labelled: list[Labelled] = []
    model = learner(r, labelled)
    run(r, model, batch=20)
    conversion = [(e, y) for e, y in labelled if e.target == "conversion"]
    summary = model.models["conversion"].summary()
    assert summary["examples"] == len(conversion) > 5_000
    # Prequential: each prediction was made before its label was known. The rolling window
    # covers the last 5,000 examples, after the first weeks of learning.
    assert summary["roc_auc"] >= 0.80
    baseline = offline_auc(conversion[-5_000:])
    assert summary["roc_auc"] >= baseline - 0.03, (summary["roc_auc"], baseline)
    assert summary["log_loss"] < 0.6
    assert sum(d["examples"] for d in summary["calibration"]) == 5_000
    # Scores reached the profiles: keen shoppers score higher than idle ones.
    store = ProfileStore(r)

    def score(shoppers: list[Any]) -> float:
        links = store.lookup([f"anonymous_id:{s.anonymous_id}" for s in shoppers])
        found = [r.hget(f"{{p:{store.resolve(pid)}}}", "s:conversion") for pid in links.values()]
        return float(np.mean([float(v) for v in found if v is not None]))

    keen = [s for s in stream.shoppers if s.intent > 0.5]
    idle = [s for s in stream.shoppers if s.intent < 0.1]
    assert score(keen) > score(idle) + 0.1


def at(day: float) -> str:
    moment = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=day)
    return moment.isoformat().replace("+00:00", "Z")


def test_labels_never_see_the_future(r: redis.Redis, redis_url: str) -> None:
    """Crafted people (7-day conversion, 30-day churn): each example is labelled by what came
    after it within its window, and holds the features of its own moment only."""
    page = {"type": "page", "name": "Home", "properties": {"path": "/"}}
    order = {"type": "track", "event": "Order Completed", "properties": {"revenue": 50}}
    plan = {
        "buys-in-time": [(0, page), (3, order)],
        "buys-late": [(0, page), (8, order)],
        "returns": [(0, page), (10, page)],
        "churns": [(0, page), (40, page)],
        "clock": [(80, page)],  # time moves on: every other window has closed
    }
    messages = [{**body, "anonymousId": who, "timestamp": at(day)}
                for who, steps in plan.items() for day, body in steps]  # fmt: skip
    send(redis_url, *sorted(messages, key=lambda m: m["timestamp"]))
    labelled: list[Labelled] = []
    run(r, learner(r, labelled))
    store = ProfileStore(r)
    who_is = {store.lookup([f"anonymous_id:{w}"])[f"anonymous_id:{w}"]: w for w in plan}
    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000
    labels = {(who_is[e.profile], e.target, round((e.at - start) / 86_400_000)): y
              for e, y in labelled}  # fmt: skip
    sessions = {("buys-in-time", 0), ("buys-late", 0), ("returns", 0), ("returns", 10),
                ("churns", 0), ("churns", 40)}  # fmt: skip
    assert labels == {
        # An order within 7 days; one on day 8 is too late.
        ("buys-in-time", "conversion", 0): True,
        **{(w, "conversion", d): False for w, d in sessions - {("buys-in-time", 0)}},
        # No session saw an order after its first event.
        **{(w, "conversion_session", d): False for w, d in sessions},
        # Back within 30 days: not churned; silent for 30 days: churned.
        ("buys-in-time", "churn", 0): False,
        ("buys-in-time", "churn", 3): True,
        ("buys-late", "churn", 0): False,
        ("buys-late", "churn", 8): True,
        ("returns", "churn", 0): False,
        ("returns", "churn", 10): True,
        ("churns", "churn", 0): True,
        ("churns", "churn", 40): True,
    }
    # The features are those of the example's moment: the order that labels a day-0 example is
    # not in it; the day-3 churn example (made at the order) counts that order.
    for example, _ in labelled:
        day = round((example.at - start) / 86_400_000)
        ordered = who_is[example.profile].startswith("buys") and day >= 3 and (
            who_is[example.profile] == "buys-in-time" or day >= 8)  # fmt: skip
        assert example.x["has_ordered"] == float(ordered), (who_is[example.profile], day)
        first = min(d for d, _ in plan[who_is[example.profile]])
        assert example.x["tenure_days"] == day - first


@pytest.mark.parametrize("estimator", ["logistic", "tree"])
def test_a_restart_restores_models_and_metrics(
    r: redis.Redis, redis_url: str, estimator: str
) -> None:
    fill(redis_url, list(ShopperStream(shoppers=300, days=30, seed=3).messages()))
    first = learner(r, [], estimator=estimator, churn_days=7)
    run(r, first)
    first.checkpoint()
    second = learner(r, [], estimator=estimator, churn_days=7)
    second.restore()
    assert second.applied == first.applied == {0: r.hget(STATE, "applied").decode()}
    for target, model in first.models.items():
        assert second.models[target].summary() == model.summary()
        assert model.quality.examples > 0
    x = {name: 1.0 for name in NUMERIC} | {"device=mobile": 1.0}
    assert [m.predict(first.scaler(x)) for m in first.models.values()] == [
        m.predict(second.scaler(x)) for m in second.models.values()
    ]
    # Replaying everything already applied (another consumer group over the same spool, as
    # after a crash between the write and the ack) changes nothing.
    before = {k: r.get(k) for k in r.scan_iter("{p:*}:learn")}
    replay = learner(r, [], group="replay", estimator=estimator, churn_days=7)
    replay.restore()
    while entries := replay.reader.read(50, 10):
        assert replay.process(entries) == {}
    assert {k: r.get(k) for k in r.scan_iter("{p:*}:learn")} == before


def test_a_crash_between_the_transaction_and_the_profile_writes_loses_nothing(
    r: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """People's records live outside the ``{learn}`` slot's transaction (on a cluster, in
    slots of their own): a learner that dies after the transaction, before writing them, leaves
    them in the outbox, and the next start writes them; the result is the uncrashed one's."""
    fill(redis_url, list(ShopperStream(shoppers=120, days=10, seed=5).messages()))
    calm = learner(r, [], group="calm", churn_days=7)
    run(r, calm)
    expected = {k: r.get(k) for k in r.scan_iter("{p:*}:learn")}
    assert expected
    for key in expected:
        r.delete(key)
    r.delete(OUTBOX, STATE, QUEUE, DUE)
    crashing = learner(r, [], churn_days=7)
    deliveries = {"left": 3}  # three batches go through, then the process "dies"
    real = Learner._deliver

    def deliver(self: Learner, outbox: Any) -> None:
        if deliveries["left"] == 0:
            raise SystemExit("killed between the transaction and the profile writes")
        deliveries["left"] -= 1
        real(self, outbox)

    monkeypatch.setattr(Learner, "_deliver", deliver)
    with pytest.raises(SystemExit):
        run(r, crashing)
    assert r.exists(OUTBOX)
    monkeypatch.setattr(Learner, "_deliver", real)
    restarted = Learner(SpoolReader(r, "learner", "t"), r, ModelSettings(churn_days=7),
                        clock=None, profile_wait=1.0)  # fmt: skip
    restarted.restore()  # writes the outbox
    assert not r.exists(OUTBOX)
    while entries := restarted.reader.read(50, 10):  # its pending batch first
        restarted.reader.ack(entries, restarted.process(entries))
    assert {k: r.get(k) for k in r.scan_iter("{p:*}:learn")} == expected


def test_an_erased_person_leaves_no_trace_in_the_learner(r: redis.Redis, redis_url: str) -> None:
    fill(redis_url, list(ShopperStream(shoppers=200, days=10, seed=4).messages()))
    model = learner(r, [])
    run(r, model)
    store = ProfileStore(r)
    waiting = r.zrange(QUEUE, 0, -1)
    pid = msgspec.json.decode(waiting[0])[0]  # someone with examples waiting for a label
    assert r.exists(learner_key(pid)) and r.zscore(DUE, pid) is not None
    erase(store, pid)
    run(r, model)  # the erasure command reaches the learner through the spool
    assert not r.exists(learner_key(pid)) and r.zscore(DUE, pid) is None
    assert not [m for m in r.zrange(QUEUE, 0, -1) if msgspec.json.decode(m)[0] == pid]
    assert len(r.zrange(QUEUE, 0, -1)) < len(waiting)  # the others still wait
