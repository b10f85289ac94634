"""Email templates (secret key): ``PUT/GET/DELETE /v1/templates/{key}``, ``GET /v1/templates``,
and ``POST /v1/templates/{key}/preview`` — the message as one person would get it.

A template is checked on the way in (``journeys.emails``): a 400 names the field and the line,
e.g. ``$.html: line 3: unexpected '}'``. A preview asks the engine's own API for the person's
recommendations and offer, as sending does, so it shows exactly what they would get (those
decisions are logged like any other).
"""

from __future__ import annotations

import httpx
import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import with_path
from edge.access import audit
from edge.api.auth import needs
from edge.api.responses import Problem, error, json, path_key
from journeys.actions import Api, ApiError
from journeys.emails import DEFS, TEMPLATE, EmailTemplate, delete_template, put_template
from journeys.links import link_secret
from journeys.mailer import Mailer, Ready, SendPolicy
from profiles.store import Snapshot

__all__ = ["PreviewAsk", "rendered_for", "routes"]


@needs("messaging:write")
async def put(request: Request) -> Response:
    key = path_key(request)
    try:
        template = TEMPLATE.decode(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_template", with_path(str(exc), of=EmailTemplate))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    client = request.state.redis_sync
    before = await audit.stored(request, "template", key)
    changed = await run_in_threadpool(put_template, client, key, template)
    await audit.changed(request, "template", key, before)
    return json({"key": key, "created": before is None, "changed": changed},
                201 if before is None else 200)  # fmt: skip


async def _template(request: Request, key: str) -> EmailTemplate:
    raw = await run_in_threadpool(request.state.redis_sync.hget, DEFS, key)
    if raw is None:
        raise Problem(404, "not_found", f"no template {key!r}")
    return TEMPLATE.decode(raw)


@needs("read")
async def get_one(request: Request) -> Response:
    key = path_key(request)
    return json({"key": key, **msgspec.to_builtins(await _template(request, key))})


@needs("read")
async def list_all(request: Request) -> Response:
    found = await run_in_threadpool(request.state.redis_sync.hgetall, DEFS)
    rows = [{"key": k.decode(), **msgspec.to_builtins(TEMPLATE.decode(v))}
            for k, v in sorted(found.items())]  # fmt: skip
    return json({"templates": rows})


@needs("messaging:write")
async def delete(request: Request) -> Response:
    key = path_key(request)
    before = await audit.stored(request, "template", key)
    if not await run_in_threadpool(delete_template, request.state.redis_sync, key):
        return error(404, "not_found", f"no template {key!r}")
    await audit.changed(request, "template", key, before)
    return json({"key": key, "deleted": True})


class PreviewAsk(msgspec.Struct, forbid_unknown_fields=True):
    person: str  # a profile id
    group: str | None = None  # the subscription group its unsubscribe link is for


_PREVIEW = msgspec.json.Decoder(PreviewAsk)


@needs("messaging:write")
async def preview(request: Request) -> Response:
    """The template rendered for ``person``: subject, preheader, HTML (links tracked) and text."""
    key = path_key(request)
    template = await _template(request, key)
    try:
        ask = _PREVIEW.decode(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=PreviewAsk))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    snapshot = await run_in_threadpool(request.state.profiles.read, ask.person)
    if not snapshot.exists:
        return error(404, "not_found", f"$.person: no profile {ask.person!r}")
    try:
        found = await run_in_threadpool(rendered_for, request, template, snapshot, ask.group)
    except ApiError as exc:
        return error(503 if exc.retry else 409, "blocks_unavailable", str(exc))
    return json({"key": key, "person": ask.person, **msgspec.to_builtins(found)})


def rendered_for(request: Request, template: EmailTemplate, snapshot: Snapshot,
                 group: str | None = None) -> Ready:  # fmt: skip
    """The template as the person would get it (``Mailer.render``: their blocks asked of the
    engine's own API, links tracked); blocking, so run it in a thread. ``ApiError`` when the
    blocks cannot be had. The preview and the dashboard's template page both show this."""
    settings = request.state.settings
    client = request.state.redis_sync
    with httpx.Client(timeout=10.0) as http:
        api = Api(str(request.base_url), settings.write_key, settings.secret_key, http)
        # links point where the engine's settings say, else where this request came in
        mailer = Mailer(client, settings.email, None, SendPolicy(), api, lambda: 0)
        return mailer.render(template, snapshot, "preview", group, link_secret(client))


routes = [
    Route("/v1/templates", list_all, methods=["GET"]),
    Route("/v1/templates/{key}/preview", preview, methods=["POST"]),
    Route("/v1/templates/{key}", put, methods=["PUT"]),
    Route("/v1/templates/{key}", get_one, methods=["GET"]),
    Route("/v1/templates/{key}", delete, methods=["DELETE"]),
]
