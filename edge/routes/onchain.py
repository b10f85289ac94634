"""``POST /v1/onchain``: normalised on-chain events from an indexer (``collector.onchain``).

Authenticated by the secret key (``Authorization: Bearer sk_…``), or — for an indexer's webhook —
by ``X-Kairos-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` under the
on-chain secret (``GET /v1/onchain`` shows it, secret key), at most five minutes old.

``{"events": [...]}`` takes up to 1,000 events; a 400 names the field (``$.events[3].txHash``).
A 200 means they are in the spool: ``{"accepted": n, "duplicates": m}``, where duplicates are
logs (chain, transaction hash, log index) delivered before.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime

import msgspec
import redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import InvalidInput, SpoolFull, Unauthorized, with_path
from collector.onchain import ONCHAIN, SEEN_TTL, seen_key, to_message
from edge.api.auth import needs, require
from edge.api.responses import Problem, error, json
from edge.routes.tracking import read_body

__all__ = ["routes"]

SECRET = "{oc}:secret"
MAX_BODY = 2 * 1024 * 1024
_TOLERANCE = 300  # seconds a signature stays valid


async def _secret(client: redis.asyncio.Redis) -> bytes:
    await client.set(SECRET, "ocsec_" + secrets.token_urlsafe(24), nx=True)
    return bytes(await client.get(SECRET) or b"")


async def _authorized(request: Request, body: bytes) -> None:
    signature = request.headers.get("x-kairos-signature")
    if signature is None:
        require(request, "onchain")
        return
    stamp, _, digest = signature.partition(",v1=")
    if not stamp.startswith("t=") or not stamp[2:].isdecimal():
        raise Unauthorized("X-Kairos-Signature must be t=<unix time>,v1=<hex HMAC-SHA256>")
    if abs(time.time() - int(stamp[2:])) > _TOLERANCE:
        raise Unauthorized("X-Kairos-Signature is more than five minutes old (or ahead)")
    key = await _secret(request.state.redis)
    expected = hmac.new(key, stamp[2:].encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest):
        raise Unauthorized("X-Kairos-Signature does not match the body")


async def ingest(request: Request) -> Response:
    try:
        body = await read_body(request, MAX_BODY)
        await _authorized(request, body)
        batch = ONCHAIN.decode(body)
    except Unauthorized as exc:
        return error(401, exc.code, exc.message, headers={"WWW-Authenticate": "Bearer"})
    except Problem as exc:
        return exc.response()
    except InvalidInput as exc:
        return error(400, exc.code, exc.message)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_event", with_path(str(exc), of=ONCHAIN.type))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    client = request.state.redis
    unique = {seen_key(e): e for e in batch.events}  # a log twice in one call counts once
    pipe = client.pipeline(transaction=False)
    for key in unique:
        pipe.exists(key)
    known = await pipe.execute()
    fresh = [e for (key, e), old in zip(unique.items(), known) if not old]
    now = datetime.now(UTC)
    if fresh:
        try:
            await request.state.spool.append_messages([to_message(e, now) for e in fresh])
        except SpoolFull as exc:
            return error(503, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after)})
        pipe = client.pipeline(transaction=False)
        for event in fresh:  # remembered only once stored (a retry meanwhile: the spool dedups)
            pipe.set(seen_key(event), 1, ex=SEEN_TTL)
        await pipe.execute()
    return json({"accepted": len(fresh), "duplicates": len(batch.events) - len(fresh)})


@needs("admin")
async def show_secret(request: Request) -> Response:
    return json({"secret": (await _secret(request.state.redis)).decode(),
                 "signature": "X-Kairos-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "
                              '"<t>.<body>">'})  # fmt: skip


routes = [
    Route("/v1/onchain", ingest, methods=["POST"]),
    Route("/v1/onchain", show_secret, methods=["GET"]),
]
