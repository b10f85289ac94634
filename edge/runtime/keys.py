"""The engine's keys, and the one place that reads and writes ``keys.json``.

``KAIROS_WRITE_KEY`` (public, for browsers and SDKs), ``KAIROS_SECRET_KEY`` (servers and the
growth team) and ``KAIROS_IDENTITY_SECRET`` (the site's server signs signed-in users' ids with
it: ``decisions.identity``; never in a page). When unset they are generated on first start and
kept in ``keys.json`` in the data dir (mode 600), so a restart finds the same keys and commands
run from the same place find them; a data dir made before a key existed gets it on its next start.
Standard library only: the CLI's quick commands import it.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KEY_ENV", "Keys", "find_key", "keys_file", "load_keys", "stored_keys"]

KEY_ENV = {
    "write_key": "KAIROS_WRITE_KEY",
    "secret_key": "KAIROS_SECRET_KEY",
    "identity_secret": "KAIROS_IDENTITY_SECRET",
}
# How a generated key starts (logs redact these shapes) and how many random bytes follow.
_NEW = {"write_key": ("wk_", 18), "secret_key": ("sk_", 24), "identity_secret": ("idsec_", 32)}


@dataclass(frozen=True, slots=True)
class Keys:
    write_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    identity_secret: str = field(default="", repr=False)
    created: frozenset[str] = frozenset()  # the names of those this start generated


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
    """Key ``name`` (one of ``KEY_ENV``): ``given``, else the environment, else the data dir's
    ``keys.json``; None if none has it (commands say where to find one)."""
    return given or os.environ.get(KEY_ENV[name]) or stored_keys(data_dir).get(name)


def load_keys(
    data_dir: Path,
    write_key: str | None = None,
    secret_key: str | None = None,
    identity_secret: str | None = None,
) -> Keys:
    """Keys from the arguments, else the environment, else ``keys.json``, else new ones (kept
    in ``keys.json``, mode 600)."""
    given = {"write_key": write_key, "secret_key": secret_key, "identity_secret": identity_secret}
    found = {name: value or os.environ.get(KEY_ENV[name]) for name, value in given.items()}
    stored = stored_keys(data_dir)
    missing = {name for name, value in found.items() if not (value or stored.get(name))}
    if missing:
        for name in missing:
            prefix, size = _NEW[name]
            stored[name] = prefix + secrets.token_urlsafe(size)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = keys_file(data_dir)
        path.write_text(json.dumps(stored, indent=2) + "\n")
        path.chmod(0o600)
    keys = {name: value or stored[name] for name, value in found.items()}
    return Keys(**keys, created=frozenset(missing))
