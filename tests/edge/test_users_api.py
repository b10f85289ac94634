"""The users and sessions API (admin scope), against a real engine: every wrong input is a 400
that names its field, and no answer carries a password or its hash."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import WRITE_KEY, Engine
from tests.helpers import add_user, bearer, signed_in

ADA = {"email": "ada@example.com", "role": "editor", "password": "a long password 1"}


def _call(engine: Engine, method: str, path: str, body: Any = None) -> Any:
    return engine.client.request(method, engine.url + path, json=body, headers=bearer())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({**ADA, "password": "short"}, "$.password: at least 12 characters",
                     id="short-password"),
        pytest.param({**ADA, "email": "ada"}, "$.email: not an email address",
                     id="not-an-email"),
        pytest.param({**ADA, "role": "owner"}, "$.role: Invalid enum value 'owner'",
                     id="unknown-role"),
        pytest.param({"email": "ada@example.com", "role": "viewer"},
                     "$.password: required field is missing", id="no-password"),
        pytest.param({**ADA, "admin": True}, "$: Object contains unknown field `admin`", id="unknown-field"),
    ],
)  # fmt: skip
def test_a_wrong_user_is_a_400_that_names_the_field(
    engine: Engine, body: dict[str, Any], message: str
) -> None:
    answer = _call(engine, "POST", "/v1/users", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_user"
    assert answer.json()["message"].startswith(message), answer.json()


def test_users_are_added_listed_changed_and_removed(engine: Engine, r: Any) -> None:
    made = _call(engine, "POST", "/v1/users", {**ADA, "email": "Ada@Example.com"})
    assert made.status_code == 201
    assert set(made.json()) == {"email", "role", "created", "password_changed", "sessions"}
    assert made.json()["email"] == "ada@example.com"
    again = _call(engine, "POST", "/v1/users", ADA)
    assert again.status_code == 409 and again.json()["message"].startswith("$.email: ")
    with signed_in(engine, ADA["email"], ADA["password"]):
        listed = _call(engine, "GET", "/v1/users").json()["users"]
        assert [(u["email"], u["role"], u["sessions"]) for u in listed] == [
            ("ada@example.com", "editor", 1)
        ]
    assert "hash" not in str(listed) and "argon2" not in str(listed)
    assert _call(engine, "PUT", "/v1/users/ada@example.com", {}).json()["message"] == (
        "$: give a role, a password, or both"
    )
    short = _call(engine, "PUT", "/v1/users/ada@example.com", {"password": "tiny"})
    assert short.status_code == 400 and short.json()["message"] == (
        "$.password: at least 12 characters"
    )
    assert _call(engine, "PUT", "/v1/users/bob@example.com", {"role": "admin"}).status_code == 404
    assert _call(engine, "PUT", "/v1/users/ADA@example.com", {"role": "admin"}).json()["role"] == (
        "admin"
    )
    bad = _call(engine, "DELETE", "/v1/users/not-an-email")
    assert bad.status_code == 400 and bad.json()["message"].startswith("$.email: not an email")
    assert _call(engine, "DELETE", "/v1/users/ada@example.com").status_code == 200
    assert _call(engine, "DELETE", "/v1/users/ada@example.com").status_code == 404
    assert r.hlen("{access}:users") == 0


def test_sessions_are_named_by_an_id_that_signs_no_one_in(engine: Engine) -> None:
    add_user(engine, ADA["email"], "viewer", ADA["password"])
    with signed_in(engine, ADA["email"], ADA["password"]) as client:
        (found,) = _call(engine, "GET", "/v1/sessions", None).json()["sessions"]
        assert found["user"] == ADA["email"] and found["kind"] == "user"
        assert found["agent"].startswith("python-httpx/") and found["address"] == "127.0.0.1"
        assert found["expires"] - found["created"] == 12 * 3600
        assert found["id"] not in client.cookies["kairos_session"]
        forged = httpx.get(f"{engine.url}/dashboard", cookies={"kairos_session": found["id"]})
        assert forged.status_code == 303
        mine = engine.client.get(f"{engine.url}/v1/sessions", params={"user": "ADA@example.com"},
                                 headers=bearer()).json()["sessions"]  # fmt: skip
        assert [s["id"] for s in mine] == [found["id"]]
    bad = _call(engine, "DELETE", "/v1/sessions/nope")
    assert bad.status_code == 400 and bad.json()["message"].startswith("$.id: a session id is")
    assert _call(engine, "DELETE", "/v1/sessions/" + "0" * 32).status_code == 404


def test_only_the_admin_scope_manages_users(engine: Engine) -> None:
    for method, path in (("GET", "/v1/users"), ("POST", "/v1/users"), ("GET", "/v1/sessions"),
                         ("DELETE", "/v1/users/ada@example.com")):  # fmt: skip
        answer = engine.client.request(method, engine.url + path, json=ADA,
                                       headers=bearer(WRITE_KEY))  # fmt: skip
        assert answer.status_code == 403, (method, path)
        assert "needs the 'admin' scope" in answer.json()["message"]
