"""``kairos up`` and ``kairos worker``: compose the engine's processes.

Embedded layout (the default), one machine, one data dir, three processes:

- a private redis-server (AOF) on a Unix socket;
- one worker host (``kairos worker sink,profiles,…``, edge.runtime.host) running every worker,
  a thread each; its sink owns embedded ClickHouse and it serves read queries on
  ``run/store.sock``; with ``--worker-processes each``, one process per worker kind instead;
  with ``--worker-instances N``, N of them (N hosts, or N processes of each kind: they share
  the spool's partitions through leases; the sink that owns embedded ClickHouse stays one);
- the HTTP API in this process, reading through that socket; with ``--api-workers N`` (N > 1),
  N supervised API processes sharing the port (SO_REUSEPORT) instead.

With ``--clickhouse-url`` every process talks to the server directly. ``--workers`` picks the
workers to run here; without a sink here, this process owns embedded ClickHouse itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["up", "worker"]

log = logging.getLogger("kairos.up")


class StartError(RuntimeError):
    pass


def up(args: argparse.Namespace) -> int:
    import uvicorn

    from collector.partitions import PartitionsMismatch, layout_of
    from collector.reader import ensure_group
    from edge.api.app import create_app
    from edge.runtime.config import ConfigError
    from edge.runtime.embedded_redis import EmbeddedRedis, RedisStartError
    from edge.runtime.keys import load_keys
    from edge.runtime.logs import setup_logging
    from edge.runtime.server import Server
    from edge.runtime.settings import Settings
    from edge.runtime.stores import clickhouse_url, embedded, redis_client, store_socket
    from edge.runtime.supervisor import Supervisor
    from edge.runtime.workers import select

    setup_logging(args.log_format, args.log_level)
    data_dir = args.data_dir.resolve()
    try:
        workers = select(args.workers, none=True)
    except ValueError as exc:
        print(f"kairos: --workers: {exc}", file=sys.stderr)
        return 2
    if args.worker_processes not in ("one", "each"):  # from KAIROS_WORKER_PROCESSES
        print(f"kairos: --worker-processes: {args.worker_processes!r} is not one of one, each",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.worker_instances < 1:
        print("kairos: --worker-instances must be 1 or more", file=sys.stderr)
        return 2
    if not args.api_child:  # before anything is made: a second engine must not print keys
        try:
            _check_port(args.host, args.port)
        except StartError as exc:
            print(f"kairos: {exc}", file=sys.stderr)
            return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        config_path, config = _config(args, data_dir)
    except ConfigError as exc:
        print(f"kairos: {exc}", file=sys.stderr)
        return 2
    ch_url = clickhouse_url(data_dir, args.clickhouse_url)
    sink_owns_store = embedded(ch_url) and "sink" in workers
    if args.api_workers > 1 and embedded(ch_url) and not sink_owns_store:
        print(
            "kairos: --api-workers: several API processes read embedded ClickHouse through the "
            "sink worker, which owns it: add sink to --workers, or give --clickhouse-url",
            file=sys.stderr,
        )
        return 2
    if args.spool_replicas and not args.redis_url:
        print("kairos: --spool-replicas: the embedded Redis has no replicas; give --redis-url "
              "a Redis with replicas (a cluster's masters each with one, or a replicated "
              "server)", file=sys.stderr)  # fmt: skip
        return 2
    if args.spool_replicas < 0:
        print("kairos: --spool-replicas must be 0 or more", file=sys.stderr)
        return 2
    keys = load_keys(data_dir, args.write_key, args.secret_key)
    redis_server = None if args.redis_url else EmbeddedRedis(data_dir, args.fsync)
    redis_url = args.redis_url or redis_server.url  # type: ignore[union-attr]
    socket_path = store_socket(data_dir)
    # Without a sink here, this process owns embedded ClickHouse: the workers then have no
    # history to read (segments backfill from Redis counts only, no lifetime value).
    history = f"unix://{socket_path}" if sink_owns_store else (
        "none" if embedded(ch_url) else ch_url)  # fmt: skip
    settings = Settings(
        redis_url=redis_url,
        store_url=f"unix://{socket_path}" if sink_owns_store else ch_url,
        write_key=keys.write_key,
        secret_key=keys.secret_key,
        identity_secret=keys.identity_secret,
        identity_verification=config.identity.verification,
        host=args.host,
        port=args.port,
        spool_limit=args.spool_limit,
        spool_replicas=args.spool_replicas,
        spool_partitions=args.spool_partitions,
        consent=config.consent,
        cors_origins=tuple(o.strip() for o in args.cors_origins.split(",") if o.strip()),
        decide_timeout=args.decide_timeout_ms / 1000,
        limits=config.limits,
        email=config.email,
        messaging=config.messaging,
        access=config.access,
    )
    if args.api_child:  # one of the API processes of a `kairos up --api-workers N`
        return _serve_api(settings)
    common = ["--redis-url", redis_url, "--log-format", args.log_format,
              "--log-level", args.log_level, "--data-dir", str(data_dir)]  # fmt: skip
    if config_path is not None:
        common += ["--config", str(config_path)]
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    by_need = {
        "clickhouse": ["--clickhouse-url", ch_url, "--sink-batch", str(args.sink_batch),
                       "--sink-profile-wait", str(args.sink_profile_wait),
                       *(["--clickhouse-cluster", config.clickhouse.cluster]
                         if config.clickhouse.cluster else []),
                       *(["--serve", str(socket_path)] if sink_owns_store else [])],
        "history": ["--store-url", history],
        "api": ["--api-url", f"http://{local}:{args.port}"],
    }  # fmt: skip
    supervisor = Supervisor(data_dir / "run")
    try:
        if redis_server is not None:
            redis_server.start()
            redis_server.keep_running()  # a Redis that dies comes back with its AOF
        client = redis_client(redis_url)
        try:
            # A new spool without --spool-partitions: two partitions per instance of each kind
            # (a power of two), so that every instance has work to share.
            new = (
                1 << (2 * args.worker_instances - 1).bit_length()
                if args.worker_instances > 1
                else 1
            )
            layout = layout_of(client, args.spool_partitions, new)
        except (PartitionsMismatch, ValueError) as exc:
            raise StartError(str(exc)) from None
        if layout.count < args.worker_instances:
            found = {"partitions": layout.count, "instances": args.worker_instances}
            log.warning("fewer partitions than instances: some have no work", extra=found)
        for name in workers:  # before any append: nothing is trimmed unread
            for partition in layout.partitions:
                ensure_group(client, name, partition)
        if args.demo:
            _demo(client, settings)
        else:
            client.close()
        _start_workers(supervisor, workers, args.worker_processes, args.worker_instances,
                       common, by_need, socket_path if sink_owns_store else None)  # fmt: skip
        _banner(settings, data_dir, ch_url, keys.created, redis_server is not None)
        server_config = uvicorn.Config(
            create_app(settings),
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,
            server_header=False,
        )
        if args.api_workers > 1:
            _run_api_processes(args, server_config, redis_url, supervisor)
        else:
            Server(server_config).run()
    except (RedisStartError, StartError) as exc:
        print(f"kairos: {exc}", file=sys.stderr)
        return 1
    finally:
        supervisor.stop()
        if redis_server is not None:
            redis_server.stop()
    return 0


def worker(args: argparse.Namespace) -> int:
    """``kairos worker NAME[,NAME…]``: one worker host (edge.runtime.host) running those kinds."""
    import functools

    from collector.store import LocalStore, open_store
    from edge.runtime.config import ConfigError
    from edge.runtime.embedded_redis import EmbeddedRedis
    from edge.runtime.host import serve
    from edge.runtime.keys import load_keys
    from edge.runtime.logs import setup_logging
    from edge.runtime.stores import clickhouse_url, embedded, reads_url, redis_client
    from edge.runtime.workers import WORKERS, Needs

    setup_logging(args.log_format, args.log_level)
    data_dir = args.data_dir.resolve()
    try:
        _, config = _config(args, data_dir)
    except ConfigError as exc:
        print(f"kairos: {exc}", file=sys.stderr)
        return 2
    names: list[str] = args.name
    ch_url = clickhouse_url(data_dir, args.clickhouse_url)
    # With the sink here and ClickHouse embedded, this process owns chdb: its other kinds read
    # history from it directly, and --serve answers everyone else's reads from it too.
    owner = "sink" in names and embedded(ch_url)
    local = functools.cache(lambda: LocalStore(ch_url))

    @functools.cache
    def history() -> Any:
        if args.store_url is None and owner:
            return local()
        url = args.store_url or reads_url(data_dir, ch_url)
        return None if url == "none" else open_store(url)

    redis_url = args.redis_url or EmbeddedRedis(data_dir).url  # that of a running `up`
    node = os.uname().nodename
    api = None
    if any("api" in WORKERS[name].needs for name in names):
        keys = load_keys(data_dir)
        api = (args.api_url, keys.write_key, keys.secret_key)

    def needs(name: str) -> Needs:  # each kind its own Redis client, as in a process of its own
        return Needs(
            redis=redis_client(redis_url),
            # unique per running instance: it names the holder of the worker's leases
            consumer=args.consumer or f"{node}-{name}-{os.getpid()}",
            config=config,
            history=history() if "history" in WORKERS[name].needs else None,
            clickhouse_url=ch_url,
            api=api,
            sink_batch=args.sink_batch,
            sink_profile_wait=args.sink_profile_wait,
        )

    queries = (args.serve, local()) if args.serve is not None and "sink" in names else None
    return serve(names, needs, queries)


def _check_port(host: str, port: int) -> None:
    """Fail, saying how to pick another, if anything listens on ``host:port``."""
    with _socket(host, reuse_port=False) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartError(
                f"cannot listen on {host}:{port}: {exc.strerror} (another Kairos, or another "
                "program, uses it): pick another port with --port N or KAIROS_PORT=N"
            ) from None


def _run_api_processes(
    args: argparse.Namespace, config: Any, redis_url: str, supervisor: Any
) -> None:
    """Run ``--api-workers`` API processes on the port, until SIGINT or SIGTERM.

    Each is this same ``kairos up`` command with ``--api-child``: it builds its settings, keys
    and config exactly as this process did and serves only the API, on a socket of its own
    bound with SO_REUSEPORT, so that the kernel spreads new connections evenly over them (on
    one shared socket, the first process to wake takes a whole burst of connections).
    """
    import time

    from edge.runtime.supervisor import stop_signals

    holder = _reserve_port(args.host, args.port)
    argv = [sys.executable, "-m", "edge.cli", *getattr(args, "argv", sys.argv[1:]),
            "--redis-url", redis_url, "--api-child"]  # fmt: skip
    for number in range(1, args.api_workers + 1):
        supervisor.start(f"api-{number}", argv)
    signals = stop_signals()
    try:
        while not signals:
            time.sleep(1.0)  # the caller's supervisor.stop() stops the API processes first
    finally:
        holder.close()


def _reserve_port(host: str, port: int) -> socket.socket:
    """Fail if anything listens on the port; else hold it (bound, not listening: it takes no
    connections) so that only processes that also set SO_REUSEPORT can share it."""
    _check_port(host, port)
    holder = _socket(host, reuse_port=True)
    holder.bind((host, port))
    return holder


def _socket(host: str, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _serve_api(settings: Any) -> int:
    """One API process of ``kairos up --api-workers N``, on its own SO_REUSEPORT socket."""
    import uvicorn

    from edge.api.app import create_app
    from edge.runtime.server import Server

    sock = _socket(settings.host, reuse_port=True)
    sock.bind((settings.host, settings.port))
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_config=None, access_log=False, server_header=False)  # fmt: skip
    Server(config).run(sockets=[sock])
    return 0


def _demo(client: Any, settings: Any) -> None:
    """The demo shop's catalog and placements now; its history once the API answers."""
    import threading

    import httpx

    from edge.pages import demo

    base = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}" + (
        f":{settings.port}"
    )
    created = demo.install(client, base)
    print(f"demo shop: {base}/demo (placements created: {', '.join(created) or 'none'})")

    def later() -> None:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        demo.seed(base, settings.write_key, settings.secret_key, client,
                  identity_secret=settings.identity_secret)  # fmt: skip

    threading.Thread(target=later, name="demo", daemon=True).start()


def _start_workers(
    supervisor: Any,
    workers: list[str],
    processes: str,
    instances: int,
    common: list[str],
    by_need: dict[str, list[str]],
    store_socket: Path | None,
) -> None:
    """The workers, in the table's order: in one host process (``processes`` "one") or one
    process per kind ("each"), ``instances`` times. A process running one kind is named after
    it, a host of several ``workers``; the second instance gets "-2", and so on.
    ``store_socket``: the sink owns embedded ClickHouse (one sink, then); wait until it answers
    queries there."""
    from edge.runtime.workers import WORKERS

    groups = [workers] if processes == "one" and workers else [[name] for name in workers]
    for instance in range(1, instances + 1):
        for kinds in groups:
            names = kinds
            if instance > 1 and store_socket is not None:  # one sink: it owns chdb
                names = [n for n in kinds if n != "sink"]
            if not names:
                continue
            needs = {need for name in names for need in WORKERS[name].needs}
            if store_socket is not None and "sink" in names:
                needs.discard("history")  # this host owns chdb: its kinds read history in it
            options = [option for need in sorted(needs) for option in by_need[need]]
            child = kinds[0] if len(kinds) == 1 else "workers"  # its pid file: run/<child>.pid
            child += f"-{instance}" if instance > 1 else ""
            supervisor.start(child, [sys.executable, "-m", "edge.cli", "worker", ",".join(names),
                                     *common, *options])  # fmt: skip
            if "sink" in names and store_socket is not None:
                _wait_for_socket(store_socket, supervisor, child)


def _config(args: argparse.Namespace, data_dir: Path) -> tuple[Path | None, Any]:
    """The config file given, else ``kairos.toml`` in the data dir if there is one."""
    import msgspec

    from collector.schema import Shape
    from edge.runtime.config import ConfigError, load_config
    from edge.runtime.stores import clickhouse_url, embedded

    path = args.config
    if path is None and (data_dir / "kairos.toml").exists():
        path = data_dir / "kairos.toml"
    config = load_config(path)
    cluster = getattr(args, "clickhouse_cluster", None)
    if cluster:  # the command line over the file
        try:
            Shape(cluster)  # a name ClickHouse takes, as the config file's is checked
        except ValueError as exc:
            raise ConfigError(f"--clickhouse-cluster: {exc}") from None
        store = msgspec.structs.replace(config.clickhouse, cluster=cluster)
        config = msgspec.structs.replace(config, clickhouse=store)
    if config.clickhouse.cluster and embedded(clickhouse_url(data_dir, args.clickhouse_url)):
        raise ConfigError("a ClickHouse cluster needs --clickhouse-url, a node of it: the "
                          "embedded engine is one server")  # fmt: skip
    return (path.resolve() if path else None), config


def _wait_for_socket(path: Path, supervisor: Any, child: str, timeout: float = 120.0) -> None:
    """Wait until the store process (the supervised ``child``, which runs the sink) accepts
    connections on ``path`` (it may be restarted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor.exits(child) >= 3:
            raise StartError(f"the sink worker ({child}) keeps exiting at start; see the log above")
        with socket.socket(socket.AF_UNIX) as sock:
            if path.exists() and sock.connect_ex(str(path)) == 0:
                return
        time.sleep(0.05)
    raise StartError(f"the sink worker did not open {path} within {timeout:.0f} s")


def _banner(
    settings: Any,
    data_dir: Path,
    clickhouse_url: str,
    created: frozenset[str],
    embedded_redis: bool,
) -> None:
    """What runs where, and how to start. A key is shown only on the start that made it (``created``
    names those; they are kept in keys.json); otherwise the banner says where it comes from, never
    what it is."""
    from edge.runtime.keys import KEY_ENV, keys_file, stored_keys
    from edge.runtime.stores import is_cluster

    base = f"http://{settings.host}:{settings.port}"
    redis_note = " (embedded, AOF fsync everysec)" if embedded_redis else (
        " (Redis Cluster)" if is_cluster(settings.redis_url) else "")  # fmt: skip
    if settings.spool_replicas:
        redis_note += f"; ingestion waits for {settings.spool_replicas} replica(s)"
    ch_note = " (embedded)" if clickhouse_url.startswith("chdb://") else ""
    path, stored = keys_file(data_dir), stored_keys(data_dir)
    lines = []
    for label, key, use in (
        ("write key ", "write_key", "public: browsers and SDKs"),
        ("secret key", "secret_key", "private: servers, dashboard"),
        ("identity  ", "identity_secret", "private: your server signs userHash with it"),
    ):
        value, env = getattr(settings, key), KEY_ENV[key]
        if os.environ.get(env) == value:
            lines.append(f"  {label}  from ${env}  ({use})")
        elif stored.get(key) != value:
            lines.append(f"  {label}  from the command line  ({use})")
        elif key in created:
            lines.append(f"  {label}  {value}  (new, {use}; kept in {path})")
        else:
            lines.append(f"  {label}  in {path}  ({use})")
    keys = "\n".join(lines)
    sign_in = ("sign in with the secret key, or a user's email (kairos users add)"
               if settings.access.secret_key_sign_in
               else "sign in with a user's email: kairos users add")  # fmt: skip
    print(
        f"\nKairos is starting on {base}\n"
        f"  data dir    {data_dir}\n"
        f"  redis       {settings.redis_url}{redis_note}\n"
        f"  clickhouse  {clickhouse_url}{ch_note}\n"
        f"{keys}\n\n"
        f"  send:   curl -u \"$KAIROS_WRITE_KEY:\" -H 'content-type: application/json' \\\n"
        f'            -d \'{{"userId": "u1", "event": "Signed Up"}}\' {base}/v1/track\n'
        f"  try:    kairos simulate --shoppers 1000 --days 30   (simulated shoppers)\n"
        f'  query:  kairos sql "SELECT type, event, count() FROM events GROUP BY ALL"\n'
        f"  dashboard: {base}/dashboard ({sign_in})\n"
        f"  health: {base}/healthz   metrics: {base}/metrics\n\n"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
