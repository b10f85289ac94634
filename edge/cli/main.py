"""The ``kairos`` command: ``up`` runs the engine, ``sql`` queries it, ``worker`` runs a worker.

This module parses and prints; edge.runtime.up starts processes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from edge.access.scopes import SCOPES
from edge.cli import users
from edge.runtime.workers import ALL, WORKERS, select

__all__ = ["main"]

_EPILOG = """\
environment:
  KAIROS_DATA_DIR     data directory (default ./kairos-data)
  KAIROS_HOST         address to listen on (default 127.0.0.1)
  KAIROS_PORT         port to listen on (default 8000)
  KAIROS_WRITE_KEY    public key for browsers and SDKs (default: generated, kept in the data dir)
  KAIROS_SECRET_KEY   key for servers and the growth team (default: generated likewise)
  KAIROS_IDENTITY_SECRET  signs signed-in users' userHash on your server (default: likewise)
  KAIROS_REDIS_URL, KAIROS_CLICKHOUSE_URL   external servers instead of the embedded ones
  KAIROS_REDIS_CLUSTER=1  KAIROS_REDIS_URL is a Redis Cluster node (else its mode is asked)
  KAIROS_CONFIG       config file (default: kairos.toml in the data dir, if there is one)
  KAIROS_API_WORKERS  API server processes (default 1)
  KAIROS_WORKER_PROCESSES  one (all workers in one process, the default) or each (one per kind)
"""


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def _api_options(parser: argparse.ArgumentParser) -> None:
    """For commands that call a running engine's API with the secret key."""
    parser.add_argument(
        "--url",
        default=_env("KAIROS_URL", f"http://127.0.0.1:{_env('KAIROS_PORT', 8000)}"),
        help="the engine's base URL (default: %(default)s)",
    )
    parser.add_argument(
        "--secret-key", default=None, help="default: KAIROS_SECRET_KEY, else the data dir's"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(_env("KAIROS_DATA_DIR", "kairos-data"))
    )


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env("KAIROS_DATA_DIR", "kairos-data")),
        help="where the embedded stores and the keys live (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=_env("KAIROS_REDIS_URL"),
        metavar="URL",
        help="use this Redis (redis://host:6379/0) instead of a private redis-server; any "
        "node of a Redis Cluster will do (its mode is asked of it)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        default=_env("KAIROS_REDIS_CLUSTER", "") in ("1", "true", "yes"),
        help="the --redis-url is a Redis Cluster node: do not ask it (KAIROS_REDIS_CLUSTER=1)",
    )
    parser.add_argument(
        "--spool-partitions",
        type=int,
        default=int(_env("KAIROS_SPOOL_PARTITIONS", 0)) or None,
        metavar="P",
        help="split a new spool in P partitions (a power of two; fixed once the spool exists): "
        "up to P instances of each worker kind share the work; two per worker host you may "
        "run is a good P (default: as created, 1 for a new spool; KAIROS_SPOOL_PARTITIONS)",
    )
    parser.add_argument(
        "--clickhouse-url",
        default=_env("KAIROS_CLICKHOUSE_URL"),
        metavar="URL",
        help="use this ClickHouse server (http://user:password@host:8123/db) instead of chdb",
    )
    parser.add_argument(
        "--clickhouse-cluster",
        default=_env("KAIROS_CLICKHOUSE_CLUSTER"),
        metavar="NAME",
        help="the --clickhouse-url server is a node of this cluster: replicated tables on each "
        "shard, Distributed ones over them (default: [clickhouse] cluster in the config file, "
        "else one server; KAIROS_CLICKHOUSE_CLUSTER)",
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "text"],
        default="auto",
        help="log lines as JSON or key=value text (auto: text on a terminal)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(_env("KAIROS_CONFIG")) if _env("KAIROS_CONFIG") else None,
        metavar="TOML",
        help="config file: lead scoring, segments, consent, placements "
        "(default: kairos.toml in the data dir)",
    )
    parser.add_argument(
        "--sink-batch",
        type=int,
        default=20_000,
        metavar="N",
        help="messages per ClickHouse insert at most (default %(default)s)",
    )
    parser.add_argument(
        "--sink-profile-wait",
        type=float,
        default=float(_env("KAIROS_SINK_PROFILE_WAIT", 300)),
        metavar="SECONDS",
        help="how far the profile updater may fall behind while the sink waits for its profile "
        "ids (the spool holds the events meanwhile); past it, events are stored without one, "
        "loudly (default %(default)g; KAIROS_SINK_PROFILE_WAIT)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kairos",
        description="Kairos: customer-data platform and experimentation engine.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="start the engine (embedded Redis and ClickHouse unless URLs are given)",
        description="Start the engine. With no URLs it runs a private redis-server (AOF on) and "
        "the embedded ClickHouse engine, both in the data dir. Ctrl-C stops everything.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("--host", default=_env("KAIROS_HOST", "127.0.0.1"), help="default: %(default)s")
    up.add_argument(
        "--port", type=int, default=int(_env("KAIROS_PORT", 8000)), help="default: %(default)s"
    )
    _store_options(up)
    up.add_argument("--write-key", default=None, help="overrides KAIROS_WRITE_KEY")
    up.add_argument("--secret-key", default=None, help="overrides KAIROS_SECRET_KEY")
    up.add_argument(
        "--spool-limit",
        type=int,
        default=100_000,
        metavar="N",
        help="answer 503 + Retry-After once the spool holds N entries "
        "(0: no limit; default %(default)s)",
    )
    up.add_argument(
        "--spool-replicas",
        type=int,
        default=int(_env("KAIROS_SPOOL_REPLICAS", 0)),
        metavar="N",
        help="answer 200 to ingestion only once N replicas of the spool's Redis have the "
        "batch (WAIT, 1 s at most, else 503): a failover then loses no acknowledged message "
        "(default %(default)s: once the master has it; KAIROS_SPOOL_REPLICAS)",
    )
    up.add_argument(
        "--workers",
        default=",".join(WORKERS),
        metavar="LIST",
        help="workers to run beside the API, comma-separated, all, or none (run them elsewhere "
        "with `kairos worker NAME`); default %(default)s",
    )
    up.add_argument(
        "--worker-processes",
        choices=["one", "each"],
        default=_env("KAIROS_WORKER_PROCESSES", "one"),
        help="one: all the workers in one process, a thread each (the least memory); each: a "
        "process per worker kind (a crash restarts only that kind, and the kinds use more than "
        "one core); env KAIROS_WORKER_PROCESSES, default %(default)s",
    )
    up.add_argument(
        "--worker-instances",
        type=int,
        default=int(_env("KAIROS_WORKER_INSTANCES", 1)),
        metavar="N",
        help="run N instances of each worker kind (N hosts with one; N processes of each kind "
        "with each): they share the spool's partitions, and a Python process uses one core, so "
        "N up to the machine's cores adds throughput; each is a process of its own. A new spool "
        "then gets 2N partitions (a power of two) unless --spool-partitions says; the sink stays "
        "one while it owns embedded ClickHouse (env KAIROS_WORKER_INSTANCES; default "
        "%(default)s)",
    )
    up.add_argument(
        "--api-workers",
        type=int,
        default=int(_env("KAIROS_API_WORKERS", 1)),
        metavar="N",
        help="API server processes on the one port (env KAIROS_API_WORKERS; default "
        "%(default)s: the API runs in this process)",
    )
    up.add_argument("--api-child", action="store_true", help=argparse.SUPPRESS)  # internal
    up.add_argument(
        "--cors-origins",
        default=_env("KAIROS_CORS_ORIGINS", "*"),
        metavar="LIST",
        help="comma-separated browser origins allowed to call the API, e.g. "
        "https://shop.example.com (env KAIROS_CORS_ORIGINS; default %(default)s)",
    )
    up.add_argument(
        "--decide-timeout-ms",
        type=float,
        default=float(_env("KAIROS_DECIDE_TIMEOUT_MS", 50)),
        metavar="MS",
        help="longest /v1/decide waits on Redis before answering each placement's default "
        "(env KAIROS_DECIDE_TIMEOUT_MS; default %(default)s)",
    )
    up.add_argument(
        "--fsync",
        choices=["everysec", "always"],
        default="everysec",
        help="embedded Redis AOF fsync policy: a machine crash loses up to 1 s (everysec) "
        "or nothing (always, slower); default %(default)s",
    )
    up.add_argument(
        "--demo",
        action="store_true",
        help="set up the demo shop at /demo: its catalog and placements (existing ones are "
        "kept) and, in the background, two weeks of simulated shoppers",
    )
    up.set_defaults(run=lambda args: _lazy("up")(args))

    worker = commands.add_parser(
        "worker",
        help="run pipeline workers in this process: one kind, several, or all",
        description="Run workers on their own: one kind per process (the multi-process layout, "
        "docker-compose),\nor several kinds in one process, each in a thread of its own "
        "(`kairos up` runs `kairos worker all`).\nThe process exits 1 if a worker dies (a "
        "supervisor restarts it; every worker resumes from the spool)\nand stops on SIGTERM or "
        "Ctrl-C, each worker finishing the batch in hand.\nAny number of instances of a kind may "
        "run, here or on other hosts: they share the spool's partitions (--spool-partitions).",
        epilog="workers:\n" + "\n".join(
            f"  {k.name:<10}{k.summary}"
            for k in WORKERS.values()) + f"\n  {ALL:<10}every kind above, in one process\n\n"
        "examples:\n  kairos worker sink\n  kairos worker profiles,rewards\n  kairos worker all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    worker.add_argument(
        "name",
        type=_worker_names,
        metavar="NAME",
        help="the worker kind to run, one of {" + ",".join([*WORKERS, ALL]) + "}, or a comma "
        "list of kinds (e.g. profiles,rewards); all runs every kind",
    )
    _store_options(worker)
    worker.add_argument(
        "--consumer",
        default=None,
        help="consumer name, in each kind's group (default: the host name and the kind, "
        "e.g. myhost-profiles)",
    )
    worker.add_argument(
        "--api-url",
        default=_env("KAIROS_API_URL", "http://127.0.0.1:8000"),
        help="journeys: the engine's HTTP API, for email hand-offs and decisions (keys from "
        "KAIROS_WRITE_KEY/KAIROS_SECRET_KEY or the data dir); env KAIROS_API_URL, "
        "default %(default)s",
    )
    worker.add_argument(
        "--store-url",
        default=None,
        metavar="URL",
        help="profiles, learner, recs: where to read event history (unix://…/store.sock, a "
        "ClickHouse URL, or none)",
    )
    worker.add_argument(
        "--serve",
        type=Path,
        default=None,
        metavar="SOCKET",
        help="also answer read queries on this Unix socket (when ClickHouse is embedded)",
    )
    worker.set_defaults(run=lambda args: _lazy("worker")(args))

    sql = commands.add_parser(
        "sql",
        help="run a read-only SQL query against the event store",
        description="Run read-only SQL through POST /v1/sql of a running engine and print it.",
        epilog='example:\n  kairos sql "SELECT type, event, count() FROM events GROUP BY ALL"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sql.add_argument("query", help="the SQL statement")
    sql.add_argument("--format", choices=["table", "json", "csv"], default="table")
    _api_options(sql)
    sql.set_defaults(run=lambda args: _lazy_command("sql")(args))

    report = commands.add_parser(
        "report",
        help="print a placement's experiment results",
        description="Print GET /v1/placements/PLACEMENT/results of a running engine as a table: "
        "per variant units, conversions, rate, lift with its 95% interval, p-value (fixed and "
        "sequential), chance to beat the control and expected loss; the SRM check; the notes "
        "on each method.",
        epilog="example:\n  kairos report home_hero --metric 'Order Completed' --since 2026-11-01",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("placement", help="the placement's key")
    report.add_argument("--metric", default="reward", help="reward (default) or an event name")
    report.add_argument("--since", default=None, help="ISO date or time (default: 90 days ago)")
    report.add_argument("--until", default=None, help="ISO date or time (default: now)")
    report.add_argument("--segment", default=None, help="only the units in this segment")
    report.add_argument("--format", choices=["table", "json"], default="table")
    _api_options(report)
    report.set_defaults(run=lambda args: _lazy_command("report")(args))

    recs = commands.add_parser(
        "recs",
        help="recommendations: recompute the candidate lists now",
        description="Recommendation candidate lists (popular, viewed and bought together, …) "
        "are recomputed every [recommendations] refresh_minutes (10); `kairos recs refresh` asks "
        "for it now, through POST /v1/recommendations/refresh of a running engine.",
        epilog="example:\n  kairos recs refresh",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = recs.add_subparsers(dest="action", required=True, metavar="ACTION")
    refresh = actions.add_parser(
        "refresh",
        help="ask the recommendations worker to recompute the lists at its next pass",
        description="Ask the running engine's recommendations worker to recompute every "
        "candidate list from ClickHouse at its next pass (after importing a catalog or a "
        "history). The engine answers 202 at once; the worker does the work.",
    )
    _api_options(refresh)
    refresh.set_defaults(run=lambda args: _lazy_command("recs_refresh")(args))

    keys = commands.add_parser(
        "keys",
        help="print the engine's keys and address (from the environment or the data dir)",
        description="Print the write key, the secret key, the identity secret and the engine's "
        "URL, as `kairos up` uses them: KAIROS_WRITE_KEY / KAIROS_SECRET_KEY / "
        "KAIROS_IDENTITY_SECRET if set, else the data dir's keys.json (made by the first "
        "`kairos up`). With --env, as NAME=value lines for the shell.",
        epilog="example:\n  export $(.venv/bin/kairos keys --env)\n"
        '  curl -u "$KAIROS_WRITE_KEY:" "$KAIROS_URL/healthz"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.add_argument(
        "--env", action="store_true", help="print NAME=value lines, for `export $(…)`"
    )
    keys.add_argument(
        "--url",
        default=_env("KAIROS_URL", f"http://127.0.0.1:{_env('KAIROS_PORT', 8000)}"),
        help="the engine's base URL to print (default: %(default)s)",
    )
    keys.add_argument(
        "--data-dir", type=Path, default=Path(_env("KAIROS_DATA_DIR", "kairos-data")),
        help="where keys.json is (default: %(default)s)",
    )  # fmt: skip
    keys.set_defaults(run=lambda args: _lazy_command("keys")(args))
    _key_actions(keys)

    users.parser(commands, _api_options)

    simulate = commands.add_parser(
        "simulate",
        help="send simulated shoppers' events to a running engine",
        description="Simulate shoppers (hidden intent and spend; sessions, browsing, carts, "
        "orders, churn) over the last DAYS days and send their events to a running engine "
        "through POST /v1/batch, with a progress bar. Seeded: the same options send the same "
        "events (their messageIds too, so a second run is deduplicated). Then, for the "
        "placements the engine has (listed with the secret key), LIVE of the same shoppers' "
        "sessions now: their pages ask POST /v1/decide, and they click and order by what they "
        "are shown, so results and off-policy evaluation have decisions. Without the secret "
        "key, or without placements, events only.",
        epilog="example:\n  kairos simulate --shoppers 2000 --days 30",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument("--shoppers", type=int, default=500, help="default %(default)s")
    simulate.add_argument("--days", type=float, default=14.0, help="default %(default)s")
    simulate.add_argument("--seed", type=int, default=7, help="default %(default)s")
    simulate.add_argument(
        "--url",
        default=_env("KAIROS_URL", f"http://127.0.0.1:{_env('KAIROS_PORT', 8000)}"),
        help="the engine's base URL (default: %(default)s)",
    )
    simulate.add_argument(
        "--live",
        type=int,
        default=200,
        metavar="N",
        help="live sessions that decide the placements (0: none); default %(default)s",
    )
    simulate.add_argument(
        "--write-key", default=None, help="default: KAIROS_WRITE_KEY, else the data dir's"
    )
    simulate.add_argument(
        "--secret-key",
        default=None,
        help="lists the placements for --live; default: KAIROS_SECRET_KEY, else the data dir's",
    )
    simulate.add_argument(
        "--data-dir", type=Path, default=Path(_env("KAIROS_DATA_DIR", "kairos-data"))
    )
    simulate.set_defaults(run=lambda args: _lazy_command("simulate")(args))

    evaluate = commands.add_parser(
        "evaluate",
        help="off-policy evaluation of a candidate policy on a logged-bandit file",
        description="Estimate how a candidate policy would have done on rounds another system "
        "logged (a CSV file: action, position, reward, propensity and context columns; the "
        "Open Bandit Dataset's files as they are; see docs/results.md). The candidate is the "
        "engine's Thompson sampler, from --prior or Beta(1, 1), learning from the first "
        "--train-share of the rounds; it is judged on the rest by IPS, SNIPS and doubly robust "
        "estimates, with bootstrap intervals, and each over the log's mean reward (the relative "
        "policy value). Runs here: no engine needed.",
        epilog="examples:\n  kairos evaluate --log all.csv --prior prior.json --seed 12345\n"
        "  kairos evaluate --log rounds.csv --train-share 0.5 --format json\n\n"
        'prior file (JSON): {"alpha": [2, 1, ...], "beta": [90, 40, ...]}, one of each '
        "per arm, each at least 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--log", type=Path, required=True, metavar="FILE",
                          help="the logged rounds (CSV with a header row)")  # fmt: skip
    evaluate.add_argument(
        "--policy", choices=["thompson"], default="thompson",
        help="the candidate: Bernoulli Thompson sampling (default)",
    )  # fmt: skip
    evaluate.add_argument(
        "--prior", type=Path, default=None, metavar="FILE",
        help="Beta prior per arm, JSON {alpha: [...], beta: [...]} (default: Beta(1, 1) for "
        "each of the log's arms)",
    )  # fmt: skip
    evaluate.add_argument(
        "--draws", type=int, default=100_000, metavar="N",
        help="posterior rankings its position probabilities are counted from "
        "(default %(default)s)",
    )  # fmt: skip
    evaluate.add_argument(
        "--train-share", type=float, default=0.0, metavar="SHARE",
        help="the first share of the rounds the candidate learns from, in [0, 1) "
        "(default %(default)s: it is judged as its prior has it)",
    )  # fmt: skip
    evaluate.add_argument("--seed", type=int, default=7, help="default %(default)s")
    evaluate.add_argument("--format", choices=["table", "json"], default="table")
    evaluate.set_defaults(run=lambda args: _lazy_command("evaluate")(args))

    ltv = commands.add_parser(
        "ltv",
        help="refit lifetime value now and write it to the profiles",
        description="Fit BG/NBD and Gamma-Gamma on every buyer's order history in ClickHouse "
        "and write scores.ltv, scores.purchases and scores.alive to their profiles (the learner "
        "worker also does this on a schedule). Runs against the stores of a running engine.",
    )
    _store_options(ltv)
    ltv.add_argument(
        "--horizon-days",
        type=float,
        default=None,
        help="days of future purchases to value (default: the config's, else 90)",
    )
    ltv.set_defaults(run=lambda args: _lazy_command("ltv")(args))
    return parser


def _key_actions(keys: argparse.ArgumentParser) -> None:
    """``kairos keys create|list|revoke``: named keys, through a running engine's API."""
    actions = keys.add_subparsers(dest="action", metavar="ACTION")
    scopes = ", ".join(SCOPES)
    create = actions.add_parser(
        "create",
        help="make a named key with scopes (printed once: only its digest is kept)",
        description="Make a named API key through POST /v1/keys of a running engine. The key "
        "is printed once; the engine keeps only its SHA-256 digest. Scopes: " + scopes + ".",
        epilog="examples:\n"
        "  kairos keys create email-system --scope recommendations --network 10.0.0.0/8\n"
        "  kairos keys create shop-browser --scope track --scope decide "
        "--origin https://shop.example\n"
        "  kairos keys create analyst --scope read --scope sql --expires 2027-03-31\n"
        "  kairos keys create agency --scope read --rate 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("name", help="lower-case letters, digits, . _ -")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="SCOPE",
        choices=list(SCOPES),
        help="a scope it holds (repeat for more)",
    )
    create.add_argument(
        "--origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser key: the only page origin that may use it (repeat)",
    )
    create.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="CIDR",
        help="a server key: the only addresses that may use it (repeat)",
    )
    create.add_argument(
        "--expires",
        metavar="DATE",
        help="when it stops working: a date (UTC midnight) or ISO 8601 time",
    )
    create.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="PER_SECOND",
        help="its own limit in requests a second (default: the [limits] per_key rate)",
    )
    create.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    listing = actions.add_parser(
        "list",
        help="every named key: scopes, limits, last use",
        description="List the named keys (never a key itself: its "
        "first characters) through GET /v1/keys.",
    )
    listing.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    revoke = actions.add_parser(
        "revoke",
        help="revoke a named key",
        description="Revoke a named key through DELETE /v1/keys/NAME: it stops working at once "
        "on the engine you call and within seconds on every other instance. To rotate a key: "
        "create the new one, move its integrations to it, then revoke the old one.",
    )
    revoke.add_argument("name")
    for parser in (create, listing, revoke):
        _api_options(parser)
        parser.set_defaults(run=lambda args: _lazy_command("key_action")(args))


def _worker_names(text: str) -> list[str]:
    try:
        return select(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _lazy(name: str) -> Any:
    """Commands import the engine only when run, so ``--help`` and ``sql`` start fast."""
    from edge.runtime import up

    return getattr(up, name)


def _lazy_command(name: str) -> Any:
    from edge.cli import commands

    return getattr(commands, name)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # API processes re-run it
    if getattr(args, "redis_cluster", False):  # for every client this process and its children make
        os.environ["KAIROS_REDIS_CLUSTER"] = "1"
    if getattr(args, "api_workers", 1) < 1:
        print("kairos: --api-workers must be at least 1", file=sys.stderr)
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
