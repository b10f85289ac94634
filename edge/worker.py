"""Pipeline workers, each in a process of its own (or a thread, in tests).

The sink worker drains the spool into ClickHouse. When ClickHouse is embedded, the sink's process
owns the data dir and also serves the engine's read queries on a Unix socket.

The profiles worker keeps the Redis profiles, identities and segment memberships current.

The rewards worker teaches the placements' policies from decisions, clicks and conversions.

The learner keeps the predictive scores current (River models) and refits lifetime value.

The recs worker keeps the product catalog and the recommendation candidate lists current.

The journeys worker moves people through journeys: triggers, timers, the outbox of actions.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import redis

from collector import Sink, SpoolReader, connect, migrate
from collector.spool import append_now, ensure_group
from collector.store import EventStore, QueryFailed, StoreUnavailable, open_store
from edge.config import Config
from edge.placements import put_placement
from edge.rewards import REWARDS_GROUP, RewardWorker
from journeys.actions import Api
from journeys.store import put_journey
from journeys.worker import JOURNEYS_GROUP, JourneyWorker
from profiles import ProfileStore, ProfileUpdater
from profiles.learner import LEARNER_GROUP, Learner
from profiles.membership import Membership, put_segment
from profiles.recommender import RECS_GROUP, Recommender
from profiles.valuation import last_fit, refit

__all__ = [
    "GROUPS",
    "LEARNER_GROUP",
    "PROFILES_GROUP",
    "REWARDS_GROUP",
    "SINK_GROUP",
    "run_journeys_worker",
    "run_learner_worker",
    "run_profiles_worker",
    "run_recs_worker",
    "run_rewards_worker",
    "run_sink_worker",
    "start_journeys",
    "start_learner",
    "start_profiles",
    "start_recs",
    "start_rewards",
    "start_sink",
]

log = logging.getLogger("kairos.worker")

SINK_GROUP = "sink"
PROFILES_GROUP = "profiles"
GROUPS = {
    "sink": SINK_GROUP,
    "profiles": PROFILES_GROUP,
    "rewards": REWARDS_GROUP,
    "learner": LEARNER_GROUP,
    "recs": RECS_GROUP,
    "journeys": JOURNEYS_GROUP,
}
_HISTORY = (
    "SELECT profile_id, count() FROM events WHERE event = {event:String} "
    "AND timestamp >= now64(3) - toIntervalDay({days:UInt32}) AND profile_id != '' "
    "GROUP BY profile_id"
)


def start_sink(
    redis_url: str,
    clickhouse_url: str,
    consumer: str,
    stop: threading.Event,
    batch: int = 20_000,
    interval: float = 1.0,
) -> threading.Thread:
    """Migrate the schema, then run a sink in a daemon thread until ``stop`` is set."""
    client = redis.Redis.from_url(redis_url)
    ensure_group(client, SINK_GROUP)
    migrate(connect(clickhouse_url))
    sink = Sink(
        SpoolReader(client, SINK_GROUP, consumer),
        connect(clickhouse_url),
        max_messages=batch,
        interval=interval,
    )
    return _run(name="sink", run=sink.run, stop=stop)


def start_profiles(
    redis_url: str,
    store_url: str,
    consumer: str,
    stop: threading.Event,
    config: Config | None = None,
    interval: float = 0.2,
) -> threading.Thread:
    """Run the profile updater (with segment membership) in a daemon thread until ``stop``."""
    config = config or Config()
    client = redis.Redis.from_url(redis_url)
    ensure_group(client, PROFILES_GROUP)
    store = ProfileStore(client, config.lead_score.half_life_ms)
    for key, segment in config.segments.items():
        if put_segment(client, key, segment):
            log.info("segment from the config file installed", extra={"segment": key})
    membership = Membership(
        store, lambda messages: append_now(client, messages), config.lead_score.half_life_days
    )
    events = _history(store_url)

    def history(event: str, days: int) -> dict[str, int]:
        if events is None:
            log.warning("no event history to backfill from", extra={"event": event})
            return {}
        rows = events.query_sync(_HISTORY, {"event": event, "days": days}, limited=False).rows
        return {pid: int(count) for pid, count in rows}

    updater = ProfileUpdater(
        SpoolReader(client, PROFILES_GROUP, consumer),
        store,
        config.lead_score,
        after_batch=lambda touched, entries: membership.evaluate(
            touched, f"batch:{entries[-1].id}"
        ),
        periodic=lambda: membership.maintain(history),
        interval=interval,
    )
    return _run(name="profiles", run=updater.run, stop=stop)


def start_rewards(
    redis_url: str,
    consumer: str,
    stop: threading.Event,
    config: Config | None = None,
    interval: float = 0.2,
) -> threading.Thread:
    """Install the config file's placements, then run the reward worker in a daemon thread."""
    config = config or Config()
    client = redis.Redis.from_url(redis_url)
    ensure_group(client, REWARDS_GROUP)
    for key, placement in config.placements.items():
        if put_placement(client, key, placement):
            log.info("placement from the config file installed", extra={"placement": key})
    worker = RewardWorker(SpoolReader(client, REWARDS_GROUP, consumer), client, interval=interval)
    return _run(name="rewards", run=worker.run, stop=stop)


def start_learner(
    redis_url: str,
    store_url: str,
    consumer: str,
    stop: threading.Event,
    config: Config | None = None,
    interval: float = 0.2,
    clock: Callable[[], float] | None = time.time,
) -> threading.Thread:
    """Run the learner (with the lifetime-value refit schedule) in a daemon thread."""
    config = config or Config()
    client = redis.Redis.from_url(redis_url)
    ensure_group(client, LEARNER_GROUP)
    settings = config.models
    events = _history(store_url)
    next_fit = [0.0]

    def refit_when_due() -> None:
        if events is None or time.monotonic() < next_fit[0]:
            return
        next_fit[0] = time.monotonic() + 600  # a failed fit is retried in 10 minutes
        fit = last_fit(client)
        age = time.time() - datetime.fromisoformat(fit["fitted_at"]).timestamp() if fit else None
        if age is not None and age < settings.ltv_refit_hours * 3600:
            next_fit[0] = time.monotonic() + settings.ltv_refit_hours * 3600 - age
            return
        try:
            refit(events, client, settings.ltv_horizon_days)
            next_fit[0] = time.monotonic() + settings.ltv_refit_hours * 3600
        except ValueError as exc:  # too few repeat buyers yet
            log.info("lifetime value not fitted yet", extra={"reason": str(exc)})
        except (StoreUnavailable, QueryFailed) as exc:
            log.warning("lifetime value refit failed; retrying", extra={"error": str(exc)})

    learner = Learner(
        SpoolReader(client, LEARNER_GROUP, consumer),
        client,
        settings,
        config.lead_score,
        clock=clock,
        periodic=refit_when_due,
        interval=interval,
    )
    return _run(name="learner", run=learner.run, stop=stop)


def start_recs(
    redis_url: str,
    store_url: str,
    consumer: str,
    stop: threading.Event,
    config: Config | None = None,
    interval: float = 0.2,
) -> threading.Thread:
    """Run the recommendations worker (catalog from events, candidate lists) in a thread."""
    config = config or Config()
    client = redis.Redis.from_url(redis_url)
    ensure_group(client, RECS_GROUP)
    events = _history(store_url)
    worker = Recommender(SpoolReader(client, RECS_GROUP, consumer), client, events,
                         config.recommendations, interval=interval)  # fmt: skip
    return _run(name="recs", run=worker.run, stop=stop)


def start_journeys(
    redis_url: str,
    consumer: str,
    stop: threading.Event,
    api: tuple[str, str, str] | None = None,
    interval: float = 0.2,
    clock: Callable[[], int] | None = None,
    config: Config | None = None,
) -> threading.Thread:
    """Run the journeys worker (triggers, timers, the outbox) in a thread; ``api``: the
    engine's URL, write key and secret key (email hand-offs and decisions need them). The
    config file's journeys are installed first."""
    client = redis.Redis.from_url(redis_url)
    ensure_group(client, JOURNEYS_GROUP)
    for key, journey in (config or Config()).journeys.items():
        if put_journey(client, key, journey):
            log.info("journey installed from the config file", extra={"journey": key})
    reader = SpoolReader(client, JOURNEYS_GROUP, consumer)
    http = httpx.Client(timeout=10.0)
    worker = JourneyWorker(reader, client, http=http, interval=interval,
                           api=Api(*api, http) if api else None,
                           **({"clock": clock} if clock else {}))  # fmt: skip
    return _run(name="journeys", run=worker.run, stop=stop)


def run_journeys_worker(
    redis_url: str, consumer: str, api: tuple[str, str, str], config: Config | None = None
) -> int:
    """The journeys worker process: runs until SIGTERM or SIGINT."""
    return _serve(lambda stop: start_journeys(redis_url, consumer, stop, api, config=config))


def run_recs_worker(
    redis_url: str, store_url: str, consumer: str, config: Config | None = None
) -> int:
    """The recommendations worker process: runs until SIGTERM or SIGINT."""
    return _serve(lambda stop: start_recs(redis_url, store_url, consumer, stop, config))


def run_learner_worker(
    redis_url: str, store_url: str, consumer: str, config: Config | None = None
) -> int:
    """The learner process: runs until SIGTERM or SIGINT, then checkpoints its models."""
    return _serve(lambda stop: start_learner(redis_url, store_url, consumer, stop, config))


def run_rewards_worker(redis_url: str, consumer: str, config: Config | None = None) -> int:
    """The rewards worker process: runs until SIGTERM or SIGINT."""
    return _serve(lambda stop: start_rewards(redis_url, consumer, stop, config))


def run_profiles_worker(
    redis_url: str, store_url: str, consumer: str, config: Config | None = None
) -> int:
    """The profiles worker process: runs until SIGTERM or SIGINT."""
    return _serve(lambda stop: start_profiles(redis_url, store_url, consumer, stop, config))


def _run(
    name: str, run: Callable[[threading.Event], object], stop: threading.Event
) -> threading.Thread:
    """``run(stop)`` in a daemon thread named ``name``, started."""
    thread = threading.Thread(target=run, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread


def _history(store_url: str) -> EventStore | None:
    """The event store at ``store_url``; None for "none" (no history to read)."""
    return open_store(store_url) if store_url != "none" else None


def _serve(start: Callable[[threading.Event], threading.Thread]) -> int:
    """Run the worker thread ``start`` makes until a signal (then let it finish its batch)."""
    stop = threading.Event()
    thread = start(stop)
    code = _until_signalled(stop, thread)
    stop.set()
    thread.join(timeout=60)
    return code


def _until_signalled(stop: threading.Event, worker: threading.Thread) -> int:
    """Wait for SIGTERM/SIGINT (0), or for ``worker`` to die of a bug (1: the supervisor then
    restarts the whole process, which resumes from the spool — crash-only, never stuck)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if not worker.is_alive():
            log.error("worker thread died; exiting so it restarts", extra={"thread": worker.name})
            return 1
    return 0


def run_sink_worker(
    redis_url: str,
    clickhouse_url: str,
    consumer: str,
    batch: int = 20_000,
    serve: Path | None = None,
) -> int:
    """The sink worker process: runs until SIGTERM or SIGINT, then finishes its batch.

    With ``serve``, also answers read queries on that Unix socket (the embedded layout).
    """
    stop = threading.Event()
    sink = start_sink(redis_url, clickhouse_url, consumer, stop, batch)
    try:
        if serve is None:
            return _until_signalled(stop, sink)
        # Returns on SIGTERM / SIGINT, or when the sink thread dies of a bug.
        return _serve_queries(clickhouse_url, serve, sink)
    finally:
        stop.set()
        sink.join(timeout=60)


def _serve_queries(clickhouse_url: str, socket_path: Path, worker: threading.Thread) -> int:
    import uvicorn

    from collector.store import LocalStore
    from edge.server import Server
    from edge.store_service import create_store_service

    socket_path.unlink(missing_ok=True)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # the API's server speaks
    app = create_store_service(LocalStore(clickhouse_url))
    config = uvicorn.Config(app, uds=str(socket_path), log_config=None, access_log=False)
    server = Server(config)
    died = threading.Event()

    def watch() -> None:
        while not server.should_exit:
            if not worker.is_alive():
                log.error("sink thread died; exiting so it restarts")
                died.set()
                server.should_exit = True
            time.sleep(0.5)

    threading.Thread(target=watch, name="watchdog", daemon=True).start()
    old_umask = os.umask(0o077)  # the socket file: this user only
    try:
        log.info("serving queries", extra={"socket": str(socket_path)})
        server.run()
    finally:
        os.umask(old_umask)
        socket_path.unlink(missing_ok=True)
    return 1 if died.is_set() else 0
