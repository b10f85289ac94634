"""The engine's keys, and the one place that reads and writes ``keys.json``.

``KAIROS_WRITE_KEY`` (public, for browsers and SDKs) and ``KAIROS_SECRET_KEY`` (servers and the
growth team). When unset they are generated on first start and kept in ``keys.json`` in the data
dir (mode 600), so a restart finds the same keys and commands run from the same place find them.
Standard library only: the CLI's quick commands import it.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KEY_ENV", "Keys", "find_key", "keys_file", "load_keys", "stored_keys"]

KEY_ENV = {"write_key": "KAIROS_WRITE_KEY", "secret_key": "KAIROS_SECRET_KEY"}


@dataclass(frozen=True, slots=True)
class Keys:
    write_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    created: bool = False  # True when this start generated them


def keys_file(data_dir: Path) -> Path:
    return data_dir / "keys.json"


def stored_keys(data_dir: Path) -> dict[str, str]:
    """What ``keys.json`` in the data dir holds (empty when there is none, or it is unreadable)."""
    try:
        found = json.loads(keys_file(data_dir).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}


def find_key(name: str, given: str | None, data_dir: Path) -> str | None:
    """Key ``name`` ("write_key" or "secret_key"): ``given``, else the environment, else the
    data dir's ``keys.json``; None if none has it (commands say where to find one)."""
    return given or os.environ.get(KEY_ENV[name]) or stored_keys(data_dir).get(name)


def load_keys(data_dir: Path, write_key: str | None = None, secret_key: str | None = None) -> Keys:
    """Keys from the arguments, else the environment, else ``keys.json``, else new ones (kept
    in ``keys.json``, mode 600)."""
    write_key = write_key or os.environ.get(KEY_ENV["write_key"])
    secret_key = secret_key or os.environ.get(KEY_ENV["secret_key"])
    path = keys_file(data_dir)
    stored = stored_keys(data_dir)
    created = False
    if not (write_key or stored.get("write_key")) or not (secret_key or stored.get("secret_key")):
        stored.setdefault("write_key", "wk_" + secrets.token_urlsafe(18))
        stored.setdefault("secret_key", "sk_" + secrets.token_urlsafe(24))
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=2) + "\n")
        path.chmod(0o600)
        created = True
    return Keys(write_key or stored["write_key"], secret_key or stored["secret_key"], created)
