"""A progress bar for long CLI work (refits, simulations, benchmarks), on stderr.

On a terminal: one line redrawn in place, at most ten times a second,
``label [########            ] 4,000/10,000 40% 0:12 left``. Elsewhere (logs, CI): a line at
each quarter, so logs stay short.

Examples:
    >>> bar = Progress(3, "demo", stream=None)
    >>> for _ in range(3):
    ...     bar.advance()
    >>> bar.done
    3
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = sys.stderr):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.done = 0
        self._start = self._drawn = time.monotonic()
        self._quarter = 0
        self._live = stream is not None and stream.isatty()

    def advance(self, amount: int = 1) -> None:
        self.done = min(self.done + amount, self.total)
        if self.stream is None:
            return
        finished = self.done >= self.total
        if self._live:
            now = time.monotonic()
            if finished or now - self._drawn >= 0.1:
                self._drawn = now
                end = "\n" if finished else ""
                print(f"\r{self.line()}", end=end, file=self.stream, flush=True)
        elif 4 * self.done // self.total > self._quarter:
            self._quarter = 4 * self.done // self.total
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        spent = time.monotonic() - self._start
        left = int(spent / self.done * (self.total - self.done)) if self.done else 0
        bar = "#" * (20 * self.done // self.total)
        return (f"{self.label} [{bar:<20}] {self.done:,}/{self.total:,} "
                f"{100 * self.done // self.total}% {left // 60}:{left % 60:02d} left ")  # fmt: skip
