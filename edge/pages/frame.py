"""What every dashboard page shares: its templates, who is signed in, the guard that asks for a
scope, and the forms' CSRF tokens.

A page finds its session in Redis at every request (``edge.access.sessions``: the cookie
carries a random token) and its user too, so a revoked session, a removed user or a reset
password ends it at once and a role change counts from the next page. A break-glass session
(the secret key's) ends when ``[access] secret_key_sign_in`` is switched off or the key
changes. Who is signed in becomes the request's principal (``edge.api.auth.PRINCIPAL``): a
user's role (``edge.access.scopes.for_role``), or ``BREAK_GLASS``. A page that needs a scope
the role lacks is a 403 page that names the roles that have it.

Forms carry a CSRF token: HMAC-SHA256 under the secret key of the form's purpose and the
session's token, so another site's page cannot post it for a signed-in user.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import redis
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from collector.errors import QueryFailed, StoreUnavailable
from edge.access import sessions, users
from edge.access.scopes import ROLES, Principal, for_role
from edge.api.auth import PRINCIPAL
from edge.api.responses import Problem
from edge.pages.text import exact, plural, when

__all__ = ["BREAK_GLASS", "CSRF", "SESSION", "address", "form", "form_checked", "form_token",
           "forbidden", "guarded", "key_digest", "needing", "page", "roles_with", "same",
           "session_of", "sign"]  # fmt: skip

SESSION, CSRF = "kairos_session", "kairos_csrf"
BREAK_GLASS = Principal("secret key", "bootstrap", frozenset({"admin"}), role="admin")
_SESSION_RECORD = "kairos.session"  # the request's checked session (its scope)
_TOKEN = "kairos.session_token"
Endpoint = Callable[[Request], Awaitable[Response]]
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "dashboard"),
    autoescape=select_autoescape(default=True),
)
_TEMPLATES.globals.update(plural=plural, when=when, exact=exact)


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time equality of any two texts (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def key_digest(secret: str) -> str:
    """What a break-glass session remembers of the key that signed it in."""
    return sign(secret, "break-glass")[:16]


def roles_with(scope: str) -> list[str]:
    """The roles that hold ``scope``, least first.

    Examples:
        >>> roles_with("messaging:send"), roles_with("admin")
        (['editor', 'admin'], ['admin'])
    """
    return [role for role in ROLES if for_role("", role).allows(scope)]


def address(request: Request) -> str | None:
    """The client's address, as the per-IP rate limit counts it (a trusted proxy's
    X-Forwarded-For names it)."""
    forwarded = [v for n, v in request.scope["headers"] if n == b"x-forwarded-for"]
    found = request.state.limits.client_ip(request.scope, forwarded) if forwarded else None
    client = request.scope.get("client")
    return found or (client[0] if client else None)


def _find(client: redis.Redis, token: str, settings: Any) -> Any:
    """(session, principal) of a live session ``token`` opens, or None."""
    record = sessions.find(client, token)
    if record is None:
        return None
    if record.kind == "bootstrap":
        if not settings.access.secret_key_sign_in or not same(
            record.key, key_digest(settings.secret_key)
        ):
            return None
        who = BREAK_GLASS
    else:
        user = users.find(client, record.user)
        if user is None:
            return None
        who = for_role(user.email, user.role)
    sessions.touch(client, record)
    return record, who


async def _signed_in(request: Request) -> Principal | None:
    """Who the session cookie signs in (kept on the request), or None."""
    token = request.cookies.get(SESSION, "")
    found = await run_in_threadpool(_find, request.state.redis_sync, token,
                                    request.state.settings) if token else None  # fmt: skip
    if found is None:
        return None
    request.scope[_SESSION_RECORD], request.scope[PRINCIPAL] = found
    request.scope[_TOKEN] = token
    return found[1]  # type: ignore[no-any-return]


def session_of(request: Request) -> sessions.SessionRecord | None:
    """The checked request's session."""
    return request.scope.get(_SESSION_RECORD)


def form_token(request: Request, purpose: str) -> str:
    """The CSRF token of a form for ``purpose`` (e.g. ``broadcast:spring:pause``): bound to the
    session, so another site's page cannot post it for a signed-in user."""
    return sign(request.state.settings.secret_key, f"{purpose}:{request.scope.get(_TOKEN)}")


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form (the dashboard's forms are no more than that)."""
    body = await request.body()
    if len(body) > 4096:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace")))


async def form_checked(request: Request, purpose: str) -> dict[str, str] | None:
    """The posted form if its CSRF token is ``form_token``'s for ``purpose``, else None."""
    found = await form(request)
    return found if same(str(found.get("csrf", "")), form_token(request, purpose)) else None


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    who = request.scope.get(PRINCIPAL) if _TOKEN in request.scope else None
    token = form_token(request, "logout") if who else ""
    html = _TEMPLATES.get_template(template).render(signed_in=who is not None, who=who,
                                                    logout_token=token, **context)  # fmt: skip
    return HTMLResponse(html, status, headers={"Cache-Control": "no-store"})


def forbidden(request: Request, scope: str) -> HTMLResponse:
    """The 403 page: what the signed-in user's role lacks, and which roles have it."""
    return page(request, "forbidden.html", 403, scope=scope, roles=roles_with(scope))


def needing(scope: str) -> Callable[[Endpoint], Endpoint]:
    """Guard a dashboard page with ``scope`` ("": any signed-in user): not signed in, to the
    sign-in form; signed in without it, the 403 page. The scope is the endpoint's ``needs``
    attribute too, as for the API's routes."""

    def guard(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            try:
                who = await _signed_in(request)
            except redis.RedisError as exc:
                return page(request, "error.html", 503, message=f"Redis is unavailable: {exc}")
            if who is None:
                return RedirectResponse("/dashboard/login", 303)
            if scope and not who.allows(scope):
                return forbidden(request, scope)
            try:
                return await endpoint(request)
            except (StoreUnavailable, QueryFailed) as exc:
                return page(request, "error.html", 503,
                            message=f"The event store is unavailable: {exc}")  # fmt: skip
            except Problem as exc:  # the audit log could not take a change (audit_unavailable)
                return page(request, "error.html", exc.status, message=exc.message)

        guarded.needs = scope  # type: ignore[attr-defined]
        return guarded

    return guard


guarded = needing("read")  # the pages of results and definitions: every role
