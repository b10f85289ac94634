"""The dashboard's messaging pages: email templates with a preview for one person, and
broadcasts with their progress and results.

``/dashboard/templates`` lists every template; ``?key=`` picks one and ``&person=`` (a profile
id or an identity, as the profile lookup takes) renders it for that person as sending would
(``edge.routes.templates.rendered_for``: their recommendations and offer from the engine's own
API). The HTML is shown in a sandboxed ``<iframe srcdoc>`` without scripts, with its open pixels
taken out and its links made inert, so looking at a preview counts as no open, no click and
rewards no recommendation strategy (the offer's decision is logged, as for the API's preview).

``/dashboard/broadcasts`` lists every broadcast with its status and a progress bar; ``?key=``
adds its results (``journeys.reports.broadcast_results``): what the messages of each group
became and, with a goal, the lift against the holdout; and the buttons its status allows
(start, pause, resume, cancel: ``POST /dashboard/broadcasts/{key}/{action}``, each form with a
CSRF token bound to the session and the action; the ``messaging:send`` scope, the editor's and
the admin's). A preview for a person needs ``profiles:read`` too: it shows their data.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from collector.errors import QueryFailed, StoreUnavailable
from edge.access import audit
from edge.api.auth import holds
from edge.pages import charts
from edge.pages.frame import forbidden, form_checked, form_token, guarded, needing, page
from edge.routes.profiles import NotFound, find_profile
from edge.routes.templates import rendered_for
from journeys.actions import ApiError
from journeys.broadcasts import ACTIONS, Broadcast, broadcasts, control, state_of
from journeys.broadcasts import DEFS as BROADCASTS
from journeys.emails import templates
from journeys.reports import broadcast_results
from profiles.membership import member_key

__all__ = ["progress", "routes"]


@guarded
async def templates_page(request: Request) -> Response:
    found = await run_in_threadpool(templates, request.state.redis_sync)
    key = request.query_params.get("key", "").strip()
    wanted = request.query_params.get("person", "").strip()
    chosen, preview, problem, status = found.get(key), None, None, 200
    if wanted and not holds(request, "profiles:read"):
        return forbidden(request, "profiles:read")
    if key and chosen is None:
        problem, status = f"No template {key!r}.", 404
    elif chosen is not None and wanted:
        try:
            snapshot = await run_in_threadpool(find_profile, request.state.profiles, wanted)
            ready = await run_in_threadpool(rendered_for, request, chosen, snapshot)
            preview = {"subject": ready.subject, "preheader": ready.preheader,
                       "html": inert(ready.html, _public(request)), "text": ready.text}  # fmt: skip
        except (ValueError, NotFound) as exc:
            problem = f"{exc}."
        except ApiError as exc:
            problem = f"The template's blocks are unavailable: {exc}."
        except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError) as exc:
            # a template is data an editor typed: it may fail for this person's data
            problem = f"The template does not render for this person: {exc}."
    rows = [{"key": k, "template": t} for k, t in sorted(found.items())]
    return page(request, "templates.html", status, templates=rows, key=key, chosen=chosen,
                 wanted=wanted, preview=preview, problem=problem,
                 section="templates")  # fmt: skip


def _public(request: Request) -> str:
    """Where the links of a rendered message point: as ``Mailer.public_url`` has it."""
    settings = request.state.settings
    return (settings.email.public_url or str(request.base_url)).rstrip("/")


_BASE = '<base target="_blank">'


def inert(html: str, public: str) -> str:
    """``html`` for looking at: no image of the engine's own API (the open pixels: the
    message's, and the recommendations block's, which rewards its strategy), and every link
    opening a new window, which the sandbox (no ``allow-popups``) refuses.

    Examples:
        >>> inert('<p>Hi</p><img src="https://e.x/v1/m/o/t.gif" width="1">'
        ...       '<img src="https://shop.x/a.png">', "https://e.x")
        '<base target="_blank"><p>Hi</p><img src="https://shop.x/a.png">'
    """
    own = re.compile(r"""<img\b[^>]*\bsrc\s*=\s*(["'])""" + re.escape(public) + r"/v1/[^>]*>",
                     re.IGNORECASE)  # fmt: skip
    return _BASE + own.sub("", html)


def progress(state: dict[str, str], audience: int) -> dict[str, Any]:
    """A broadcast's progress (``state_of``) as counts and as shares of the bar: fed to the
    outbox, held out and queued, of the segment's ``audience`` now (the rest: not read yet).

    Examples:
        >>> found = progress({"status": "sending", "scanned": "8", "fed": "5", "held_out": "1",
        ...                   "pending": "2"}, 10)
        >>> found["bar"]
        [('fed', 50.0), ('held_out', 10.0), ('pending', 20.0)]
    """
    counts = {name: int(state.get(name, 0)) for name in ("scanned", "held_out", "fed",
                                                         "pending")}  # fmt: skip
    total = max(audience, counts["scanned"], 1)
    bar = [(name, round(100 * counts[name] / total, 1)) for name in ("fed", "held_out",
                                                                     "pending")]  # fmt: skip
    return {"status": state["status"], **counts, "audience": audience,
            "bar": [(name, share) for name, share in bar if share > 0]}  # fmt: skip


def _listed(client: Any) -> list[dict[str, Any]]:
    rows = []
    for key, broadcast in sorted(broadcasts(client).items()):
        audience = int(client.scard(member_key(broadcast.segment)))
        rows.append({"key": key, "broadcast": broadcast,
                     "progress": progress(state_of(client, key), audience)})  # fmt: skip
    return rows


_ORDER = {"treated": 1, "holdout": 2}  # variants first (by name), then treated, the holdout last


def _groups(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"group": name, **found[name]}
            for name in sorted(found, key=lambda g: (_ORDER.get(g, 0), g))]  # fmt: skip


async def _results(request: Request, key: str, broadcast: Broadcast,
                   state: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    started = int(state["started_at"]) if "started_at" in state else None
    try:
        found = await run_in_threadpool(broadcast_results, request.state.store, key, broadcast,
                                        started)  # fmt: skip
    except (StoreUnavailable, QueryFailed) as exc:
        return {"problem": f"The results are unavailable: the event store does not answer "
                           f"({exc}). The progress above is up to date."}  # fmt: skip
    chart = charts.holdout_lift(
        found["lift"],
        f"{broadcast.name or key}: conversion lift against the holdout, 95% interval (points)",
    )
    measured = any(g["vsHoldout"] for g in found["lift"])
    return {"results": found, "groups": _groups(found["groups"]),
            "lift_chart": chart if measured else None}  # fmt: skip


@guarded
async def broadcasts_page(request: Request) -> Response:
    client = request.state.redis_sync
    rows = await run_in_threadpool(_listed, client)
    key = request.query_params.get("key", "").strip()
    chosen = next((row for row in rows if row["key"] == key), None)
    shown: dict[str, Any] = {}
    status = 200
    if key and chosen is None:
        shown, status = {"problem": f"No broadcast {key!r}."}, 404
    elif chosen is not None:
        state = await run_in_threadpool(state_of, client, key)
        shown = await _results(request, key, chosen["broadcast"], state)
        allowed = _ALLOWED.get(state["status"], ()) if holds(request, "messaging:send") else ()
        shown["actions"] = [(action, form_token(request, f"broadcast:{key}:{action}"))
                            for action in allowed]  # fmt: skip
    return page(request, "broadcasts.html", status, broadcasts=rows, key=key, chosen=chosen,
                 section="broadcasts", **shown)  # fmt: skip


_ALLOWED = {"draft": ("start", "cancel"), "scanning": ("pause", "cancel"),
            "sending": ("pause", "cancel"), "paused": ("resume", "cancel")}  # fmt: skip


def _acting(action: str) -> Any:
    @needing("messaging:send")
    async def act(request: Request) -> Response:
        """Start, pause, resume or cancel the broadcast (``journeys.broadcasts.control``), then
        back to its page; a form without its token, or an action its status does not allow,
        is a page that says so."""
        key = request.path_params["key"]
        if await form_checked(request, f"broadcast:{key}:{action}") is None:
            return page(request, "error.html", 400, message="The form expired: try again.")
        client = request.state.redis_sync
        if not await run_in_threadpool(client.hexists, BROADCASTS, key):
            return page(request, "error.html", 404, message=f"No broadcast {key!r}.")
        was = (await run_in_threadpool(state_of, client, key))["status"]
        try:
            status = await run_in_threadpool(control, client, key, action,
                                             int(time.time() * 1000))  # fmt: skip
        except ValueError as exc:
            return page(request, "error.html", 409, message=f"Not done: {exc}.")
        await audit.record(request, "broadcast", key, action, {"status": was}, {"status": status})
        return RedirectResponse(f"/dashboard/broadcasts?key={quote(key)}", 303)

    return act


routes = [
    Route("/dashboard/templates", templates_page),
    Route("/dashboard/broadcasts", broadcasts_page),
    *(
        Route(f"/dashboard/broadcasts/{{key}}/{action}", _acting(action), methods=["POST"])
        for action in ACTIONS
    ),
]
