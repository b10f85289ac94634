"""A ClickHouse HTTP interface in front of the embedded engine (chdb) — for the test suite only.

This is a harness for our client path, not a server for users: no ClickHouse server installs on
the machines CI runs on (Debian's is from 2018, chdb has no server mode), so the suite's
ClickHouse-facing tests run a second time through clickhouse-connect's HTTP client against this
front, which forwards each request to the real engine. It speaks as much of ClickHouse's HTTP
interface as clickhouse-connect uses:

- ``GET /ping``; queries in the body or the ``query`` URL parameter (the two concatenated, as the
  server does), ``database``, ``default_format``, ``param_<name>`` query parameters (in the URL or
  as multipart form fields), and every other URL parameter applied as a setting (``readonly``
  last, as a server-side limit it then enforces);
- inserts ``INSERT … FORMAT <fmt>`` followed by the data, compressed or not (``Content-Encoding``
  lz4, zstd, br, gzip, deflate; chunked), written to a file the engine reads with ``FROM INFILE``;
- compressed answers when ``enable_http_compression`` (the engine's default unless given) and
  the client accepts the encoding;
- ``X-ClickHouse-Summary``, ``-Format``, ``-Query-Id``, ``-Timezone`` headers; errors as the
  server sends them: the engine's text (``Code: 60. DB::Exception: … (UNKNOWN_TABLE)``), the code
  in ``X-ClickHouse-Exception-Code``, and the server's HTTP status for it;
- basic authentication (a wrong user or password is code 516, 403), sessions (``session_id``).

Not spoken: ``client_protocol_version`` (the engine has no client revision to write Native for;
clickhouse-connect's probe then falls back to protocol 0, as behind a proxy that strips it),
external data tables, progress headers.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import socket
import tempfile
import threading
import time
import zlib
from base64 import b64decode
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import brotli
import chdb
import lz4.frame
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

try:
    from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef]

__all__ = ["ClickHouseFront"]

# URL parameters the HTTP interface consumes itself; every other one is a setting.
_TRANSPORT = {
    "query", "database", "default_format", "session_id", "session_timeout", "session_check",
    "query_id", "quota_key", "compress", "decompress", "wait_end_of_query", "buffer_size",
    "client_protocol_version", "role", "user", "password", "enable_http_compression",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
}  # fmt: skip

# The server's HTTP status per exception name (ClickHouse's exceptionCodeToHTTPStatus); others 500.
_STATUS = {
    **dict.fromkeys(["REQUIRED_PASSWORD"], 401),
    **dict.fromkeys(["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED",
                     "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"], 403),
    **dict.fromkeys(["BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
                     "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING",
                     "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
                     "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4",
                     "CANNOT_PARSE_IPV6", "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
                     "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
                     "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN",
                     "TOO_DEEP_AST", "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR",
                     "INCORRECT_DATA", "TYPE_MISMATCH", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"],
                    400),
    **dict.fromkeys(["UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
                     "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING",
                     "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
                     "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY",
                     "UNKNOWN_ROLE"], 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    **dict.fromkeys(["SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"], 503),
    "TIMEOUT_EXCEEDED": 408,
}  # fmt: skip

_DECODE = {
    "lz4": lz4.frame.decompress,
    "zstd": zstd.decompress,
    "br": brotli.decompress,
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}
_ENCODE = {
    "lz4": lz4.frame.compress,
    "zstd": zstd.compress,
    "br": brotli.compress,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
}

_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?:\s|$)")
# An INSERT whose data follows its FORMAT clause; the first FORMAT is the statement's own.
_INSERT_DATA = re.compile(rb"^\s*INSERT\s.*?\bFORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.I | re.S)
_SETTINGS_CLAUSE = re.compile(rb"\bSETTINGS\b", re.I)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)


class ClickHouseError(Exception):
    """An error as the server reports it: its code, its name and its text."""

    def __init__(self, code: int, name: str, text: str):
        super().__init__(text)
        self.code, self.name, self.text = code, name, text

    @classmethod
    def of(cls, exc: Exception) -> ClickHouseError:
        text = str(exc).strip()
        start = text.find("Code: ")
        text = text[start:] if start >= 0 else text
        code, name = _CODE.search(text), _NAME.search(text)
        return cls(int(code.group(1)) if code else 1001, name.group(1) if name else "", text)


class ClickHouseFront:
    """An HTTP front on a loopback port that runs each request on the engine at ``path``.

    A process holds one chdb engine on one data dir, so ``path`` must be the dir the process
    already uses, if any (the suite passes its session's; ``test_server_path`` runs this)::

        front = ClickHouseFront(path).start()
        client = clickhouse_connect.get_client(dsn=front.url)
        client.query("SELECT {n:UInt8} + 1", parameters={"n": 41}).result_rows  # [(42,)]
        front.stop()
    """

    def __init__(self, path: str, user: str = "kairos", password: str = "front-test"):
        self.path, self.user, self.password = path, user, password
        self.version = ""
        self.compression = False
        self._sessions: dict[str, tuple[Any, threading.Lock]] = {}
        self._sessions_lock = threading.Lock()
        self._pool: dict[tuple | None, list[Any]] = {}
        self._anchor: Any = None
        self._pool_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}/default"

    def start(self) -> ClickHouseFront:
        # Held until ``stop``: when a process's last chdb connection closes, the engine shuts
        # down, and the next connection starts it again (loading every table); a connection per
        # request did that thousands of times in the suite until chdb 26.9 had no thread left
        # ("Cannot schedule a task: no free thread (threads=10000, jobs=10000)").
        self._anchor = handle = chdb.connect(self.path)
        answer = handle.query(
            "SELECT version(), value FROM system.settings WHERE name = 'enable_http_compression'",
            "TabSeparated",
        )
        self.version, compression = answer.bytes().decode().split()
        self.compression = compression == "1"  # the engine's default, as a server's would be
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        app = Starlette(
            routes=[Route("/ping", _ping), Route("/", self._serve, methods=["GET", "POST"])]
        )
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [listener]},
                                        name="clickhouse-front", daemon=True)  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "front did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        for handle, _ in self._sessions.values():
            handle.close()
        self._sessions.clear()
        for handles in self._pool.values():
            for handle in handles:
                handle.close()
        self._pool.clear()
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    async def _serve(self, request: Request) -> Response:
        query_id = request.query_params.get("query_id") or f"front-{next(self._ids)}"
        headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": "UTC",
                   "X-ClickHouse-Server-Display-Name": "kairos-test-front"}  # fmt: skip
        try:
            self._authenticate(request)
            params = dict(request.query_params)
            body = await request.body()
            encoding = request.headers.get("content-encoding", "identity").lower()
            if encoding not in ("", "identity"):
                if encoding not in _DECODE:
                    raise ClickHouseError(
                        336, "UNKNOWN_COMPRESSION_METHOD",
                        f"Code: 336. DB::Exception: Unknown compression method '{encoding}'. "
                        "(UNKNOWN_COMPRESSION_METHOD)",
                    )  # fmt: skip
                body = _DECODE[encoding](body)
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                params.update(_form_fields(content_type, body))
                body = b""
            statement = params.pop("query", "").encode()
            if statement and body:
                statement += b"\n"
            answer, fmt, summary = await run_in_threadpool(
                self._run, statement + body, params, request.method == "GET"
            )
        except ClickHouseError as exc:
            headers["X-ClickHouse-Exception-Code"] = str(exc.code)
            text = f"{exc.text} (version {self.version} (kairos test front))\n"
            return PlainTextResponse(text, _STATUS.get(exc.name, 500), headers=headers)
        headers["X-ClickHouse-Format"] = fmt
        headers["X-ClickHouse-Summary"] = json.dumps(summary)
        if params.get("enable_http_compression", "1" if self.compression else "0") == "1":
            accepted = [e.strip() for e in request.headers.get("accept-encoding", "").split(",")]
            chosen = next((e for e in accepted if e in _ENCODE), None)
            if chosen:
                answer = _ENCODE[chosen](answer)
                headers["Content-Encoding"] = chosen
        return Response(answer, 200, headers=headers, media_type=_media_type(fmt))

    def _authenticate(self, request: Request) -> None:
        user, password = "default", ""
        given = request.headers.get("authorization", "")
        if given.lower().startswith("basic "):
            user, _, password = b64decode(given[6:]).decode().partition(":")
        elif "x-clickhouse-user" in request.headers:
            user = request.headers["x-clickhouse-user"]
            password = request.headers.get("x-clickhouse-key", "")
        elif "user" in request.query_params:
            user = request.query_params["user"]
            password = request.query_params.get("password", "")
        if (user, password) != (self.user, self.password):
            raise ClickHouseError(
                516, "AUTHENTICATION_FAILED",
                f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
                "or there is no user with such name. (AUTHENTICATION_FAILED)",
            )  # fmt: skip

    def _run(self, sql: bytes, params: dict[str, str], get: bool) -> tuple[bytes, str, dict]:
        """Run one request's SQL on a handle of the pool (or its session's). A server applies a
        request's settings to that request alone: a writing handle has them reset after it, a
        read-only one (which cannot reset them) serves only requests with the same settings.
        Handles are kept, not opened per request (see ``start``)."""
        settings = {k: v for k, v in params.items() if k not in _TRANSPORT
                    and not k.startswith("param_")}  # fmt: skip
        if get and "readonly" not in settings:
            settings["readonly"] = "2"  # a GET request cannot write, as on the server
        database = _identifier(params.get("database", "default"))
        session = params.get("session_id")
        if session:
            with self._sessions_lock:
                if session not in self._sessions:
                    self._sessions[session] = (chdb.connect(self.path), threading.Lock())
                handle, lock = self._sessions[session]
            with lock:
                self._configure(handle, database, settings)
                return self._execute(handle, sql, params)
        readonly = settings.get("readonly", "0") != "0"
        key = (database, tuple(sorted(settings.items()))) if readonly else None
        handle, ready = self._take(key)
        try:
            if not ready:
                self._configure(handle, database, settings)
            ready = True
            return self._execute(handle, sql, params)
        finally:
            # back to the pool when it serves its key as it should: a writing handle with its
            # settings reset, a read-only one set up
            if self._reset(handle, settings) if key is None else ready:
                self._give(key, handle)
            else:
                handle.close()

    def _take(self, key: tuple | None) -> tuple[Any, bool]:
        """A kept handle for ``key`` (read-only: already set up for it), else a new one."""
        with self._pool_lock:
            idle = self._pool.get(key)
            if idle:
                return idle.pop(), key is not None
        return chdb.connect(self.path), False

    def _give(self, key: tuple | None, handle: Any) -> None:
        with self._pool_lock:
            self._pool.setdefault(key, []).append(handle)

    def _configure(self, handle: Any, database: str, settings: dict[str, str]) -> None:
        try:
            handle.query(f"USE {database}", "TabSeparated")
            for name in sorted(settings, key=lambda name: name == "readonly"):
                value = settings[name].replace("\\", "\\\\").replace("'", "\\'")
                handle.query(f"SET {_identifier(name)} = '{value}'", "TabSeparated")
        except ClickHouseError:
            raise
        except Exception as exc:
            raise ClickHouseError.of(exc) from None

    def _reset(self, handle: Any, settings: dict[str, str]) -> bool:
        """Every setting of the request back to its default; False if one would not go."""
        try:
            for name in settings:
                handle.query(f"SET {_identifier(name)} = DEFAULT", "TabSeparated")
            handle.query("USE default", "TabSeparated")
        except Exception:
            return False
        return True

    def _execute(self, handle: Any, sql: bytes, params: dict[str, str]) -> tuple[bytes, str, dict]:
        bind = {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")}
        try:
            insert = _INSERT_DATA.match(sql)
            if insert is not None and sql[insert.end() :].strip():
                return self._insert(handle, sql, insert, bind)
            text = sql.decode()
            fmt = params.get("default_format", "TabSeparated")
            named = _TRAILING_FORMAT.search(text)
            result = handle.query(text, fmt, params=bind)
        except ClickHouseError:
            raise
        except Exception as exc:
            raise ClickHouseError.of(exc) from None
        summary = {"read_rows": str(result.rows_read()), "read_bytes": str(result.bytes_read()),
                   "written_rows": "0", "written_bytes": "0",
                   "elapsed_ns": str(int(result.elapsed() * 1e9))}  # fmt: skip
        return result.bytes() or b"", named.group(1) if named else fmt, summary

    def _insert(
        self, handle: Any, sql: bytes, insert: re.Match[bytes], bind: dict[str, str]
    ) -> tuple[bytes, str, dict]:
        """``INSERT … FORMAT f`` and its data: the data goes to a file read ``FROM INFILE``."""
        head = re.sub(rb"\bFORMAT\s*$", b"", sql[: insert.start(1)], flags=re.I).rstrip()
        clause = b""
        settings_at = _SETTINGS_CLAUSE.search(head)
        if settings_at is not None:
            head, clause = head[: settings_at.start()].rstrip(), b" " + head[settings_at.start() :]
        with tempfile.NamedTemporaryFile(suffix=".data", delete=False) as data:
            data.write(sql[insert.end() :])
        try:
            quoted = data.name.replace("\\", "\\\\").replace("'", "\\'")
            statement = (head + f" FROM INFILE '{quoted}'".encode() + clause
                         + b" FORMAT " + insert.group(1))  # fmt: skip
            result = handle.query(statement.decode(), "TabSeparated", params=bind)
        finally:
            os.unlink(data.name)
        rows = str(result.rows_read())
        summary = {"read_rows": rows, "read_bytes": str(result.bytes_read()),
                   "written_rows": rows, "written_bytes": str(result.bytes_read()),
                   "elapsed_ns": str(int(result.elapsed() * 1e9))}  # fmt: skip
        return b"", "TabSeparated", summary


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns signals
        pass


async def _ping(request: Request) -> Response:
    return PlainTextResponse("Ok.\n")


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (the query and its parameters)."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            raise ClickHouseError(
                48, "NOT_IMPLEMENTED",
                "Code: 48. DB::Exception: external data is not spoken by the test front. "
                "(NOT_IMPLEMENTED)",
            )  # fmt: skip
        payload = part.get_payload(decode=True)
        fields[str(name)] = payload.decode() if isinstance(payload, bytes) else str(payload)
    return fields


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ClickHouseError(
            36, "BAD_ARGUMENTS", f"Code: 36. DB::Exception: Invalid name '{name}'. (BAD_ARGUMENTS)"
        )
    return name


def _media_type(fmt: str) -> str:
    if fmt.startswith("JSON"):
        return "application/json"
    if fmt in ("TabSeparated", "TSV", "CSV") or fmt.startswith(("TabSeparated", "CSV", "TSV")):
        return "text/plain"
    return "application/octet-stream"
