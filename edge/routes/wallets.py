"""Proving a wallet (write key, from the shop's pages): Sign-In with Ethereum (EIP-4361), checked
as an EIP-191 signature with ``eth-account``.

1. ``POST /v1/wallets/nonce`` → ``{"nonce"}``, good for one proof within ten minutes;
2. the page asks the wallet to sign a SIWE message carrying that nonce (its second line is the
   address);
3. ``POST /v1/wallets/link`` ``{"userId", "message", "signature"}``: when the signature is the
   address's own, the wallet's identity (``wallet:<address>``, which on-chain events use)
   joins the user's profile — an alias, through the spool like every change — and the user gets
   the ``wallet`` trait. A signature by anyone else is refused (401), and so is a nonce used
   before or never issued (400). Until then a wallet stays a profile of its own.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector import wire
from collector.errors import Unauthorized, with_path
from collector.identifiers import checksum_address
from edge.api.auth import require
from edge.api.responses import Problem, error, json

__all__ = ["routes"]

_NONCE = "{wal}:nonce:"
_NONCE_SECONDS = 600
_ADDRESS = re.compile(r"^(0x[0-9a-fA-F]{40})$", re.MULTILINE)
_FIELD = re.compile(r"^(Nonce|Expiration Time): (.+)$", re.MULTILINE)


class Link(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    signature: Annotated[str, msgspec.Meta(pattern=r"^0x[0-9a-fA-F]{130}$")]
    write_key: str | None = None


def _write_key(request: Request, given: str | None = None) -> None:
    require(request, "decide", given)


async def nonce(request: Request) -> Response:
    try:
        _write_key(request)
    except Unauthorized as exc:
        return error(401, exc.code, exc.message)
    except Problem as exc:
        return exc.response()
    value = secrets.token_urlsafe(16)
    await request.state.redis.set(_NONCE + value, 1, ex=_NONCE_SECONDS)
    return json({"nonce": value, "expiresIn": _NONCE_SECONDS})


async def link(request: Request) -> Response:
    try:
        ask = msgspec.json.decode(await request.body(), type=Link)
        _write_key(request, ask.write_key)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_request", with_path(str(exc), of=Link))
    except msgspec.DecodeError as exc:
        return error(400, "invalid_json", f"$: {exc}")
    except Unauthorized as exc:
        return error(401, exc.code, exc.message)
    except Problem as exc:
        return exc.response()
    stated = _ADDRESS.search(ask.message)
    fields = dict(_FIELD.findall(ask.message))
    if stated is None or "Nonce" not in fields:
        return error(400, "invalid_request", "$.message: a Sign-In with Ethereum message, with "
                                             "the address on its own line and a Nonce")  # fmt: skip
    expires = fields.get("Expiration Time")
    if expires and _expired(expires):
        return error(400, "invalid_request", "$.message: its Expiration Time has passed")
    try:
        address = checksum_address(stated.group(1))
        signer = await run_in_threadpool(_signer, ask.message, ask.signature)
    except ValueError as exc:
        return error(400, "invalid_request", f"$.signature: not a signature of the message: {exc}")
    if signer != address:
        return error(401, "invalid_signature", "$.signature: not signed by the message's address")
    if not await request.state.redis.delete(_NONCE + fields["Nonce"]):
        return error(400, "invalid_request", "$.message: its Nonce was used before, or never "
                                             "issued (POST /v1/wallets/nonce)")  # fmt: skip
    now = datetime.now(UTC)
    common = {"user_id": ask.user_id, "timestamp": now, "received_at": now,
              "context": msgspec.Raw(b'{"library":{"name":"kairos-wallets"}}')}  # fmt: skip
    messages: list[wire.Message] = [
        wire.Alias(previous_id=f"{wire.WALLET_PREFIX}{address}",
                   message_id=f"wallet-link-{address}-{ask.user_id}", **common),
        wire.Identify(traits=msgspec.Raw(msgspec.json.encode({"wallet": address})),
                      message_id=f"wallet-trait-{address}-{ask.user_id}", **common),
    ]  # fmt: skip
    await request.state.spool.append_messages(messages)
    return json({"linked": address, "userId": ask.user_id})


def _signer(message: str, signature: str) -> str:
    """The address whose key signed ``message`` (EIP-191). eth-account is imported here, on the
    first proof, in a worker thread: it takes about 17 MB, in every API process, that most
    engines never use, and importing it takes long enough to stall the event loop."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    return str(Account.recover_message(encode_defunct(text=message), signature=signature))


def _expired(text: str) -> bool:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return True
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) < datetime.now(UTC)


routes = [
    Route("/v1/wallets/nonce", nonce, methods=["POST"]),
    Route("/v1/wallets/link", link, methods=["POST"]),
]
