"""Recommendations for email systems (secret key), and the links in what they send (no key).

    GET  /v1/recommendations/{id}?placement=&n=            {decisionId, placement, strategy,
                                                           items: [{id, name, url, …}]}
    GET  /v1/recommendations/{id}/render?placement=&n=&template=   the same with ``html`` (an
                                                           email-safe block) and ``text``
    POST /v1/recommendations/batch                         up to 1,000 recipients per call
    POST /v1/recommendations/refresh                       202: the candidate lists are
                                                           recomputed at the worker's next pass
    GET  /v1/r/{decisionId}/{itemId}?to=URL                "Decision Clicked", then 302 to URL
    GET  /v1/o/{decisionId}.gif                            "Email Opened", a 1×1 GIF

``{id}`` takes the profile API's forms (a profile id, ``user_id:…``, ``email:…``, …). Someone the
engine does not know yet gets the shop-wide choice. The placement must be a
recommendation placement: its bandit picks the strategy, the decision is logged with its items
like any other (``/v1/decide`` serves the same placement to pages).

Every item ``url`` is the click-tracking redirect; it sends the reader only to the item's own
URL (``to`` must be it: no open redirect) and records "Decision Clicked" with the decision and
item ids, which rewards the strategy. The rendered HTML carries the open pixel. Templates live
in ``edge/routes/email`` (``grid``, ``list``): jinja2, autoescaped, inline styles only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
import redis
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from collector import wire
from collector.errors import with_path
from collector.store import QueryFailed, StoreUnavailable
from decisions.choice import Decider, Decision, UnknownPlacement
from decisions.placements import KEY
from decisions.records import plain_shape, signed_shape
from edge.access import audit
from edge.api.auth import needs
from edge.api.responses import Problem, error, json
from edge.routes.profiles import parse_identity
from profiles.products import ITEM, ITEMS
from profiles.strategies import RECS, request_refresh

__all__ = ["TEMPLATES", "routes"]

log = logging.getLogger("kairos.recommendations")

MAX_RECIPIENTS = 1_000
MAX_ITEMS = 50
_DIR = Path(__file__).parent / "email"
TEMPLATES = sorted(p.stem for p in _DIR.glob("*.html"))
_ENV = Environment(
    loader=FileSystemLoader(_DIR),
    autoescape=select_autoescape(enabled_extensions=("html",), disabled_extensions=("txt",)),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["money"] = lambda price, currency: (
    f"{price:,.2f} {currency}" if currency and currency != "USD" else f"${price:,.2f}"
)
_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE = {"Cache-Control": "no-store, max-age=0"}
# The decision log's row, found through the time the id carries (the table is ordered by
# placement and time): a point read, not a scan.
_FIND = """
SELECT placement, anonymousId, userId, items FROM decisions
WHERE decisionId = {id:String}
  AND timestamp BETWEEN fromUnixTimestamp64Milli({start:Int64})
                    AND fromUnixTimestamp64Milli({end:Int64}) LIMIT 1"""
_SLACK_MS = 60_000


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    placement: Annotated[str, msgspec.Meta(pattern=f"^{KEY.pattern}$")]
    recipients: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=500)]],
        msgspec.Meta(min_length=1, max_length=MAX_RECIPIENTS),
    ]
    n: Annotated[int, msgspec.Meta(ge=1, le=MAX_ITEMS)] | None = None
    template: str | None = None


BATCH = msgspec.json.Decoder(Batch)


# -- choosing --


def _identities(raw: str) -> list[tuple[str, str]]:
    try:
        identity = parse_identity(raw)
    except ValueError as exc:
        raise Problem(400, "invalid_profile_id", f"$.id: {exc}") from None
    kind, _, value = (identity or f"profile:{raw}").partition(":")
    return [(kind, value)]


def _check(request: Request, placement: str) -> None:
    """``placement`` must be a recommendation placement this process knows."""
    decider: Decider = request.state.recommender
    if not decider.catalog.loaded:
        raise Problem(503, "unavailable", "placements not loaded yet", headers={"Retry-After": "1"})
    slot = decider.catalog.slots.get(placement)
    if slot is None:
        raise Problem(404, "unknown_placement", f"$.placement: no placement {placement!r}")
    if slot.placement.recommend is None:
        raise Problem(400, "invalid_request",
                      f"$.placement: {placement!r} is not a recommendation placement "
                      "(it has no `recommend` section)")  # fmt: skip


async def _decide(request: Request, recipient: str, placement: str, n: int | None) -> Decision:
    """The placement's decision for ``recipient`` (a ``Problem`` when there is none)."""
    try:
        decided = await request.state.recommender.decide_for(
            _identities(recipient), [placement], n=n
        )
    except UnknownPlacement:  # deleted since the check
        raise Problem(404, "unknown_placement", f"$.placement: no placement {placement!r}")
    decision = decided[placement]
    if decision.fallback == "suppressed":
        raise Problem(404, "not_found", f"no profile {recipient} (erased)")
    if decision.fallback in ("redis_unavailable", "timeout", "catalog_unavailable"):
        raise Problem(503, "unavailable", f"recommendations are unavailable ({decision.fallback})",
                      headers={"Retry-After": "1"})  # fmt: skip
    return decision


def _answer(request: Request, placement: str, decision: Decision) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    items = [
        {**item, "url": f"{base}/v1/r/{decision.decision_id}/{quote(item['id'], safe='')}"
                        f"?to={quote(item['url'], safe='')}"}
        for item in decision.items or []
    ]  # fmt: skip
    return {"decisionId": decision.decision_id, "placement": placement,
            "strategy": decision.strategy, "variant": decision.variant,
            "propensity": decision.propensity, "fallback": decision.fallback,
            "items": items}  # fmt: skip


def _rendered(request: Request, answer: dict[str, Any], template: str) -> dict[str, Any]:
    slot = request.state.recommender.catalog.slots.get(answer["placement"])
    title = (slot.placement.name if slot else "") or "Recommended for you"
    base = str(request.base_url).rstrip("/")
    variables = {**answer, "title": title, "pixel": f"{base}/v1/o/{answer['decisionId']}.gif"}
    return {
        **answer,
        "html": _ENV.get_template(f"{template}.html").render(variables),
        "text": _ENV.get_template(f"{template}.txt").render(variables),
    }


def _parameters(request: Request) -> tuple[str, int | None]:
    query = request.query_params
    placement = query.get("placement", "")
    if not KEY.fullmatch(placement):
        raise Problem(400, "invalid_request", "$.placement: required, a placement key")
    n = query.get("n")
    if n is not None and not (n.isdecimal() and 1 <= int(n) <= MAX_ITEMS):
        raise Problem(400, "invalid_request", f"$.n: a whole number from 1 to {MAX_ITEMS}")
    return placement, int(n) if n is not None else None


def _template(name: str | None) -> str:
    if name not in TEMPLATES:
        raise Problem(400, "invalid_request",
                      f"$.template: one of {', '.join(TEMPLATES)}, got {name!r}")  # fmt: skip
    return name


@needs("recommendations")
async def recommendations(request: Request) -> Response:
    placement, n = _parameters(request)
    _check(request, placement)
    decision = await _decide(request, request.path_params["id"], placement, n)
    return json(_answer(request, placement, decision), headers=_NO_STORE)


@needs("recommendations")
async def render(request: Request) -> Response:
    placement, n = _parameters(request)
    template = _template(request.query_params.get("template", "grid"))
    _check(request, placement)
    decision = await _decide(request, request.path_params["id"], placement, n)
    return json(_rendered(request, _answer(request, placement, decision), template),
                headers=_NO_STORE)  # fmt: skip


@needs("recommendations")
async def batch(request: Request) -> Response:
    try:
        ask = BATCH.decode(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=Batch))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    template = _template(ask.template) if ask.template is not None else None
    _check(request, ask.placement)

    async def one(recipient: str) -> dict[str, Any]:
        try:
            answer = _answer(request, ask.placement,
                             await _decide(request, recipient, ask.placement, ask.n))  # fmt: skip
        except Problem as exc:
            if exc.code not in ("invalid_profile_id", "not_found"):
                raise  # the engine is unavailable: the whole call fails
            return {"recipient": recipient, "error": {"code": exc.code, "message": exc.message}}
        if template is not None:
            answer = _rendered(request, answer, template)
        return {"recipient": recipient, **answer}

    results = await asyncio.gather(*(one(r) for r in ask.recipients))
    return json({"results": results}, headers=_NO_STORE)


@needs("catalog:write")
async def refresh(request: Request) -> Response:
    """Ask the recommendations worker to recompute the candidate lists now (after a catalog
    import, a backfill of history): 202, as the worker does it at its next pass, not this call."""
    client = request.state.redis_sync
    await run_in_threadpool(request_refresh, client)
    lists = await run_in_threadpool(client.hlen, RECS)
    await audit.record(request, "recommendations", "lists", "refresh")
    return json({"requested": True, "lists": lists,
                 "message": "the recommendations worker recomputes the candidate lists at its "
                            "next pass (within a second while it runs, then as long as the SQL "
                            "takes); `lists` is how many it holds now"}, 202)  # fmt: skip


# -- the links in what was sent --


def _shaped(decision_id: str) -> bool:
    return signed_shape(decision_id) or plain_shape(decision_id)


def _decided_at(request: Request, decision_id: str) -> int | None:
    """When the decision was made (ms), as its id says; None if it is not one of ours. A
    signed id must verify (a forged one costs no query); a plain one (a fallback's) carries
    its time in hex."""
    if plain_shape(decision_id):
        return int(decision_id[2:14], 16)
    decider: Decider = request.state.recommender
    claim = decider.ids.verify(decision_id)
    return None if claim is None else claim.at


async def _decided(request: Request, decision_id: str) -> tuple[str, list[str], str, str] | None:
    """(placement, items, anonymous id, user id) of a logged decision, from ClickHouse's
    decision log (the reward worker keeps nothing per decision); None if it knows none."""
    at = _decided_at(request, decision_id)
    if at is None:
        return None
    window = {"id": decision_id, "start": at - _SLACK_MS, "end": at + _SLACK_MS}
    try:
        rows = (await request.state.store.query(_FIND, window)).rows
    except (StoreUnavailable, QueryFailed) as exc:
        log.warning("decision lookup failed", extra={"error": str(exc)})
        return None
    if not rows:
        return None
    placement, anonymous_id, user_id, items = rows[0]
    return placement, list(items), anonymous_id, user_id


async def _track(request: Request, event: str, decision_id: str, **properties: Any) -> bool:
    """Record ``event`` for the decision's person; False if the decision is unknown."""
    found = await _decided(request, decision_id)
    if found is None or not (found[2] or found[3]):
        log.info("event for an unknown decision not recorded",
                 extra={"event": event, "decision": decision_id})  # fmt: skip
        return False
    placement, _, anonymous_id, user_id = found
    now = datetime.now(UTC)
    message = wire.Track(
        event=event,
        anonymous_id=anonymous_id or None,
        user_id=user_id or None,
        message_id=f"{event.split()[-1].lower()}-{uuid.uuid4()}",
        timestamp=now,
        received_at=now,
        properties=msgspec.Raw(msgspec.json.encode(
            {"decisionId": decision_id, "placement": placement, "channel": "email", **properties}
        )),
        context=msgspec.Raw(msgspec.json.encode({
            "library": {"name": "kairos-links"},
            "userAgent": request.headers.get("user-agent", ""),
        })),
    )  # fmt: skip
    await request.state.spool.append_messages([message])
    return True


async def click(request: Request) -> Response:
    decision_id, item_id = request.path_params["decision"], request.path_params["item"]
    if not _shaped(decision_id):
        return error(400, "invalid_request", "$.decisionId: not a decision id")
    raw = await request.state.redis.hget(ITEMS, item_id)
    if raw is None:
        return error(404, "not_found", f"$.itemId: no item {item_id!r}")
    target = ITEM.decode(raw).url
    to = request.query_params.get("to", target)
    if to != target:
        return error(400, "invalid_redirect", f"$.to: not the URL of item {item_id!r}")
    try:
        await _track(request, "Decision Clicked", decision_id, itemId=item_id)
    except redis.RedisError as exc:  # the reader still gets where they were going
        log.error("click not recorded", extra={"error": str(exc), "decision": decision_id})
    return RedirectResponse(target, 302, headers=_NO_STORE)


async def opened(request: Request) -> Response:
    decision_id = request.path_params["decision"]
    if _shaped(decision_id):
        try:
            await _track(request, "Email Opened", decision_id)
        except redis.RedisError as exc:
            log.error("open not recorded", extra={"error": str(exc), "decision": decision_id})
    return Response(_PIXEL, media_type="image/gif", headers=_NO_STORE)


routes = [
    Route("/v1/recommendations/batch", batch, methods=["POST"]),
    Route("/v1/recommendations/refresh", refresh, methods=["POST"]),
    Route("/v1/recommendations/{id:path}/render", render, methods=["GET"]),
    Route("/v1/recommendations/{id:path}", recommendations, methods=["GET"]),
    Route("/v1/r/{decision}/{item:path}", click, methods=["GET"]),
    Route("/v1/o/{decision}.gif", opened, methods=["GET"]),
]
