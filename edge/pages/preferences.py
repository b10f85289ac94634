"""The pages people reach from their email, behind signed per-person links (``journeys.links``):
no key, no cookie, the token is the whole authority.

- ``GET/POST /v1/preferences/{token}``: every subscription group with a toggle, and
  "unsubscribe from all email".
- ``POST /v1/unsubscribe/{token}``: RFC 8058 one-click (body ``List-Unsubscribe=One-Click``,
  urlencoded or multipart); a 200 as soon as it is recorded. ``GET`` on that URL only shows a
  button that makes the same POST: mail scanners fetch every link in a message, and a GET that
  unsubscribed would unsubscribe people who never clicked.
- ``GET/POST /v1/subscriptions/confirm/{token}``: the double opt-in confirmation (the GET shows
  the button, for the same reason).

A forged or mangled token, or one whose person is gone (erased), is a 404 page that says no
more than that the link is not valid.
"""

from __future__ import annotations

import email.parser
import email.policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from journeys import subscriptions as subs
from journeys.links import link_secret

__all__ = ["one_click", "routes"]

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "preferences"),
    autoescape=select_autoescape(default=True),
)
_MAX_FORM = 16 * 1024
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}  # the token is secret


def _page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _TEMPLATES.get_template(template).render(**context)
    return HTMLResponse(html, status, headers=_HEADERS)


def _invalid() -> HTMLResponse:
    return _page("invalid.html", 404, title="This link is not valid",
                 message="It may have been copied incompletely. Use the link in your latest "
                         "email.")  # fmt: skip


def _person(client: Any, token: str, kind: str) -> list[str] | None:
    """The token's parts (the person resolved through merges) if it is ours and they exist."""
    parts = subs.link_parts(client, token, kind)
    if parts is None:
        return None
    pid = subs.resolved(client, parts[0])
    return [pid, *parts[1:]] if subs.exists(client, pid) else None


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return b""
    return body


def one_click(content_type: str, body: bytes) -> bool:
    """Whether a POST body says ``List-Unsubscribe=One-Click`` (RFC 8058), urlencoded or as
    multipart/form-data (mail providers send either).

    Examples:
        >>> one_click("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click")
        True
        >>> one_click("application/x-www-form-urlencoded", b"List-Unsubscribe=Later")
        False
    """
    if content_type.startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            return False
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "List-Unsubscribe":
                payload = part.get_payload(decode=True)
                return isinstance(payload, bytes) and payload.strip() == b"One-Click"
        return False
    fields = parse_qsl(body.decode("utf-8", "replace"))
    return ("List-Unsubscribe", "One-Click") in fields


async def _preferences(request: Request, pid: str) -> str:
    """The person's preference page, linked from the other pages."""
    secret = await run_in_threadpool(link_secret, request.state.redis_sync)
    return subs.preferences_url(request.state.settings.email.public_url, secret, pid)


def _groups(client: Any, pid: str) -> list[dict[str, Any]]:
    held = subs.states(client, pid)
    shown = []
    for key, group in sorted(subs.groups(client).items()):
        state = held.get(key)
        shown.append({"key": key, "name": group.name, "channel": group.channel,
                      "description": group.description, "receives": group.receives(state),
                      "pending": state is not None and state.state == "pending"})  # fmt: skip
    return shown


def _save(client: Any, pid: str, checked: set[str]) -> int:
    """Each group to what its toggle says (only where that is a change); how many changed."""
    held = subs.states(client, pid)
    changed = 0
    for key, group in subs.groups(client).items():
        state = held.get(key)
        pending = state is not None and state.state == "pending"
        if key in checked and not group.receives(state):
            # The link came by email: following it proves the address, as a confirmation does.
            changed += subs.set_state(client, pid, key, "subscribed", "preferences").changed
        elif key not in checked and (group.receives(state) or pending):
            changed += subs.set_state(client, pid, key, "unsubscribed", "preferences").changed
    return changed


async def preferences(request: Request) -> Response:
    client = request.state.redis_sync
    found = await run_in_threadpool(_person, client, request.path_params["token"], "preferences")
    if found is None:
        return _invalid()
    pid = found[0]
    saved = ""
    if request.method == "POST":
        form = parse_qsl((await _body(request)).decode("utf-8", "replace"))
        if ("all", "email") in form:
            await run_in_threadpool(subs.unsubscribe_all, client, pid, "email", "preferences")
            saved = "You are unsubscribed from all email."
        else:
            checked = {v for k, v in form if k == "g"}
            await run_in_threadpool(_save, client, pid, checked)
            saved = "Your choices are saved."
    groups = await run_in_threadpool(_groups, client, pid)
    return _page("preferences.html", groups=groups, saved=saved)


async def unsubscribe(request: Request) -> Response:
    client = request.state.redis_sync
    found = await run_in_threadpool(_person, client, request.path_params["token"], "unsubscribe")
    if found is None:
        return _invalid()
    pid, key = found
    defined = await run_in_threadpool(subs.groups, client)
    if key != "*" and key not in defined:  # deleted since the mail went out: nothing to stop
        return _invalid()
    what = "email from us" if key == "*" else f"{defined[key].name}"
    context = {"what": what, "preferences": await _preferences(request, pid)}
    if request.method == "GET":
        return _page("unsubscribe.html", done=False, **context)
    body = await _body(request)
    if not one_click(request.headers.get("content-type", ""), body):
        return _page("invalid.html", 400, title="Nothing was changed",
                     message="An unsubscribe request carries List-Unsubscribe=One-Click (RFC "
                             "8058): use the button on this page.")  # fmt: skip
    if key == "*":
        await run_in_threadpool(subs.unsubscribe_all, client, pid, "email", "one_click")
    else:
        await run_in_threadpool(subs.set_state, client, pid, key, "unsubscribed", "one_click")
    return _page("unsubscribe.html", done=True, **context)


async def confirm(request: Request) -> Response:
    client = request.state.redis_sync
    found = await run_in_threadpool(_person, client, request.path_params["token"], "confirm")
    if found is None:
        return _invalid()
    pid, key = found
    defined = await run_in_threadpool(subs.groups, client)
    if key not in defined:
        return _invalid()
    context = {"name": defined[key].name, "preferences": await _preferences(request, pid)}
    if request.method == "GET":
        return _page("confirm.html", done=False, **context)
    await run_in_threadpool(subs.set_state, client, pid, key, "subscribed", "confirm")
    return _page("confirm.html", done=True, **context)


routes = [
    Route("/v1/preferences/{token}", preferences, methods=["GET", "POST"]),
    Route("/v1/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
    Route("/v1/subscriptions/confirm/{token}", confirm, methods=["GET", "POST"]),
]
