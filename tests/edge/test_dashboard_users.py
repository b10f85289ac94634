"""The dashboard's users page, against a real engine: an admin adds a user, changes their role,
sets a new password and removes them from its forms; each change is audited as the
dashboard's; wrong fields are named and change nothing; the last admin stays an admin; the page
fits a laptop and a phone in Chromium."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from tests.browser import shot, watched
from tests.conftest import Engine
from tests.edge.test_audit import logged
from tests.helpers import add_user, bearer, page_text, signed_in

PASSWORD = "correct horse battery"
ADMIN = "root@shop.example"
MINE = "/dashboard/users/root%40shop.example"  # the admin's row's form (the page quotes the @)


def _users(engine: Engine) -> dict[str, str]:
    """Email -> role, as the API lists them."""
    found = engine.client.get(f"{engine.url}/v1/users", headers=bearer()).json()["users"]
    return {u["email"]: u["role"] for u in found}


def _token(markup: str, action: str) -> str:
    """The CSRF token of the page's form posting to ``action``."""
    found = re.search(rf'action="{re.escape(action)}"[^>]*>\s*<input type="hidden" name="csrf" '
                      r'value="([^"]+)"', markup)  # fmt: skip
    assert found is not None, (action, markup)
    return found.group(1)


def _post(client: httpx.Client, action: str, **fields: str) -> httpx.Response:
    """Fill the form posting to ``action`` on a fresh users page, as a browser would."""
    markup = client.get("/dashboard/users").text
    return client.post(action, data={"csrf": _token(markup, action), **fields})


def _alert(answer: httpx.Response) -> str:
    found = re.search(r'role="alert">([^<]+)<', answer.text)
    return html.unescape(found.group(1)) if found else ""


def test_an_admin_adds_changes_resets_and_removes_a_user_from_the_page(engine: Engine) -> None:
    add_user(engine, ADMIN, "admin", PASSWORD)
    with signed_in(engine, ADMIN, PASSWORD) as admin:
        added = _post(admin, "/dashboard/users", email="Ana@Shop.example", role="viewer",
                      password="a long password 1")  # fmt: skip
        assert added.status_code == 303, added.text
        shown = admin.get(added.headers["location"])
        assert "Added ana@shop.example: they sign in at /dashboard/login." in page_text(shown.text)
        assert _users(engine) == {ADMIN: "admin", "ana@shop.example": "viewer"}
        with signed_in(engine, "ana@shop.example", "a long password 1") as ana:
            assert 'class="role">viewer' in ana.get("/dashboard").text
            changed = _post(admin, "/dashboard/users/ana%40shop.example", role="editor",
                            password="")  # fmt: skip
            assert changed.status_code == 303, changed.text
            assert 'class="role">editor' in ana.get("/dashboard").text  # still signed in
            reset = _post(admin, "/dashboard/users/ana%40shop.example", role="editor",
                          password="another long password")  # fmt: skip
            assert reset.status_code == 303 and "done=reset" in reset.headers["location"]
            assert ana.get("/dashboard").headers["location"] == "/dashboard/login"
        with signed_in(engine, "ana@shop.example", "another long password"):
            pass
        removed = _post(admin, "/dashboard/users/ana%40shop.example/remove")
        assert removed.status_code == 303, removed.text
        assert "Removed ana@shop.example" in page_text(admin.get(removed.headers["location"]).text)
    assert _users(engine) == {ADMIN: "admin"}
    entries = logged(engine, 4, resource="user", key="ana@shop.example")
    assert [(e["action"], e["via"], e["actor"]) for e in entries] == [
        ("delete", "dashboard", f"user:{ADMIN}"), ("update", "dashboard", f"user:{ADMIN}"),
        ("update", "dashboard", f"user:{ADMIN}"), ("create", "dashboard", f"user:{ADMIN}")]  # fmt: skip
    assert entries[2]["before"]["role"] == "viewer" and entries[2]["after"]["role"] == "editor"
    assert "argon2" not in str(entries) and "long password" not in str(entries)


@pytest.mark.parametrize(
    ("fields", "status", "said"),
    [
        ({"email": "ana@shop.example", "role": "viewer", "password": "tiny"}, 400,
         "$.password: at least 12 characters"),
        ({"email": "ana", "role": "viewer", "password": "a long password 1"}, 400,
         "$.email: not an email address (name@domain, up to 254 characters)"),
        ({"email": "ana@shop.example", "role": "owner", "password": "a long password 1"}, 400,
         "$.role: Invalid enum value 'owner'"),
        ({"email": ADMIN, "role": "viewer", "password": "a long password 1"}, 409,
         f"{ADMIN} has an account already: change its role or password in its row"),
    ],
    ids=["short-password", "not-an-email", "unknown-role", "taken"],
)  # fmt: skip
def test_a_wrong_field_is_named_and_changes_nothing(
    engine: Engine, fields: dict[str, str], status: int, said: str
) -> None:
    add_user(engine, ADMIN, "admin", PASSWORD)
    with signed_in(engine, ADMIN, PASSWORD) as admin:
        answer = _post(admin, "/dashboard/users", **fields)
        assert answer.status_code == status and _alert(answer).startswith(said), _alert(answer)
        if status == 400:  # the form comes back filled, without the password
            assert f'value="{html.escape(fields["email"])}"' in answer.text
            assert fields["password"] not in answer.text
        stale = admin.post("/dashboard/users", data={**fields, "csrf": "0" * 64})
        assert stale.status_code == 400 and _alert(stale) == "The form expired: try again."
        empty = _post(admin, MINE, role="", password="")
        assert empty.status_code == 400 and _alert(empty) == "$: give a role, a password, or both"
    assert _users(engine) == {ADMIN: "admin"}


def test_the_last_admin_is_neither_demoted_nor_removed_while_others_remain(
    engine: Engine,
) -> None:
    add_user(engine, ADMIN, "admin", PASSWORD)
    add_user(engine, "ana@shop.example", "viewer")
    api: dict[str, Any] = {"headers": bearer()}
    demoted = engine.client.put(f"{engine.url}/v1/users/{ADMIN}", json={"role": "editor"}, **api)
    assert demoted.status_code == 409 and demoted.json()["code"] == "last_admin"
    assert demoted.json()["message"] == (
        f"$.role: {ADMIN} is the last admin: make another user admin first (the secret key "
        "stays admin on the API)"
    )
    assert engine.client.delete(f"{engine.url}/v1/users/{ADMIN}", **api).status_code == 409
    with signed_in(engine, ADMIN, PASSWORD) as admin:
        for action, fields in ((MINE, {"role": "viewer"}), (f"{MINE}/remove", {})):
            refused = _post(admin, action, **fields)
            assert refused.status_code == 409 and "is the last admin" in _alert(refused)
    assert _users(engine) == {ADMIN: "admin", "ana@shop.example": "viewer"}
    # With a second admin the first may step down; the only user may go (a fresh install).
    promoted = engine.client.put(f"{engine.url}/v1/users/ana@shop.example",
                                 json={"role": "admin"}, **api)  # fmt: skip
    assert promoted.status_code == 200
    stepped = engine.client.put(f"{engine.url}/v1/users/{ADMIN}", json={"role": "viewer"}, **api)
    assert stepped.status_code == 200
    assert engine.client.delete(f"{engine.url}/v1/users/{ADMIN}", **api).status_code == 200
    assert engine.client.delete(f"{engine.url}/v1/users/ana@shop.example", **api).json() == {
        "email": "ana@shop.example", "deleted": True, "sessions_ended": 0}  # fmt: skip
    assert _users(engine) == {}


def test_only_admins_are_shown_the_users_page(engine: Engine) -> None:
    add_user(engine, ADMIN, "admin", PASSWORD)
    add_user(engine, "ed@shop.example", "editor", PASSWORD)
    with signed_in(engine, "ed@shop.example", PASSWORD) as editor:
        assert 'href="/dashboard/users"' not in editor.get("/dashboard").text
        denied = editor.get("/dashboard/users")
        assert denied.status_code == 403 and "the admin role" in page_text(denied.text)
    with signed_in(engine, ADMIN, PASSWORD) as admin:
        assert 'href="/dashboard/users"' in admin.get("/dashboard").text
        listed = page_text(admin.get("/dashboard/users").text)
        assert "ed@shop.example editor" in listed and f"{ADMIN} admin" in listed


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["laptop", "phone"])
def test_the_users_page_fits_a_laptop_and_a_phone(
    browser: Browser, engine: Engine, width: int, height: int
) -> None:
    add_user(engine, ADMIN, "admin", PASSWORD)
    add_user(engine, "a.very.long.name.for.a.viewer@agency.example.com", "viewer")
    page = browser.new_page(viewport={"width": width, "height": height}, is_mobile=width < 600)
    errors = watched(page)
    page.goto(f"{engine.url}/dashboard/login")
    page.fill("input[name=email]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("form:has(input[name=email]) button[type=submit]")
    page.click("nav a[href='/dashboard/users']")
    page.fill("form[action='/dashboard/users'] input[name=email]", "ana@shop.example")
    page.select_option("form[action='/dashboard/users'] select[name=role]", "editor")
    page.fill("form[action='/dashboard/users'] input[name=password]", "a long password 1")
    page.click("form[action='/dashboard/users'] button[type=submit]")
    assert "Added ana@shop.example" in page.inner_text("[role=status]")
    assert _users(engine)["ana@shop.example"] == "editor"
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    cut = page.evaluate("""() => [...document.querySelectorAll("table.users td")]
        .filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent.trim())""")
    assert cut == [], cut  # a long email wraps rather than running out of its cell
    shot(page, "dashboard", f"users-{width}")
    page.close()
    assert errors == []
