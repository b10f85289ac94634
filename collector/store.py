"""The event store client: clickhouse-connect, embedded (chdb) or a ClickHouse server over HTTP.

One URL picks the engine: ``chdb:///abs/data/dir`` runs ClickHouse in this process, and
``http://user:password@host:8123/database`` talks to a server. The client API and every SQL
statement are the same for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import clickhouse_connect

__all__ = ["READONLY_SETTINGS", "connect", "embedded_url"]

# Enforced by ClickHouse itself, not by parsing SQL: readonly=1 refuses INSERT, ALTER, DROP,
# CREATE, SET and the file()/url() table functions. Client-level settings, so that chdb applies
# them to this client's session once (readonly last: after it, nothing can change) and a server
# gets them with every request.
READONLY_SETTINGS = {
    "max_execution_time": 30,
    "max_result_rows": 10_000,
    "result_overflow_mode": "break",
    "readonly": 1,
}


def embedded_url(data_dir: Path) -> str:
    return f"chdb://{(data_dir / 'clickhouse').resolve()}"


def connect(url: str, *, readonly: bool = False) -> Any:
    """A client for ``url``; ``readonly`` makes one for user SQL and nothing else."""
    options: dict[str, Any] = {"settings": dict(READONLY_SETTINGS) if readonly else None}
    if url.startswith("chdb://"):
        Path(url.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    else:
        options["autogenerate_session_id"] = False  # clients are shared between threads
    return clickhouse_connect.get_client(dsn=url, **options)
