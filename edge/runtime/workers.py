"""The worker table: every kind of pipeline worker, declared once.

``kairos up`` (which workers it starts, with which options), ``kairos worker NAME`` (its
choices and help), ``--workers``, ``/healthz`` (each worker's lag) and docker-compose's services
(checked by a test) all derive from ``WORKERS``. A worker kind says what it needs:

- ``history``: it reads event history (through the store socket when ClickHouse is embedded);
- ``clickhouse``: it writes ClickHouse, and owns it when it is embedded (the sink);
- ``api``: it calls the engine's HTTP API (journeys: decisions and rendered recommendations).

Each worker runs in a thread of its own (``start``); a process runs one kind or several
(``edge.runtime.host``: ``kairos worker all``, which ``kairos up`` runs). ``select`` reads the
names a command line gives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the table is read by ``kairos --help``: workers are imported when built
    import redis

    from collector.sink import Sink
    from collector.store import EventStore
    from collector.worker import SpoolWorker
    from decisions.rewards import RewardWorker
    from edge.runtime.config import Config
    from journeys.worker import JourneyWorker
    from profiles.learner import Learner
    from profiles.recommender import Recommender
    from profiles.updater import ProfileUpdater

__all__ = [
    "ALL",
    "HISTORY_COUNTS",
    "STOP_GRACE",
    "WORKERS",
    "Needs",
    "WorkerKind",
    "current",
    "select",
    "start",
]

log = logging.getLogger("kairos.worker")

STOP_GRACE = 10.0  # seconds a stopping worker may take to finish its batch


@dataclass(frozen=True)
class Needs:
    """What a worker is given: its stores, its config and who it is."""

    redis: redis.Redis
    consumer: str
    config: Config = field(default_factory=lambda: _config())
    history: EventStore | None = None  # event history to read (None: none here)
    clickhouse_url: str = ""  # where the sink writes
    api: tuple[str, str, str] | None = None  # the engine's URL, write key and secret key
    sink_batch: int = 20_000
    sink_profile_wait: float = 300.0  # seconds the profile updater may be behind the sink


def _config() -> Config:
    from edge.runtime.config import Config

    return Config()


@dataclass(frozen=True)
class WorkerKind:
    name: str  # also its consumer group on the spool
    summary: str  # for --help and docker-compose
    build: Callable[..., SpoolWorker]  # (needs, **options) -> the worker, set up
    needs: frozenset[str] = frozenset()


def _sink(needs: Needs, interval: float = 1.0) -> Sink:
    from collector import Sink, SpoolReader, connect, migrate
    from collector.schema import retain

    store = needs.config.clickhouse
    client = connect(needs.clickhouse_url)
    migrate(client, store.shape)
    retain(client, store)
    return Sink(SpoolReader(needs.redis, "sink", needs.consumer), client,
                max_messages=needs.sink_batch, interval=interval, profiles_group="profiles",
                profile_wait=needs.sink_profile_wait, shape=store.shape)  # fmt: skip


HISTORY_COUNTS = (  # a segment's backfill: each person's count of an event in D days
    "SELECT profile_id, count() FROM events WHERE event = {event:String} "
    "AND timestamp >= now64(3) - toIntervalDay({days:UInt32}) AND profile_id != '' "
    "GROUP BY profile_id"
)


def _profiles(needs: Needs, interval: float = 0.2) -> ProfileUpdater:
    from collector import SpoolReader
    from collector.spool import append_now
    from edge.access.audit import from_config
    from profiles import ProfileStore, ProfileUpdater
    from profiles.membership import Membership, put_segment

    client, config, events = needs.redis, needs.config, needs.history
    store = ProfileStore(client, config.lead_score.half_life_ms)
    for key, segment in config.segments.items():
        if from_config(client, "segment", key, partial(put_segment, client, key, segment)):
            log.info("segment from the config file installed", extra={"segment": key})
    membership = Membership(
        store, lambda messages: append_now(client, messages), config.lead_score.half_life_days
    )

    def history(event: str, days: int) -> dict[str, int]:
        if events is None:
            log.warning("no event history to backfill from", extra={"event": event})
            return {}
        rows = events.query_sync(HISTORY_COUNTS, {"event": event, "days": days}, limited=False).rows
        return {pid: int(count) for pid, count in rows}

    return ProfileUpdater(
        SpoolReader(client, "profiles", needs.consumer),
        store,
        config.lead_score,
        after_batch=lambda touched, entries: membership.evaluate(
            touched, f"batch:{entries[-1].ref}"
        ),
        periodic=lambda: membership.maintain(history),
        interval=interval,
    )


def _rewards(needs: Needs, interval: float = 0.2) -> RewardWorker:
    from collector import SpoolReader
    from decisions.placements import put_placement
    from decisions.rewards import RewardWorker
    from edge.access.audit import from_config

    for key, placement in needs.config.placements.items():
        if from_config(needs.redis, "placement", key,
                       partial(put_placement, needs.redis, key, placement)):  # fmt: skip
            log.info("placement from the config file installed", extra={"placement": key})
    reader = SpoolReader(needs.redis, "rewards", needs.consumer)
    return RewardWorker(reader, needs.redis, interval=interval)


def _learner(
    needs: Needs, interval: float = 0.2, clock: Callable[[], float] | None = time.time
) -> Learner:
    from collector import SpoolReader
    from collector.store import QueryFailed, StoreUnavailable
    from profiles.learner import Learner
    from profiles.valuation import last_fit, refit

    client, settings, events = needs.redis, needs.config.models, needs.history
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

    reader = SpoolReader(client, "learner", needs.consumer)
    return Learner(reader, client, settings,
                   needs.config.lead_score, clock=clock, periodic=refit_when_due,
                   interval=interval)  # fmt: skip


def _recs(needs: Needs, interval: float = 0.2) -> Recommender:
    from collector import SpoolReader
    from profiles.recommender import Recommender

    reader = SpoolReader(needs.redis, "recs", needs.consumer)
    return Recommender(reader, needs.redis, needs.history, needs.config.recommendations,
                       interval=interval)  # fmt: skip


def _journeys(
    needs: Needs, interval: float = 0.2, clock: Callable[[], int] | None = None
) -> JourneyWorker:
    import os

    import httpx

    from collector import SpoolReader
    from edge.access.audit import from_config
    from edge.runtime.logs import redact
    from edge.runtime.stores import smtp_url
    from journeys.actions import Api
    from journeys.mailer import Mailer
    from journeys.store import put_journey
    from journeys.worker import JourneyWorker

    for key, journey in needs.config.journeys.items():
        if from_config(needs.redis, "journey", key,
                       partial(put_journey, needs.redis, key, journey)):  # fmt: skip
            log.info("journey installed from the config file", extra={"journey": key})
    # The environment's bot token wins over the file's (a secret is better kept out of files).
    channels = needs.config.channels.with_token(os.environ.get("KAIROS_TELEGRAM_TOKEN"))
    redact(channels.telegram_token or "")  # it is in Telegram's URLs: never in a log line
    reader = SpoolReader(needs.redis, "journeys", needs.consumer)
    http = httpx.Client(timeout=10.0)
    api = Api(*needs.api, http) if needs.api else None
    email = needs.config.email
    sender = email.sender(smtp_url(email.url))
    if sender is None:
        log.info("no SMTP server set (KAIROS_SMTP_URL or [email] url): email steps with a "
                 "template are skipped with reason no_smtp_server")  # fmt: skip
    times = {"clock": clock} if clock else {}
    mailer = Mailer(needs.redis, email, sender, needs.config.messaging, api,
                    clock or (lambda: int(time.time() * 1000)))  # fmt: skip
    return JourneyWorker(reader, needs.redis, http=http, interval=interval, api=api,
                         mailer=mailer, channels=channels, **times)  # fmt: skip


# In the order ``kairos up`` starts them (the sink first: it may own embedded ClickHouse).
WORKERS: dict[str, WorkerKind] = {
    kind.name: kind
    for kind in (
        WorkerKind(
            "sink",
            "drains the spool into ClickHouse (events, decisions)",
            _sink,
            frozenset({"clickhouse"}),
        ),  # fmt: skip
        WorkerKind(
            "profiles", "keeps profiles, identities and segments", _profiles, frozenset({"history"})
        ),  # fmt: skip
        WorkerKind("rewards", "teaches the placements' policies from rewards", _rewards),
        WorkerKind(
            "recs",
            "keeps the product catalog and recommendation lists",
            _recs,
            frozenset({"history"}),
        ),  # fmt: skip
        WorkerKind(
            "journeys",
            "moves people through journeys and sends their actions",
            _journeys,
            frozenset({"api"}),
        ),  # fmt: skip
        WorkerKind(
            "learner",
            "keeps predictive scores and lifetime value",
            _learner,
            frozenset({"history"}),
        ),  # fmt: skip
    )
}


def start(name: str, needs: Needs, stop: threading.Event, **options: Any) -> threading.Thread:
    """Build worker ``name`` (its group made sure of) and run it in a daemon thread named after
    it until ``stop`` is set; ``options`` go to its builder (``interval``, a ``clock``)."""
    from collector.reader import ensure_group

    ensure_group(needs.redis, name)
    _building.kind = name  # its start-up lines (migrations, config installed) name it too
    try:
        worker = WORKERS[name].build(needs, **options)
    finally:
        _building.kind = ""
    thread = threading.Thread(target=worker.run, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread


_building = threading.local()


def current() -> str:
    """The worker kind the calling thread runs or is building, else ''."""
    name = threading.current_thread().name
    return name if name in WORKERS else getattr(_building, "kind", "")


ALL = "all"  # every kind in the table


def select(text: str, none: bool = False) -> list[str]:
    """The kinds a comma list names, in the table's order: ``all`` is every kind, and where
    ``none`` is allowed (``kairos up --workers``) it, or nothing, is no kind. ValueError names
    what is unknown and lists the choices.

    Examples:
        >>> select("rewards,sink")
        ['sink', 'rewards']
        >>> select("all") == list(WORKERS)
        True
        >>> select("none", none=True)
        []
        >>> select("sink,nope")
        Traceback (most recent call last):
        ...
        ValueError: unknown worker nope (choose from sink, profiles, rewards, recs, journeys, learner, or all; several as a comma list)
    """  # noqa: E501
    names = {name.strip() for name in text.split(",")} - {""}
    unknown = names - set(WORKERS) - {ALL, *(["none"] if none else [])}
    if unknown or not (names or none):
        kinds = ", ".join(WORKERS)
        choices = f"{kinds}, {ALL}, or none" if none else (
            f"{kinds}, or {ALL}; several as a comma list")  # fmt: skip
        shown = ", ".join(sorted(unknown)) or repr(text)
        raise ValueError(f"unknown worker {shown} (choose from {choices})")
    return list(WORKERS) if ALL in names else [name for name in WORKERS if name in names]
