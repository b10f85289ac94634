"""The event store: ClickHouse, embedded (chdb) or a server, and read-only SQL over it.

One URL picks the engine for a client that writes (the sink, migrations):
``chdb:///abs/data/dir`` runs ClickHouse in this process, ``http://user:pass@host:8123/db``
talks to a server; the client API and every SQL statement are the same for both.

Reading goes through ``EventStore`` (asyncio). Embedded ClickHouse allows one process per data
directory, so other processes read through the owner's query service: ``unix:///path/store.sock``.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import clickhouse_connect
import msgspec
from clickhouse_connect.driver.exceptions import OperationalError

from collector.errors import QueryFailed, StoreUnavailable

__all__ = [
    "READONLY_SETTINGS",
    "EventStore",
    "LocalStore",
    "Query",
    "QueryResult",
    "RemoteStore",
    "connect",
    "embedded_url",
    "open_store",
    "sql_time",
]


def sql_time(moment: datetime) -> str:
    """``moment`` as a ``{name:DateTime64(3)}`` query parameter (UTC, milliseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


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
_READONLY_CODE = "Code: 164."


def embedded_url(data_dir: Path) -> str:
    return f"chdb://{(data_dir / 'clickhouse').resolve()}"


def connect(url: str, *, readonly: bool = False, limited: bool = True) -> Any:
    """A clickhouse-connect client for ``url``; ``readonly`` makes one for reads only (with the
    user-SQL limits unless ``limited`` is false)."""
    settings = None
    if readonly:
        settings = dict(
            READONLY_SETTINGS if limited else {"max_execution_time": 600, "readonly": 1}
        )
    options: dict[str, Any] = {"settings": settings}
    if url.startswith("chdb://"):
        Path(url.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    else:
        options["autogenerate_session_id"] = False  # clients are shared between threads
    return clickhouse_connect.get_client(dsn=url, **options)


class QueryResult(msgspec.Struct, frozen=True):
    """Column names, ClickHouse type names, and rows of JSON-ready values (times as ISO text)."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]


class Query(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A read-only query. ``limited`` (user SQL) stops at about 10,000 rows and 30 s; the
    engine's own queries (backfills, profile history) are read-only too but not capped."""

    query: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    parameters: dict[str, Any] | None = None
    limited: bool = True


class EventStore:
    """Read-only SQL over the event store, from asyncio or from a worker thread."""

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None, limited: bool = True
    ) -> QueryResult:
        return await asyncio.to_thread(self.query_sync, sql, parameters, limited)

    def query_sync(
        self, sql: str, parameters: dict[str, Any] | None = None, limited: bool = True
    ) -> QueryResult:
        raise NotImplementedError

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers within seconds (health checks)."""
        await self.query("SELECT 1")

    async def close(self) -> None:
        pass


class LocalStore(EventStore):
    """Read-only clickhouse-connect clients of its own (chdb in this process, or a server)."""

    def __init__(self, url: str):
        self.limited = connect(url, readonly=True)
        self.unlimited = connect(url, readonly=True, limited=False)

    def query_sync(
        self, sql: str, parameters: dict[str, Any] | None = None, limited: bool = True
    ) -> QueryResult:
        client = self.limited if limited else self.unlimited
        try:
            result = client.query(sql, parameters=parameters)
        except OperationalError as exc:  # the server is unreachable
            raise StoreUnavailable(_first_line(str(exc))) from None
        except Exception as exc:  # the user's SQL was refused or failed: report, do not crash
            text = _engine_message(str(exc))
            if _READONLY_CODE in text:
                raise QueryFailed(f"the SQL endpoint is read-only: {text}", "read_only") from None
            raise QueryFailed(text) from None
        return QueryResult(
            list(result.column_names),
            [t.name for t in result.column_types],
            msgspec.to_builtins([list(row) for row in result.result_rows], enc_hook=str),
        )


class RemoteStore(EventStore):
    """The query service of the process that owns embedded ClickHouse, over a Unix socket."""

    def __init__(self, socket_path: str):
        import httpx

        self.socket_path = socket_path
        self._async = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            base_url="http://store",
            timeout=120,
        )
        self._sync = httpx.Client(
            transport=httpx.HTTPTransport(uds=socket_path), base_url="http://store", timeout=120
        )

    async def query(
        self, sql: str, parameters: dict[str, Any] | None = None, limited: bool = True
    ) -> QueryResult:
        import httpx

        body = msgspec.json.encode(Query(sql, parameters, limited))
        try:
            answer = await self._async.post("/query", content=body)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        return self._result(answer)

    def query_sync(
        self, sql: str, parameters: dict[str, Any] | None = None, limited: bool = True
    ) -> QueryResult:
        import httpx

        body = msgspec.json.encode(Query(sql, parameters, limited))
        try:
            answer = self._sync.post("/query", content=body)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        return self._result(answer)

    async def ping(self) -> None:
        """The owner's query service, with a short timeout: a stopped or hung owner process
        takes connections on its socket and never answers, and a health check must not wait
        the two minutes a long query may take."""
        import httpx

        try:
            answer = await self._async.get("/ping", timeout=3.0)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        if answer.status_code != 200:
            raise StoreUnavailable(f"the store process at {self.socket_path} answered "
                                   f"{answer.status_code}")  # fmt: skip

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"the store process at {self.socket_path} does not answer: {exc}")

    def _result(self, answer: Any) -> QueryResult:
        if answer.status_code == 200:
            return msgspec.json.decode(answer.content, type=QueryResult)
        body = msgspec.json.decode(answer.content)
        if answer.status_code == 503:
            raise StoreUnavailable(body["message"])
        raise QueryFailed(body["message"], body["code"])

    async def close(self) -> None:
        await self._async.aclose()
        self._sync.close()


def open_store(url: str) -> EventStore:
    """``unix:///…/store.sock`` for the owner's query service, else a ClickHouse URL."""
    if url.startswith("unix://"):
        return RemoteStore(url.removeprefix("unix://"))
    return LocalStore(url)


def _engine_message(text: str) -> str:
    """The engine's own error text, the same from chdb and over HTTP: the HTTP client wraps it
    ("Received ClickHouse exception, code: 60, server response: Code: 60. …") and the server
    appends its version and the client its URL, which are no business of an API caller."""
    start = text.find("Code: ")
    text = _first_line(text[start:] if start >= 0 else text)
    return _TRAILERS.sub("", text)


_TRAILERS = re.compile(r"(?:\s+\(version [^()]*(?:\([^()]*\))?[^()]*\))?(?:\s+\(for url [^)]*\))?$")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:1000]
    return text[:1000]
