"""A worker host: one process running one worker kind or several, each in a thread of its own.

``kairos worker all`` (or ``kairos worker profiles,rewards``, or one kind) is such a process, and
``kairos up`` runs one for all its workers: the kinds share one interpreter, so the imports
(numpy, scipy, River, chdb, …) are loaded once rather than once per kind. With the sink in it
and ClickHouse embedded, the host owns chdb: the other kinds in it read history in the process,
and it answers the read queries of the API (and of workers elsewhere) on a Unix socket.

The guarantees are those of a process per kind, for every thread at once:

- the host exits 1 as soon as a worker thread dies of a bug (after stopping the others), so
  that the supervisor restarts it and every kind resumes from the spool;
- on SIGTERM or SIGINT each worker finishes the batch in hand, all of them within
  ``STOP_GRACE`` seconds together; then the host exits whatever state its stores are in (a batch
  not acknowledged is replayed by the next start: every worker is idempotent on replay).

Every log line a worker's thread writes carries its name (``worker=…``, see ``edge.runtime.logs``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge.runtime.workers import STOP_GRACE, Needs, start

if TYPE_CHECKING:
    from collector.store import LocalStore

__all__ = ["serve"]

log = logging.getLogger("kairos.worker")


def serve(
    names: Sequence[str],
    needs: Callable[[str], Needs],
    queries: tuple[Path, LocalStore] | None = None,
) -> int:
    """Run the worker kinds ``names`` (in this order: the sink first, it may own ClickHouse),
    each given ``needs(name)`` when it is built, until SIGTERM or SIGINT (0) or until one dies of
    a bug (1). ``queries``: also answer read queries on this Unix socket from this store (the
    sink here, ClickHouse embedded)."""
    from edge.runtime.supervisor import stop_signals

    signals, stop = stop_signals(), threading.Event()
    threading.excepthook = _crashed  # the traceback as a log line naming the worker
    threads: dict[str, threading.Thread] = {}
    code = 1  # a builder that raised: the supervisor restarts the host
    try:
        for name in names:  # built one after the other: each its start-up writes, then runs
            threads[name] = start(name, needs(name), stop)
        if signals:  # asked to stop while they were built (the query server would not know)
            code = 0
        elif queries is not None:
            code = _serve_queries(*queries, threads, stop)
        else:
            code = 0
            while not signals and not (dead := _dead(threads, stop)):
                time.sleep(0.5)  # not ``stop.wait``: see stop_signals
            if not signals:
                log.error("worker thread died; exiting so it restarts", extra={"worker": dead})
                code = 1
        return code
    finally:
        stop.set()
        _join(threads, code)


def _dead(threads: dict[str, threading.Thread], stop: threading.Event) -> str:
    """The first worker whose thread ended though it was not asked to stop, else ''."""
    return next((n for n, t in threads.items() if not t.is_alive() and not stop.is_set()), "")


def _join(threads: dict[str, threading.Thread], code: int) -> None:
    """Wait for every thread to finish its batch, all within one ``STOP_GRACE``; leave (``code``)
    without those that do not: they are stuck on a store that does not answer, and the spool
    replays their batch."""
    deadline = time.monotonic() + STOP_GRACE
    for thread in threads.values():
        thread.join(timeout=max(deadline - time.monotonic(), 0.0))
    stuck = [name for name, thread in threads.items() if thread.is_alive()]
    if stuck:
        log.warning("worker did not finish its batch in time; exiting without it",
                    extra={"worker": ",".join(stuck), "seconds": STOP_GRACE})  # fmt: skip
        logging.shutdown()
        os._exit(code)


def _crashed(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    log.error("worker crashed", exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
              extra={"worker": name})  # fmt: skip


def _serve_queries(
    socket_path: Path,
    store: LocalStore,
    threads: dict[str, threading.Thread],
    stop: threading.Event,
) -> int:
    import uvicorn

    from edge.runtime.server import Server
    from edge.runtime.store_service import create_store_service

    socket_path.unlink(missing_ok=True)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # the API's server speaks
    app = create_store_service(store)
    config = uvicorn.Config(app, uds=str(socket_path), log_config=None, access_log=False)
    server = Server(config)
    died = threading.Event()

    def watch() -> None:
        while not server.should_exit:
            if dead := _dead(threads, stop):
                log.error("worker thread died; exiting so it restarts", extra={"worker": dead})
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
