"""The dashboard's sign-in and sign-out.

A user signs in with their email and password (``edge.access.users``); the secret key signs in
too, as the break-glass admin, unless ``[access] secret_key_sign_in = false``. Either way the
answer is a session (``edge.access.sessions``) whose random token is the cookie (HttpOnly,
SameSite=Strict, ``sessions.HOURS`` hours). Failed sign-ins are throttled
(``edge.access.lockout``): a wrong password, an unknown email and a locked account answer alike
and take about as long, so the form never tells whether an email has an account.

The sign-in form carries a random CSRF token mirrored in a cookie (double submit); the
sign-out form one bound to the session (``edge.pages.frame.form_token``).
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from edge.access import lockout, sessions, users
from edge.pages import demo
from edge.pages.frame import (
    CSRF,
    SESSION,
    address,
    form,
    form_checked,
    key_digest,
    needing,
    page,
    same,
    session_of,
)

__all__ = ["login", "logout"]

WRONG = "Wrong email or password."
WRONG_KEY = "That is not the secret key."
KEY_OFF = "Signing in with the secret key is switched off here: use your email and password."


def _locked_message(what: str, seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    whose = "from your address" if what == "address" else "for this account"
    return f"Too many failed sign-ins {whose}: try again in {minutes} min."


async def _sign_in_form(request: Request, status: int = 200, error: str = "",
                        email: str = "") -> Response:  # fmt: skip
    """The sign-in form with a fresh CSRF token. With the break-glass sign-in on, the secret
    key's form comes first until the first user exists (a new install's way in), and a word
    about the demo shop when it is installed."""
    token = secrets.token_urlsafe(24)
    client = request.state.redis_sync
    shop = await demo.installed(request.state.redis)
    break_glass = request.state.settings.access.secret_key_sign_in
    accounts = await run_in_threadpool(client.hlen, users.USERS) if break_glass else 1
    response = page(request, "login.html", status, csrf=token, error=error, demo=shop,
                    email=email, break_glass=break_glass, key_first=not accounts)  # fmt: skip
    response.set_cookie(CSRF, token, httponly=True, samesite="strict", path="/dashboard")
    return response


def _signed_in(request: Request, token: str) -> Response:
    response = RedirectResponse("/dashboard", 303)
    response.set_cookie(SESSION, token, max_age=sessions.HOURS * 3600, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https",
                        path="/dashboard")  # fmt: skip
    response.delete_cookie(CSRF, path="/dashboard")
    return response


def _with_key(client: Any, settings: Any, key: str, where: str | None,
              agent: str) -> str | None:  # fmt: skip
    """The break-glass sign-in: a session token, or None (counted as a failure)."""
    if not same(key, settings.secret_key):
        lockout.fail(client, None, where)
        return None
    token, _ = sessions.open_session(client, "secret key", "bootstrap", agent, where or "",
                                     key_digest(settings.secret_key))  # fmt: skip
    return token


def _with_password(client: Any, email: str, password: str, where: str | None,
                   agent: str) -> tuple[str | None, str]:  # fmt: skip
    """A user's sign-in: (a session token, "") or (None, what to tell them)."""
    try:
        known: str | None = users.email_of(email)
    except ValueError:
        known = None
    what, left = lockout.locked(client, known, where)
    if left:
        lockout.fail(client, None, where)  # still guessing: counts against the address
        return None, _locked_message(what, left)
    record = users.find(client, known) if known else None
    if not users.verify(client, record, password) or record is None:
        lockout.fail(client, known, where)
        what, left = lockout.locked(client, known, where)
        return None, _locked_message(what, left) if left else WRONG
    lockout.clear(client, record.email)
    token, _ = sessions.open_session(client, record.email, "user", agent, where or "")
    return token, ""


async def login(request: Request) -> Response:
    try:
        return await _login(request)
    except redis.RedisError as exc:
        return page(request, "error.html", 503, message=f"Redis is unavailable: {exc}")


async def _login(request: Request) -> Response:
    if request.method == "GET":
        return await _sign_in_form(request)
    posted = await form(request)
    token = str(posted.get("csrf", ""))
    if not token or not same(token, request.cookies.get(CSRF, "")):
        return page(request, "login.html", 400, csrf="", error="The form expired: try again.",
                    break_glass=False)  # fmt: skip
    client, settings = request.state.redis_sync, request.state.settings
    where, agent = address(request), request.headers.get("user-agent", "")
    if "key" in posted and "email" not in posted:
        if not settings.access.secret_key_sign_in:
            return await _sign_in_form(request, error=KEY_OFF)
        what, left = await run_in_threadpool(lockout.locked, client, None, where)
        if left:
            return await _sign_in_form(request, error=_locked_message(what, left))
        opened = await run_in_threadpool(_with_key, client, settings, posted["key"], where, agent)
        return _signed_in(request, opened) if opened else await _sign_in_form(
            request, error=WRONG_KEY)  # fmt: skip
    email, password = str(posted.get("email", "")), str(posted.get("password", ""))
    opened, problem = await run_in_threadpool(_with_password, client, email, password, where,
                                              agent)  # fmt: skip
    if opened is None:
        return await _sign_in_form(request, error=problem, email=email[:254])
    return _signed_in(request, opened)


@needing("")
async def logout(request: Request) -> Response:
    if await form_checked(request, "logout") is None:
        return page(request, "error.html", 400, message="The form expired: try again.")
    record = session_of(request)
    if record is not None:
        await run_in_threadpool(sessions.revoke, request.state.redis_sync, record.id)
    response = RedirectResponse("/dashboard/login", 303)
    response.delete_cookie(SESSION, path="/dashboard")
    return response
