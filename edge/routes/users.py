"""Dashboard users and their sessions (the ``admin`` scope): ``GET/POST /v1/users``,
``PUT/DELETE /v1/users/{email}``, ``GET /v1/sessions`` and ``DELETE /v1/sessions/{id}``.
Demoting or removing the last admin while other users remain is a 409 ``last_admin``.

What ``kairos users`` calls, so that every change goes through here (``edge.access.users``,
``edge.access.sessions``) and into the audit log. No answer and no audit entry carries a
password or its hash; a session is named by its id, which signs no one in.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import with_path
from edge.access import audit, sessions, users
from edge.api.auth import needs
from edge.api.responses import Problem, error, json

__all__ = ["ASK", "CHANGE", "audited", "decoded", "routes"]

ASK = msgspec.json.Decoder(users.UserAsk)
CHANGE = msgspec.json.Decoder(users.UserChange)
_SHORT = f"$.password: at least {users.MIN_PASSWORD} characters"


def decoded(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """The body as the decoder's type, or a 400 ``Problem`` that names the field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = with_path(str(exc), of=decoder.type)
        if text.startswith("$.password: Expected `str` of length >="):
            text = _SHORT
        elif text.startswith("$.email: Expected `str`"):
            text = "$.email: not an email address (name@domain, up to 254 characters)"
        raise Problem(400, "invalid_user", text) from None
    except msgspec.DecodeError as exc:
        raise Problem(400, "invalid_json", f"$: {exc}") from None


def _email(request: Request) -> str:
    try:
        return users.email_of(request.path_params["email"])
    except ValueError as exc:
        raise Problem(400, "invalid_email", str(exc)) from None


def audited(record: users.UserRecord | None) -> dict[str, Any] | None:
    """What the audit log keeps of a user: never the password's hash."""
    if record is None:
        return None
    return {"email": record.email, "role": record.role, "password_changed": record.password_changed}


def _shown(record: users.UserRecord, live: list[sessions.SessionRecord]) -> dict[str, Any]:
    return {"email": record.email, "role": record.role, "created": record.created,
            "password_changed": record.password_changed,
            "sessions": sum(1 for s in live if s.user == record.email)}  # fmt: skip


@needs("admin")
async def list_users(request: Request) -> Response:
    client = request.state.redis_sync
    found = await run_in_threadpool(users.listed, client)
    live = await run_in_threadpool(sessions.listed, client)
    return json({"users": [_shown(u, live) for u in found]})


@needs("admin")
async def add_user(request: Request) -> Response:
    ask = decoded(ASK, await request.body())
    try:
        record = await run_in_threadpool(users.add, request.state.redis_sync, ask)
    except ValueError as exc:
        return error(400, "invalid_user", str(exc))
    except KeyError:
        return error(409, "exists", f"$.email: {users.email_of(ask.email)!r} has an account "
                     "already: PUT /v1/users/{email} changes its role or password")  # fmt: skip
    await audit.record(request, "user", record.email, "create", None, audited(record))
    return json(_shown(record, []), 201)


@needs("admin")
async def change_user(request: Request) -> Response:
    email = _email(request)
    ask = decoded(CHANGE, await request.body())
    before = await run_in_threadpool(users.find, request.state.redis_sync, email)
    try:
        found = await run_in_threadpool(users.change, request.state.redis_sync, email, ask)
    except ValueError as exc:
        return error(400, "invalid_user", str(exc))
    except users.LastAdmin as exc:
        return error(409, "last_admin", f"$.role: {exc}")
    if found is None:
        return error(404, "not_found", f"no user {email!r}")
    record, ended = found
    await audit.record(request, "user", email, "update", audited(before), audited(record))
    live = await run_in_threadpool(sessions.listed, request.state.redis_sync, email)
    return json({**_shown(record, live), "sessions_ended": ended})


@needs("admin")
async def remove_user(request: Request) -> Response:
    email = _email(request)
    try:
        found = await run_in_threadpool(users.remove, request.state.redis_sync, email)
    except users.LastAdmin as exc:
        return error(409, "last_admin", str(exc))
    if found is None:
        return error(404, "not_found", f"no user {email!r}")
    await audit.record(request, "user", email, "delete", audited(found[0]), None)
    return json({"email": email, "deleted": True, "sessions_ended": found[1]})


@needs("admin")
async def list_sessions(request: Request) -> Response:
    """Every live session (``?user=`` one user's), the newest first."""
    user = request.query_params.get("user")
    found = await run_in_threadpool(sessions.listed, request.state.redis_sync,
                                    user.strip().lower() if user else None)  # fmt: skip
    shown = [{k: v for k, v in msgspec.to_builtins(s).items() if k != "key"} for s in found]
    return json({"sessions": shown})


@needs("admin")
async def revoke_session(request: Request) -> Response:
    wanted = request.path_params["id"]
    if not sessions.ID.fullmatch(wanted):
        message = f"$.id: a session id is {sessions.ID_LENGTH} hex digits; got {wanted[:80]!r}"
        return error(400, "invalid_id", message)
    ended = await run_in_threadpool(sessions.revoke, request.state.redis_sync, wanted)
    if ended is None:
        return error(404, "not_found", f"no session {wanted!r} (ended, or never made)")
    await audit.record(request, "session", wanted, "delete", {"user": ended.user}, None)
    return json({"id": wanted, "deleted": True})


routes = [
    Route("/v1/users", list_users, methods=["GET"]),
    Route("/v1/users", add_user, methods=["POST"]),
    Route("/v1/users/{email}", change_user, methods=["PUT"]),
    Route("/v1/users/{email}", remove_user, methods=["DELETE"]),
    Route("/v1/sessions", list_sessions, methods=["GET"]),
    Route("/v1/sessions/{id}", revoke_session, methods=["DELETE"]),
]
