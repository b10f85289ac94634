from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SECRET_KEY, WRITE_KEY, Engine, basic

pytestmark = pytest.mark.clickhouse_http  # also on the HTTP client path

KAIROS = str(Path(sys.executable).with_name("kairos"))


def kairos_sql(engine: Engine, query: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KAIROS, "sql", query, "--url", engine.url, "--secret-key", SECRET_KEY, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kairos_sql_prints_a_table(engine: Engine) -> None:
    for i in range(3):
        engine.post("/v1/track", {"userId": f"u{i}", "event": "Signed Up"})
    engine.wait_stored(3)
    done = kairos_sql(engine, "SELECT event, count() AS n FROM events GROUP BY event")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split("|")[0].strip() == "event" and lines[0].split("|")[1].strip() == "n"
    assert lines[2].split("|")[0].strip() == "Signed Up" and lines[2].split("|")[1].strip() == "3"
    assert lines[-1] == "(1 row)"
    as_json = kairos_sql(engine, "SELECT count() AS n FROM events", "--format", "json")
    assert as_json.stdout.strip().replace(" ", "").replace("\n", "") == '[{"n":3}]'


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("INSERT INTO events (message_id) VALUES ('x')", id="insert"),
        pytest.param("ALTER TABLE events DELETE WHERE 1", id="alter"),
        pytest.param("DROP TABLE events", id="drop"),
        pytest.param("CREATE TABLE t (a Int8) ENGINE = Memory", id="create"),
        pytest.param("SELECT * FROM file('/etc/passwd', 'LineAsString')", id="file-function"),
        pytest.param("SELECT 1 SETTINGS readonly = 0", id="lift-readonly"),
    ],
)
def test_kairos_sql_refuses_writes_with_a_clear_error(engine: Engine, statement: str) -> None:
    done = kairos_sql(engine, statement)
    assert done.returncode == 1
    assert done.stderr.startswith("kairos sql: read_only: the SQL endpoint is read-only")
    # And the table is untouched, readable as before.
    assert kairos_sql(engine, "SELECT count() FROM events").returncode == 0


def test_writes_are_refused_after_earlier_refusals_too(engine: Engine) -> None:
    """The read-only client must stay read-only and usable, whatever was sent before."""
    for statement in [
        "DROP TABLE events",
        "SELECT 1",
        "INSERT INTO events (message_id) VALUES ('x')",
    ]:
        engine.client.post(
            engine.url + "/v1/sql", json={"query": statement}, headers=basic(SECRET_KEY)
        )
    assert engine.sql("SELECT count() FROM events") == [[0]]


def test_sql_needs_the_secret_key(engine: Engine) -> None:
    answer = engine.client.post(
        engine.url + "/v1/sql", json={"query": "SELECT 1"}, headers=basic(WRITE_KEY)
    )
    assert answer.status_code == 403
    assert answer.json()["message"].startswith("this endpoint needs the 'sql' scope")


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        pytest.param(b"{nope", "invalid_json", "$: JSON is malformed", id="malformed"),
        pytest.param(
            b'{"sql": "SELECT 1"}',
            "invalid_request",
            "$: Object contains unknown field `sql`",
            id="wrong-field",
        ),
        pytest.param(
            b'{"query": ""}',
            "invalid_request",
            "$.query: Expected `str` of length >= 1",
            id="empty",
        ),
        pytest.param(
            b'{"query": "SELEC 1"}',
            "query_failed",
            "Code: 62. DB::Exception: Syntax error",
            id="syntax-error",
        ),
    ],
)
def test_bad_sql_requests_are_400(engine: Engine, body: bytes, code: str, message: str) -> None:
    answer = engine.client.post(engine.url + "/v1/sql", content=body, headers=basic(SECRET_KEY))
    assert answer.status_code == 400
    assert answer.json()["code"] == code
    assert answer.json()["message"].startswith(message)


def test_engine_errors_read_the_same_on_every_path(engine: Engine) -> None:
    """The engine's text, neither the HTTP client's wrapping nor the server's URL or version."""
    answer = engine.client.post(
        engine.url + "/v1/sql", json={"query": "SELECT * FROM nope"}, headers=basic(SECRET_KEY)
    )
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert message.startswith("Code: 60. DB::Exception: Unknown table expression identifier 'nope'")
    assert message.endswith("(UNKNOWN_TABLE)")


def test_kairos_sql_reports_an_unreachable_engine() -> None:
    done = subprocess.run(
        [KAIROS, "sql", "SELECT 1", "--url", "http://127.0.0.1:9", "--secret-key", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot reach the engine at http://127.0.0.1:9" in done.stderr
