"""Process supervision for ``kairos up``: start the workers, restart any that dies, stop in order.

Children run in sessions of their own, so Ctrl-C reaches only the supervisor, which then stops
them in order (API first, then workers, Redis last). Each child dies with the supervisor (a
SIGKILLed ``kairos up`` leaves no orphans) and writes nothing the supervisor needs back: a
worker that crashes is restarted with backoff and resumes from the spool.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Supervisor", "die_with_parent", "stop_signals", "terminate"]

log = logging.getLogger("kairos.supervisor")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the process that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the parent's own shutdown still stops its children
        pass


def stop_signals() -> list[int]:
    """From now on SIGINT and SIGTERM are noted in the list returned (poll it with sleeps).

    The handler only appends: one that set a ``threading.Event`` could deadlock, since Python
    runs handlers in the main thread between two bytecodes, also while that thread is inside
    ``Event.wait`` or ``Event.set`` holding the event's lock (a second SIGTERM during a stop
    did exactly that).
    """
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _: received.append(number))
    return received


def terminate(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; False if it had to be killed."""
    process.terminate()
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False


@dataclass
class _Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Keeps named child processes running; pid files go to ``run_dir``."""

    def __init__(self, run_dir: Path, max_backoff: float = 30.0):
        self.run_dir = run_dir
        self.max_backoff = max_backoff
        self._children: list[_Child] = []
        self._stopping = threading.Event()  # no more restarts
        self._stopped = threading.Event()  # every child has exited: the watcher ends
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        child = _Child(name, argv)
        with self._lock:
            self._spawn(child)
            self._children.append(child)
        if not self._watcher.is_alive():
            self._watcher.start()
        assert child.process is not None
        return child.process

    def exits(self, name: str) -> int:
        """How many times ``name`` has exited since it last ran for a minute."""
        with self._lock:
            return sum(child.restarts for child in self._children if child.name == name)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM each child, newest first; SIGKILL what has not exited within ``timeout``."""
        self._stopping.set()
        with self._lock:
            children = list(reversed(self._children))
        for child in children:
            if child.process is None or child.process.poll() is not None:
                continue
            if not terminate(child.process, timeout):
                log.error("worker did not stop in time; killed it", extra={"worker": child.name})
            (self.run_dir / f"{child.name}.pid").unlink(missing_ok=True)
            log.info("worker stopped", extra={"worker": child.name})
        self._stopped.set()

    def _spawn(self, child: _Child) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        child.process = subprocess.Popen(
            child.argv,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        child.started = time.monotonic()
        (self.run_dir / f"{child.name}.pid").write_text(f"{child.process.pid}\n")
        log.info("worker started", extra={"worker": child.name, "pid": child.process.pid})

    def _watch(self) -> None:
        # This thread lives until every child has exited: a child it restarted gets its
        # parent-death signal when this *thread* ends (PR_SET_PDEATHSIG is per thread), which
        # must not be before ``stop`` reaches it in its turn.
        while not self._stopped.wait(0.2):
            with self._lock:
                for child in self._children:
                    code = child.process.poll() if child.process else None
                    if code is None or self._stopping.is_set():
                        continue
                    # A worker that ran for a while restarts at once; one that keeps
                    # failing at start waits longer each time.
                    uptime = time.monotonic() - child.started
                    child.restarts = 0 if uptime > 60 else child.restarts + 1
                    delay = min(self.max_backoff, 0.5 * 2 ** max(child.restarts - 1, 0))
                    log.error(
                        "worker exited; restarting",
                        extra={"worker": child.name, "code": code, "in": delay},
                    )
                    if self._stopping.wait(delay):
                        break
                    self._spawn(child)
