"""uvicorn's Server, stopping cleanly on the signals it was asked to stop by."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn

__all__ = ["Server"]


class Server(uvicorn.Server):
    """uvicorn re-raises the signal that stopped it once it has shut down, which kills the
    process before its ``finally`` blocks run; a stop we were asked for is a clean exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()
