"""Named API keys (admin scope): ``POST /v1/keys`` makes one and shows it once, ``GET
/v1/keys`` lists them (never a key: its first characters, scopes, limits, times), ``DELETE
/v1/keys/{name}`` revokes one.

A key revoked here stops working on this instance at once and on every other within
``edge.access.keys.REFRESH_SECONDS``.
"""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.errors import with_path
from edge.access import keys
from edge.api.auth import needs
from edge.api.responses import error, json

__all__ = ["routes"]

_ASK = msgspec.json.Decoder(keys.KeyAsk)


@needs("admin")
async def create(request: Request) -> Response:
    try:
        ask = _ASK.decode(await request.body())
        key, record = await run_in_threadpool(keys.create, request.state.redis_sync, ask)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_key", with_path(str(exc), of=keys.KeyAsk))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    except ValueError as exc:
        return error(400, "invalid_key", str(exc))
    except KeyError:
        return error(409, "name_taken", f"$.name: a key named {ask.name!r} exists: revoke it "
                                        "first, or choose another name")  # fmt: skip
    await request.state.keyring.refresh(request.state.redis)  # usable here at once
    shown = {**msgspec.to_builtins(record), "key": key, "last_used": None}
    return json(shown, 201)


@needs("admin")
async def list_all(request: Request) -> Response:
    found = await run_in_threadpool(keys.listed, request.state.redis_sync)
    return json({"keys": found, "revocation_delay_seconds": keys.REFRESH_SECONDS})


@needs("admin")
async def revoke(request: Request) -> Response:
    name = request.path_params["name"]
    if not keys.NAME.fullmatch(name):
        return error(400, "invalid_name", f"$.name: lower-case letters, digits, . _ and -, up "
                                          f"to 64; got {name!r}")  # fmt: skip
    found = await run_in_threadpool(keys.revoke, request.state.redis_sync, name)
    if found is None:
        return error(404, "not_found", f"no key named {name!r}")
    request.state.keyring.forget(name)
    return json({"name": name, "revoked": True,
                 "revocation_delay_seconds": keys.REFRESH_SECONDS})  # fmt: skip


routes = [
    Route("/v1/keys", create, methods=["POST"]),
    Route("/v1/keys", list_all, methods=["GET"]),
    Route("/v1/keys/{name}", revoke, methods=["DELETE"]),
]
