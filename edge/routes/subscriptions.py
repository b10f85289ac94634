"""Subscriptions API (secret key): groups (``PUT/GET/DELETE /v1/subscriptions/{key}``, ``GET
/v1/subscriptions`` with the feedback webhook's secret), a person's states (``GET/PUT
/v1/profiles/{id}/subscriptions``), the suppression list (``GET/DELETE
/v1/suppressions/{email}``) and the email provider's bounces and complaints (``POST
/v1/messaging/feedback``: the secret key, or ``X-Kairos-Signature`` under the feedback secret).

The domain is ``journeys.subscriptions`` and ``journeys.suppression``; the pages people reach
from their email (preferences, one-click unsubscribe, confirmation) are ``edge.pages.preferences``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import InvalidInput, Unauthorized, with_path
from edge.access import audit
from edge.api.auth import holds, needs, require
from edge.api.responses import Problem, error, json, path_key
from edge.routes.profiles import NotFound, find_profile
from edge.routes.tracking import read_body
from edge.runtime.stores import smtp_url
from journeys import subscriptions as subs
from journeys import suppression
from journeys.confirmation import send_confirmation

__all__ = ["Feedback", "Group", "StateChange", "routes"]

Group = subs.Group
Feedback = suppression.Feedback
# PUT /v1/profiles/{id}/subscriptions: group key -> the state asked for.
StateChange = dict[str, Literal["subscribed", "unsubscribed"]]
_CHANGE = msgspec.json.Decoder(dict[str, Any])
_FEEDBACK = msgspec.json.Decoder(Feedback)
_MAX_FEEDBACK = 16 * 1024


async def _profile(request: Request) -> Any:
    try:
        return await run_in_threadpool(find_profile, request.state.profiles,
                                       request.path_params["id"])  # fmt: skip
    except ValueError as exc:
        raise Problem(400, "invalid_profile_id", f"$.id: {exc}") from None
    except NotFound as exc:
        raise Problem(404, "not_found", str(exc)) from None


def _shown(key: str, group: subs.Group) -> dict[str, Any]:
    return {"key": key, **msgspec.to_builtins(group)}


@needs("read")
async def list_all(request: Request) -> Response:
    client = request.state.redis_sync
    found = await run_in_threadpool(subs.groups, client)
    size = await run_in_threadpool(suppression.size, client)
    body = {"groups": [_shown(k, g) for k, g in sorted(found.items())], "suppressed": size}
    if holds(request, "admin"):  # what the provider signs feedback with: not for every reader
        body["feedback_secret"] = (
            await run_in_threadpool(suppression.feedback_secret, client)
        ).decode()
    return json(body)


@needs("messaging:write")
async def put(request: Request) -> Response:
    key = path_key(request)
    try:
        group = subs.parse_group(await request.body())
    except msgspec.ValidationError as exc:
        return error(400, "invalid_group", with_path(str(exc), of=subs.Group))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    except ValueError as exc:
        return error(400, "invalid_group", str(exc))
    before = await audit.stored(request, "subscription_group", key)
    created, changed = await run_in_threadpool(subs.put_group, request.state.redis_sync, key,
                                               group)  # fmt: skip
    await audit.changed(request, "subscription_group", key, before)
    return json({"key": key, "created": created, "changed": changed}, 201 if created else 200)


async def _group(request: Request, key: str) -> subs.Group:
    found = await run_in_threadpool(subs.groups, request.state.redis_sync)
    if key not in found:
        raise Problem(404, "not_found", f"no subscription group {key!r}")
    return found[key]


@needs("read")
async def get_one(request: Request) -> Response:
    key = path_key(request)
    return json(_shown(key, await _group(request, key)))


@needs("messaging:write")
async def delete(request: Request) -> Response:
    key = path_key(request)
    before = await audit.stored(request, "subscription_group", key)
    if not await run_in_threadpool(subs.delete_group, request.state.redis_sync, key):
        return error(404, "not_found", f"no subscription group {key!r}")
    await audit.changed(request, "subscription_group", key, before)
    return json({"key": key, "deleted": True})


def _person(client: Any, pid: str) -> dict[str, Any]:
    held = subs.states(client, pid)
    return {key: subs.described(group, held.get(key))
            for key, group in sorted(subs.groups(client).items())}  # fmt: skip


@needs("profiles:read")
async def profile_states(request: Request) -> Response:
    found = await _profile(request)
    shown = await run_in_threadpool(_person, request.state.redis_sync, found.id)
    return json({"profile": found.id, "subscriptions": shown})


def _asked(body: bytes, defined: dict[str, subs.Group]) -> dict[str, str]:
    """The states asked for, each checked: a 400 names the group at fault."""
    try:
        asked = _CHANGE.decode(body)
    except msgspec.ValidationError:
        raise Problem(400, "invalid_request", "$: an object of group key -> "
                      '"subscribed" or "unsubscribed"') from None  # fmt: skip
    except msgspec.DecodeError as exc:
        raise Problem(400, "invalid_json", f"$: {exc}") from None
    if not asked:
        raise Problem(400, "invalid_request", '$: name at least one group, e.g. {"news": '
                      '"subscribed"}')  # fmt: skip
    for key, state in asked.items():
        if key not in defined:
            known = ", ".join(sorted(defined)) or "none yet: PUT /v1/subscriptions/{key}"
            raise Problem(400, "unknown_group", f"$.{key}: no subscription group {key!r} "
                          f"(groups: {known})")  # fmt: skip
        if state not in ("subscribed", "unsubscribed"):
            raise Problem(400, "invalid_state", f"$.{key}: must be subscribed or unsubscribed, "
                          f"not {state!r}")  # fmt: skip
    return asked


async def _confirm(request: Request, pid: str, key: str, group: subs.Group) -> dict[str, Any]:
    """Send the double opt-in confirmation; what happened, for the answer."""
    settings = request.state.settings
    client = request.state.redis_sync
    address = await run_in_threadpool(subs.address_of, client, pid)
    if not address:
        return {"sent": False, "message": f"{key} stays pending: the person has no email "
                "address (an email trait or an email: identity) to confirm with"}  # fmt: skip
    try:
        sender = settings.email.sender(smtp_url(settings.email.url))
    except ValueError as exc:
        return {"sent": False, "message": f"{key} stays pending: {exc}"}
    if sender is None:
        return {"sent": False, "message": f"{key} stays pending: no SMTP server is configured "
                "(KAIROS_SMTP_URL or [email] url), so no confirmation email was sent"}  # fmt: skip
    outcome = await send_confirmation(client, sender, settings.email.public_url, pid, key, group,
                                      address)  # fmt: skip
    if outcome.status == "sent":
        return {"sent": True, "message": f"{key} is pending until the person follows the link "
                "in the confirmation email"}  # fmt: skip
    return {"sent": False, "message": f"{key} stays pending: the SMTP server answered "
            f"{outcome.code} {outcome.detail}".rstrip()}  # fmt: skip


@needs("messaging:send")
async def set_profile_states(request: Request) -> Response:
    found = await _profile(request)
    client = request.state.redis_sync
    defined = await run_in_threadpool(subs.groups, client)
    asked = _asked(await request.body(), defined)
    held = await run_in_threadpool(subs.states, client, found.id)
    confirmations: dict[str, Any] = {}
    changed = []
    for key, state in sorted(asked.items()):
        group = defined[key]
        before = held.get(key)
        if state == "subscribed" and group.double_opt_in:
            if before is not None and before.state == "subscribed":
                continue  # confirmed already: nothing to ask again
            state = "pending"
        change = await run_in_threadpool(subs.set_state, client, found.id, key, state, "api")
        if change.changed:
            changed.append(key)
        if state == "pending":
            confirmations[key] = await _confirm(request, found.id, key, group)
    shown = await run_in_threadpool(_person, client, found.id)
    was = {key: held[key].state if key in held else None for key in changed}
    now = {key: shown[key]["state"] for key in changed}
    await audit.record(request, "subscriptions", found.id, "update", was, now)
    answer: dict[str, Any] = {"profile": found.id, "subscriptions": shown, "changed": changed}
    if confirmations:
        answer["confirmations"] = confirmations
    return json(answer)


def _email(request: Request) -> str:
    address: str = request.path_params["email"]
    if "@" not in address.strip() or len(address) > 320:
        raise Problem(400, "invalid_email", f"$.email: an email address, e.g. ada@example.com; "
                      f"got {address[:80]!r}")  # fmt: skip
    return suppression.normalized("email", address)


@needs("profiles:read")
async def get_suppression(request: Request) -> Response:
    address = _email(request)
    found = await run_in_threadpool(suppression.entry, request.state.redis_sync, "email", address)
    if not found.suppressed and not found.groups and not found.soft_bounces:
        return error(404, "not_found", f"{address} is not on the suppression list")
    return json({"email": address, **msgspec.to_builtins(found)})


@needs("messaging:send")
async def delete_suppression(request: Request) -> Response:
    address = _email(request)
    if not await run_in_threadpool(suppression.unblock, request.state.redis_sync, "email",
                                   address):  # fmt: skip
        return error(404, "not_found", f"{address} is not on the suppression list")
    await audit.record(request, "suppression", suppression.address_hash("email", address),
                       "delete", {"suppressed": True}, {"suppressed": False})  # fmt: skip
    return json({"email": address, "deleted": True})


async def _signed(request: Request, body: bytes) -> None:
    """The secret key, or the provider's signature under the feedback secret."""
    header = request.headers.get("x-kairos-signature")
    if header is None:
        require(request, "messaging:send")
        return
    key = await run_in_threadpool(suppression.feedback_secret, request.state.redis_sync)
    problem = suppression.verify_signature(key, body, header)
    if problem is not None:
        raise Unauthorized(problem)


async def feedback(request: Request) -> Response:
    """A bounce or complaint from the email provider: a complaint or a hard bounce suppresses
    the address (a complaint also unsubscribes its people from every email group); a soft
    bounce is only counted."""
    try:
        body = await read_body(request, _MAX_FEEDBACK)
        await _signed(request, body)
        report = _FEEDBACK.decode(body)
    except Unauthorized as exc:
        return error(401, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"})
    except Problem as exc:
        return exc.response()
    except InvalidInput as exc:
        return error(400, exc.code, exc.message)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_feedback", with_path(str(exc), of=Feedback))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    client = request.state.redis_sync
    done = await run_in_threadpool(suppression.record_feedback, client, report)
    if report.type == "complaint":
        await run_in_threadpool(_complained, request, report.email)
    if done == "suppressed":  # (a soft bounce is only counted)
        try:
            await audit.record(request, "suppression", suppression.address_hash(
                "email", report.email), "suppress", None, {"reason": report.type},
                actor="webhook:feedback")  # fmt: skip
        except Problem as exc:
            return exc.response()
    return json({"email": suppression.normalized("email", report.email), "result": done})


def _complained(request: Request, address: str) -> None:
    """Whoever the address belongs to asked, by complaining, for no more of our email."""
    store = request.state.profiles
    found = store.lookup([f"email:{suppression.normalized('email', address)}"])
    for pid in found.values():
        subs.unsubscribe_all(store.client, store.resolve(pid), "email", "complaint")


routes = [
    Route("/v1/subscriptions", list_all, methods=["GET"]),
    Route("/v1/subscriptions/{key}", put, methods=["PUT"]),
    Route("/v1/subscriptions/{key}", get_one, methods=["GET"]),
    Route("/v1/subscriptions/{key}", delete, methods=["DELETE"]),
    Route("/v1/profiles/{id}/subscriptions", profile_states, methods=["GET"]),
    Route("/v1/profiles/{id}/subscriptions", set_profile_states, methods=["PUT"]),
    Route("/v1/suppressions/{email}", get_suppression, methods=["GET"]),
    Route("/v1/suppressions/{email}", delete_suppression, methods=["DELETE"]),
    Route("/v1/messaging/feedback", feedback, methods=["POST"]),
]
