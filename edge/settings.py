"""Engine settings: command-line options over environment variables over defaults.

Keys: ``KAIROS_WRITE_KEY`` (public, for browsers and SDKs) and ``KAIROS_SECRET_KEY`` (servers and
the growth team). When unset they are generated on first start and kept in ``keys.json`` in the
data dir, so a restart finds the same keys.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from collector.consent import ConsentPolicy
from edge.limits import Limits

__all__ = ["Keys", "Settings", "load_keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    write_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    created: bool = False  # True when this start generated them


def load_keys(data_dir: Path, write_key: str | None = None, secret_key: str | None = None) -> Keys:
    """Keys from the arguments, else the environment, else ``keys.json``, else new ones."""
    write_key = write_key or os.environ.get("KAIROS_WRITE_KEY")
    secret_key = secret_key or os.environ.get("KAIROS_SECRET_KEY")
    path = data_dir / "keys.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    created = False
    if not (write_key or stored.get("write_key")) or not (secret_key or stored.get("secret_key")):
        stored.setdefault("write_key", "wk_" + secrets.token_urlsafe(18))
        stored.setdefault("secret_key", "sk_" + secrets.token_urlsafe(24))
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=2) + "\n")
        path.chmod(0o600)
        created = True
    return Keys(write_key or stored["write_key"], secret_key or stored["secret_key"], created)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the HTTP app needs; the CLI builds it, tests build it directly."""

    redis_url: str
    store_url: str  # where reads go: a ClickHouse URL, or unix://… of the store process
    write_key: str = field(repr=False)  # kept out of reprs: tracebacks, debuggers, logs
    secret_key: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    spool_limit: int = 100_000  # stream entries (one per accepted request); 0 = no limit
    consent: ConsentPolicy = field(default_factory=ConsentPolicy)
    cors_origins: tuple[str, ...] = ("*",)  # origins whose pages may call the browser API
    limits: Limits = field(default_factory=Limits)  # rate and size limits (edge.limits)
    decide_timeout: float = 0.05  # seconds /v1/decide waits on Redis before answering defaults
    seed: int | None = None  # the decide path's random choices (tests fix it)
