"""The dashboard's users page (the admin role): ``/dashboard/users`` lists every user with their
role, live sessions and when their password last changed, and its forms add a user, change a
role, set a new password and remove a user.

The forms go through the same checks and messages as ``/v1/users`` (``edge.routes.users``) and
into the audit log (via ``dashboard``). A new password or a removal ends that user's sessions; a
role change counts from their next page. The last admin cannot be demoted or removed while other
users remain: the page says so and changes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from edge.access import audit, sessions, users
from edge.access.scopes import ROLES
from edge.api.responses import Problem
from edge.pages.frame import form_checked, form_token, needing, page
from edge.routes.users import ASK, CHANGE, audited, decoded

__all__ = ["routes"]

_DONE = {"added": "Added {email}: they sign in at /dashboard/login.",
         "changed": "Changed {email}: a new role counts from their next page.",
         "reset": "New password for {email}: their sessions ended.",
         "removed": "Removed {email}: their sessions ended."}  # fmt: skip
_EXPIRED = "The form expired: try again."


async def _page(request: Request, status: int = 200, problem: str | None = None,
                asked: dict[str, str] | None = None) -> Response:  # fmt: skip
    """The users page, with ``problem`` in its alert (and the add form refilled from
    ``asked``, never its password)."""
    client = request.state.redis_sync
    found = await run_in_threadpool(users.listed, client)
    live = await run_in_threadpool(sessions.listed, client)
    rows = [{"user": u, "created": u.created * 1000, "changed": u.password_changed * 1000,
             "sessions": sum(1 for s in live if s.user == u.email),
             "change": form_token(request, f"user:{u.email}:change"),
             "remove": form_token(request, f"user:{u.email}:remove")}
            for u in found]  # fmt: skip
    done = _DONE.get(request.query_params.get("done", ""))
    said = done.format(email=request.query_params.get("email", "")) if done else None
    return page(request, "users.html", status, rows=rows, roles=ROLES, problem=problem,
                said=said, asked=asked or {}, add_token=form_token(request, "user:add"),
                minimum=users.MIN_PASSWORD, section="users")  # fmt: skip


def _back(done: str, email: str) -> Response:
    return RedirectResponse("/dashboard/users?" + urlencode({"done": done, "email": email}), 303)


def _email(request: Request) -> str | None:
    try:
        return users.email_of(request.path_params["email"])
    except ValueError:
        return None


@needing("admin")
async def users_page(request: Request) -> Response:
    return await _page(request)


@needing("admin")
async def add(request: Request) -> Response:
    fields = await form_checked(request, "user:add")
    if fields is None:
        return await _page(request, 400, _EXPIRED)
    asked = {name: fields.get(name, "").strip() for name in ("email", "role")}
    try:
        ask = decoded(ASK, msgspec.json.encode({**asked, "password": fields.get("password", "")}))
        record = await run_in_threadpool(users.add, request.state.redis_sync, ask)
    except Problem as exc:
        return await _page(request, exc.status, exc.message, asked)
    except ValueError as exc:
        return await _page(request, 400, str(exc), asked)
    except KeyError:
        return await _page(request, 409, f"{asked['email']} has an account already: change its "
                           "role or password in its row", asked)  # fmt: skip
    await audit.record(request, "user", record.email, "create", None, audited(record))
    return _back("added", record.email)


@needing("admin")
async def change(request: Request) -> Response:
    """A new role, a new password, or both (an empty password field keeps the password)."""
    email = _email(request)
    fields = await form_checked(request, f"user:{email}:change") if email else None
    if email is None or fields is None:
        return await _page(request, 400, _EXPIRED)
    wanted: dict[str, Any] = {"role": fields.get("role") or None}
    if fields.get("password"):
        wanted["password"] = fields["password"]
    client = request.state.redis_sync
    before = await run_in_threadpool(users.find, client, email)
    try:
        ask = decoded(CHANGE, msgspec.json.encode(wanted))
        found = await run_in_threadpool(users.change, client, email, ask)
    except Problem as exc:
        return await _page(request, exc.status, exc.message)
    except ValueError as exc:
        return await _page(request, 400, str(exc))
    except users.LastAdmin as exc:
        return await _page(request, 409, str(exc))
    if found is None:
        return await _page(request, 404, f"No user {email}.")
    await audit.record(request, "user", email, "update", audited(before), audited(found[0]))
    return _back("reset" if ask.password is not None else "changed", email)


@needing("admin")
async def remove(request: Request) -> Response:
    email = _email(request)
    if email is None or await form_checked(request, f"user:{email}:remove") is None:
        return await _page(request, 400, _EXPIRED)
    try:
        found = await run_in_threadpool(users.remove, request.state.redis_sync, email)
    except users.LastAdmin as exc:
        return await _page(request, 409, str(exc))
    if found is None:
        return await _page(request, 404, f"No user {email}.")
    await audit.record(request, "user", email, "delete", audited(found[0]), None)
    return _back("removed", email)


routes = [
    Route("/dashboard/users", users_page),
    Route("/dashboard/users", add, methods=["POST"]),
    Route("/dashboard/users/{email}", change, methods=["POST"]),
    Route("/dashboard/users/{email}/remove", remove, methods=["POST"]),
]
