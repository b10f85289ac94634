"""Structured logs: one JSON object per line, or ``key=value`` text for people at a terminal.

Fields passed with ``extra={...}`` become keys of the line, so logs can be filtered by field.
A line written by a worker's thread names the worker (``worker``), whatever logged it: a worker
host runs several kinds in one process, and their lines share its stream.

No line carries a secret: whatever a line says (exception messages and tracebacks included),
the engine's keys (``redact``, and ``KAIROS_WRITE_KEY``/``KAIROS_SECRET_KEY``/
``KAIROS_IDENTITY_SECRET`` from the environment), anything shaped like a generated key or signing
secret, the value of an
``Authorization`` header and the dashboard's session cookie are replaced by ``[redacted]``.

Examples:
    >>> redact("my-secret-key")
    >>> _redacted('auth failed for "Bearer my-secret-key", cookie kairos_session=1.abc')
    'auth failed for "Bearer [redacted]", cookie kairos_session=[redacted]'
    >>> _redacted("from keys.json: sk_4mZ0yWq1t9LrGm3c8xVfKpQa2B")
    'from keys.json: sk_[redacted]'
    >>> _redacted("signing with idsec_Qm9vYmFyYmF6cXV4cXV1eA")
    'signing with idsec_[redacted]'
    >>> _redacted("headers: {'authorization': 'Token abc'} basic setup")
    "headers: {'authorization': '[redacted]'} basic setup"
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime

from edge.runtime import workers
from edge.runtime.keys import KEY_ENV

__all__ = ["redact", "setup_logging"]

_SECRETS: set[str] = set()
_SHAPES = re.compile(
    r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"  # an Authorization header's credentials
    r"|(?i:\b(authorization['\"]?\s*[:=,]\s*['\"]?)[^'\",;\s]+(?:\s+[^'\",;\s]+)?)"
    r"|\b(kairos_session=)[^;\s\"']+"  # the dashboard's session cookie
    r"|\b(sk|wk|kk|whsec|ocsec|idsec)_[A-Za-z0-9_-]{12,}"  # generated keys and signing secrets
)


def redact(*secrets: str) -> None:
    """Never let these strings into a log line (the keys of this process). Strings under four
    characters are ignored: no secret, and hiding them would garble every line."""
    _SECRETS.update(s for s in secrets if len(s) >= 4)


def _hide(match: re.Match[str]) -> str:
    if match.group(1):
        return f"{match.group(1)}{match.group(2)}[redacted]"
    if match.group(3) or match.group(4):
        return f"{match.group(3) or match.group(4)}[redacted]"
    return f"{match.group(5)}_[redacted]"


def _redacted(line: str) -> str:
    for secret in _SECRETS:
        if secret in line:
            line = line.replace(secret, "[redacted]")
    return _SHAPES.sub(_hide, line)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's duplicate of msg with terminal colours
}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _worker_field(record: logging.LogRecord) -> bool:
    """Name the worker that logged (handlers run in the thread that logs)."""
    if "worker" not in vars(record) and (name := workers.current()):
        record.worker = name
    return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _redacted(json.dumps(line, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name:<14} {record.getMessage()}"
        line = f"{line}  {extra}" if extra else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _redacted(line)


def setup_logging(fmt: str = "auto", level: str = "info") -> None:
    """``fmt``: json, text, or auto (text on a terminal, JSON otherwise)."""
    redact(*(os.environ.get(name, "") for name in KEY_ENV.values()))
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_worker_field)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per internal query is noise
    logging.getLogger("httpcore").setLevel(logging.WARNING)  # requests' innards, at debug level
