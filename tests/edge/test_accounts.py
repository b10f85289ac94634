"""Team accounts on the dashboard, against a real engine: users sign in with their email and
password, answers never tell whether an email has an account, wrong passwords lock an account
(and are logged), roles hold on every page, and sessions can be listed and revoked."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from edge.access import lockout, sessions
from edge.access.contact import HIDDEN
from edge.access.settings import AccessSettings
from edge.pages.signin import KEY_OFF, WRONG, WRONG_KEY
from tests.browser import shot, watched
from tests.conftest import SECRET_KEY, Engine
from tests.helpers import add_user, bearer, eventually, page_text, sign_in_form, signed_in

PASSWORD = "correct horse battery"


def _text(answer: httpx.Response) -> str:
    """A sign-in page's words, without its one-time CSRF token."""
    return re.sub(r'name="csrf" value="[^"]+"', "", answer.text)


def _alert(answer: httpx.Response) -> str:
    found = re.search(r'role="alert">([^<]+)<', answer.text)
    return found.group(1) if found else ""


def _attempt(engine: Engine, email: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=engine.url, follow_redirects=False, timeout=30) as client:
        return sign_in_form(client, email=email, password=password)


def test_a_user_signs_in_with_email_and_password_and_the_cookie_is_a_random_token(
    engine: Engine, r: Any
) -> None:
    add_user(engine, "Ada@Example.com", "editor", PASSWORD)
    with signed_in(engine, "ada@example.com", PASSWORD) as client:
        cookie = client.cookies["kairos_session"]
        assert "ada" not in cookie and PASSWORD not in cookie and "editor" not in cookie
        overview = client.get("/dashboard")
        assert overview.status_code == 200
        assert re.search(
            r'class="who"[^>]*>ada@example\.com <span class="role">editor', overview.text
        )
        stored = r.hgetall(sessions.SESSIONS)
        assert list(stored) == [sessions.session_id(cookie).encode()]  # the digest, not the token
        assert cookie.encode() not in b"".join(stored.values())
    hashed = r.hget("{access}:users", "ada@example.com")
    assert b"$argon2id$" in hashed and PASSWORD.encode() not in hashed


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(engine: Engine) -> None:
    add_user(engine, "ada@example.com", "viewer", PASSWORD)
    wrong = _attempt(engine, "ada@example.com", "not the password at all")
    unknown = _attempt(engine, "nobody@example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 200
    assert _alert(wrong) == _alert(unknown) == WRONG
    assert "kairos_session" not in wrong.cookies and "kairos_session" not in unknown.cookies
    # The page differs only in the email typed back into its field.
    assert _text(wrong).replace("ada@", "nobody@") == _text(unknown)


def test_five_wrong_passwords_lock_the_account_for_everyone_and_are_logged(
    engine: Engine, r: Any, caplog: pytest.LogCaptureFixture
) -> None:
    add_user(engine, "ada@example.com", "editor", PASSWORD)
    caplog.set_level(logging.WARNING, logger="kairos.access")
    answers = [_attempt(engine, "ada@example.com", f"hunter2-guess-{i}")
               for i in range(lockout.FAILURES)]  # fmt: skip
    assert [_alert(a) for a in answers[:-1]] == [WRONG] * (lockout.FAILURES - 1)
    locked = "Too many failed sign-ins for this account: try again in 15 min."
    assert _alert(answers[-1]) == locked
    right = _attempt(engine, "ada@example.com", PASSWORD)  # the right password: locked alike
    assert _alert(right) == locked and "kairos_session" not in right.cookies
    # An email without an account locks the same way: the lock tells nothing either.
    ghost = [_attempt(engine, "ghost@example.com", "hunter2-guess") for _ in range(5)]
    assert _alert(ghost[-1]) == locked
    lines = [rec for rec in caplog.records if rec.name == "kairos.access"]
    assert [(rec.levelno, rec.getMessage(), rec.email, rec.address) for rec in lines] == [
        (logging.WARNING, "dashboard account locked: too many wrong passwords", email,
         "127.0.0.1") for email in ("ada@example.com", "ghost@example.com")
    ]  # fmt: skip
    assert not any("hunter2" in str(vars(rec)) for rec in caplog.records)  # no password
    r.delete(*r.keys("{access}:locked:*"))  # the lock's 15 minutes, passed
    assert _attempt(engine, "ada@example.com", PASSWORD).status_code == 303


def test_failed_sign_ins_from_one_address_block_it(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    add_user(engine, "ada@example.com", "viewer", PASSWORD)
    caplog.set_level(logging.WARNING, logger="kairos.access")
    for i in range(lockout.ADDRESS_FAILURES):  # a different email each time: no account locks
        _attempt(engine, f"guess{i}@example.com", "wrong password")
    blocked = _attempt(engine, "ada@example.com", PASSWORD)
    assert _alert(blocked) == "Too many failed sign-ins from your address: try again in 15 min."
    with httpx.Client(base_url=engine.url, follow_redirects=False) as client:
        assert _alert(sign_in_form(client, key=SECRET_KEY)) == _alert(blocked)
    assert [rec.getMessage() for rec in caplog.records if rec.name == "kairos.access"] == [
        "dashboard sign-in blocked for an address: too many failed sign-ins"
    ]


def _person(engine: Engine) -> None:
    traits = {"email": "grace@example.com", "firstName": "Grace", "phone": "+1 555 0100",
              "plan": "pro"}  # fmt: skip
    assert engine.post("/v1/identify", {"userId": "grace", "traits": traits}).status_code == 200
    eventually(lambda: engine.client.get(f"{engine.url}/v1/profiles/user_id:grace",
                                         headers=bearer()).status_code == 200)  # fmt: skip


def test_roles_hold_on_every_page(engine: Engine) -> None:
    _person(engine)
    add_user(engine, "viewer@example.com", "viewer", PASSWORD)
    add_user(engine, "editor@example.com", "editor", PASSWORD)
    with signed_in(engine, "viewer@example.com", PASSWORD) as viewer:
        for path in ("/dashboard", "/dashboard/live", "/dashboard/broadcasts",
                     "/dashboard/templates", "/dashboard/sessions"):  # fmt: skip
            assert viewer.get(path).status_code == 200, path
        acted = viewer.post("/dashboard/broadcasts/spring/start", data={"csrf": "x"})
        assert acted.status_code == 403
        assert "needs the messaging:send scope: the editor or admin role" in page_text(acted.text)
        assert "You are signed in as viewer@example.com (viewer)" in page_text(acted.text)
        preview = viewer.get("/dashboard/templates", params={"key": "t", "person": "user_id:grace"})
        assert preview.status_code == 403 and "profiles:read" in preview.text
        shown = page_text(viewer.get("/dashboard/profiles", params={"id": "user_id:grace"}).text)
        assert "grace@example.com" not in shown and "Grace" not in shown and "555" not in shown
        assert f'"email": "{HIDDEN}"' in shown and f'"firstName": "{HIDDEN}"' in shown
        assert '"plan": "pro"' in shown and "Contact fields (email, phone" in shown
        by_email = page_text(
            viewer.get("/dashboard/profiles", params={"id": "email:grace@example.com"}).text
        )
        assert (
            "needs the profiles:read scope" in by_email
            and "grace@example.com" not in by_email.split("Look up")[1]
        )
    with signed_in(engine, "editor@example.com", PASSWORD) as editor:
        shown = page_text(
            editor.get("/dashboard/profiles", params={"id": "email:grace@example.com"}).text
        )
        assert '"email": "grace@example.com"' in shown and '"firstName": "Grace"' in shown
        assert HIDDEN not in shown
        acted = editor.post("/dashboard/broadcasts/spring/start", data={"csrf": "x"})
        assert acted.status_code == 400  # past the role: the form's token is what is wrong


def test_a_role_change_counts_from_the_next_page(engine: Engine) -> None:
    add_user(engine, "ada@example.com", "viewer", PASSWORD)
    with signed_in(engine, "ada@example.com", PASSWORD) as client:
        assert client.post("/dashboard/broadcasts/spring/pause").status_code == 403
        changed = engine.client.put(f"{engine.url}/v1/users/ada@example.com",
                                    json={"role": "editor"}, headers=bearer())  # fmt: skip
        assert changed.status_code == 200 and changed.json()["sessions_ended"] == 0
        assert client.post("/dashboard/broadcasts/spring/pause").status_code == 400
        assert 'class="role">editor' in client.get("/dashboard").text


def _revoke_form(page: str, id: str) -> str:
    found = re.search(rf'/dashboard/sessions/{id}/revoke">\s*<input type="hidden" name="csrf" '
                      r'value="([^"]+)"', page)  # fmt: skip
    assert found is not None, page
    return found.group(1)


def test_sessions_are_listed_and_a_revoked_one_ends_at_once(engine: Engine) -> None:
    add_user(engine, "ada@example.com", "editor", PASSWORD)
    add_user(engine, "bob@example.com", "viewer", PASSWORD)
    with (signed_in(engine, "ada@example.com", PASSWORD) as laptop,
          signed_in(engine, "ada@example.com", PASSWORD) as phone,
          signed_in(engine, "bob@example.com", PASSWORD) as bob,
          signed_in(engine) as admin):  # fmt: skip
        other = sessions.session_id(phone.cookies["kairos_session"])
        mine = laptop.get("/dashboard/sessions").text
        assert mine.count("/revoke") == 2 and "this one" in mine and "bob@" not in mine
        everyone = admin.get("/dashboard/sessions").text
        assert everyone.count("/revoke") == 4 and "bob@example.com" in everyone
        # Bob cannot end Ada's session, even with a token of his own page.
        refused = bob.post(f"/dashboard/sessions/{other}/revoke",
                           data={"csrf": _revoke_form(bob.get("/dashboard/sessions").text,
                                                      sessions.session_id(bob.cookies["kairos_session"]))})  # fmt: skip
        assert refused.status_code == 400
        assert laptop.post(f"/dashboard/sessions/{other}/revoke",
                           data={"csrf": "forged"}).status_code == 400  # fmt: skip
        done = laptop.post(f"/dashboard/sessions/{other}/revoke",
                           data={"csrf": _revoke_form(mine, other)})  # fmt: skip
        assert done.status_code == 303 and done.headers["location"] == "/dashboard/sessions"
        gone = phone.get("/dashboard")
        assert gone.status_code == 303 and gone.headers["location"] == "/dashboard/login"
        assert laptop.get("/dashboard").status_code == 200
        # Through the API (what `kairos users` and an admin's tools use).
        listed = engine.client.get(f"{engine.url}/v1/sessions", headers=bearer()).json()
        assert sorted(s["user"] for s in listed["sessions"]) == [
            "ada@example.com", "bob@example.com", "secret key"]  # fmt: skip
        assert all("key" not in s for s in listed["sessions"])
        bobs = next(s["id"] for s in listed["sessions"] if s["user"] == "bob@example.com")
        ended = engine.client.delete(f"{engine.url}/v1/sessions/{bobs}", headers=bearer())
        assert ended.json() == {"id": bobs, "deleted": True}
        assert bob.get("/dashboard").status_code == 303
        # Signing out ends the session in Redis too (a copied cookie is worth nothing after).
        cookie = laptop.cookies["kairos_session"]
        token = re.search(r'action="/dashboard/logout">\s*<input type="hidden" name="csrf" '
                          r'value="([^"]+)"', laptop.get("/dashboard").text)  # fmt: skip
        assert token is not None
        assert laptop.post("/dashboard/logout", data={"csrf": token.group(1)}).status_code == 303
        copied = httpx.get(f"{engine.url}/dashboard", cookies={"kairos_session": cookie})
        assert copied.status_code == 303


def test_removing_a_user_or_resetting_their_password_ends_their_sessions(engine: Engine) -> None:
    add_user(engine, "ada@example.com", "editor", PASSWORD)
    with signed_in(engine, "ada@example.com", PASSWORD) as client:
        reset = engine.client.put(f"{engine.url}/v1/users/ada@example.com",
                                  json={"password": "another long password"}, headers=bearer())  # fmt: skip
        assert reset.status_code == 200 and reset.json()["sessions_ended"] == 1
        assert client.get("/dashboard").headers["location"] == "/dashboard/login"
    assert _alert(_attempt(engine, "ada@example.com", PASSWORD)) == WRONG
    with signed_in(engine, "ada@example.com", "another long password") as client:
        removed = engine.client.delete(f"{engine.url}/v1/users/ada@example.com", headers=bearer())
        assert removed.json() == {"email": "ada@example.com", "deleted": True, "sessions_ended": 1}
        assert client.get("/dashboard").headers["location"] == "/dashboard/login"


def test_a_new_install_offers_the_secret_key_first_then_accounts(engine: Engine) -> None:
    fresh = engine.client.get(f"{engine.url}/dashboard/login").text
    assert fresh.index('name="key"') < fresh.index('name="email"')
    assert "No accounts yet" in fresh
    add_user(engine, "ada@example.com", "admin", PASSWORD)
    later = engine.client.get(f"{engine.url}/dashboard/login").text
    assert later.index('name="email"') < later.index('name="key"')
    with httpx.Client(base_url=engine.url, follow_redirects=False) as client:
        assert _alert(sign_in_form(client, key="sk_wrong")) == WRONG_KEY


def test_with_the_break_glass_sign_in_off_the_secret_key_signs_no_one_in(
    engine_factory: Any, settings: Any
) -> None:
    on = engine_factory(settings)
    off = engine_factory(settings, access=AccessSettings(secret_key_sign_in=False))
    form = off.client.get(f"{off.url}/dashboard/login").text
    assert 'name="key"' not in form and 'name="email"' in form
    with httpx.Client(base_url=off.url, follow_redirects=False) as client:
        refused = sign_in_form(client, key=SECRET_KEY)
        assert refused.status_code == 200 and _alert(refused) == KEY_OFF
        assert "kairos_session" not in client.cookies
    # A break-glass session made while it was on ends once it is off (same Redis).
    with signed_in(on) as client:
        cookie = client.cookies["kairos_session"]
        assert client.get("/dashboard").status_code == 200
        assert 'secret key <span class="role">admin' in client.get("/dashboard").text
    answer = httpx.get(f"{off.url}/dashboard", cookies={"kairos_session": cookie},
                       follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
    add_user(off, "ada@example.com", "admin", PASSWORD)
    with signed_in(off, "ada@example.com", PASSWORD) as client:
        assert client.get("/dashboard/sessions").status_code == 200


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["laptop", "phone"])
def test_a_user_signs_in_in_a_browser_and_the_header_says_who(
    browser: Browser, engine: Engine, width: int, height: int
) -> None:
    add_user(engine, "ada.lovelace@example.com", "viewer", PASSWORD)
    page = browser.new_page(viewport={"width": width, "height": height}, is_mobile=width < 600)
    errors = watched(page)
    page.goto(f"{engine.url}/dashboard")
    assert page.url.endswith("/dashboard/login")
    shot(page, "dashboard", f"accounts-login-{width}")
    page.fill("input[name=email]", "ada.lovelace@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("form:has(input[name=email]) button[type=submit]")
    assert page.url.endswith("/dashboard")
    assert page.inner_text("header a.who") == "ada.lovelace@example.com viewer"
    page.click("header a.who")
    assert page.url.endswith("/dashboard/sessions") and "this one" in page.inner_text("main")
    for path in ("/dashboard/sessions", "/dashboard/broadcasts/spring/start"):
        if path.endswith("start"):  # a viewer's 403 page, reached as a form would
            page.goto(f"{engine.url}/dashboard/broadcasts")
            page.evaluate(f"""() => {{ const f = document.createElement("form");
                f.method = "post"; f.action = "{path}"; document.body.append(f); f.submit(); }}""")
            page.wait_for_url(f"**{path}")
            assert "the editor or admin role" in page.inner_text("[role=alert]")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)
        shot(page, "dashboard", f"accounts-{path.rsplit('/', 1)[-1]}-{width}")
    page.close()
    assert errors == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ]
