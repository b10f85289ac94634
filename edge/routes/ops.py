"""Operations: ``/healthz`` and ``/metrics`` (Prometheus text).

Counters live in the spool's stats hash in Redis, written in the same round trip as the work they
count, so every process (API replicas, sink workers) adds to one set of numbers and a scrape of
any replica sees the whole engine.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from collector import STATS, spool_state, spool_stats
from collector.errors import QueryFailed, StoreUnavailable
from collector.reader import group_lags
from collector.sink import INSERT_BUCKETS
from edge.api.responses import json
from edge.routes.models import models_summary
from edge.runtime.workers import WORKERS

__all__ = ["routes"]

_COUNTERS = {
    "accepted": ("kairos_events_accepted_total", "Messages accepted into the spool."),
    "duplicates": ("kairos_events_duplicates_total", "Messages dropped as repeats of a messageId."),
    "sink_inserted": (
        "kairos_sink_messages_total",
        "Messages the sink is done with: stored in ClickHouse, or withheld as an erased person's.",
    ),
    "sink_suppressed": (
        "kairos_sink_suppressed_total",
        "Messages of erased people the sink withheld (accepted just before their erasure).",
    ),
    "sink_unresolved": (
        "kairos_sink_unresolved_total",
        "Messages stored without a profile id (the profile updater was behind or down).",
    ),
    "profiles_applied": (
        "kairos_profiles_messages_total",
        "Messages the profile updater has applied.",
    ),
    "learner_messages": (
        "kairos_learner_messages_total",
        "Messages the learner has scored (and learned from as their labels came due).",
    ),
    "learner_examples": ("kairos_learner_examples_total", "Labelled examples the models learned."),
    "learner_unresolved": (
        "kairos_learner_unresolved_total",
        "Messages the learner skipped: no profile id from the profile updater in time.",
    ),
    "sink_batches": ("kairos_sink_batches_total", "Batches the sink stored in ClickHouse."),
    "sink_insert_errors": (
        "kairos_sink_insert_errors_total",
        "Failed ClickHouse inserts (retried).",
    ),
}


UNRESOLVED_RECENT = 60  # seconds /healthz says so after the sink stored events without ids


async def healthz(request: Request) -> Response:
    state = request.state
    checks: dict[str, Any] = {}
    healthy, warnings = True, []
    try:
        await state.redis.ping()
        checks["redis"] = "ok"
        unresolved_at = await state.redis.hget(STATS, "sink_unresolved_at")
        if unresolved_at and time.time() - int(unresolved_at) < UNRESOLVED_RECENT:
            warnings.append("the profile updater is too far behind (see --sink-profile-wait): "
                            "the sink is storing events without profile ids")  # fmt: skip
        checks["spool"] = await run_in_threadpool(spool_state, state.redis_sync, "sink")
        lags = await run_in_threadpool(group_lags, state.redis_sync)
        # Every worker kind, by the table: its lag, or that nothing ever consumed for it.
        checks["workers"] = {name: {"lag_seconds": lags[name]} if name in lags else
                             {"status": "never started"} for name in WORKERS}  # fmt: skip
    except Exception as exc:  # report, never raise: this is what monitors read when things break
        checks["redis"] = f"error: {exc}"
        healthy = False
    try:
        await state.store.ping()
        checks["clickhouse"] = "ok"
    except (QueryFailed, StoreUnavailable) as exc:
        checks["clickhouse"] = f"error: {exc.message}"
        healthy = False
    # Degraded but serving (warnings): 200, so load balancers keep the API; a store down: 503.
    status = "ok" if healthy and not warnings else "degraded"
    warned = {"warnings": warnings} if warnings else {}
    return json({"status": status, **checks, **warned}, 200 if healthy else 503)


async def metrics(request: Request) -> Response:
    state = request.state
    raw = await run_in_threadpool(spool_stats, state.redis_sync)  # every partition's, summed
    spool = await run_in_threadpool(spool_state, state.redis_sync, "sink")
    lags = await run_in_threadpool(group_lags, state.redis_sync)
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    for key, (name, help_) in _COUNTERS.items():
        metric(name, "counter", help_, [("", float(raw.get(key, 0)))])
    rejected = [
        (f'{{reason="{k.partition(":")[2]}"}}', float(v))
        for k, v in sorted(raw.items())
        if k.startswith("rejected:")
    ]
    metric("kairos_events_rejected_total", "counter", "Requests refused, by reason.", rejected)
    buckets = []
    for bound in INSERT_BUCKETS:
        buckets.append(
            (f'_bucket{{le="{bound}"}}', float(raw.get(f"sink_insert_seconds_le_{bound}", 0)))
        )
    count = float(raw.get("sink_batches", 0))
    lines.append("# HELP kairos_sink_insert_seconds Time of one ClickHouse insert by the sink.")
    lines.append("# TYPE kairos_sink_insert_seconds histogram")
    lines.extend(f"kairos_sink_insert_seconds{labels} {value:g}" for labels, value in buckets)
    lines.append(f'kairos_sink_insert_seconds_bucket{{le="+Inf"}} {count:g}')
    lines.append(f"kairos_sink_insert_seconds_sum {float(raw.get('sink_insert_seconds_sum', 0)):g}")
    lines.append(f"kairos_sink_insert_seconds_count {count:g}")
    metric("kairos_spool_length", "gauge", "Entries in the spool stream.", [("", spool["length"])])
    lag = float(raw.get("accepted", 0)) - float(raw.get("sink_inserted", 0))
    metric(
        "kairos_sink_lag_messages",
        "gauge",
        "Accepted messages not yet in ClickHouse.",
        [("", max(lag, 0))],
    )
    metric(
        "kairos_sink_lag_seconds",
        "gauge",
        "Age of the oldest entry the sink has not stored.",
        [("", spool["lag_seconds"])],
    )
    metric("kairos_worker_lag_seconds", "gauge",
           "Age of the oldest spool entry each worker has not applied.",
           [(f'{{worker="{name}"}}', lags[name]) for name in WORKERS if name in lags])  # fmt: skip
    models = (await models_summary(request))["models"]
    for name, key, help_ in (
        ("kairos_model_roc_auc", "roc_auc", "Prequential ROC AUC over the model's window."),
        ("kairos_model_log_loss", "log_loss", "Prequential log loss over the model's window."),
        (
            "kairos_model_ece",
            "ece",
            "Prequential expected calibration error (10 equal-width bins) over the model's window.",
        ),
    ):
        samples = [(f'{{model="{m["target"]}"}}', float(m[key])) for m in models
                   if m.get(key) is not None]  # fmt: skip
        metric(name, "gauge", help_, samples)
    metric("kairos_model_examples_total", "counter", "Labelled examples each model learned.",
           [(f'{{model="{m["target"]}"}}', float(m["examples"])) for m in models])  # fmt: skip
    metric(
        "kairos_scrape_timestamp_seconds", "gauge", "When this page was made.", [("", time.time())]
    )
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


routes = [Route("/healthz", healthz), Route("/metrics", metrics)]
