"""The dashboard's sessions page: where the signed-in user is signed in (an admin: everyone),
each with a button that revokes it (``POST /dashboard/sessions/{id}/revoke``, a form with a
CSRF token bound to the session and the one it revokes). Revoking one's own current session
signs out."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from edge.access import audit, sessions
from edge.api.auth import principal
from edge.pages.frame import SESSION, form_checked, form_token, needing, page, session_of

__all__ = ["routes"]


def _mine(record: sessions.SessionRecord, who: Any) -> bool:
    return record.user == who.name and record.kind == who.kind


@needing("")
async def sessions_page(request: Request) -> Response:
    who, current = principal(request), session_of(request)
    everyone = who is not None and who.allows("admin")
    found = await run_in_threadpool(sessions.listed, request.state.redis_sync)
    rows = [{"session": s, "created": s.created * 1000, "seen": s.seen * 1000,
             "current": current is not None and s.id == current.id,
             "token": form_token(request, f"session:{s.id}:revoke")}
            for s in found if everyone or _mine(s, who)]  # fmt: skip
    return page(request, "sessions.html", rows=rows, everyone=everyone, section="sessions")


@needing("")
async def revoke(request: Request) -> Response:
    """End a session: one's own, or (an admin) anyone's; a stale form or someone else's
    session is a page that says so."""
    wanted = request.path_params["id"]
    if (
        not sessions.ID.fullmatch(wanted)
        or await form_checked(request, f"session:{wanted}:revoke") is None
    ):
        return page(request, "error.html", 400, message="The form expired: try again.")
    who, client = principal(request), request.state.redis_sync
    found = [s for s in await run_in_threadpool(sessions.listed, client) if s.id == wanted]
    if not found or not (_mine(found[0], who) or (who is not None and who.allows("admin"))):
        return page(request, "error.html", 404, message="No such session of yours.")
    await run_in_threadpool(sessions.revoke, client, wanted)
    await audit.record(request, "session", wanted, "delete", {"user": found[0].user}, None)
    current = session_of(request)
    if current is not None and current.id == wanted:
        response = RedirectResponse("/dashboard/login", 303)
        response.delete_cookie(SESSION, path="/dashboard")
        return response
    return RedirectResponse("/dashboard/sessions", 303)


routes = [
    Route("/dashboard/sessions", sessions_page),
    Route("/dashboard/sessions/{id}/revoke", revoke, methods=["POST"]),
]
